"""The users collection over HTTP: list, create, read, change, delete."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient

from upstream_stub.app import StubSettings, create_users_app
from upstream_stub.tokens import generate_key

PROBLEM = "application/problem+json"
NEW = {
    "email": "new.person@example.com",
    "name": "New Person",
    "role": "member",
    "tenant_id": "acme",
}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture
def client(key: rsa.RSAPrivateKey) -> FlaskClient:
    return create_users_app(StubSettings(seed_users=60, private_key=key)).test_client()


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json(force=True)
    assert {"type", "title", "status", "detail", "instance", "code"} <= body.keys()
    assert body["status"] == status
    return body


def test_list_is_paginated_newest_first(client: FlaskClient) -> None:
    body = client.get("/users?limit=10").get_json()
    assert len(body["data"]) == 10
    stamps = [user["created_at"] for user in body["data"]]
    assert stamps == sorted(stamps, reverse=True)
    assert body["next_cursor"]
    user = body["data"][0]
    assert set(user) == {"id", "email", "name", "role", "tenant_id", "created_at", "updated_at"}
    assert "password" not in str(body) and "scrypt" not in str(body)


def test_seed_holds_the_demo_users_and_the_generated_ones(client: FlaskClient) -> None:
    everyone = client.get("/users?limit=200").get_json()["data"]
    assert len(everyone) == 63
    emails = {user["email"]: user for user in everyone}
    for address, role in [
        ("admin@example.com", "admin"),
        ("member@example.com", "member"),
        ("guest@example.com", "guest"),
    ]:
        assert emails[address]["role"] == role
        assert emails[address]["tenant_id"]
    assert len({user["tenant_id"] for user in everyone}) >= 3


def test_create_answers_201_with_location(client: FlaskClient) -> None:
    response = client.post("/users", json=NEW)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"/users/{created['id']}"
    assert created["email"] == NEW["email"]
    assert client.get(response.headers["Location"]).get_json() == created
    newest = client.get("/users?limit=1").get_json()["data"][0]
    assert newest["id"] == created["id"]


def test_create_defaults_role_and_tenant_from_the_caller(client: FlaskClient) -> None:
    body = {"email": "defaults@example.com", "name": "D"}
    response = client.post("/users", json=body, headers={"X-Tenant-Id": "globex"})
    assert response.status_code == 201
    assert response.get_json()["role"] == "member"
    assert response.get_json()["tenant_id"] == "globex"
    nulls = {"email": "nulls@example.com", "name": "N", "role": None, "tenant_id": None}
    response = client.post("/users", json=nulls, headers={"X-Tenant-Id": "hooli"})
    assert response.status_code == 201
    assert response.get_json()["tenant_id"] == "hooli"
    missing = client.post("/users", json={"email": "nt@example.com", "name": "N"})
    assert [e["field"] for e in problem(missing, 422)["errors"]] == ["tenant_id"]


def test_duplicate_email_is_409_whatever_the_case(client: FlaskClient) -> None:
    assert client.post("/users", json=NEW).status_code == 201
    shouting = {**NEW, "email": NEW["email"].upper()}
    body = problem(client.post("/users", json=shouting), 409)
    assert body["code"] == "duplicate_email"
    assert problem(client.post("/users", json={**NEW, "email": "admin@example.com"}), 409)


def test_invalid_create_is_422_listing_every_field(client: FlaskClient) -> None:
    bad = {
        "email": "not-an-email",
        "name": "",
        "role": "emperor",
        "tenant_id": "bad tenant!",
        "password": "short",
        "shoe_size": 44,
    }
    body = problem(client.post("/users", json=bad), 422)
    assert body["code"] == "validation_failed"
    assert all(set(error) == {"field", "message"} for error in body["errors"])
    fields = sorted(error["field"] for error in body["errors"])
    assert fields == ["email", "name", "password", "role", "shoe_size", "tenant_id"]


def test_missing_fields_are_reported(client: FlaskClient) -> None:
    body = problem(client.post("/users", json={"tenant_id": "acme"}), 422)
    assert sorted(error["field"] for error in body["errors"]) == ["email", "name"]


def test_get_unknown_is_a_404_problem(client: FlaskClient) -> None:
    body = problem(client.get("/users/usr_000000000000"), 404)
    assert body["code"] == "not_found"
    assert body["instance"] == "/users/usr_000000000000"


def test_patch_changes_only_what_is_named(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    response = client.patch(f"/users/{user['id']}", json={"name": "Renamed", "role": "guest"})
    assert response.status_code == 200
    changed = response.get_json()
    assert changed["name"] == "Renamed" and changed["role"] == "guest"
    assert changed["email"] == user["email"]
    assert changed["created_at"] == user["created_at"]
    assert changed["updated_at"] >= user["updated_at"]
    assert client.get(f"/users/{user['id']}").get_json() == changed


def test_patch_email_to_a_taken_one_is_409_and_to_a_free_one_moves_it(
    client: FlaskClient,
) -> None:
    user = client.post("/users", json=NEW).get_json()
    problem(client.patch(f"/users/{user['id']}", json={"email": "member@example.com"}), 409)
    moved = client.patch(f"/users/{user['id']}", json={"email": "Moved@Example.com"})
    assert moved.get_json()["email"] == "moved@example.com"
    assert client.post("/users", json=NEW).status_code == 201  # the old email is free


def test_patch_validation_and_nulls(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    body = problem(
        client.patch(f"/users/{user['id']}", json={"name": None, "role": "x", "id": "y"}), 422
    )
    assert sorted(error["field"] for error in body["errors"]) == ["id", "name", "role"]


def test_patch_password_then_login(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    client.patch(f"/users/{user['id']}", json={"password": "a-new-password"})
    credentials = {"email": NEW["email"], "password": "a-new-password"}
    assert client.post("/auth/login", json=credentials).status_code == 200
    client.patch(f"/users/{user['id']}", json={"password": None})
    assert client.post("/auth/login", json=credentials).status_code == 401


def test_patch_unknown_is_404_even_with_a_bad_body(client: FlaskClient) -> None:
    problem(client.patch("/users/usr_nobody", json={"role": "x"}), 404)


def test_delete_is_204_then_404(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    response = client.delete(f"/users/{user['id']}")
    assert response.status_code == 204
    assert response.data == b""
    problem(client.get(f"/users/{user['id']}"), 404)
    problem(client.delete(f"/users/{user['id']}"), 404)
    assert client.post("/users", json=NEW).status_code == 201  # the email is free again


@pytest.mark.parametrize(
    ("method", "path"), [("put", "/users"), ("delete", "/users"), ("post", "/users/usr_1")]
)
def test_wrong_methods_are_405_problems(client: FlaskClient, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    body = problem(response, 405)
    assert body["code"] == "method_not_allowed"
    assert response.headers["Allow"]


def test_trailing_slash_is_served_not_redirected(client: FlaskClient) -> None:
    response = client.get("/users/?limit=1")
    assert response.status_code == 200
    assert len(response.get_json()["data"]) == 1
