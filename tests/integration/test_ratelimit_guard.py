"""The brute-force guard: refused credentials count per client address.

With auth_failures [3/minute], the fourth request from an address that had three
credentials refused is 429 before its own credentials are looked at, even when they
are valid. Other addresses are unaffected; requests without credentials do not count.
The gateway trusts one proxy, so each test speaks from addresses of its own
(X-Forwarded-For) and the shared Redis counts them apart from everyone else.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from .jwt_support import (
    RawApiKey,
    assert_unauthorized,
    bearer,
    forged_token,
    hs256_auth,
    hs256_token,
)
from .redis_support import (
    SHARED_REDIS_URL,
    address,
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
GUARDED = unique("guarded")
OPEN = unique("open")


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[Gateway]:
    config = limited_config(
        upstream.url,
        [
            route(GUARDED, auth=["jwt", "api_key"], rate_limit=[]),
            route(OPEN, rate_limit=[]),
        ],
        rate_limits={"storage": SHARED_REDIS_URL, "default": [], "auth_failures": ["3/minute"]},
        trusted_proxies=1,
        auth=hs256_auth(SECRET, API_KEY),
    )
    started = start_limited_gateway(tmp_path_factory.mktemp("rl-guard"), config, workers=2)
    try:
        yield started
    finally:
        started.server.stop()


def call(gateway: Gateway, ip: str, *headers: tuple[str, str], path: str = "") -> Reply:
    return gateway.get(path or f"/{GUARDED}/x", [("X-Forwarded-For", ip), *headers])


def assert_blocked(reply: Reply) -> None:
    assert_problem(reply, 429, "rate_limited", f"/{GUARDED}/x")
    retry_after = reply.header("Retry-After") or ""
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, reply.describe()
    assert reply.header("WWW-Authenticate") is None, reply.describe()


def test_three_refused_tokens_block_the_address_even_for_a_valid_token(
    gateway: Gateway, upstream: MisbehavingUpstream
) -> None:
    ip = address()
    for _ in range(3):
        reply = call(gateway, ip, bearer(forged_token()))
        assert_unauthorized(reply, f"/{GUARDED}/x", token_sent=True)
    before = len(upstream.received(f"/up/ok/{GUARDED}/"))
    assert_blocked(call(gateway, ip, bearer(hs256_token(SECRET))))
    assert_blocked(call(gateway, ip, ("X-API-Key", API_KEY.header_value)))
    assert_blocked(call(gateway, ip, bearer(forged_token())))  # 429, not 401
    assert len(upstream.received(f"/up/ok/{GUARDED}/")) == before
    # The guard covers credential checks only: a public route is open to the address.
    assert call(gateway, ip, path=f"/{OPEN}/x").status == 200


def test_another_address_is_unaffected(gateway: Gateway) -> None:
    blocked, other = address(), address()
    for _ in range(3):
        assert call(gateway, blocked, bearer("not-a-jwt")).status == 401
    assert_blocked(call(gateway, blocked, bearer(hs256_token(SECRET))))
    reply = call(gateway, other, bearer(hs256_token(SECRET)))
    assert reply.status == 200, reply.describe()
    # The address the guard counts is the believed one, not what the client prepends.
    reply = call(gateway, f"{blocked}, {other}", bearer(hs256_token(SECRET)))
    assert reply.status == 200, reply.describe()
    assert_blocked(call(gateway, f"{other}, {blocked}", bearer(hs256_token(SECRET))))


def test_refused_api_keys_count_too(gateway: Gateway) -> None:
    ip = address()
    for _ in range(3):
        reply = call(gateway, ip, ("X-API-Key", "wrong-" + secrets.token_urlsafe(8)))
        assert_unauthorized(reply, f"/{GUARDED}/x", token_sent=False)
    assert_blocked(call(gateway, ip, ("X-API-Key", API_KEY.header_value)))


def test_missing_credentials_do_not_count(gateway: Gateway) -> None:
    ip = address()
    for _ in range(6):
        assert_unauthorized(call(gateway, ip), f"/{GUARDED}/x", token_sent=False)
    reply = call(gateway, ip, bearer(hs256_token(SECRET)))
    assert reply.status == 200, reply.describe()
    # ... and valid credentials do not either.
    for _ in range(4):
        assert call(gateway, ip, ("X-API-Key", API_KEY.header_value)).status == 200
    assert call(gateway, ip, bearer(forged_token())).status == 401
