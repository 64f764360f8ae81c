"""Routing errors (404, 405) and the request body limit (413), against a real gateway."""

from __future__ import annotations

import pytest

from .support import MAX_BODY_BYTES, Gateway, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration


def test_healthz_answers_ok_with_a_request_id(gateway: Gateway) -> None:
    reply = gateway.get("/healthz")
    assert reply.status == 200, reply.describe()
    assert reply.json()["status"] == "ok"


def test_unknown_path_is_404_not_found(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    before = upstream.count()
    reply = gateway.get(f"/nowhere/{token}?t={token}")
    body = assert_problem(reply, 404, "not_found", f"/nowhere/{token}")
    assert token in body["detail"]
    assert upstream.count() == before


def test_wrong_method_is_405_method_not_allowed_with_allow(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    before = upstream.count()
    reply = gateway.request("POST", f"/items/{token}", body=b"{}")
    assert_problem(reply, 405, "method_not_allowed", f"/items/{token}")
    allow = {m.strip() for m in (reply.header("Allow") or "").split(",")}
    assert "GET" in allow and "POST" not in allow, reply.describe()
    assert upstream.count() == before
    assert upstream.received(token) == []


def test_wrong_method_on_healthz_is_405_with_allow(gateway: Gateway) -> None:
    reply = gateway.request("DELETE", "/healthz")
    assert_problem(reply, 405, "method_not_allowed", "/healthz")
    allow = {m.strip() for m in (reply.header("Allow") or "").split(",")}
    assert "GET" in allow and "DELETE" not in allow


@pytest.mark.parametrize("declared", [MAX_BODY_BYTES + 1, 50 * 1024 * 1024])
def test_declared_body_over_limit_is_413_payload_too_large_and_never_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, declared: int
) -> None:
    before = upstream.count()
    # Only the start of the body is sent: the answer must come from the declared size
    # alone, without waiting for (or forwarding) the rest.
    reply = gateway.request(
        "POST",
        f"/api/ok/{token}",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(declared))],
        b"a" * 1000,
        timeout=5,
    )
    assert_problem(reply, 413, "payload_too_large", f"/api/ok/{token}")
    assert upstream.count() == before
    assert upstream.received(token) == []


def test_chunked_body_over_limit_is_413_payload_too_large_and_never_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    before = upstream.count()
    chunks = [b"b" * 10_000] * (MAX_BODY_BYTES // 10_000 + 1)
    reply = gateway.request("POST", f"/api/ok/{token}", chunks=chunks, timeout=5)
    assert_problem(reply, 413, "payload_too_large", f"/api/ok/{token}")
    assert upstream.count() == before
    assert upstream.received(token) == []


@pytest.mark.parametrize("size", [1, 50_000, MAX_BODY_BYTES])
def test_chunked_body_within_limit_arrives_complete_with_content_length(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, size: int
) -> None:
    data = bytes(i % 251 for i in range(size))
    # Uneven chunks, as a streaming client would send them.
    cuts = [0, *sorted({min(size, c) for c in (1, 7, 4096, 20_000, 65_537)}), size]
    chunks = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    reply = gateway.request(
        "PUT", f"/api/ok/{token}", [("Content-Type", "application/octet-stream")], chunks=chunks
    )
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.method == "PUT"
    assert received.body == data
    assert not received.chunked
    assert received.header_values("Content-Length") == [str(size)]
    assert "transfer-encoding" not in received.header_names


@pytest.mark.parametrize("size", [0, 10, 70_000, MAX_BODY_BYTES])
def test_declared_body_within_limit_arrives_complete(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, size: int
) -> None:
    data = bytes((i * 7) % 256 for i in range(size))
    reply = gateway.request(
        "POST", f"/api/ok/{token}", [("Content-Type", "application/octet-stream")], data
    )
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.body == data
    assert not received.chunked
    assert received.header_values("Content-Length") == [str(size)]
