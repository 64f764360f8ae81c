"""Upstream error responses as the client sees them: always problem+json, never leaky."""

from __future__ import annotations

import pytest

from .support import Gateway, Reply, assert_problem
from .upstream import (
    INTERNAL_HOST,
    JSON_404,
    PROBLEM_422,
    UPSTREAM_POWERED_BY,
    UPSTREAM_SERVER,
    MisbehavingUpstream,
)

pytestmark = pytest.mark.integration


def _assert_nothing_of_the_upstream(reply: Reply, upstream: MisbehavingUpstream) -> None:
    text = reply.raw_head.decode("latin-1") + "\n" + reply.body.decode("utf-8", "replace")
    for secret in (
        INTERNAL_HOST,
        upstream.host_port,
        "Traceback",
        "hunter2",
        "views.py",
        "OperationalError",
        "<html",
        "SELECT",
        UPSTREAM_POWERED_BY,
        UPSTREAM_SERVER,
    ):
        assert secret not in text, f"{secret!r} leaked: {reply.describe()}"
    assert "x-powered-by" not in reply.header_names


def test_upstream_html_500_becomes_a_problem_without_any_upstream_detail(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/html500?t={token}")
    body = assert_problem(reply, 500, None, "/api/html500")
    _assert_nothing_of_the_upstream(reply, upstream)
    assert set(body) >= {"type", "title", "detail"}
    assert len(upstream.received(token)) == 1


def test_upstream_text_503_becomes_a_problem_and_keeps_retry_after(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/text503?t={token}")
    assert_problem(reply, 503, None, "/api/text503")
    _assert_nothing_of_the_upstream(reply, upstream)
    assert b"maintenance" not in reply.body
    assert reply.header("Retry-After") == "7"


def test_upstream_problem_422_keeps_its_members_and_gains_the_gateway_ones(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    request_id = f"rid-{token}"
    reply = gateway.request(
        "POST",
        f"/api/problem422?t={token}",
        [("Content-Type", "application/json"), ("X-Request-ID", request_id)],
        b'{"email": "nope"}',
    )
    body = assert_problem(reply, 422, None, "/api/problem422")
    assert body["errors"] == PROBLEM_422["errors"]
    assert body["balance"] == PROBLEM_422["balance"]
    assert body["type"] == PROBLEM_422["type"]
    assert body["title"] == PROBLEM_422["title"]
    assert body["detail"] == PROBLEM_422["detail"]
    assert body["request_id"] == request_id
    assert "server" not in reply.header_names or UPSTREAM_SERVER not in repr(reply.headers)
    assert upstream.only(token).body == b'{"email": "nope"}'


def test_upstream_json_404_is_replaced_by_a_problem(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/json404?t={token}")
    body = assert_problem(reply, 404, "not_found", "/api/json404")
    _assert_nothing_of_the_upstream(reply, upstream)
    for value in JSON_404.values():
        assert value not in reply.body.decode()
    assert "error" not in body and "debug" not in body
