"""Callers who do get through: the identity the upstream is told, and only that.

A valid JWT (from each key source) or API key reaches the upstream with the gateway's
own X-User-Id / X-User-Roles / X-Tenant-Id / X-Auth-Method / X-Consumer-Id; whatever
a client sends under those names (or look-alikes) never arrives; the API key itself
is never forwarded; a missing role is a 403 that forwards nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from .jwt_support import (
    API_KEY_HEADER,
    DROP,
    IDENTITY_NAMES,
    LEEWAY,
    AuthStack,
    RawApiKey,
    Target,
    assert_unauthorized,
    bearer,
)
from .support import Reply, assert_problem
from .upstream import MisbehavingUpstream, Received

pytestmark = pytest.mark.integration

ALL = ("hs256", "pem", "jwks")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[AuthStack]:
    stack = AuthStack(lambda name: tmp_path_factory.mktemp(name), upstream.url)
    try:
        yield stack
    finally:
        stack.close()


def _marker() -> str:
    return "i" + uuid.uuid4().hex[:16]


def _get(target: Target, route: str, marker: str, headers: list[tuple[str, str]]) -> Reply:
    return target.gateway.get(f"/{route}/probe?m={marker}", headers)


def _identity(received: Received) -> dict[str, list[str]]:
    """The identity headers as the upstream got them (underscore twins counted in)."""
    found: dict[str, list[str]] = {}
    for name, value in received.headers:
        normal = name.lower().replace("_", "-")
        if normal in IDENTITY_NAMES:
            found.setdefault(normal, []).append(value)
    return found


def _api_key(target: Target, name: str) -> RawApiKey:
    return target.api_keys[name]


# -- JWT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target_name", ALL)
@pytest.mark.parametrize("route", ["jwt", "jwt-admin", "any", "any-admin"])
def test_valid_token_reaches_the_upstream_as_identity_headers(
    stack: AuthStack, upstream: MisbehavingUpstream, target_name: str, route: str
) -> None:
    target = stack.target(target_name)
    claims = target.claims(roles=["admin", "member"], tenant_id="tenant-42")
    token = target.mint(claims)
    # Twice: the second answer may come from the verified-token cache; same identity.
    for _ in range(2):
        marker = _marker()
        reply = _get(target, route, marker, [bearer(token)])
        assert reply.status == 200, reply.describe()
        assert _identity(upstream.only(marker)) == {
            "x-user-id": [claims["sub"]],
            "x-user-roles": ["admin,member"],
            "x-tenant-id": ["tenant-42"],
            "x-auth-method": ["jwt"],
        }


@pytest.mark.parametrize("target_name", ALL)
def test_roles_claim_may_be_a_single_string(
    stack: AuthStack, upstream: MisbehavingUpstream, target_name: str
) -> None:
    target = stack.target(target_name)
    token = target.mint(target.claims(roles="admin"))
    marker = _marker()
    reply = _get(target, "jwt-admin", marker, [bearer(token)])
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-User-Roles") == ["admin"]


def test_dotted_roles_claim_is_read_at_its_path_only(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    # This gateway's roles_claim is realm.roles: a top-level role claim grants nothing.
    target = stack.target("hs256")
    assert target.roles_claim == "realm.roles"
    nested = target.claims(roles=["member", "admin"])
    assert nested["realm"] == {"roles": ["member", "admin"]}
    marker = _marker()
    reply = _get(target, "jwt-admin", marker, [bearer(target.mint(nested))])
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-User-Roles") == ["member,admin"]

    flat = target.claims(roles=["member"], role="admin")
    flat["roles"] = ["admin"]
    flat["realm"]["role"] = "admin"
    marker = _marker()
    reply = _get(target, "jwt-admin", marker, [bearer(target.mint(flat))])
    assert_problem(reply, 403, "forbidden", "/jwt-admin/probe")
    assert upstream.received(marker) == []


def test_plain_roles_claim_ignores_nested_look_alikes(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    target = stack.target("pem")
    claims = target.claims(roles=None, realm={"roles": ["admin"]})
    marker = _marker()
    reply = _get(target, "jwt-admin", marker, [bearer(target.mint(claims))])
    assert_problem(reply, 403, "forbidden", "/jwt-admin/probe")
    assert upstream.received(marker) == []


@pytest.mark.parametrize("target_name", ["hs256", "pem"])
def test_token_without_roles_is_authenticated_but_holds_no_role(
    stack: AuthStack, upstream: MisbehavingUpstream, target_name: str
) -> None:
    target = stack.target(target_name)
    token = target.mint(target.claims(roles=None))
    marker = _marker()
    reply = _get(target, "jwt", marker, [bearer(token)])
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-User-Roles") in ([], [""])
    marker = _marker()
    reply = _get(target, "jwt-admin", marker, [bearer(token)])
    assert_problem(reply, 403, "forbidden", "/jwt-admin/probe")
    assert upstream.received(marker) == []


def test_numeric_tenant_id_is_sent_as_text_and_absent_tenant_is_not_sent(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, "jwt", marker, [bearer(target.mint(target.claims(tenant_id=42)))])
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-Tenant-Id") == ["42"]
    marker = _marker()
    reply = _get(target, "jwt", marker, [bearer(target.mint(target.claims(tenant_id=DROP)))])
    assert reply.status == 200, reply.describe()
    assert "x-tenant-id" not in _identity(upstream.only(marker))


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": -(LEEWAY // 2)},
        {"nbf": LEEWAY // 2},
        {"iat": LEEWAY // 2},
    ],
    ids=["exp_just_past_within_leeway", "nbf_just_ahead", "iat_just_ahead"],
)
def test_clock_skew_within_leeway_is_tolerated(
    stack: AuthStack, upstream: MisbehavingUpstream, claims: dict[str, int]
) -> None:
    target = stack.target("pem")
    now = int(time.time())
    token = target.mint(target.claims(**{k: now + v for k, v in claims.items()}))
    marker = _marker()
    reply = _get(target, "jwt", marker, [bearer(token)])
    assert reply.status == 200, reply.describe()
    upstream.only(marker)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt"])
def test_access_token_media_types_are_accepted(
    stack: AuthStack, upstream: MisbehavingUpstream, typ: str
) -> None:
    target = stack.target("jwks")
    marker = _marker()
    reply = _get(target, "jwt", marker, [bearer(target.mint(headers={"typ": typ}))])
    assert reply.status == 200, reply.describe()
    upstream.only(marker)


# -- roles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles",
    [["Admin"], ["ADMIN"], ["administrator"], ["adm"], ["member"], []],
    ids=["Admin", "ADMIN", "longer", "prefix", "other", "none"],
)
@pytest.mark.parametrize("route", ["jwt-admin", "any-admin"])
def test_role_match_is_exact_and_case_sensitive(
    stack: AuthStack, upstream: MisbehavingUpstream, roles: list[str], route: str
) -> None:
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, route, marker, [bearer(target.mint(target.claims(roles=roles)))])
    body = assert_problem(reply, 403, "forbidden", f"/{route}/probe")
    assert "admin" not in body["detail"].lower()  # the needed roles are not told
    assert upstream.received(marker) == []


@pytest.mark.parametrize("roles", [["admin "], [" admin"]], ids=["trailing_space", "leading_space"])
@pytest.mark.parametrize("route", ["jwt-admin", "any-admin"])
def test_a_role_with_whitespace_refuses_the_token(
    stack: AuthStack, upstream: MisbehavingUpstream, roles: list[str], route: str
) -> None:
    # Never trimmed into admin: the claim is unusable, and the token with it.
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, route, marker, [bearer(target.mint(target.claims(roles=roles)))])
    assert_unauthorized(reply, f"/{route}/probe", token_sent=True)
    assert upstream.received(marker) == []


# -- API keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "key_name"),
    [
        ("key", "reporting"),
        ("key-service", "reporting"),
        ("any", "bare"),
        ("any-admin", "ops"),
        ("key", "intl"),
    ],
)
def test_api_key_reaches_the_upstream_as_consumer_and_is_not_forwarded(
    stack: AuthStack, upstream: MisbehavingUpstream, route: str, key_name: str
) -> None:
    target = stack.target("pem")
    key = _api_key(target, key_name)
    marker = _marker()
    reply = _get(target, route, marker, [(API_KEY_HEADER, key.header_value)])
    assert reply.status == 200, reply.describe()
    received = upstream.only(marker)
    expected = {
        "x-consumer-id": [key.id],
        "x-auth-method": ["api_key"],
        "x-user-roles": [",".join(key.roles)],
    }
    identity = _identity(received)
    if not key.roles and identity.get("x-user-roles") is None:
        del expected["x-user-roles"]  # no roles: an absent header says the same
    assert identity == expected
    assert API_KEY_HEADER.lower() not in received.header_names
    assert key.header_value not in repr(received.headers)
    assert key.sha256 not in repr(received.headers)


def test_a_refused_token_does_not_block_a_valid_api_key(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    # auth: [jwt, api_key]: any one suffices.
    target = stack.target("pem")
    expired = target.mint(target.claims(exp=int(time.time()) - LEEWAY - 60))
    marker = _marker()
    headers = [bearer(expired), (API_KEY_HEADER, _api_key(target, "ops").raw)]
    reply = _get(target, "any-admin", marker, headers)
    assert reply.status == 200, reply.describe()
    assert _identity(upstream.only(marker))["x-auth-method"] == ["api_key"]


@pytest.mark.parametrize("valid", [True, False], ids=["valid_token", "expired_token"])
def test_an_api_key_only_route_ignores_bearer_tokens(
    stack: AuthStack, upstream: MisbehavingUpstream, valid: bool
) -> None:
    target = stack.target("pem")
    exp = int(time.time()) + (300 if valid else -LEEWAY - 60)
    marker = _marker()
    reply = _get(target, "key", marker, [bearer(target.mint(target.claims(exp=exp)))])
    assert_unauthorized(reply, "/key/probe", token_sent=False)
    assert upstream.received(marker) == []


@pytest.mark.parametrize("route", ["open", "jwt"])
def test_api_key_is_not_forwarded_on_routes_that_do_not_take_it(
    stack: AuthStack, upstream: MisbehavingUpstream, route: str
) -> None:
    target = stack.target("pem")
    key = _api_key(target, "ops")
    marker = _marker()
    headers = [(API_KEY_HEADER, key.raw), bearer(target.mint())]
    reply = _get(target, route, marker, headers)
    assert reply.status == 200, reply.describe()
    received = upstream.only(marker)
    assert API_KEY_HEADER.lower() not in received.header_names
    assert key.raw not in repr(received.headers)
    assert "x-consumer-id" not in _identity(received)


def test_api_key_alone_does_not_open_a_jwt_route(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    # This route takes only JWTs: a valid key is refused unread, exactly as a wrong one,
    # so the answer does not tell that the key exists.
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, "jwt", marker, [(API_KEY_HEADER, _api_key(target, "ops").raw)])
    body = assert_unauthorized(reply, "/jwt/probe", token_sent=False)
    assert body["detail"] == "Credentials are missing or invalid."
    assert upstream.received(marker) == []


def test_an_unknown_api_key_on_a_jwt_route_is_401(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, "jwt", marker, [(API_KEY_HEADER, "not-a-key-at-all")])
    assert_unauthorized(reply, "/jwt/probe", token_sent=False)
    assert upstream.received(marker) == []


@pytest.mark.parametrize(
    ("route", "key_name"),
    [("key-service", "ops"), ("key-service", "bare"), ("any-admin", "reporting")],
)
def test_api_key_without_the_route_role_is_forbidden(
    stack: AuthStack, upstream: MisbehavingUpstream, route: str, key_name: str
) -> None:
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, route, marker, [(API_KEY_HEADER, _api_key(target, key_name).raw)])
    assert_problem(reply, 403, "forbidden", f"/{route}/probe")
    assert upstream.received(marker) == []


_VOLATILE = {"x-request-id", "date"}


def _shape(reply: Reply) -> tuple[int, list[tuple[str, str]], dict[str, object]]:
    """What a prober could compare: all but the request id and the date."""
    headers = sorted((n.lower(), v) for n, v in reply.headers if n.lower() not in _VOLATILE)
    body = json.loads(reply.body)
    body.pop("request_id", None)
    return reply.status, headers, body


@pytest.mark.parametrize("route", ["key", "key-service", "any"])
def test_bad_and_missing_api_keys_are_indistinguishable(
    stack: AuthStack, upstream: MisbehavingUpstream, route: str
) -> None:
    target = stack.target("pem")
    good = _api_key(target, "reporting")
    attempts: dict[str, list[tuple[str, str]]] = {
        "missing": [],
        "wrong": [(API_KEY_HEADER, "rk_" + uuid.uuid4().hex)],
        "digest_of_a_real_key": [(API_KEY_HEADER, good.sha256)],
        "real_key_upper_cased": [(API_KEY_HEADER, good.raw.upper())],
        "real_key_with_suffix": [(API_KEY_HEADER, good.raw + "x")],
        "too_long": [(API_KEY_HEADER, "k" * 600)],
        "other_header": [("X-Api-Token", good.raw)],
    }
    shapes = {}
    for name, headers in attempts.items():
        marker = _marker()
        reply = _get(target, route, marker, headers)
        assert_unauthorized(reply, f"/{route}/probe", token_sent=False)
        assert upstream.received(marker) == []
        shapes[name] = _shape(reply)
    missing = shapes.pop("missing")
    for name, shape in shapes.items():
        assert shape == missing, name


# -- identity headers sent by clients ------------------------------------------------------

FORGED = [
    ("X-User-Id", "forged-user"),
    ("X-User-Roles", "admin,forged-role"),
    ("X-Tenant-Id", "forged-tenant"),
    ("X-Auth-Method", "forged-method"),
    ("X-Consumer-Id", "forged-consumer"),
    ("x-user-id", "forged-lower"),
    ("X-USER-ROLES", "forged-upper"),
    ("X_User_Id", "forged-underscore-user"),
    ("X_User_Roles", "forged-underscore-roles"),
    ("X_Tenant_Id", "forged-underscore-tenant"),
    ("X_Auth_Method", "forged-underscore-method"),
    ("X_Consumer_Id", "forged-underscore-consumer"),
]
NAMED_IN_CONNECTION = [
    ("Connection", "X-User-Id, X-User-Roles, X-Tenant-Id, X-Auth-Method, X-Consumer-Id"),
    ("Connection", "X_User_Id, keep-alive"),
]


def _credentials(target: Target, route: str) -> tuple[list[tuple[str, str]], dict[str, list]]:
    """Credentials for the route, and the identity the upstream must get for them."""
    if route == "open":
        return [], {}
    if route.startswith("key"):
        key = _api_key(target, "reporting")
        return [(API_KEY_HEADER, key.raw)], {
            "x-consumer-id": ["reporting"],
            "x-auth-method": ["api_key"],
            "x-user-roles": ["service"],
        }
    claims = target.claims(roles=["member"], tenant_id="tenant-real")
    return [bearer(target.mint(claims))], {
        "x-user-id": [claims["sub"]],
        "x-user-roles": ["member"],
        "x-tenant-id": ["tenant-real"],
        "x-auth-method": ["jwt"],
    }


@pytest.mark.parametrize("connection", [False, True], ids=["plain", "named_in_connection"])
@pytest.mark.parametrize("route", ["open", "jwt", "key", "any"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_client_identity_headers_never_reach_the_upstream(
    stack: AuthStack,
    upstream: MisbehavingUpstream,
    route: str,
    connection: bool,
    method: str,
) -> None:
    target = stack.target("jwks")
    credentials, expected = _credentials(target, route)
    headers = credentials + FORGED + (NAMED_IN_CONNECTION if connection else [])
    marker = _marker()
    body = b'{"x": 1}' if method == "POST" else None
    reply = target.gateway.request(method, f"/{route}/probe?m={marker}", headers, body)
    assert reply.status == 200, reply.describe()
    received = upstream.only(marker)
    assert _identity(received) == expected
    assert "forged" not in repr(received.headers), received.headers


@pytest.mark.parametrize("route", ["jwt", "key", "any-admin"])
def test_forged_identity_headers_authenticate_nobody(
    stack: AuthStack, upstream: MisbehavingUpstream, route: str
) -> None:
    target = stack.target("pem")
    marker = _marker()
    reply = _get(target, route, marker, FORGED + [("X-User-Roles", "admin")])
    assert_unauthorized(reply, f"/{route}/probe", token_sent=False)
    assert upstream.received(marker) == []
