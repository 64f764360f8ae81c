"""Fixtures: the misbehaving upstream, and real `gateway serve` processes in front of it.

Session-scoped pieces are per test process (each pytest-xdist worker has its own
upstream and gateway on their own free ports). Tests tell their requests apart by a
unique token in the path or query string.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .support import (
    LOOPBACK,
    PUBLIC_URL,
    Gateway,
    ServerProcess,
    StartGateway,
    gateway_config,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    write_config,
)
from .upstream import MisbehavingUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[MisbehavingUpstream]:
    server = MisbehavingUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound for the session, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def _session_gateways() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def _launcher(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    closed_port: int,
    started: list[ServerProcess],
) -> StartGateway:
    def start(*, workers: int = 2, threads: int = 4, **gateway_settings: Any) -> Gateway:
        workdir = tmp_path_factory.mktemp("gateway")
        config = gateway_config(
            upstream.url, f"http://{LOOPBACK}:{closed_port}", **gateway_settings
        )
        path = write_config(workdir / "routes.yaml", config)
        server = start_server(
            gateway_serve_argv(path, workers, threads),
            workdir=workdir,
            name="gateway",
            env=subprocess_env(),
            workers=workers,
        )
        started.append(server)
        return Gateway(server, config)

    return start


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    closed_port: int,
    _session_gateways: list[ServerProcess],
) -> Gateway:
    """`gateway serve` with 2 workers, empty public_url, trusted_proxies 0."""
    return _launcher(tmp_path_factory, upstream, closed_port, _session_gateways)()


@pytest.fixture(scope="session")
def public_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    closed_port: int,
    _session_gateways: list[ServerProcess],
) -> Gateway:
    """The same routes behind a configured public_url."""
    return _launcher(tmp_path_factory, upstream, closed_port, _session_gateways)(
        workers=1, public_url=PUBLIC_URL
    )


@pytest.fixture
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    closed_port: int,
) -> Iterator[StartGateway]:
    """Start extra gateways for one test; each is stopped at the test's end."""
    started: list[ServerProcess] = []
    try:
        yield _launcher(tmp_path_factory, upstream, closed_port, started)
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def token() -> str:
    """A unique marker for this test's requests."""
    return "t" + uuid.uuid4().hex[:16]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, show the log of every gateway the test used."""
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Gateway):
                report.sections.append(
                    (f"gateway {value.port} log (tail)", value.server.log()[-6000:])
                )
    return report
