"""https upstreams: certificates verified by default, a private CA trusted via ca_bundle."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.support import (
    LOOPBACK,
    ServerProcess,
    assert_problem,
    gateway_serve_argv,
    http_request,
    start_server,
    subprocess_env,
)

pytestmark = pytest.mark.integration


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's handler naming
        body = json.dumps({"path": self.path, "tls": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def private_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_upstream(private_ca: trustme.CA) -> Iterator[int]:
    """An https server whose certificate only the private CA vouches for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    private_ca.issue_cert("localhost", LOOPBACK).configure_cert(context)
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _start(workdir: Path, port: int, ca_bundle: Path | None) -> ServerProcess:
    upstream = f"    url: https://localhost:{port}\n    timeout: 2\n"
    if ca_bundle is not None:
        upstream += f"    ca_bundle: {ca_bundle}\n"
    config = workdir / "routes.yaml"
    config.write_text(
        "version: 1\nupstreams:\n  secure:\n" + upstream + "routes:\n"
        "  - {name: hello, path: '/hello', methods: [GET], upstream: secure, auth: public}\n"
    )
    return start_server(
        gateway_serve_argv(config, 1, 2),
        workdir=workdir,
        name="gateway-tls",
        env=subprocess_env(),
        workers=1,
    )


def test_https_upstream_signed_by_the_configured_ca_bundle_is_reached(
    tmp_path: Path, private_ca: trustme.CA, tls_upstream: int
) -> None:
    bundle = tmp_path / "private-ca.pem"
    private_ca.cert_pem.write_to_path(str(bundle))
    server = _start(tmp_path, tls_upstream, bundle)
    try:
        reply = http_request(server.port, "GET", "/hello", (), None, timeout=10)
    finally:
        server.stop()
    assert reply.status == 200, reply.describe()
    assert reply.json() == {"path": "/hello", "tls": True}


def test_https_upstream_with_an_unknown_ca_is_refused_as_502(
    tmp_path: Path, tls_upstream: int
) -> None:
    server = _start(tmp_path, tls_upstream, None)
    try:
        reply = http_request(server.port, "GET", "/hello", (), None, timeout=10)
    finally:
        server.stop()
    assert_problem(reply, 502, "upstream_unavailable", "/hello")
    assert b"localhost" not in reply.body and str(tls_upstream).encode() not in reply.body
