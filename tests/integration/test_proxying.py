"""What the upstream receives for a forwarded request, and what the client gets back."""

from __future__ import annotations

import re

import pytest

from .support import REQUEST_ID, Gateway
from .upstream import GZIP_BODY, UPSTREAM_POWERED_BY, UPSTREAM_SERVER, MisbehavingUpstream

pytestmark = pytest.mark.integration


def _upper_escapes(text: str) -> str:
    """Percent-escapes compare case-insensitively (RFC 3986 §6.2.2.1)."""
    return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group(0).upper(), text)


PARAMS = {
    "segment_with_space": ("/items/a%20b", "/up/ok/item/a%20b"),
    "segment_with_question_mark": ("/items/what%3F", "/up/ok/item/what%3F"),
    "segment_with_hash": ("/items/no%231", "/up/ok/item/no%231"),
    "segment_with_utf8": ("/items/%c3%a9t%c3%a9", "/up/ok/item/%C3%A9t%C3%A9"),
    "segment_with_percent": ("/items/100%25", "/up/ok/item/100%25"),
    "path_with_spaces_and_slashes": (
        "/files/dir%20one/sub/file%20name.txt",
        "/up/ok/files/dir%20one/sub/file%20name.txt",
    ),
    "path_single_segment": ("/files/readme", "/up/ok/files/readme"),
    "path_catch_all": ("/api/ok/hello%20world/x", "/up/ok/hello%20world/x"),
}


@pytest.mark.parametrize(("public", "expected"), list(PARAMS.values()), ids=list(PARAMS))
def test_path_parameters_arrive_reencoded_inside_the_upstream_path(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, public: str, expected: str
) -> None:
    reply = gateway.get(f"{public}?t={token}")
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert _upper_escapes(received.path) == expected
    assert received.query == f"t={token}"


def test_query_string_arrives_unchanged(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    query = (
        f"t={token}&a=1&b=x%20y&c=%2F&d=%3F%26&e=&flag&g=a+b&h=%E2%82%AC"
        "&i=1;j=2&k=%5Bx%5D&l=..%2F..&a=2&m=%25252e"
    )
    reply = gateway.get(f"/api/ok/q?{query}")
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.path == "/up/ok/q"
    assert received.query == query


def test_upstream_sees_its_own_host_and_the_forwarded_headers(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/ok/fwd?t={token}")
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.header_values("Host") == [upstream.host_port]
    assert received.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert received.header_values("X-Forwarded-Proto") == ["http"]
    assert received.header_values("X-Forwarded-Host") == [gateway.host_port]


@pytest.mark.parametrize(
    "claim",
    [
        ("X-Forwarded-For", "203.0.113.66"),
        ("X-Forwarded-For", "203.0.113.66, 198.51.100.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=203.0.113.66;proto=https;host=evil.example"),
    ],
    ids=["xff", "xff_chain", "xf_proto", "xf_host", "forwarded"],
)
def test_client_forwarded_claims_are_ignored_with_no_trusted_proxies(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, claim: tuple[str, str]
) -> None:
    # trusted_proxies 0: the socket peer is the client and the Host header is the
    # host, whatever the client claims.
    reply = gateway.get(f"/api/ok/fwd?t={token}", [claim])
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert received.header_values("X-Forwarded-Proto") == ["http"]
    assert received.header_values("X-Forwarded-Host") == [gateway.host_port]
    for value in ("203.0.113.66", "198.51.100.7", "evil.example", "https"):
        assert value not in repr(received.headers), received.headers


def test_hop_by_hop_request_headers_are_dropped(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(
        f"/api/ok/hop?t={token}",
        [
            ("Connection", "X-Foo, keep-alive"),
            ("X-Foo", "named-by-connection"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
            ("Proxy-Connection", "keep-alive"),
            ("X-Kept", "yes"),
        ],
    )
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    for name in (
        "x-foo",
        "keep-alive",
        "te",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ):
        assert name not in received.header_names, received.headers
    for value in received.header_values("Connection"):
        assert "x-foo" not in value.lower(), received.headers
    assert "c2VjcmV0OnNlY3JldA" not in repr(received.headers)
    assert received.header_values("X-Kept") == ["yes"]


def test_hop_by_hop_and_server_response_headers_are_dropped(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/hop?t={token}")
    assert reply.status == 200, reply.describe()
    assert reply.json() == {"hop": True}
    for name in ("x-secret", "keep-alive", "proxy-connection", "proxy-authenticate", "upgrade"):
        assert name not in reply.header_names, reply.headers
    assert "x-powered-by" not in reply.header_names
    assert UPSTREAM_SERVER not in reply.header_values("Server")
    assert "s3cr3t" not in repr(reply.headers)
    assert UPSTREAM_POWERED_BY not in repr(reply.headers)
    for value in reply.header_values("Connection"):
        assert "x-secret" not in value.lower(), reply.headers
    assert reply.header("X-Custom") == "kept"
    upstream.only(token)


IDENTITY = [
    ("X-User-Id", "admin"),
    ("X-User-Roles", "admin,service"),
    ("X-Tenant-Id", "tenant-1"),
    ("X-Auth-Method", "jwt"),
    ("X-Consumer-Id", "reporting"),
    ("x-user-id", "lower-admin"),
    ("X-TENANT-ID", "upper-tenant"),
    ("X_User_Id", "underscore-admin"),
    ("X_Tenant_Id", "underscore-tenant"),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_identity_headers_never_reach_the_upstream(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, method: str
) -> None:
    body = b'{"x": 1}' if method == "POST" else None
    reply = gateway.request(method, f"/api/ok/identity?t={token}", IDENTITY, body)
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    names = {name.lower().replace("_", "-") for name, _ in received.headers}
    for name in ("x-user-id", "x-user-roles", "x-tenant-id", "x-auth-method", "x-consumer-id"):
        assert name not in names, received.headers
    for _, value in IDENTITY:
        assert value not in repr(received.headers)


def test_valid_client_request_id_is_echoed_and_sent_upstream(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    request_id = f"client-{token}.A_b-9"
    reply = gateway.get(f"/api/ok/rid?t={token}", [("X-Request-ID", request_id)])
    assert reply.status == 200, reply.describe()
    assert reply.header_values("X-Request-ID") == [request_id]
    assert upstream.only(token).header_values("X-Request-ID") == [request_id]


@pytest.mark.parametrize(
    "offered",
    ["a" * 129, "x" * 200, "has spaces in it", "semi;colon", "new\\line", "ünïcode", ""],
    ids=["129_chars", "200_chars", "spaces", "semicolon", "backslash", "non_ascii", "empty"],
)
def test_invalid_client_request_id_is_replaced_everywhere(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, offered: str
) -> None:
    reply = gateway.get(
        f"/api/ok/rid?t={token}", [("X-Request-ID", offered.encode().decode("latin-1"))]
    )
    assert reply.status == 200, reply.describe()
    echoed = reply.header_values("X-Request-ID")
    assert len(echoed) == 1 and echoed[0] != offered and REQUEST_ID.match(echoed[0])
    assert upstream.only(token).header_values("X-Request-ID") == echoed


def test_request_id_of_an_error_matches_header_and_body(gateway: Gateway, token: str) -> None:
    request_id = f"err-{token}"
    reply = gateway.get(f"/nowhere/{token}", [("X-Request-ID", request_id)])
    assert reply.status == 404
    assert reply.header("X-Request-ID") == request_id
    assert reply.json()["request_id"] == request_id


def test_valid_traceparent_is_passed_on(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    reply = gateway.get(
        f"/api/ok/trace?t={token}",
        [("traceparent", traceparent), ("tracestate", "vendor=opaque")],
    )
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.header_values("traceparent") == [traceparent]


def test_gzip_body_passes_through_byte_identical_with_content_encoding(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/gzip?t={token}", [("Accept-Encoding", "gzip")])
    assert reply.status == 200, reply.describe()
    assert reply.complete
    assert reply.header("Content-Encoding") == "gzip"
    assert reply.body == GZIP_BODY
    received = upstream.only(token)
    assert received.header_values("Accept-Encoding") == ["gzip"]


def test_upstream_gets_no_accept_encoding_or_user_agent_the_client_did_not_send(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/ok/plain?t={token}")
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert "accept-encoding" not in received.header_names, received.headers
    assert "user-agent" not in received.header_names, received.headers


def test_client_accept_and_user_agent_arrive_unchanged(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    headers = [
        ("Accept", "application/vnd.example+json; q=0.9"),
        ("User-Agent", "frontend/1.2"),
        ("Accept-Encoding", "br, gzip;q=0.5"),
    ]
    reply = gateway.get(f"/api/ok/ua?t={token}", headers)
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    for name, value in headers:
        assert received.header_values(name) == [value]


def test_head_is_forwarded_and_answered_without_a_body(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.request("HEAD", f"/api/ok/head?t={token}")
    assert reply.status == 200, reply.describe()
    assert reply.body == b""
    assert upstream.only(token).method == "HEAD"
