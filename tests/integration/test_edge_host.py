"""The Host header never steers the links a client is sent.

The reference routes.yaml sets `gateway.public_url`, so Link headers (the upstream's,
rewritten, and the gateway's own successor-version link) are built on it whatever
Host a client sends. And a request whose Host is not a host at all (`a@evil`, a path,
port 0, none on HTTP/1.1) is answered 400 problem+json and never forwarded
(RFC 9112 §3.2), on every gateway, public_url or not.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from .stack_support import API_KEY, ROUTES, stack_env
from .support import (
    LOOPBACK,
    Gateway,
    Reply,
    assert_problem,
    gateway_serve_argv,
    start_server,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

# What the reference routes.yaml promises when GATEWAY_PUBLIC_URL is not set.
REFERENCE_PUBLIC_URL = "http://127.0.0.1:8080"
EVIL = "evil.example"


@pytest.fixture(scope="module")
def reference_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[Gateway]:
    """The reference routes.yaml in front of the recording upstream: users answer with
    the upstream's Link behaviour, orders with its echo."""
    env = stack_env(USERS_URL=f"{upstream.url}/up/link", ORDERS_URL=upstream.url)

    workdir = tmp_path_factory.mktemp("edge-host")
    server = start_server(
        gateway_serve_argv(ROUTES, 1, 4),
        workdir=workdir,
        name="gateway-reference",
        env=env,
        workers=1,
    )
    try:
        yield Gateway(server, {})
    finally:
        server.stop()


def links(reply: Reply) -> list[str]:
    return reply.header_values("Link")


@pytest.mark.parametrize("host", [EVIL, f"{EVIL}:8080", "127.0.0.1:1"])
def test_the_reference_config_links_to_its_public_url_whatever_the_host(
    reference_gateway: Gateway, host: str
) -> None:
    key = ("X-API-Key", API_KEY)
    # The upstream's own Link, rewritten onto the public base.
    listed = reference_gateway.get("/api/v1/users?limit=2", [("Host", host), key])
    assert listed.status == 200, listed.describe()
    assert any(
        f"<{REFERENCE_PUBLIC_URL}/up/ok/list?cursor=abc%3D&limit=2>" in v for v in links(listed)
    ), listed.describe()
    # The gateway's own Link to a deprecated route's successor.
    deprecated = reference_gateway.get("/api/v1/orders?limit=2", [("Host", host), key])
    assert deprecated.status == 200, deprecated.describe()
    assert f'<{REFERENCE_PUBLIC_URL}/api/v2/orders>; rel="successor-version"' in links(
        deprecated
    ), deprecated.describe()
    for reply in (listed, deprecated):
        seen = "\n".join(f"{n}: {v}" for n, v in reply.headers)
        assert host not in seen, reply.describe()


INVALID_HOSTS = [
    "a@evil.example",
    "user:pw@evil.example:8080",
    "evil.example/x",
    "evil.example:0",
    "evil.example:99999",
    "[::1",
    "ev%69l.example",
    "",
]


@pytest.mark.parametrize("host", INVALID_HOSTS)
@pytest.mark.parametrize("which", ["empty_public_url", "public_url"])
def test_a_host_that_is_not_a_host_is_400_and_never_forwarded(
    gateway: Gateway,
    public_gateway: Gateway,
    upstream: MisbehavingUpstream,
    token: str,
    host: str,
    which: str,
) -> None:
    target = gateway if which == "empty_public_url" else public_gateway
    reply = target.get(f"/api/ok/{token}", [("Host", host)])
    body = assert_problem(reply, 400, "bad_request", f"/api/ok/{token}")
    assert body["detail"] == "The Host header is not a valid host.", body
    assert reply.header("Location") is None and reply.header("Link") is None
    assert upstream.received(token) == []


def raw_exchange(port: int, head: bytes) -> Reply:
    """`head` sent as it is (http_request always adds a Host), the answer read whole."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    reply = Reply(
        status=int(status_line.split(" ")[1]),
        reason="",
        headers=[(n, v.strip()) for n, _, v in (line.partition(":") for line in lines)],
        raw_head=raw_head,
    )
    reply.body = body
    return reply


def test_an_http11_request_without_host_is_400_and_never_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    head = f"GET /api/ok/{token}/1.1 HTTP/1.1\r\nConnection: close\r\n\r\n".encode()
    reply = raw_exchange(gateway.port, head)
    body = assert_problem(reply, 400, "bad_request", f"/api/ok/{token}/1.1")
    assert body["detail"] == "The request has no Host header.", body
    assert upstream.received(f"{token}/1.1") == []
    # HTTP/1.0 may omit Host (RFC 9112 §3.2 binds HTTP/1.1), as load balancer health
    # checks still do: such a request is served.
    reply = raw_exchange(gateway.port, f"GET /api/ok/{token}/1.0 HTTP/1.0\r\n\r\n".encode())
    assert reply.status == 200, reply.describe()
    assert len(upstream.received(f"{token}/1.0")) == 1
