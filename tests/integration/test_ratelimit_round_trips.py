"""Redis round trips per request, as Redis itself sees them (MONITOR).

One gateway per strategy on the shared Redis, with one worker, since the
verified-token cache is per worker. Redis's MONITOR feed is read between two
markers; every command a client sent (not those a script ran) that names this
module's routes or client addresses is one round trip of the gateway's. A route's
limits, however many, cost one; the brute-force guard one more, unless the bearer
token was verified before.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from .jwt_support import RawApiKey, bearer, hs256_auth, hs256_token
from .redis_support import (
    SHARED_REDIS_URL,
    address,
    delete_counters,
    limited_config,
    route,
    shared_redis,  # noqa: F401 - the fixture, used through usefixtures
    start_limited_gateway,
    unique,
)
from .support import Gateway, Reply, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_redis")]

SECRET = secrets.token_urlsafe(40)
API_KEY = RawApiKey(unique("svc"), "sk_" + secrets.token_urlsafe(24), ("service",))
ONE = unique("rt-one")
THREE = unique("rt-three")
AUTHED = unique("rt-authed")
WARM = unique("rt-warm")
NAMES = (ONE, THREE, AUTHED, WARM)


class RedisTap:
    """Redis's MONITOR feed, read up to a marker sent after the requests of interest:
    their commands were all run by then, so all of them come before it."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=10)
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        self.marker = redis.Redis.from_url(url, socket_timeout=2)

    def sent_since_last(self, *needles: str) -> list[str]:
        marker = "round-trips-marker-" + uuid.uuid4().hex
        self.marker.echo(marker)
        sent: list[str] = []
        while True:
            entry: dict[str, Any] = self.monitor.next_command()
            command = str(entry["command"])
            if marker in command:
                return sent
            if entry["client_type"] != "lua" and any(n in command for n in needles):
                sent.append(command.split(" ", 1)[0].upper())

    def close(self) -> None:
        self.monitor.__exit__(None, None, None)
        self.marker.close()
        self.client.close()


@pytest.fixture(scope="module", params=["moving-window", "fixed-window", "sliding-window-counter"])
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
) -> Iterator[Gateway]:
    config = limited_config(
        upstream.url,
        [
            route(ONE, rate_limit=["3/minute"]),
            route(THREE, rate_limit=["3/minute", "100/hour", "1000/day"]),
            # by address: the API key's own counter would outlive the gateway of
            # another strategy, which reads the same key as another Redis type
            route(AUTHED, auth=["jwt", "api_key"], rate_limit=["50/minute"], key="ip"),
            route(WARM, rate_limit=["1000/minute"]),
        ],
        rate_limits={
            "storage": SHARED_REDIS_URL,
            "strategy": request.param,
            "default": [],
            "auth_failures": ["3/minute"],
        },
        trusted_proxies=1,
        auth=hs256_auth(SECRET, API_KEY),
    )
    started = start_limited_gateway(
        tmp_path_factory.mktemp("rl-round-trips"), config, workers=1, threads=4
    )
    try:
        # Loads the scripts into Redis (a first call costs a SCRIPT LOAD more).
        assert started.get(f"/{WARM}/x", [("X-Forwarded-For", address())]).status == 200
        yield started
    finally:
        started.server.stop()
        for name in NAMES:
            delete_counters(SHARED_REDIS_URL, name)


@pytest.fixture
def tap() -> Iterator[RedisTap]:
    opened = RedisTap(SHARED_REDIS_URL)
    try:
        yield opened
    finally:
        opened.close()


def call(gateway: Gateway, name: str, ip: str, *headers: tuple[str, str]) -> Reply:
    return gateway.get(f"/{name}/x", [("X-Forwarded-For", ip), *headers])


def test_a_limited_request_is_one_round_trip(gateway: Gateway, tap: RedisTap) -> None:
    ip = address()
    tap.sent_since_last()
    for _ in range(3):
        assert call(gateway, ONE, ip).status == 200
        assert tap.sent_since_last(ONE, ip) == ["EVALSHA"]
    assert_problem(call(gateway, ONE, ip), 429, "rate_limited", f"/{ONE}/x")
    assert tap.sent_since_last(ONE, ip) == ["EVALSHA"]


def test_three_limits_are_one_round_trip_too(gateway: Gateway, tap: RedisTap) -> None:
    ip = address()
    tap.sent_since_last()
    for remaining in ("2", "1", "0"):
        reply = call(gateway, THREE, ip)
        assert reply.status == 200 and reply.header("X-RateLimit-Remaining") == remaining
        assert tap.sent_since_last(THREE, ip) == ["EVALSHA"]
    assert_problem(call(gateway, THREE, ip), 429, "rate_limited", f"/{THREE}/x")
    assert tap.sent_since_last(THREE, ip) == ["EVALSHA"]


def test_the_guard_costs_one_more_unless_the_token_was_verified_before(
    gateway: Gateway, tap: RedisTap
) -> None:
    ip = address()
    token = bearer(hs256_token(SECRET))
    tap.sent_since_last()
    assert call(gateway, AUTHED, ip, token).status == 200
    assert tap.sent_since_last(AUTHED, ip) == ["EVALSHA", "EVALSHA"]
    for _ in range(2):
        assert call(gateway, AUTHED, ip, token).status == 200
        assert tap.sent_since_last(AUTHED, ip) == ["EVALSHA"]
    for _ in range(2):
        assert call(gateway, AUTHED, ip, ("X-API-Key", API_KEY.header_value)).status == 200
        assert tap.sent_since_last(AUTHED, ip) == ["EVALSHA", "EVALSHA"]
