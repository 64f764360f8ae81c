"""Upstreams that refuse, reset, babble, stall, drip or die: 502, 504, or a cut body."""

from __future__ import annotations

import time

import pytest

from .support import CONNECT_TIMEOUT, UPSTREAM_TIMEOUT, Gateway, assert_problem
from .upstream import MID_BODY_DECLARED, MID_BODY_SENT, MisbehavingUpstream

pytestmark = pytest.mark.integration

# The whole exchange is bounded by timeout + connect_timeout; one more second is slack.
BOUND = UPSTREAM_TIMEOUT + CONNECT_TIMEOUT + 1.0


def _assert_no_upstream_address(body: bytes, upstream: MisbehavingUpstream) -> None:
    assert upstream.host_port.encode() not in body
    assert f":{upstream.port}".encode() not in body


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_refused_connection_is_502_upstream_unavailable(
    gateway: Gateway, closed_port: int, token: str, method: str
) -> None:
    body = b'{"a": 1}' if method == "POST" else None
    reply = gateway.request(method, f"/closed/x/{token}", body=body, timeout=10)
    problem = assert_problem(reply, 502, "upstream_unavailable", f"/closed/x/{token}")
    assert f":{closed_port}" not in reply.body.decode()
    assert "127.0.0.1" not in problem["detail"]
    assert reply.elapsed < BOUND


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_upstream_reset_is_502_upstream_unavailable_and_post_is_not_retried(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, method: str
) -> None:
    body = b'{"a": 1}' if method == "POST" else None
    reply = gateway.request(method, f"/api/reset?t={token}", body=body)
    assert_problem(reply, 502, "upstream_unavailable", "/api/reset")
    _assert_no_upstream_address(reply.body, upstream)
    # The request reached the upstream before the reset. A POST is never sent again
    # (that could repeat its effect); an idempotent one at most `retries` (1) more times.
    assert 1 <= len(upstream.received(token)) <= (1 if method == "POST" else 2)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_upstream_garbage_is_502_upstream_unavailable(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, method: str
) -> None:
    body = b'{"a": 1}' if method == "POST" else None
    reply = gateway.request(method, f"/api/garbage?t={token}", body=body)
    problem = assert_problem(reply, 502, "upstream_unavailable", "/api/garbage")
    assert b"SSH" not in reply.body and b"garbage" not in problem["detail"].encode()
    _assert_no_upstream_address(reply.body, upstream)
    assert 1 <= len(upstream.received(token)) <= (1 if method == "POST" else 2)


def test_slow_upstream_is_504_upstream_timeout(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    started = time.monotonic()
    reply = gateway.get(f"/api/slow?t={token}", timeout=10)
    elapsed = time.monotonic() - started
    assert_problem(reply, 504, "upstream_timeout", "/api/slow")
    _assert_no_upstream_address(reply.body, upstream)
    assert UPSTREAM_TIMEOUT * 0.9 <= elapsed < BOUND, elapsed
    assert len(upstream.received(token)) == 1


def test_upstream_dripping_its_headers_is_504_within_the_deadline(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    # One byte every 0.2 s: no single read ever waits as long as the timeout.
    started = time.monotonic()
    reply = gateway.get(f"/api/drip-headers?t={token}", timeout=15)
    elapsed = time.monotonic() - started
    assert_problem(reply, 504, "upstream_timeout", "/api/drip-headers")
    assert elapsed < BOUND, elapsed


def test_upstream_dripping_its_body_is_cut_off_within_the_deadline(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    started = time.monotonic()
    reply = gateway.get(f"/api/drip?t={token}", timeout=15)
    elapsed = time.monotonic() - started
    # The status was sent before the body started; what is left is to end the
    # response visibly incomplete, and in time.
    assert reply.status == 200, reply.describe()
    assert not reply.complete, reply.describe()
    assert reply.body_length < MID_BODY_DECLARED
    assert elapsed < BOUND, elapsed


@pytest.mark.parametrize("behaviour", ["die-mid-body", "die-mid-chunked"])
def test_upstream_dying_mid_body_never_looks_like_a_complete_response(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, behaviour: str
) -> None:
    reply = gateway.get(f"/api/{behaviour}?t={token}", timeout=10)
    assert reply.status == 200, reply.describe()
    # Either framing is fine (the declared length, or chunks), but the body must end
    # short of its framing: a client can never take it for the whole resource.
    framed = reply.header("Content-Length") is not None or "chunked" in (
        reply.header("Transfer-Encoding") or ""
    )
    assert framed, reply.describe()
    assert not reply.complete, reply.describe()
    assert reply.body_length <= MID_BODY_SENT
    if reply.header("Content-Length") is not None:
        assert reply.header("Content-Length") == str(MID_BODY_DECLARED)


def test_small_body_cut_short_is_502_not_a_truncated_200(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    # Small bodies are read whole before the gateway answers, so the failure can still
    # be reported as a problem instead of a cut connection.
    reply = gateway.get(f"/api/die-mid-small-body?t={token}", timeout=10)
    assert_problem(reply, 502, "upstream_unavailable", "/api/die-mid-small-body")
    assert b"sss" not in reply.body
    # The upstream answered: not a connect failure, so not tried again.
    assert len(upstream.received(token)) == 1


def test_small_body_dripping_is_504_within_the_deadline(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    started = time.monotonic()
    reply = gateway.get(f"/api/drip-small-body?t={token}", timeout=15)
    elapsed = time.monotonic() - started
    assert_problem(reply, 504, "upstream_timeout", "/api/drip-small-body")
    assert elapsed < BOUND, elapsed


def test_gateway_still_serves_after_upstream_failures(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    for behaviour in ("reset", "garbage", "die-mid-body"):
        gateway.get(f"/api/{behaviour}?t={token}-{behaviour}", timeout=10)
    for attempt in range(4):
        reply = gateway.get(f"/api/ok/after?t={token}-{attempt}")
        assert reply.status == 200, reply.describe()
        assert reply.json()["target"] == f"/up/ok/after?t={token}-{attempt}"
