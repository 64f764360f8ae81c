"""Authentication and roles in the request path: 401/403, identity headers, order.

In-process through create_app(...).test_client(), with the upstream mocked by respx
so every test can say exactly what reached it, or that nothing did.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import jwt
import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient
from jwt.utils import base64url_encode

from tests.app_support import AppFactory, ClientFactory
from tests.tokens import DROP, mint_token

UPSTREAM = "http://users.internal"
ISSUER = "http://issuer.example"
SECRET = "0123456789abcdef0123456789abcdef"
SERVICE_KEY = "demo-service-key"
ADMIN_KEY = "admin-tool-key"
CHALLENGE = 'Bearer realm="gateway"'
INVALID_TOKEN_CHALLENGE = 'Bearer realm="gateway", error="invalid_token"'
IDENTITY_HEADERS = ("X-User-Id", "X-User-Roles", "X-Tenant-Id", "X-Auth-Method", "X-Consumer-Id")
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "code", "request_id"}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CONFIG = f"""\
version: 1
gateway:
  max_body_bytes: 100
auth:
  jwt:
    issuer: {ISSUER}
    audience: gateway
    algorithms: [HS256]
    secret: "{SECRET}"
    leeway: 0
    roles_claim: realm.roles
  api_keys:
    header: X-API-Key
    keys:
      - {{id: reporting, sha256: {sha256(SERVICE_KEY)}, roles: [service]}}
      - {{id: admin-tool, sha256: {sha256(ADMIN_KEY)}, roles: [admin]}}
upstreams:
  users:
    url: {UPSTREAM}
    retries: 0
routes:
  - name: public
    path: /public
    methods: [GET]
    upstream: users
    auth: public
  - name: members
    path: /members
    methods: [GET, POST]
    upstream: users
    auth: [jwt]
  - name: admin
    path: /admin
    methods: [GET, DELETE]
    upstream: users
    auth: [jwt, api_key]
    roles: [admin]
  - name: service
    path: /service
    methods: [GET]
    upstream: users
    auth: [api_key]
    roles: [service]
"""


@pytest.fixture
def app(gateway_app: AppFactory) -> Flask:
    return gateway_app(CONFIG)


def _echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"headers": dict(request.headers)})


@pytest.fixture
def upstream_base_url() -> str:
    return UPSTREAM


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route().mock(side_effect=_echo)
    return upstream


def token(**overrides: Any) -> str:
    return mint_token(
        SECRET,
        issuer=ISSUER,
        audience="gateway",
        subject="user-1",
        roles=["member"],
        roles_claim="realm.roles",
        **{"tenant_id": "acme", **overrides},
    )


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def roles(*names: str) -> dict[str, Any]:
    return {"realm": {"roles": list(names)}}


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(response.get_data())
    assert PROBLEM_MEMBERS <= set(body)
    assert body["status"] == status
    assert body["code"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def seen_upstream(upstream: respx.MockRouter) -> dict[str, str]:
    """The headers of the one request the upstream received, by lower-case name."""
    assert upstream.calls.call_count == 1, upstream.calls
    request = upstream.calls.last.request
    return {name.lower(): value for name, value in request.headers.items()}


# --- 401 -------------------------------------------------------------------------------------


def test_no_credentials_is_401_with_a_bearer_challenge_and_never_forwarded(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/members")
    body = problem(response, 401, "unauthorized")
    assert body["instance"] == "/members"
    assert response.headers.getlist("WWW-Authenticate") == [CHALLENGE]
    assert not upstream.calls


@pytest.mark.parametrize(
    ("sent", "detail"),
    [
        (token(exp=int(time.time()) - 60), "The access token has expired."),
        (token(nbf=int(time.time()) + 600), "The access token is not valid yet."),
        (
            jwt.encode({"sub": "x"}, "x" * 32 + "wrong-secret", "HS256"),
            "The access token is invalid.",
        ),
        (token(aud="other"), "The access token is invalid."),
        ("garbage", "The access token is invalid."),
        (token(typ="refresh"), "The token is not an access token."),
        ("a" * 9000, "The access token is too large."),
    ],
    ids=["expired", "not-yet-valid", "bad-signature", "audience", "garbage", "refresh", "huge"],
)
def test_refused_token_is_401_invalid_token(
    client: FlaskClient, upstream: respx.MockRouter, sent: str, detail: str
) -> None:
    response = client.get("/members", headers=bearer(sent))
    body = problem(response, 401, "unauthorized")
    assert body["detail"] == detail
    assert response.headers.getlist("WWW-Authenticate") == [INVALID_TOKEN_CHALLENGE]
    assert not upstream.calls


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer    "])
def test_bearer_scheme_with_an_empty_token_is_an_invalid_token(
    client: FlaskClient, upstream: respx.MockRouter, authorization: str
) -> None:
    # The client did send the Bearer scheme: its (empty) token is what was refused.
    response = client.get("/members", headers={"Authorization": authorization})
    problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert not upstream.calls


@pytest.mark.parametrize(
    "authorization",
    ["", "Basic dXNlcjpwYXNz", "Token abc", "Bearerabc.def.ghi"],
)
def test_authorization_without_a_bearer_token_is_401_without_error(
    client: FlaskClient, upstream: respx.MockRouter, authorization: str
) -> None:
    response = client.get("/members", headers={"Authorization": authorization})
    problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert not upstream.calls


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "  Bearer"])
def test_bearer_scheme_is_case_insensitive(
    client: FlaskClient, upstream: respx.MockRouter, scheme: str
) -> None:
    response = client.get("/members", headers={"Authorization": f"{scheme} {token()}"})
    assert response.status_code == 200


def test_wrong_api_key_fails_exactly_like_a_missing_one(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    missing = client.get("/service")
    wrong = client.get("/service", headers={"X-API-Key": "not-a-key"})
    for response in (missing, wrong):
        problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert json.loads(missing.get_data())["detail"] == json.loads(wrong.get_data())["detail"]
    assert not upstream.calls


def _comparable(response: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """What a client sees of an answer, less what differs on every request."""
    body = json.loads(response.get_data())
    body.pop("request_id")
    headers = {k: v for k, v in response.headers.items() if k != "X-Request-ID"}
    return response.status_code, headers, body


@pytest.mark.parametrize("key", [SERVICE_KEY, ADMIN_KEY])
def test_any_api_key_on_a_jwt_only_route_gets_the_answer_a_wrong_credential_gets(
    client: FlaskClient, upstream: respx.MockRouter, key: str
) -> None:
    # Whether the key exists must not show (docs/configuration.md, API keys): a valid
    # key, an unknown one and none at all read alike on a route that takes no keys.
    sent = client.get("/members", headers={"X-API-Key": key})
    problem(sent, 401, "unauthorized")
    assert sent.headers.getlist("WWW-Authenticate") == [CHALLENGE]
    assert _comparable(sent) == _comparable(client.get("/members", headers={"X-API-Key": "x"}))
    assert _comparable(sent) == _comparable(client.get("/members"))
    assert not upstream.calls


def test_a_key_on_a_jwt_only_route_is_never_looked_up(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    keyring = app.gateway.keyring  # type: ignore[attr-defined]
    real = keyring.lookup

    def lookup(presented: str) -> Any:
        looked_up.append(presented)
        return real(presented)

    monkeypatch.setattr(keyring, "lookup", lookup)
    problem(client.get("/members", headers={"X-API-Key": SERVICE_KEY}), 401, "unauthorized")
    assert looked_up == []
    # The same keyring still serves the routes that take keys.
    assert client.get("/service", headers={"X-API-Key": SERVICE_KEY}).status_code == 200
    assert looked_up == [SERVICE_KEY]


GUARDED_CONFIG = CONFIG + "rate_limits:\n  auth_failures: [2/minute]\n"


@pytest.mark.parametrize("key", [SERVICE_KEY, "not-a-key"], ids=["valid-key", "wrong-key"])
def test_any_api_key_on_a_jwt_only_route_counts_toward_the_guard(
    gateway_client: ClientFactory, upstream: respx.MockRouter, key: str
) -> None:
    client = gateway_client(GUARDED_CONFIG)
    for _ in range(2):
        problem(client.get("/members", headers={"X-API-Key": key}), 401, "unauthorized")
    # Over auth_failures, even a valid token from that address waits.
    problem(client.get("/members", headers=bearer(token())), 429, "rate_limited")
    assert not upstream.calls
    # Only refused credentials count: an address that sent none is not blocked.
    other = {"REMOTE_ADDR": "192.0.2.9"}
    for _ in range(3):
        problem(client.get("/members", environ_base=other), 401, "unauthorized")
    assert client.get("/members", headers=bearer(token()), environ_base=other).status_code == 200


def test_valid_and_wrong_keys_on_a_jwt_only_route_share_one_failure_reason(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    registry = app.gateway.metrics.registry  # type: ignore[attr-defined]

    def failures(reason: str) -> float:
        found = registry.get_sample_value("gateway_auth_failures_total", {"reason": reason})
        return 0.0 if found is None else float(found)

    client.get("/members", headers={"X-API-Key": SERVICE_KEY})
    client.get("/members", headers={"X-API-Key": "not-a-key"})
    assert failures("api_key_not_accepted") == 2
    assert failures("missing_or_invalid") == 0


def test_route_without_jwt_ignores_a_bearer_token(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/service", headers=bearer(token(**roles("service"))))
    problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert not upstream.calls


def test_token_with_a_role_holding_a_comma_is_refused(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/admin", headers=bearer(token(**roles("member,admin"))))
    problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert not upstream.calls


@pytest.mark.parametrize(
    "claims",
    [{"sub": "user\r\nX-Admin: 1"}, {"tenant_id": "a\x00b"}, {"sub": "jos\u00e9"}],
    ids=["crlf-sub", "nul-tenant", "non-ascii-sub"],
)
def test_claims_that_cannot_be_forwarded_are_401_not_a_server_error(
    client: FlaskClient, upstream: respx.MockRouter, claims: dict[str, Any]
) -> None:
    response = client.get("/members", headers=bearer(token(**claims)))
    problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert not upstream.calls


# --- what reaches the upstream ---------------------------------------------------------------


def test_jwt_identity_goes_upstream_in_the_gateways_headers(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get(
        "/members", headers=bearer(token(sub="user-7", tenant_id=42, **roles("member", "beta")))
    )
    assert response.status_code == 200
    seen = seen_upstream(upstream)
    assert seen["x-user-id"] == "user-7"
    assert seen["x-user-roles"] == "member,beta"
    assert seen["x-tenant-id"] == "42"
    assert seen["x-auth-method"] == "jwt"
    assert "x-consumer-id" not in seen


def test_api_key_identity_goes_upstream_and_the_key_does_not(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/service", headers={"X-API-Key": SERVICE_KEY})
    assert response.status_code == 200
    seen = seen_upstream(upstream)
    assert seen["x-consumer-id"] == "reporting"
    assert seen["x-auth-method"] == "api_key"
    assert seen["x-user-roles"] == "service"
    assert "x-user-id" not in seen
    assert "x-api-key" not in seen
    assert SERVICE_KEY not in json.dumps(list(seen.values()))


SPOOFED = [
    ("X-User-Id", "root"),
    ("X-User-Roles", "admin"),
    ("X-Tenant-Id", "other-tenant"),
    ("X-Auth-Method", "api_key"),
    ("X-Consumer-Id", "billing"),
    ("x-user-roles", "admin"),
]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/public", {}),
        ("/members", {"x-user-id": "user-1", "x-user-roles": "member", "x-auth-method": "jwt"}),
    ],
)
def test_client_sent_identity_headers_never_reach_the_upstream(
    client: FlaskClient, upstream: respx.MockRouter, path: str, expected: dict[str, str]
) -> None:
    headers = [*SPOOFED, ("Authorization", f"Bearer {token(tenant_id=DROP)}")]
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    seen = seen_upstream(upstream)
    assert {
        k: v for k, v in seen.items() if k.startswith(("x-user", "x-auth", "x-tenant", "x-cons"))
    } == expected
    raw = upstream.calls.last.request.headers
    for name in IDENTITY_HEADERS:
        assert len(raw.get_list(name)) == (1 if name.lower() in expected else 0), name


def test_jwt_wins_and_a_sent_api_key_is_still_not_forwarded(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get(
        "/admin", headers={**bearer(token(**roles("admin"))), "X-API-Key": SERVICE_KEY}
    )
    assert response.status_code == 200
    seen = seen_upstream(upstream)
    assert seen["x-auth-method"] == "jwt"
    assert "x-api-key" not in seen
    assert "x-consumer-id" not in seen


def test_any_one_method_suffices(client: FlaskClient, upstream: respx.MockRouter) -> None:
    # A refused token does not spoil a valid API key on a route that takes either.
    response = client.get("/admin", headers={**bearer("garbage"), "X-API-Key": ADMIN_KEY})
    assert response.status_code == 200
    assert seen_upstream(upstream)["x-consumer-id"] == "admin-tool"


# --- 403 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "held",
    [[], ["member"], ["Admin"], ["administrator"], ["adm"]],
)
def test_without_a_required_role_is_403_and_never_forwarded(
    client: FlaskClient, upstream: respx.MockRouter, held: list[str]
) -> None:
    response = client.delete("/admin", headers=bearer(token(**roles(*held))))
    body = problem(response, 403, "forbidden")
    assert body["instance"] == "/admin"
    assert "WWW-Authenticate" not in response.headers
    assert not upstream.calls


@pytest.mark.parametrize("held", [["admin "], [" admin"], ["member", "ad min"]])
def test_a_role_with_whitespace_is_an_invalid_token_not_a_near_miss(
    client: FlaskClient, upstream: respx.MockRouter, held: list[str]
) -> None:
    # Role names are compared exactly, and one that would match once trimmed is refused
    # with the token: no reader of X-User-Roles can make it admin.
    response = client.delete("/admin", headers=bearer(token(**roles(*held))))
    problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN_CHALLENGE
    assert not upstream.calls


def test_api_key_without_the_role_is_403(client: FlaskClient, upstream: respx.MockRouter) -> None:
    problem(client.get("/admin", headers={"X-API-Key": SERVICE_KEY}), 403, "forbidden")
    assert not upstream.calls


@pytest.mark.parametrize(
    "headers",
    [
        bearer(token(**roles("member", "admin"))),
        bearer(token(realm={"roles": "admin"})),
        {"X-API-Key": ADMIN_KEY},
    ],
    ids=["role-in-a-list", "role-as-a-string", "api-key"],
)
def test_any_one_required_role_suffices(
    client: FlaskClient, upstream: respx.MockRouter, headers: dict[str, str]
) -> None:
    assert client.delete("/admin", headers=headers).status_code == 200


def test_roles_claim_is_read_at_its_dotted_path(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    # `role` at the top is not the configured realm.roles: no role is held.
    response = client.get("/admin", headers=bearer(token(realm=DROP, role="admin")))
    problem(response, 403, "forbidden")


# --- order of checks -------------------------------------------------------------------------


def test_unknown_path_is_404_before_auth(client: FlaskClient) -> None:
    problem(client.get("/nowhere"), 404, "not_found")


def test_wrong_method_is_405_before_auth(client: FlaskClient) -> None:
    response = client.put("/admin")
    problem(response, 405, "method_not_allowed")
    assert "WWW-Authenticate" not in response.headers


def test_body_size_is_checked_before_auth(client: FlaskClient, upstream: respx.MockRouter) -> None:
    problem(client.post("/members", data=b"x" * 101), 413, "payload_too_large")
    assert not upstream.calls


def test_auth_is_checked_before_roles(client: FlaskClient) -> None:
    problem(client.get("/admin", headers=bearer("garbage")), 401, "unauthorized")


def test_public_route_needs_no_credentials(client: FlaskClient, upstream: respx.MockRouter) -> None:
    assert client.get("/public").status_code == 200
    assert "x-auth-method" not in seen_upstream(upstream)


# --- signing keys that cannot be had ---------------------------------------------------------

JWKS_CONFIG = f"""\
version: 1
auth:
  jwt:
    issuer: {ISSUER}
    audience: gateway
    algorithms: [RS256]
    jwks_url: {ISSUER}/jwks.json
    jwks_cooldown_seconds: 45
upstreams:
  users:
    url: {UPSTREAM}
routes:
  - name: members
    path: /members
    methods: [GET]
    upstream: users
    auth: [jwt]
"""


def test_unreachable_signing_keys_are_503_with_retry_after(gateway_client: ClientFactory) -> None:
    client = gateway_client(JWKS_CONFIG)
    header = base64url_encode(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
    payload = base64url_encode(json.dumps({"sub": "u"}).encode())
    unverifiable = f"{header.decode()}.{payload.decode()}.c2ln"
    with respx.mock(assert_all_called=False) as mock:
        keys = mock.get(f"{ISSUER}/jwks.json").mock(return_value=httpx.Response(500))
        users = mock.route(host="users.internal").mock(side_effect=_echo)
        response = client.get("/members", headers=bearer(unverifiable))
        body = problem(response, 503, "service_unavailable")
        assert response.headers["Retry-After"] == "45"
        assert "jwks" not in json.dumps(body).lower()
        assert keys.call_count == 1
        assert not users.calls
