"""Whom a limit counts: client keys and buckets, on the shared Redis.

Anonymous callers are `ip:<addr>`, with X-Forwarded-For believed for trusted_proxies
hops only; authenticated callers are `user:<sub>` or `key:<id>`; `rate_limit_key: ip`
counts by address whatever the credentials; routes naming one rate_limit_bucket share
it. What was counted is read back from Redis itself.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, Sequence

import pytest

from .jwt_support import RawApiKey, bearer, hs256_auth, hs256_token
from .redis_support import (
    SHARED_REDIS_URL,
    counter_keys,
    limited_config,
    route,
    shared_redis,  # noqa: F401 - the fixture, used through usefixtures
    start_limited_gateway,
    unique,
)
from .support import Gateway, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_redis")]

SECRET = secrets.token_urlsafe(40)
API_KEY = RawApiKey(unique("reporting"), "rk_" + secrets.token_urlsafe(24), ("service",))

ANON = unique("anon")
USERS = unique("users")
USERS_BY_IP = unique("users-ip")
SHARED_A = unique("shared-a")
SHARED_B = unique("shared-b")
SHARED_BUCKET = unique("bucket")
ALONE_A = unique("alone-a")
ALONE_B = unique("alone-b")
ROTATING = unique("rotating")
LAST_HOP = unique("last-hop")


def config(upstream_url: str, trusted_proxies: int) -> dict[str, object]:
    authed = ["jwt", "api_key"]
    return limited_config(
        upstream_url,
        [
            route(ANON, rate_limit=["3/minute"]),
            route(ROTATING, rate_limit=["3/minute"]),
            route(LAST_HOP, rate_limit=["3/minute"]),
            route(USERS, auth=authed, rate_limit=["2/minute"]),
            route(USERS_BY_IP, auth=authed, rate_limit=["2/minute"], key="ip"),
            route(SHARED_A, rate_limit=["3/minute"], bucket=SHARED_BUCKET),
            route(SHARED_B, rate_limit=["3/minute"], bucket=SHARED_BUCKET),
            route(ALONE_A, rate_limit=["3/minute"]),
            route(ALONE_B, rate_limit=["3/minute"]),
        ],
        rate_limits={"storage": SHARED_REDIS_URL, "default": [], "auth_failures": []},
        trusted_proxies=trusted_proxies,
        auth=hs256_auth(SECRET, API_KEY, roles_claim="role"),
    )


@pytest.fixture(scope="module")
def direct(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[Gateway]:
    """trusted_proxies: 0 — the peer address is the client."""
    gateway = start_limited_gateway(
        tmp_path_factory.mktemp("rl-direct"), config(upstream.url, 0), workers=2, threads=4
    )
    try:
        yield gateway
    finally:
        gateway.server.stop()


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[Gateway]:
    """trusted_proxies: 1 — the last X-Forwarded-For hop is the client."""
    gateway = start_limited_gateway(
        tmp_path_factory.mktemp("rl-proxied"), config(upstream.url, 1), workers=2, threads=4
    )
    try:
        yield gateway
    finally:
        gateway.server.stop()


def statuses(
    gateway: Gateway, path: str, headers_list: Sequence[Sequence[tuple[str, str]]]
) -> list[int]:
    return [gateway.get(path, headers).status for headers in headers_list]


def assert_refused(gateway: Gateway, path: str, headers: Sequence[tuple[str, str]] = ()) -> None:
    reply = gateway.get(path, headers)
    assert_problem(reply, 429, "rate_limited", path)
    assert (reply.header("Retry-After") or "").isdigit(), reply.describe()


def xff(*hops: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", ", ".join(hops))]


def fresh_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


def test_anonymous_callers_are_counted_by_peer_address(direct: Gateway) -> None:
    path = f"/{ANON}/x"
    assert statuses(direct, path, [[], [], []]) == [200, 200, 200]
    assert_refused(direct, path)
    assert counter_keys(SHARED_REDIS_URL, ANON) == {"ip:127.0.0.1"}


def test_rotating_x_forwarded_for_buys_nothing_without_trusted_proxies(direct: Gateway) -> None:
    path = f"/{ROTATING}/x"
    rotating = [xff(fresh_ip()) for _ in range(3)]
    assert statuses(direct, path, rotating) == [200, 200, 200]
    assert_refused(direct, path, xff(fresh_ip()))
    assert_refused(direct, path, xff(fresh_ip(), fresh_ip()))
    assert counter_keys(SHARED_REDIS_URL, ROTATING) == {"ip:127.0.0.1"}


def test_with_one_trusted_proxy_the_last_hop_is_the_key(proxied: Gateway) -> None:
    path = f"/{LAST_HOP}/x"
    first, second = fresh_ip(), fresh_ip()
    # The client may write anything to the left of what our proxy appended.
    forged = [xff(fresh_ip(), first), xff(fresh_ip(), fresh_ip(), first), xff("garbage", first)]
    assert statuses(proxied, path, forged) == [200, 200, 200]
    assert_refused(proxied, path, xff(fresh_ip(), first))
    assert_refused(proxied, path, xff(first))
    # Another believed address has a budget of its own.
    assert statuses(proxied, path, [xff(second)] * 3) == [200, 200, 200]
    assert_refused(proxied, path, xff(second))
    assert counter_keys(SHARED_REDIS_URL, LAST_HOP) == {f"ip:{first}", f"ip:{second}"}


def test_authenticated_callers_are_counted_by_identity(direct: Gateway) -> None:
    path = f"/{USERS}/x"
    alice, bob = unique("alice"), unique("bob")
    as_alice = [bearer(hs256_token(SECRET, alice, roles=["member"]))]
    as_bob = [bearer(hs256_token(SECRET, bob, roles=["member"]))]
    as_key = [("X-API-Key", API_KEY.header_value)]
    assert statuses(direct, path, [as_alice, as_alice]) == [200, 200]
    assert_refused(direct, path, as_alice)
    # Same address, other identities: budgets of their own.
    assert statuses(direct, path, [as_bob, as_bob]) == [200, 200]
    assert_refused(direct, path, as_bob)
    assert statuses(direct, path, [as_key, as_key]) == [200, 200]
    assert_refused(direct, path, as_key)
    assert counter_keys(SHARED_REDIS_URL, USERS) == {
        f"user:{alice}",
        f"user:{bob}",
        f"key:{API_KEY.id}",
    }


def test_rate_limit_key_ip_counts_by_address_even_when_authenticated(direct: Gateway) -> None:
    path = f"/{USERS_BY_IP}/x"
    alice, bob = (
        bearer(hs256_token(SECRET, unique("alice"), roles=["member"])),
        bearer(hs256_token(SECRET, unique("bob"), roles=["member"])),
    )
    assert statuses(direct, path, [[alice], [bob]]) == [200, 200]
    assert_refused(direct, path, [bearer(hs256_token(SECRET, unique("carol"), roles=["member"]))])
    assert_refused(direct, path, [("X-API-Key", API_KEY.header_value)])
    assert counter_keys(SHARED_REDIS_URL, USERS_BY_IP) == {"ip:127.0.0.1"}


def test_routes_naming_one_bucket_share_its_budget(direct: Gateway) -> None:
    a, b = f"/{SHARED_A}/x", f"/{SHARED_B}/y"
    assert [direct.get(p).status for p in (a, b, a)] == [200, 200, 200]
    assert_refused(direct, b)
    assert_refused(direct, a)
    assert counter_keys(SHARED_REDIS_URL, SHARED_BUCKET) == {"ip:127.0.0.1"}
    assert counter_keys(SHARED_REDIS_URL, SHARED_A) == set()


def test_routes_without_a_bucket_count_alone(direct: Gateway) -> None:
    a, b = f"/{ALONE_A}/x", f"/{ALONE_B}/y"
    assert [direct.get(a).status for _ in range(3)] == [200, 200, 200]
    assert_refused(direct, a)
    assert [direct.get(b).status for _ in range(3)] == [200, 200, 200]
    assert_refused(direct, b)
