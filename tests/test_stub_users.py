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


# --- tenant isolation -------------------------------------------------------------


def jwt_caller(
    tenant: str | None, roles: str = "admin", user: str = "usr_caller"
) -> dict[str, str]:
    headers = {"X-User-Id": user, "X-User-Roles": roles, "X-Auth-Method": "jwt"}
    return headers if tenant is None else {**headers, "X-Tenant-Id": tenant}


SERVICE = {"X-User-Roles": "service", "X-Auth-Method": "api_key", "X-Consumer-Id": "reporting"}


def all_users(
    client: FlaskClient, headers: dict[str, str], limit: int = 200
) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    target: str | None = f"/users?limit={limit}"
    while target is not None:
        response = client.get(target, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        users += body["data"]
        target = None
        if body["next_cursor"] is not None:
            target = f"/users?limit={limit}&cursor={body['next_cursor']}"
    return users


def other_tenants_user(client: FlaskClient, tenant: str = "acme") -> dict[str, Any]:
    return next(user for user in all_users(client, {}) if user["tenant_id"] != tenant)


@pytest.mark.parametrize("roles", ["admin", "member", "guest", "member,admin"])
def test_a_tenant_lists_only_its_own_users(client: FlaskClient, roles: str) -> None:
    everyone = all_users(client, {})
    assert len({user["tenant_id"] for user in everyone}) >= 2
    for tenant in ("acme", "globex"):
        listed = all_users(client, jwt_caller(tenant, roles), limit=4)
        assert listed, f"the seed has users in {tenant}"
        assert listed == [user for user in everyone if user["tenant_id"] == tenant]


@pytest.mark.parametrize("roles", ["admin", "member", "guest"])
def test_another_tenants_user_is_the_same_404_as_a_missing_one(
    client: FlaskClient, roles: str
) -> None:
    other = other_tenants_user(client)
    caller = jwt_caller("acme", roles)
    missing = problem(client.get("/users/usr_000000000000", headers=caller), 404)
    for response in (
        client.get(f"/users/{other['id']}", headers=caller),
        client.patch(f"/users/{other['id']}", json={"name": "Taken Over"}, headers=caller),
        client.patch(f"/users/{other['id']}", json={"role": "x"}, headers=caller),
        client.delete(f"/users/{other['id']}", headers=caller),
    ):
        body = problem(response, 404)
        assert body["code"] == missing["code"] == "not_found"
        assert body["title"] == missing["title"]
        assert body["detail"] == missing["detail"].replace("usr_000000000000", other["id"])
    assert client.get(f"/users/{other['id']}").get_json() == other  # unchanged, still there


def test_new_users_join_the_callers_tenant(client: FlaskClient) -> None:
    admin = jwt_caller("globex")
    created = client.post("/users", json={"email": "g@example.com", "name": "G"}, headers=admin)
    assert created.status_code == 201 and created.get_json()["tenant_id"] == "globex"
    new_id = created.get_json()["id"]
    problem(client.get(f"/users/{new_id}", headers=jwt_caller("acme")), 404)
    assert new_id not in {user["id"] for user in all_users(client, jwt_caller("acme"))}
    assert new_id in {user["id"] for user in all_users(client, jwt_caller("globex", "member"))}

    elsewhere = client.post("/users", json={**NEW, "tenant_id": "acme"}, headers=admin)
    assert [e["field"] for e in problem(elsewhere, 422)["errors"]] == ["tenant_id"]
    assert NEW["email"] not in {user["email"] for user in all_users(client, {})}


def test_an_admin_manages_their_tenants_users_but_cannot_move_one_out(
    client: FlaskClient,
) -> None:
    admin = jwt_caller("acme")
    user = client.post("/users", json={**NEW, "tenant_id": "acme"}, headers=admin).get_json()
    assert client.get(f"/users/{user['id']}", headers=admin).get_json() == user
    moved = client.patch(f"/users/{user['id']}", json={"tenant_id": "globex"}, headers=admin)
    assert [e["field"] for e in problem(moved, 422)["errors"]] == ["tenant_id"]
    assert client.get(f"/users/{user['id']}").get_json()["tenant_id"] == "acme"
    same = {"tenant_id": "acme", "name": "Renamed"}
    changed = client.patch(f"/users/{user['id']}", json=same, headers=admin)
    assert changed.status_code == 200 and changed.get_json()["name"] == "Renamed"
    assert client.delete(f"/users/{user['id']}", headers=admin).status_code == 204


def test_a_direct_call_moves_a_user_and_the_listings_follow(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    moved = client.patch(f"/users/{user['id']}", json={"tenant_id": "globex"})
    assert moved.status_code == 200 and moved.get_json()["tenant_id"] == "globex"
    assert user["id"] not in {u["id"] for u in all_users(client, jwt_caller("acme"))}
    assert user["id"] in {u["id"] for u in all_users(client, jwt_caller("globex"))}
    problem(client.delete(f"/users/{user['id']}", headers=jwt_caller("acme")), 404)
    assert client.delete(f"/users/{user['id']}", headers=jwt_caller("globex")).status_code == 204


@pytest.mark.parametrize("roles", ["admin", "member", "admin,service"])
def test_a_token_without_a_tenant_reaches_no_user(client: FlaskClient, roles: str) -> None:
    caller = jwt_caller(None, roles)
    some = all_users(client, {})[0]
    assert all_users(client, caller) == []
    problem(client.get(f"/users/{some['id']}", headers=caller), 404)
    problem(client.patch(f"/users/{some['id']}", json={"name": "X"}, headers=caller), 404)
    problem(client.delete(f"/users/{some['id']}", headers=caller), 404)
    for body in (NEW, {"email": "x@example.com", "name": "X"}):
        created = client.post("/users", json=body, headers=caller)
        assert [e["field"] for e in problem(created, 422)["errors"]] == ["tenant_id"]
    assert client.get(f"/users/{some['id']}").get_json() == some


def test_the_service_key_reads_every_tenant_and_changes_nothing(client: FlaskClient) -> None:
    everyone = all_users(client, {})
    assert all_users(client, SERVICE, limit=7) == everyone
    other = other_tenants_user(client)
    assert client.get(f"/users/{other['id']}", headers=SERVICE).get_json() == other
    for response in (
        client.post("/users", json=NEW, headers=SERVICE),
        client.patch(f"/users/{other['id']}", json={"name": "X"}, headers=SERVICE),
        client.delete(f"/users/{other['id']}", headers=SERVICE),
        client.delete("/users/usr_000000000000", headers=SERVICE),
    ):
        assert problem(response, 403)["code"] == "forbidden"
    assert all_users(client, {}) == everyone


def test_a_users_cursor_works_only_for_the_tenant_that_got_it(client: FlaskClient) -> None:
    acme = jwt_caller("acme", "member")
    cursor = client.get("/users?limit=3", headers=acme).get_json()["next_cursor"]
    assert cursor
    assert client.get(f"/users?limit=3&cursor={cursor}", headers=acme).status_code == 200
    for headers in (jwt_caller("globex", "member"), SERVICE, {}):
        response = client.get(f"/users?limit=3&cursor={cursor}", headers=headers)
        assert problem(response, 400)["code"] == "invalid_cursor"


# --- conditional requests: ETag, 304, 412 ---------------------------------------------


def strong_etag(response: Any) -> str:
    etag: str = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2, etag
    return etag


def test_a_user_carries_a_strong_etag_that_changes_with_it(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    path = f"/users/{user['id']}"
    first = client.get(path)
    etag = strong_etag(first)
    assert first.headers["Cache-Control"] == "private, max-age=10"
    assert client.get(path).headers["ETag"] == etag, "the same representation, the same tag"
    changed = client.patch(path, json={"name": "Renamed"})
    assert changed.status_code == 200
    after = client.get(path)
    assert strong_etag(after) != etag
    # Even a change that does not show (a new password) moves updated_at, so the tag.
    assert client.patch(path, json={"password": "another-password"}).status_code == 200
    assert strong_etag(client.get(path)) != after.headers["ETag"]
    other = client.get("/users?limit=2").get_json()["data"][1]
    assert other["id"] != user["id"]
    assert strong_etag(client.get(f"/users/{other['id']}")) != strong_etag(client.get(path))


@pytest.mark.parametrize(
    "condition",
    [
        "{etag}",
        '"other", {etag}',
        '"a",{etag} , "b"',
        "*",
        "W/{etag}",  # If-None-Match compares weakly (RFC 9110 §13.1.2)
        '"other", W/{etag}',
    ],
)
def test_if_none_match_with_the_current_etag_is_304(client: FlaskClient, condition: str) -> None:
    user = client.get("/users?limit=1").get_json()["data"][0]
    path = f"/users/{user['id']}"
    etag = strong_etag(client.get(path))
    for send in (client.get, client.head):
        response = send(path, headers={"If-None-Match": condition.format(etag=etag)})
        assert response.status_code == 304
        assert response.data == b""
        assert response.headers["ETag"] == etag
        assert response.headers["Cache-Control"] == "private, max-age=10"
        assert "Content-Type" not in response.headers


@pytest.mark.parametrize("condition", ['"other"', 'W/"other", "more"', "{stale}"])
def test_if_none_match_with_another_etag_is_the_full_answer(
    client: FlaskClient, condition: str
) -> None:
    user = client.post("/users", json=NEW).get_json()
    path = f"/users/{user['id']}"
    stale = strong_etag(client.get(path))
    client.patch(path, json={"name": "Renamed"})
    current = client.get(path)
    sent = condition.format(stale=stale)
    response = client.get(path, headers={"If-None-Match": sent})
    assert response.status_code == 200
    assert response.get_json() == current.get_json()
    assert response.headers["ETag"] == current.headers["ETag"]


def test_patch_with_a_stale_if_match_is_412_and_changes_nothing(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    path = f"/users/{user['id']}"
    stale = strong_etag(client.get(path))
    assert client.patch(path, json={"name": "First Writer"}).status_code == 200
    before = client.get(path)
    for condition in (stale, '"made-up"', f"W/{before.headers['ETag']}", ""):
        response = client.patch(
            path,
            json={"name": "Lost Update", "role": "not-a-role"},  # 412 comes before 422
            headers={"If-Match": condition, "X-Request-ID": "req-412"},
        )
        body = problem(response, 412)
        assert body["code"] == "precondition_failed"
        assert body["instance"] == path and body["request_id"] == "req-412"
        assert body["type"] == "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.13"
        assert response.headers["Cache-Control"] == "no-store"
    after = client.get(path)
    assert after.get_json() == before.get_json()
    assert after.headers["ETag"] == before.headers["ETag"]


def test_patch_with_the_current_etag_succeeds_and_gets_a_new_one(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    path = f"/users/{user['id']}"
    for condition in ("{etag}", '"other", {etag}', "*"):
        etag = strong_etag(client.get(path))
        response = client.patch(
            path,
            json={"name": f"Via {condition}"},
            headers={"If-Match": condition.format(etag=etag)},
        )
        assert response.status_code == 200
        assert response.get_json()["name"] == f"Via {condition}"
        assert strong_etag(client.get(path)) != etag
    # The tag the 200 describes is the one a GET now gives, and it works as If-Match.
    current = client.get(path)
    again = client.patch(
        path, json={"role": "guest"}, headers={"If-Match": current.headers["ETag"]}
    )
    assert again.status_code == 200


def test_if_none_match_on_a_patch_is_412_when_it_matches(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    path = f"/users/{user['id']}"
    body = problem(client.patch(path, json={"name": "X"}, headers={"If-None-Match": "*"}), 412)
    assert body["code"] == "precondition_failed"
    assert client.get(path).get_json()["name"] == NEW["name"]


def test_delete_with_a_stale_if_match_is_412_and_keeps_the_user(client: FlaskClient) -> None:
    user = client.post("/users", json=NEW).get_json()
    path = f"/users/{user['id']}"
    stale = strong_etag(client.get(path))
    client.patch(path, json={"name": "Changed Meanwhile"})
    before = client.get(path)
    response = client.delete(path, headers={"If-Match": stale})
    assert problem(response, 412)["code"] == "precondition_failed"
    assert client.get(path).get_json() == before.get_json()
    assert client.delete(path, headers={"If-Match": before.headers["ETag"]}).status_code == 204
    problem(client.get(path), 404)


def test_a_condition_never_reveals_another_tenants_user(client: FlaskClient) -> None:
    other = other_tenants_user(client)
    path = f"/users/{other['id']}"
    caller = jwt_caller("acme")
    for condition in ("*", strong_etag(client.get(path))):
        for response in (
            client.get(path, headers={**caller, "If-None-Match": condition}),
            client.patch(path, json={"name": "X"}, headers={**caller, "If-Match": '"no"'}),
            client.delete(path, headers={**caller, "If-Match": '"no"'}),
        ):
            assert problem(response, 404)["code"] == "not_found"
    assert client.get(path).get_json() == other
