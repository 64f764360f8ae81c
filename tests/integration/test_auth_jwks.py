"""Signing keys from a JWKS URL: rotation, unknown-kid storms, and a key server that
fails, refuses, hangs or drips.

Each test runs its own key server and its own gateway with ONE worker: the JWKS cache,
its cooldown and so the number of fetches are per worker, so one worker makes the
server's hit count exact.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .jwt_support import (
    JwksServer,
    Target,
    assert_unauthorized,
    bearer,
    ec_public_jwk,
    make_api_keys,
    public_jwk,
    rsa_key,
    start_auth_gateway,
)
from .support import LOOPBACK, Gateway, Reply, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

JWKS_TIMEOUT = 1.0
SLACK = 1.5  # seconds allowed beyond jwks_timeout for everything else in a request

StartJwksGateway = Callable[..., Target]


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer([public_jwk(rsa_key("jwks-a"), "kid-a")]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_jwks_gateway(tmp_path: Path, upstream: MisbehavingUpstream) -> Iterator[StartJwksGateway]:
    started: list[Gateway] = []

    def start(jwks_url: str, **settings: Any) -> Target:
        jwt_settings = {
            "algorithms": ["RS256"],
            "jwks_url": jwks_url,
            "jwks_cache_seconds": 300,
            "jwks_cooldown_seconds": 0.5,
            "jwks_timeout": JWKS_TIMEOUT,
            "roles_claim": "role",
            **settings,
        }
        api_keys = make_api_keys()
        # One worker: the key cache and the fetch count are per worker process.
        gateway = start_auth_gateway(
            tmp_path, upstream.url, jwt_settings, api_keys, workers=1, threads=4
        )
        started.append(gateway)
        return Target("jwks", gateway, "RS256", rsa_key("jwks-a"), "kid-a", "role", api_keys)

    try:
        yield start
    finally:
        for gateway in started:
            gateway.server.stop()


def _marker() -> str:
    return "k" + uuid.uuid4().hex[:16]


def _call(target: Target, token: str, marker: str | None = None) -> Reply:
    return target.gateway.get(f"/jwt/probe?m={marker or _marker()}", [bearer(token)], timeout=15)


def _with_key(target: Target, key_name: str, kid: str) -> Target:
    return Target(
        target.name, target.gateway, "RS256", rsa_key(key_name), kid, "role", target.api_keys
    )


def _assert_503(reply: Reply, cooldown: float) -> None:
    assert_problem(reply, 503, "service_unavailable", "/jwt/probe")
    retry_after = reply.header("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), reply.describe()
    assert 1 <= int(retry_after) <= max(1, math.ceil(cooldown)), reply.describe()


# -- rotation ----------------------------------------------------------------------------


def test_rotation_to_a_new_kid_needs_no_restart(
    jwks_server: JwksServer, start_jwks_gateway: StartJwksGateway, upstream: MisbehavingUpstream
) -> None:
    cooldown = 0.5
    key_a = start_jwks_gateway(
        jwks_server.url, jwks_cache_seconds=1, jwks_cooldown_seconds=cooldown
    )
    key_b = _with_key(key_a, "jwks-b", "kid-b")

    assert _call(key_a, key_a.mint()).status == 200
    assert jwks_server.hits == 1

    jwks_server.set_keys([public_jwk(rsa_key("jwks-b"), "kid-b")])
    time.sleep(cooldown + 0.2)
    marker = _marker()
    reply = _call(key_b, key_b.mint(), marker)
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-Auth-Method") == ["jwt"]
    assert jwks_server.hits == 2

    # Key A left the set: a token it signs now is a foreign token.
    marker = _marker()
    reply = _call(key_a, key_a.mint(), marker)
    assert_unauthorized(reply, "/jwt/probe", token_sent=True)
    assert upstream.received(marker) == []
    assert jwks_server.hits <= 3


def test_both_keys_work_while_a_rotation_overlaps(
    jwks_server: JwksServer, start_jwks_gateway: StartJwksGateway
) -> None:
    cooldown = 0.5
    key_a = start_jwks_gateway(jwks_server.url, jwks_cooldown_seconds=cooldown)
    key_b = _with_key(key_a, "jwks-b", "kid-b")
    assert _call(key_a, key_a.mint()).status == 200
    jwks_server.set_keys(
        [public_jwk(rsa_key("jwks-a"), "kid-a"), public_jwk(rsa_key("jwks-b"), "kid-b")]
    )
    time.sleep(cooldown + 0.2)
    for _ in range(3):
        assert _call(key_b, key_b.mint()).status == 200
        assert _call(key_a, key_a.mint()).status == 200
    assert jwks_server.hits == 2


# -- unknown kids ------------------------------------------------------------------------


def test_unknown_kid_storm_is_bounded_and_valid_tokens_keep_working(
    jwks_server: JwksServer, start_jwks_gateway: StartJwksGateway, upstream: MisbehavingUpstream
) -> None:
    cooldown = 0.5
    target = start_jwks_gateway(jwks_server.url, jwks_cooldown_seconds=cooldown)
    assert _call(target, target.mint()).status == 200
    assert jwks_server.hits == 1

    # 50 random kids (signed by the real key: only the kid is wrong), with a fresh
    # valid token after every second one, in waves spread over about three cooldowns.
    jobs: list[tuple[bool, str]] = []
    for index in range(50):
        jobs.append((False, target.mint(kid="random-" + uuid.uuid4().hex)))
        if index % 2:
            jobs.append((True, target.mint()))

    def run(job: tuple[bool, str]) -> tuple[bool, Reply, str]:
        marker = _marker()
        return job[0], _call(target, job[1], marker), marker

    results: list[tuple[bool, Reply, str]] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for wave in range(5):
            results += pool.map(run, jobs[wave * 15 : (wave + 1) * 15])
            if wave < 4:
                time.sleep(0.35)
    elapsed = time.monotonic() - started

    assert len(results) == 75
    for valid, reply, marker in results:
        if valid:
            assert reply.status == 200, reply.describe()
            assert len(upstream.received(marker)) == 1
        else:
            assert_unauthorized(reply, "/jwt/probe", token_sent=True)
            assert upstream.received(marker) == []
    refetches = jwks_server.hits - 1
    # Unknown kids do trigger refetches (that is how rotation is picked up), but at
    # most one per cooldown (plus one at the edge), whatever the number of kids.
    assert 1 <= refetches <= math.ceil(elapsed / cooldown) + 1, (refetches, elapsed)
    assert refetches <= 5, (refetches, elapsed)


# -- a key server that goes away ---------------------------------------------------------


@pytest.mark.parametrize("outage", ["error", "not_json", "refused"])
def test_last_good_keys_are_kept_when_the_key_server_goes_down(
    jwks_server: JwksServer,
    start_jwks_gateway: StartJwksGateway,
    upstream: MisbehavingUpstream,
    outage: str,
) -> None:
    cooldown = 0.5
    target = start_jwks_gateway(
        jwks_server.url, jwks_cache_seconds=1, jwks_cooldown_seconds=cooldown
    )
    assert _call(target, target.mint()).status == 200
    assert jwks_server.hits == 1
    if outage == "refused":
        jwks_server.stop()
    else:
        jwks_server.mode = outage
    time.sleep(1.2)  # past the cache lifetime and the cooldown: the next use refetches

    started = time.monotonic()
    for _ in range(5):
        marker = _marker()
        reply = _call(target, target.mint(), marker)
        assert reply.status == 200, reply.describe()
        assert len(upstream.received(marker)) == 1
    # A kid the last good set does not hold is a bad token, not an outage.
    marker = _marker()
    reply = _call(target, target.mint(kid="gone-" + marker), marker)
    assert_unauthorized(reply, "/jwt/probe", token_sent=True)
    elapsed = time.monotonic() - started
    if outage != "refused":
        assert 2 <= jwks_server.hits <= 2 + math.ceil(elapsed / cooldown), jwks_server.hits


@pytest.mark.parametrize("outage", ["refused", "error", "not_json", "no_usable_key", "empty_set"])
def test_no_keys_at_all_is_503_with_retry_after(
    jwks_server: JwksServer,
    start_jwks_gateway: StartJwksGateway,
    upstream: MisbehavingUpstream,
    closed_port: int,
    outage: str,
) -> None:
    cooldown = 5.0
    if outage == "refused":
        url = f"http://{LOOPBACK}:{closed_port}/.well-known/jwks.json"
    else:
        url = jwks_server.url
        if outage == "no_usable_key":
            jwks_server.set_keys([ec_public_jwk("kid-ec")])
        elif outage == "empty_set":
            jwks_server.set_keys([])
        else:
            jwks_server.mode = outage
    target = start_jwks_gateway(url, jwks_cooldown_seconds=cooldown)

    for _ in range(3):
        marker = _marker()
        reply = _call(target, target.mint(), marker)
        _assert_503(reply, cooldown)
        assert upstream.received(marker) == []
    if outage != "refused":
        assert jwks_server.hits == 1  # the cooldown holds while there are no keys too
    # A token refused on its face needs no keys: still a 401.
    marker = _marker()
    reply = _call(target, target.mint(algorithm="RS512"), marker)
    assert_unauthorized(reply, "/jwt/probe", token_sent=True)


def test_keys_are_fetched_again_once_the_key_server_recovers(
    jwks_server: JwksServer, start_jwks_gateway: StartJwksGateway
) -> None:
    cooldown = 0.5
    jwks_server.mode = "error"
    target = start_jwks_gateway(jwks_server.url, jwks_cooldown_seconds=cooldown)
    _assert_503(_call(target, target.mint()), cooldown)
    jwks_server.mode = "ok"
    time.sleep(cooldown + 0.2)
    reply = _call(target, target.mint())
    assert reply.status == 200, reply.describe()
    assert jwks_server.hits == 2


# -- a key server that is slow -----------------------------------------------------------


@pytest.mark.parametrize("slowness", ["hang", "drip"])
def test_a_slow_key_server_before_any_keys_is_bounded_by_jwks_timeout(
    jwks_server: JwksServer,
    start_jwks_gateway: StartJwksGateway,
    upstream: MisbehavingUpstream,
    slowness: str,
) -> None:
    jwks_server.mode = slowness
    target = start_jwks_gateway(jwks_server.url, jwks_cooldown_seconds=5.0)
    marker = _marker()
    started = time.monotonic()
    reply = _call(target, target.mint(), marker)
    elapsed = time.monotonic() - started
    _assert_503(reply, 5.0)
    assert upstream.received(marker) == []
    assert elapsed < JWKS_TIMEOUT + SLACK, f"answered after {elapsed:.2f} s"


@pytest.mark.parametrize("slowness", ["hang", "drip"])
def test_a_slow_key_server_after_a_good_fetch_is_bounded_by_jwks_timeout(
    jwks_server: JwksServer,
    start_jwks_gateway: StartJwksGateway,
    upstream: MisbehavingUpstream,
    slowness: str,
) -> None:
    target = start_jwks_gateway(jwks_server.url, jwks_cache_seconds=1, jwks_cooldown_seconds=0.5)
    assert _call(target, target.mint()).status == 200
    jwks_server.mode = slowness
    time.sleep(1.2)  # the cached set has expired: the next request refetches
    marker = _marker()
    started = time.monotonic()
    reply = _call(target, target.mint(), marker)
    elapsed = time.monotonic() - started
    assert reply.status == 200, reply.describe()
    assert len(upstream.received(marker)) == 1
    assert elapsed < JWKS_TIMEOUT + SLACK, f"answered after {elapsed:.2f} s"
    assert jwks_server.hits == 2


def test_known_keys_do_not_wait_for_a_refetch_in_flight(
    jwks_server: JwksServer, start_jwks_gateway: StartJwksGateway
) -> None:
    # A refetch that outlasts the cooldown: requests with known keys arriving
    # meanwhile use the previous keys and do not wait for it.
    timeout, cooldown = 2.0, 0.5
    target = start_jwks_gateway(
        jwks_server.url,
        jwks_cache_seconds=1,
        jwks_cooldown_seconds=cooldown,
        jwks_timeout=timeout,
    )
    assert _call(target, target.mint()).status == 200
    jwks_server.mode = "hang"
    time.sleep(1.2)  # the cached set has expired
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_call, target, target.mint())
        time.sleep(cooldown + 0.3)  # the first refetch is still hanging
        started = time.monotonic()
        reply = _call(target, target.mint())
        elapsed = time.monotonic() - started
        assert first.result(timeout=15).status == 200
    assert reply.status == 200, reply.describe()
    assert elapsed < 1.0, f"a request with a known key waited {elapsed:.2f} s"


def test_a_valid_api_key_is_accepted_while_no_keys_can_be_had(
    start_jwks_gateway: StartJwksGateway, upstream: MisbehavingUpstream, closed_port: int
) -> None:
    # auth: [jwt, api_key]: any one suffices, also when the token cannot be checked.
    target = start_jwks_gateway(f"http://{LOOPBACK}:{closed_port}/jwks.json")
    raw = target.api_keys["reporting"].raw
    marker = _marker()
    reply = target.gateway.get(
        f"/any/probe?m={marker}", [bearer(target.mint()), ("X-API-Key", raw)], timeout=15
    )
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-Auth-Method") == ["api_key"]
