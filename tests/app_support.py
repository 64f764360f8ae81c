"""In-process gateways built from a routes.yaml text, and what a respx upstream was sent.

The fixtures in conftest.py are built from these; a test file whose app outlives one
test (a module-scoped fixture) uses running_app directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import httpx
import respx
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.config import load_config_text

# What the gateway_app and gateway_client fixtures hand a test.
AppFactory = Callable[..., Flask]
ClientFactory = Callable[..., FlaskClient]


@contextmanager
def running_app(
    text: str, source: str = "routes.yaml", environ: Mapping[str, str] | None = None
) -> Iterator[Flask]:
    """The app of a config text; its upstream pools and rate-limit storage are released
    on the way out, so no test leaves connections behind for the next one."""
    app = create_app(load_config_text(text, source, dict(environ or {})))
    try:
        yield app
    finally:
        app.gateway.close()  # type: ignore[attr-defined]


def sent(calls_of: respx.Route | respx.MockRouter, index: int = -1) -> httpx.Request:
    """A request a route (or the whole router) received: the last one by default."""
    return calls_of.calls[index].request
