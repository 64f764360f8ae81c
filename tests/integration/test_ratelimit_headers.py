"""What a limited client is told: X-RateLimit-*, RateLimit-Policy / RateLimit, 429s.

One gateway on the shared Redis (moving window). Every value is checked against the
window it describes: Remaining counts down, Reset lies in the future within the
window, Retry-After never exceeds it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from .redis_support import (
    SHARED_REDIS_URL,
    limited_config,
    route,
    shared_redis,  # noqa: F401 - the fixture, used through usefixtures
    start_limited_gateway,
    unique,
)
from .support import Gateway, Reply, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_redis")]

ORIGIN = "http://app.example.test"
LIMITED = unique("limited")
TWO_LIMITS = unique("two-limits")
UNLIMITED = unique("unlimited")
DEFAULTED = unique("defaulted")
LOGIN = unique("login")
BROWSER = unique("browser")
PREFLIGHT = unique("preflight")
RATE_LIMIT = re.compile(r'^"(?P<policy>[^"]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')
LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
IETF_HEADERS = ("ratelimit-policy", "ratelimit")
PERIODS = {60: "minute", 3600: "hour"}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[Gateway]:
    config = limited_config(
        upstream.url,
        [
            route(LIMITED, rate_limit=["5/minute"]),
            route(TWO_LIMITS, rate_limit=["5/hour", "2/minute"]),
            route(UNLIMITED, rate_limit=[]),
            route(DEFAULTED),
            route(LOGIN, methods=("POST",), rate_limit=["5/minute"], key="ip"),
            route(BROWSER, methods=("GET", "POST"), rate_limit=["1/minute"]),
            route(PREFLIGHT, methods=("GET", "POST"), rate_limit=["1/minute"]),
        ],
        rate_limits={"storage": SHARED_REDIS_URL, "default": ["2/minute"]},
        cors={
            "allow_origins": [ORIGIN],
            "allow_credentials": True,
            "allow_methods": ["GET", "POST"],
            "allow_headers": ["Authorization", "Content-Type"],
            "expose_headers": [
                "X-Request-ID",
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
            "max_age": 600,
        },
    )
    started = start_limited_gateway(
        tmp_path_factory.mktemp("rl-headers"), config, workers=2, threads=4
    )
    try:
        yield started
    finally:
        started.server.stop()


def budget_headers(reply: Reply, before: float, after: float, window: int) -> tuple[int, int]:
    """Check every budget header against the window; return (remaining, reset epoch)."""
    limit = int(reply.header("X-RateLimit-Limit") or "-1")
    remaining = int(reply.header("X-RateLimit-Remaining") or "-1")
    reset = int(reply.header("X-RateLimit-Reset") or "-1")
    assert 0 <= remaining < limit, reply.describe()
    # Reset is in whole epoch seconds: in the future, at most one window away.
    assert before < reset + 1 and reset <= after + window, (before, reset, reply.describe())
    policy = reply.header("RateLimit-Policy")
    text = f"{limit}/{PERIODS[window]}"
    assert policy == f'"{text}";q={limit};w={window}', reply.describe()
    match = RATE_LIMIT.match(reply.header("RateLimit") or "")
    assert match, reply.describe()
    assert match["policy"] == text
    assert int(match["r"]) == remaining
    assert 1 <= int(match["t"]) <= window, reply.describe()
    assert abs(int(match["t"]) - (reset - after)) <= 2, reply.describe()
    return remaining, reset


def timed_get(
    gateway: Gateway, path: str, headers: list[tuple[str, str]] | None = None
) -> tuple[Reply, float, float]:
    before = time.time()
    reply = gateway.get(path, headers or [])
    return reply, before, time.time()


def test_limited_responses_tell_the_budget_and_the_refusal_when_to_retry(
    gateway: Gateway, upstream: MisbehavingUpstream
) -> None:
    path = f"/{LIMITED}/x"
    remainders, resets = [], []
    for _ in range(5):
        reply, before, after = timed_get(gateway, path)
        assert reply.status == 200, reply.describe()
        assert reply.header("X-RateLimit-Limit") == "5"
        remaining, reset = budget_headers(reply, before, after, 60)
        remainders.append(remaining)
        resets.append(reset)
    assert remainders == [4, 3, 2, 1, 0]
    # A moving window frees its first slot a window after the first hit.
    assert max(resets) - min(resets) <= 1, resets

    refused, before, after = timed_get(gateway, path)
    assert_problem(refused, 429, "rate_limited", path)
    retry_after = refused.header("Retry-After") or ""
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, refused.describe()
    assert refused.header("X-RateLimit-Limit") == "5"
    assert refused.header("X-RateLimit-Remaining") == "0"
    reset = int(refused.header("X-RateLimit-Reset") or "-1")
    assert abs(reset - resets[0]) <= 1, refused.describe()
    assert abs(int(retry_after) - (reset - after)) <= 2, refused.describe()
    match = RATE_LIMIT.match(refused.header("RateLimit") or "")
    assert match and match["r"] == "0", refused.describe()
    assert refused.header("RateLimit-Policy") == '"5/minute";q=5;w=60'
    assert len(upstream.received(f"/up/ok/{LIMITED}/")) == 5


def test_with_two_limits_the_headers_follow_the_one_closest_to_running_out(
    gateway: Gateway,
) -> None:
    path = f"/{TWO_LIMITS}/x"
    first, before, after = timed_get(gateway, path)
    assert first.status == 200, first.describe()
    assert first.header("X-RateLimit-Limit") == "2"
    assert budget_headers(first, before, after, 60)[0] == 1
    second, before, after = timed_get(gateway, path)
    assert budget_headers(second, before, after, 60)[0] == 0
    refused = gateway.get(path)
    assert_problem(refused, 429, "rate_limited", path)
    assert "2/minute" in refused.json()["detail"]
    assert refused.header("X-RateLimit-Limit") == "2"


def test_a_route_with_no_limits_is_never_limited_and_tells_no_budget(
    gateway: Gateway, upstream: MisbehavingUpstream
) -> None:
    for _ in range(8):
        reply = gateway.get(f"/{UNLIMITED}/x")
        assert reply.status == 200, reply.describe()
        assert not reply.header_names & {*LIMIT_HEADERS, *IETF_HEADERS}, reply.describe()
    assert len(upstream.received(f"/up/ok/{UNLIMITED}/")) == 8


def test_a_route_without_its_own_limits_gets_the_default(gateway: Gateway) -> None:
    path = f"/{DEFAULTED}/x"
    first = gateway.get(path)
    assert first.status == 200 and first.header("X-RateLimit-Limit") == "2", first.describe()
    assert first.header("RateLimit-Policy") == '"2/minute";q=2;w=60'
    assert gateway.get(path).status == 200
    assert_problem(gateway.get(path), 429, "rate_limited", path)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_are_never_limited(gateway: Gateway, path: str) -> None:
    for _ in range(6):  # three times the default limit
        reply = gateway.get(path)
        assert reply.status == 200, reply.describe()
        assert not reply.header_names & {*LIMIT_HEADERS, *IETF_HEADERS}, reply.describe()
    if path == "/readyz":
        assert reply.json()["checks"]["rate_limit_storage"] == "ok"


def test_a_login_route_allows_five_a_minute_per_address(
    gateway: Gateway, upstream: MisbehavingUpstream
) -> None:
    path = f"/{LOGIN}/login"
    body = b'{"email": "member@example.com", "password": "guess"}'
    headers = [("Content-Type", "application/json")]
    replies = [gateway.request("POST", path, headers, body) for _ in range(6)]
    assert [r.status for r in replies] == [200] * 5 + [429], [r.describe() for r in replies]
    assert [r.header("X-RateLimit-Remaining") for r in replies[:5]] == ["4", "3", "2", "1", "0"]
    assert_problem(replies[5], 429, "rate_limited", path)
    assert len(upstream.received(f"/up/ok/{LOGIN}/")) == 5


def test_a_429_carries_cors_headers_for_an_allowed_origin(gateway: Gateway) -> None:
    path = f"/{BROWSER}/x"
    assert gateway.get(path, [("Origin", ORIGIN)]).status == 200
    refused = gateway.get(path, [("Origin", ORIGIN)])
    assert_problem(refused, 429, "rate_limited", path)
    assert refused.header("Access-Control-Allow-Origin") == ORIGIN, refused.describe()
    assert refused.header("Access-Control-Allow-Credentials") == "true", refused.describe()
    vary = {v.strip().lower() for value in refused.header_values("Vary") for v in value.split(",")}
    assert "origin" in vary, refused.describe()
    exposed = {
        v.strip().lower()
        for value in refused.header_values("Access-Control-Expose-Headers")
        for v in value.split(",")
    }
    assert {"retry-after", "x-ratelimit-remaining"} <= exposed, refused.describe()

    foreign = gateway.get(path, [("Origin", "http://evil.example.test")])
    assert_problem(foreign, 429, "rate_limited", path)
    assert foreign.header("Access-Control-Allow-Origin") is None, foreign.describe()


def test_preflights_are_neither_limited_nor_counted(gateway: Gateway) -> None:
    path = f"/{PREFLIGHT}/x"
    preflight = [
        ("Origin", ORIGIN),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ]
    for _ in range(4):
        reply = gateway.request("OPTIONS", path, preflight)
        assert reply.status in (200, 204), reply.describe()
        assert reply.header("Access-Control-Allow-Origin") == ORIGIN, reply.describe()
    # The one request of the budget is still there.
    assert gateway.get(path, [("Origin", ORIGIN)]).status == 200
    assert gateway.get(path, [("Origin", ORIGIN)]).status == 429
