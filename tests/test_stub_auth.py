"""Login, refresh and the JWKS of the users service, over HTTP."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from upstream_stub.app import StubSettings, create_users_app
from upstream_stub.tokens import generate_key

ISSUER = "http://127.0.0.1:8081"
DEMO = {
    "admin@example.com": ("admin-password", "admin"),
    "member@example.com": ("member-password", "member"),
    "guest@example.com": ("guest-password", "guest"),
}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def app(key: rsa.RSAPrivateKey) -> Flask:
    return create_users_app(StubSettings(seed_users=10, private_key=key))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def login(client: FlaskClient, email: str, password: str) -> Any:
    return client.post("/auth/login", json={"email": email, "password": password})


def verify(client: FlaskClient, token: str) -> dict[str, Any]:
    """Verifies as the gateway does: RS256, key picked by kid from the JWKS."""
    jwks = client.get("/.well-known/jwks.json").get_json()
    kid = jwt.get_unverified_header(token)["kid"]
    [entry] = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(entry),
        algorithms=["RS256"],
        audience="gateway",
        issuer=ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    return claims


@pytest.mark.parametrize("email", sorted(DEMO))
def test_demo_users_log_in_and_get_verifiable_tokens(client: FlaskClient, email: str) -> None:
    password, role = DEMO[email]
    response = login(client, email, password)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] in ("at+jwt", "JWT")
    claims = verify(client, body["access_token"])
    assert claims["role"] == role
    assert claims["tenant_id"] == "acme"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["sub"].startswith("usr_")
    me = client.get(f"/users/{claims['sub']}").get_json()
    assert me["email"] == email
    refresh_claims = jwt.decode(body["refresh_token"], options={"verify_signature": False})
    assert refresh_claims["token_use"] == "refresh"
    assert jwt.get_unverified_header(body["refresh_token"])["typ"] == "refresh+jwt"


def test_email_is_matched_case_insensitively(client: FlaskClient) -> None:
    assert login(client, " Admin@Example.com ", "admin-password").status_code == 200


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("admin@example.com", "wrong-password"),
        ("nobody@example.com", "admin-password"),
        ("admin@example.com", "member-password"),
    ],
)
def test_bad_credentials_are_one_and_the_same_401(
    client: FlaskClient, email: str, password: str
) -> None:
    response = login(client, email, password)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["code"] == "unauthorized"
    assert body["detail"] == "The email or password is wrong."
    assert "access_token" not in body


def test_generated_users_have_no_password(client: FlaskClient) -> None:
    some = client.get("/users?limit=1").get_json()["data"][0]
    assert some["email"] not in DEMO
    assert login(client, some["email"], "").status_code == 422
    assert login(client, some["email"], "password").status_code == 401


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["email", "password"]),
        ({"email": "admin@example.com"}, ["password"]),
        ({"email": 5, "password": ["x"]}, ["email", "password"]),
        ({"email": "a@b.c", "password": "p", "extra": 1}, ["extra"]),
    ],
)
def test_malformed_login_is_422_with_errors(
    client: FlaskClient, body: dict[str, Any], fields: list[str]
) -> None:
    response = client.post("/auth/login", json=body)
    assert response.status_code == 422
    problem = response.get_json(force=True)
    assert problem["code"] == "validation_failed"
    assert sorted(e["field"] for e in problem["errors"]) == sorted(fields)


def test_non_json_login_is_refused(client: FlaskClient) -> None:
    assert (
        client.post("/auth/login", data="{oops", content_type="application/json").status_code == 422
    )
    form = client.post(
        "/auth/login", data="email=a", content_type="application/x-www-form-urlencoded"
    )
    assert form.status_code == 415


def test_refresh_gives_a_new_pair_and_rotates(client: FlaskClient) -> None:
    first = login(client, "member@example.com", "member-password").get_json()
    response = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.get_json()
    assert second["token_type"] == "Bearer"
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert verify(client, second["access_token"])["role"] == "member"
    # The old refresh token was spent; the new one works once.
    again = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401
    assert again.get_json(force=True)["code"] == "unauthorized"
    third = client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert third.status_code == 200


def test_an_access_token_is_refused_as_a_refresh_token(client: FlaskClient) -> None:
    tokens = login(client, "admin@example.com", "admin-password").get_json()
    response = client.post("/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "invalid_token" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("body", [{}, {"refresh_token": 1}, {"refresh_token": ""}])
def test_malformed_refresh_is_422(client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/auth/refresh", json=body)
    assert response.status_code == 422
    assert response.get_json(force=True)["errors"][0]["field"] == "refresh_token"


def test_refresh_reflects_the_current_role_and_refuses_deleted_users(
    key: rsa.RSAPrivateKey,
) -> None:
    client = create_users_app(StubSettings(seed_users=0, private_key=key)).test_client()
    tokens = login(client, "guest@example.com", "guest-password").get_json()
    user_id = verify(client, tokens["access_token"])["sub"]
    assert client.patch(f"/users/{user_id}", json={"role": "member"}).status_code == 200
    refreshed = client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert verify(client, refreshed.get_json()["access_token"])["role"] == "member"
    assert client.delete(f"/users/{user_id}").status_code == 204
    gone = client.post(
        "/auth/refresh", json={"refresh_token": refreshed.get_json()["refresh_token"]}
    )
    assert gone.status_code == 401


def test_jwks_publishes_one_public_rsa_key(client: FlaskClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    [entry] = response.get_json()["keys"]
    assert entry["kty"] == "RSA" and entry["alg"] == "RS256" and entry["use"] == "sig"
    assert entry["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & entry.keys()


def test_issuer_audience_and_ttl_are_settings(key: rsa.RSAPrivateKey) -> None:
    app = create_users_app(
        StubSettings(
            seed_users=0, private_key=key, issuer="https://id.test", audience="api", token_ttl=30
        )
    )
    client = app.test_client()
    body = login(client, "admin@example.com", "admin-password").get_json()
    assert body["expires_in"] == 30
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == "https://id.test"
    assert claims["aud"] == "api"
    assert claims["exp"] - claims["iat"] == 30


def test_a_new_key_per_start_unless_one_is_given() -> None:
    first = create_users_app(StubSettings(seed_users=0)).test_client()
    second = create_users_app(StubSettings(seed_users=0)).test_client()
    kid = first.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    assert kid != second.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]


def test_created_users_with_a_password_can_log_in(client: FlaskClient) -> None:
    created = client.post(
        "/users",
        json={
            "email": "new.login@example.com",
            "name": "New",
            "password": "long-enough",
            "tenant_id": "acme",
        },
    )
    assert created.status_code == 201
    assert login(client, "new.login@example.com", "long-enough").status_code == 200
