"""Shared set-up for the unit tests: in-process gateways and a recording upstream."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import ExitStack

import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient

from tests.app_support import AppFactory, ClientFactory, running_app

# The gateway installs its own stderr handlers only when the host application has
# configured none. A handler here keeps the access log inside the test process (and
# visible to caplog), instead of bound to whatever stream was current at first use.
logging.getLogger("gateway").addHandler(logging.NullHandler())


@pytest.fixture
def gateway_app() -> Iterator[AppFactory]:
    """Apps of routes.yaml texts: `gateway_app(text, source="routes.yaml", environ=None)`.

    Every app made is closed when the test ends, whatever it asserted."""
    with ExitStack() as stack:

        def make(
            text: str, source: str = "routes.yaml", environ: Mapping[str, str] | None = None
        ) -> Flask:
            return stack.enter_context(running_app(text, source, environ))

        yield make


@pytest.fixture
def gateway_client(gateway_app: AppFactory) -> ClientFactory:
    """Like gateway_app, but a test client of the app (the app is `client.application`)."""

    def make(
        text: str, source: str = "routes.yaml", environ: Mapping[str, str] | None = None
    ) -> FlaskClient:
        return gateway_app(text, source, environ).test_client()

    return make


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the `app` fixture of the test's own module."""
    return app.test_client()


@pytest.fixture
def upstream_base_url() -> str | None:
    """Overridden by a module whose upstream routes name paths of one base URL."""
    return None


@pytest.fixture
def upstream(upstream_base_url: str | None) -> Iterator[respx.MockRouter]:
    """Every upstream call the gateway makes, recorded for the test to inspect. Only the
    routes added to it answer: a module gives its default answers by overriding this
    fixture with one that takes `upstream` and adds routes to it."""
    with respx.mock(base_url=upstream_base_url, assert_all_called=False) as router:
        yield router
