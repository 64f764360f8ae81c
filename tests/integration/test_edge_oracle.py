"""No credential oracle: on a route that takes only JWTs, an API key is refused unread.

A real `gateway serve` with one worker (memory:// counters are then exact) holds the
SHA-256 of a real key. On a `jwt`-only route, that key and a wrong one get the same
401, byte for byte apart from the request id, the same `auth_failure` in the access
log, and both count as refused credentials for the brute-force guard. The gateway
trusts one proxy, so each test speaks from addresses of its own (X-Forwarded-For).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from .jwt_support import AUDIENCE, ISSUER, RawApiKey, assert_unauthorized, bearer
from .support import (
    Gateway,
    Reply,
    assert_problem,
    serving,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

SECRET = secrets.token_urlsafe(40)
API_KEY = RawApiKey("reporting", "sk_" + secrets.token_urlsafe(24), ("service",))
WRONG_KEY = "sk_" + secrets.token_urlsafe(24)
FAILURES_ALLOWED = 3
# Differ on every answer, whatever the credentials.
VOLATILE_HEADERS = {"x-request-id", "date"}


def _route(name: str, auth: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "path": f"/{name}/{{rest:path}}",
        "methods": ["GET"],
        "upstream": "backend",
        "upstream_path": f"/up/ok/{name}/{{rest:path}}",
        "auth": auth,
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[Gateway]:
    config = {
        "version": 1,
        "gateway": {"trusted_proxies": 1},
        "auth": {
            "jwt": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["HS256"],
                "secret": SECRET,
            },
            "api_keys": {
                "header": "X-API-Key",
                "keys": [{"id": API_KEY.id, "sha256": API_KEY.sha256, "roles": ["service"]}],
            },
        },
        "rate_limits": {
            "storage": "memory://",
            "default": [],
            "auth_failures": [f"{FAILURES_ALLOWED}/minute"],
        },
        "upstreams": {
            "backend": {"url": upstream.url, "connect_timeout": 1.0, "timeout": 5.0, "retries": 0}
        },
        "routes": [_route("jwt-only", ["jwt"]), _route("either", ["jwt", "api_key"])],
    }
    with serving(tmp_path_factory.mktemp("edge-oracle"), config, name="gateway-oracle") as gw:
        yield gw


def address() -> str:
    """A client address of this test's own: the guard counts per address."""
    return str(ipaddress.IPv6Address("2001:db8:7::") + uuid.uuid4().int % 2**64)


def valid_token() -> str:
    """A token never seen before: one this worker has verified would skip the guard."""
    now = int(time.time())
    sub = uuid.uuid4().hex
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def call(gateway: Gateway, ip: str, marker: str, *headers: tuple[str, str]) -> Reply:
    return gateway.get(f"/jwt-only/{marker}", [("X-Forwarded-For", ip), *headers])


def seen_by_client(reply: Reply) -> tuple[int, list[tuple[str, str]], dict[str, Any]]:
    body = reply.json()
    body.pop("request_id")
    headers = [(n.lower(), v) for n, v in reply.headers if n.lower() not in VOLATILE_HEADERS]
    return reply.status, sorted(headers), body


def access_entry(gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The access-log line of one request (written before the answer is sent)."""
    for line in gateway.server.log().splitlines():
        if request_id in line and line.startswith("{"):
            entry: dict[str, Any] = json.loads(line)
            if entry.get("request_id") == request_id:
                return entry
    raise AssertionError(f"no access-log line for {request_id}")


def test_a_valid_and_a_wrong_key_get_the_same_answer_on_a_jwt_only_route(
    gateway: Gateway, upstream: MisbehavingUpstream
) -> None:
    marker = uuid.uuid4().hex
    valid = call(gateway, address(), marker, ("X-API-Key", API_KEY.header_value))
    wrong = call(gateway, address(), marker, ("X-API-Key", WRONG_KEY))
    for reply in (valid, wrong):
        body = assert_unauthorized(reply, f"/jwt-only/{marker}", token_sent=False)
        assert body["detail"] == "Credentials are missing or invalid.", body
    assert seen_by_client(valid) == seen_by_client(wrong)
    assert upstream.received(marker) == []
    entries = [access_entry(gateway, r.header("X-Request-ID") or "") for r in (valid, wrong)]
    assert [e["status"] for e in entries] == [401, 401]
    assert entries[0]["auth_failure"] == entries[1]["auth_failure"] is not None
    # The same key still opens a route that takes keys: it is valid, and was not told.
    reply = gateway.get(f"/either/{marker}", [("X-API-Key", API_KEY.header_value)])
    assert reply.status == 200, reply.describe()


@pytest.mark.parametrize("key", [API_KEY.header_value, WRONG_KEY], ids=["valid-key", "wrong-key"])
def test_any_key_on_a_jwt_only_route_counts_toward_the_guard(
    gateway: Gateway, upstream: MisbehavingUpstream, key: str
) -> None:
    ip, marker = address(), uuid.uuid4().hex
    for _ in range(FAILURES_ALLOWED):
        reply = call(gateway, ip, marker, ("X-API-Key", key))
        assert_unauthorized(reply, f"/jwt-only/{marker}", token_sent=False)
    # Over the limit, the address waits, even with a valid token.
    blocked = call(gateway, ip, marker, bearer(valid_token()))
    assert_problem(blocked, 429, "rate_limited", f"/jwt-only/{marker}")
    assert upstream.received(marker) == []
    # Another address, which sent no key, is not blocked.
    reply = call(gateway, address(), marker, bearer(valid_token()))
    assert reply.status == 200, reply.describe()
