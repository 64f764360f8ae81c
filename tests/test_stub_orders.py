"""Orders v1 and v2 over HTTP: shapes, ownership, tenant isolation, validation."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from upstream_stub import seed
from upstream_stub.app import StubSettings, create_orders_app

PEOPLE = seed.people(seed.DEFAULT_SEED, 30)
ADMIN_ID, MEMBER_ID, GUEST_ID = (person.id for person in PEOPLE[:3])
ADMIN = {
    "X-User-Id": ADMIN_ID,
    "X-User-Roles": "admin",
    "X-Tenant-Id": "acme",
    "X-Auth-Method": "jwt",
}
MEMBER = {
    "X-User-Id": MEMBER_ID,
    "X-User-Roles": "member",
    "X-Tenant-Id": "acme",
    "X-Auth-Method": "jwt",
}
GUEST = {"X-User-Id": GUEST_ID, "X-User-Roles": "guest", "X-Tenant-Id": "acme"}
SERVICE = {"X-User-Roles": "service", "X-Auth-Method": "api_key", "X-Consumer-Id": "reporting"}
ITEMS = [{"sku": "SKU-0001", "quantity": 2}]
V1 = {"items": ITEMS, "total": 12.5}
V2 = {"items": ITEMS, "total": {"amount_cents": 1250, "currency": "EUR"}}


@pytest.fixture
def client() -> FlaskClient:
    return create_orders_app(StubSettings(seed_users=30, seed_orders=300)).test_client()


def all_orders(
    client: FlaskClient, headers: dict[str, str], version: str = "v2", query: str = ""
) -> list[dict[str, Any]]:
    """Every page of the list, with `query` (e.g. "user_id=usr_1") on each request."""
    orders: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (
            "limit=200" + (f"&{query}" if query else "") + (f"&cursor={cursor}" if cursor else "")
        )
        response = client.get(f"/{version}/orders?{page}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        orders += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return orders


def all_ids(
    client: FlaskClient, headers: dict[str, str], version: str = "v2", query: str = ""
) -> list[str]:
    return [order["id"] for order in all_orders(client, headers, version, query)]


def owned_by(orders: list[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    return [order for order in orders if order["user_id"] == user_id]


def admin_of(tenant: str) -> dict[str, str]:
    return {**ADMIN, "X-User-Id": f"usr_admin_{tenant}", "X-Tenant-Id": tenant}


def foreign_order(client: FlaskClient, tenant: str = "acme") -> dict[str, Any]:
    """A seeded order of a tenant other than `tenant`."""
    return next(o for o in all_orders(client, {}) if o["tenant_id"] != tenant)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body["status"] == status
    return body


def test_v1_and_v2_show_the_same_order_two_ways(client: FlaskClient) -> None:
    v1 = client.get("/v1/orders?limit=5", headers=ADMIN).get_json()["data"]
    v2 = client.get("/v2/orders?limit=5", headers=ADMIN).get_json()["data"]
    assert [o["id"] for o in v1] == [o["id"] for o in v2]
    for old, new in zip(v1, v2, strict=True):
        assert isinstance(old["total"], int | float) and not isinstance(old["total"], bool)
        assert set(new["total"]) == {"amount_cents", "currency"}
        assert round(old["total"] * 100) == new["total"]["amount_cents"]
        assert new["total"]["currency"] == "EUR"
        assert {k: v for k, v in old.items() if k != "total"} == {
            k: v for k, v in new.items() if k != "total"
        }
        assert set(new) == {"id", "user_id", "tenant_id", "status", "items", "total", "created_at"}


def test_create_v1_and_read_it_in_v2(client: FlaskClient) -> None:
    response = client.post("/v1/orders", json=V1, headers=MEMBER)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"/v1/orders/{created['id']}"
    assert created["total"] == 12.5
    assert created["user_id"] == MEMBER_ID
    assert created["tenant_id"] == "acme"
    assert created["status"] == "pending"
    as_v2 = client.get(f"/v2/orders/{created['id']}", headers=MEMBER).get_json()
    assert as_v2["total"] == {"amount_cents": 1250, "currency": "EUR"}


def test_create_v2_and_read_it_in_v1(client: FlaskClient) -> None:
    body = {"items": ITEMS, "total": {"amount_cents": 1999, "currency": "USD"}}
    response = client.post("/v2/orders", json=body, headers=ADMIN)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"] == f"/v2/orders/{created['id']}"
    assert created["total"] == {"amount_cents": 1999, "currency": "USD"}
    assert created["user_id"] == ADMIN_ID
    assert client.get(f"/v1/orders/{created['id']}", headers=ADMIN).get_json()["total"] == 19.99
    newest = client.get("/v2/orders?limit=1", headers=ADMIN).get_json()["data"][0]
    assert newest["id"] == created["id"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_owner_comes_from_x_user_id(client: FlaskClient, version: str) -> None:
    body = V1 if version == "v1" else V2
    headers = {"X-User-Roles": "admin", "X-Tenant-Id": "acme"}
    response = client.post(f"/{version}/orders", json={**body}, headers=headers)
    errors = problem(response, 422)["errors"]
    assert [error["field"] for error in errors] == ["X-User-Id"]
    sneaky = client.post(f"/{version}/orders", json={**body, "user_id": ADMIN_ID}, headers=MEMBER)
    assert [e["field"] for e in problem(sneaky, 422)["errors"]] == ["user_id"]


def test_member_sees_only_their_own_orders(client: FlaskClient) -> None:
    everything = all_ids(client, ADMIN)
    mine = all_ids(client, MEMBER)
    assert 0 < len(mine) < len(everything)
    for order_id in mine[:5]:
        order = client.get(f"/v2/orders/{order_id}", headers=MEMBER).get_json()
        assert order["user_id"] == MEMBER_ID
    pages = client.get("/v1/orders?limit=500", headers=MEMBER).get_json()["data"]
    assert {order["user_id"] for order in pages} == {MEMBER_ID}


def test_someone_elses_order_is_404_for_a_member(client: FlaskClient) -> None:
    mine = set(all_ids(client, MEMBER))
    other = next(i for i in all_ids(client, ADMIN) if i not in mine)
    problem(client.get(f"/v2/orders/{other}", headers=MEMBER), 404)
    problem(client.get(f"/v1/orders/{other}", headers=MEMBER), 404)
    problem(client.delete(f"/v2/orders/{other}", headers=MEMBER), 404)
    assert client.get(f"/v2/orders/{other}", headers=ADMIN).status_code == 200


def test_each_admin_sees_every_order_of_their_own_tenant_only(client: FlaskClient) -> None:
    everything = all_orders(client, {})
    tenants = {order["tenant_id"] for order in everything}
    assert len(tenants) >= 2, "the seed spreads orders over several tenants"
    seen: list[str] = []
    for tenant in sorted(tenants):
        listed = all_orders(client, admin_of(tenant))
        assert listed == [o for o in everything if o["tenant_id"] == tenant]
        seen += [order["id"] for order in listed]
    assert sorted(seen) == sorted(order["id"] for order in everything)
    both = {**MEMBER, "X-User-Roles": "member,admin"}
    assert all_ids(client, both) == all_ids(client, ADMIN)


def test_the_service_key_reads_orders_no_tenant_admin_can(client: FlaskClient) -> None:
    everything = all_ids(client, {})
    assert len(everything) == 300
    assert all_ids(client, SERVICE) == everything
    assert set(all_ids(client, ADMIN)) < set(everything)
    other = foreign_order(client)
    assert client.get(f"/v1/orders/{other['id']}", headers=SERVICE).status_code == 200
    problem(client.get(f"/v1/orders/{other['id']}", headers=ADMIN), 404)


def test_the_service_key_changes_no_order(client: FlaskClient) -> None:
    order_id = all_ids(client, {})[0]
    for response in (
        client.post("/v2/orders", json=V2, headers=SERVICE),
        client.post("/v1/orders", json=V1, headers={**SERVICE, "X-User-Id": "usr_x"}),
        client.delete(f"/v2/orders/{order_id}", headers=SERVICE),
    ):
        assert problem(response, 403)["code"] == "forbidden"
    assert client.get(f"/v2/orders/{order_id}").status_code == 200
    assert len(all_ids(client, {})) == 300


def test_spaced_role_names_are_other_roles(client: FlaskClient) -> None:
    # Exact names: " admin" is no admin, and a token's "service" is no service key.
    for roles in (" admin", "admin ", "member, admin", " member , service "):
        assert all_ids(client, {**MEMBER, "X-User-Roles": roles}) == all_ids(client, MEMBER)
    token_service = {**MEMBER, "X-User-Roles": "service"}
    assert all_ids(client, token_service) == all_ids(client, MEMBER)


def test_another_tenants_order_is_the_same_404_as_a_missing_one(client: FlaskClient) -> None:
    other = foreign_order(client)
    missing = problem(client.get("/v2/orders/ord_000000000000", headers=ADMIN), 404)
    for headers in (ADMIN, MEMBER, GUEST, {**ADMIN, "X-User-Id": other["user_id"]}):
        for method, path in (
            ("get", f"/v2/orders/{other['id']}"),
            ("get", f"/v1/orders/{other['id']}"),
            ("delete", f"/v2/orders/{other['id']}"),
            ("delete", f"/v1/orders/{other['id']}"),
        ):
            body = problem(getattr(client, method)(path, headers=headers), 404)
            assert body["code"] == missing["code"] == "not_found"
            assert body["title"] == missing["title"]
            assert body["detail"] == missing["detail"].replace("ord_000000000000", other["id"])
    assert client.get(f"/v2/orders/{other['id']}").get_json() == other  # still there
    assert other["id"] not in all_ids(client, ADMIN) + all_ids(client, MEMBER)


def test_a_token_without_a_tenant_reaches_no_order(client: FlaskClient) -> None:
    order_id = all_ids(client, ADMIN)[0]
    for roles in ("admin", "member", "admin,service"):
        untenanted = {"X-User-Id": ADMIN_ID, "X-User-Roles": roles, "X-Auth-Method": "jwt"}
        assert all_ids(client, untenanted) == []
        problem(client.get(f"/v2/orders/{order_id}", headers=untenanted), 404)
        problem(client.delete(f"/v2/orders/{order_id}", headers=untenanted), 404)
        created = client.post("/v2/orders", json=V2, headers=untenanted)
        assert [e["field"] for e in problem(created, 422)["errors"]] == ["X-Tenant-Id"]
    assert client.get(f"/v2/orders/{order_id}", headers=ADMIN).status_code == 200


def test_a_new_order_belongs_to_the_callers_tenant(client: FlaskClient) -> None:
    globex_member = {**MEMBER, "X-User-Id": "usr_globex_member", "X-Tenant-Id": "globex"}
    created = client.post("/v2/orders", json=V2, headers=globex_member).get_json()
    assert created["tenant_id"] == "globex"
    assert created["id"] in all_ids(client, admin_of("globex"))
    assert created["id"] not in all_ids(client, ADMIN)
    problem(client.get(f"/v2/orders/{created['id']}", headers=ADMIN), 404)
    problem(client.delete(f"/v2/orders/{created['id']}", headers=ADMIN), 404)
    # The same user id in another tenant is someone else: it does not own the order.
    same_id_elsewhere = {**globex_member, "X-Tenant-Id": "acme"}
    problem(client.get(f"/v2/orders/{created['id']}", headers=same_id_elsewhere), 404)
    assert created["id"] not in all_ids(client, same_id_elsewhere)
    deleted = client.delete(f"/v2/orders/{created['id']}", headers=admin_of("globex"))
    assert deleted.status_code == 204


def test_a_cursor_works_only_in_the_listing_that_issued_it(client: FlaskClient) -> None:
    cursor = client.get("/v2/orders?limit=5", headers=ADMIN).get_json()["next_cursor"]
    assert cursor
    assert client.get(f"/v2/orders?limit=5&cursor={cursor}", headers=ADMIN).status_code == 200
    for headers in (admin_of("globex"), MEMBER, SERVICE, {}):
        response = client.get(f"/v1/orders?limit=5&cursor={cursor}", headers=headers)
        assert problem(response, 400)["code"] == "invalid_cursor"


# --- ?user_id= ---------------------------------------------------------------------

EMPTY = {"data": [], "next_cursor": None}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_admin_lists_one_users_orders_of_their_tenant(client: FlaskClient, version: str) -> None:
    everything = all_orders(client, ADMIN, version)
    for user_id in (MEMBER_ID, ADMIN_ID, GUEST_ID):
        expected = owned_by(everything, user_id)
        assert 0 < len(expected) < len(everything)
        assert all_orders(client, ADMIN, version, f"user_id={user_id}") == expected
    # A user of another tenant: none of theirs in this one, all of them in theirs.
    other = foreign_order(client)
    assert all_orders(client, ADMIN, version, f"user_id={other['user_id']}") == []
    in_their_tenant = admin_of(other["tenant_id"])
    theirs = all_ids(client, in_their_tenant, version, f"user_id={other['user_id']}")
    assert theirs == [
        o["id"] for o in owned_by(all_orders(client, in_their_tenant), other["user_id"])
    ]
    assert other["id"] in theirs
    assert all_orders(client, ADMIN, version, "user_id=usr_nobody") == []


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_member_filtering_gets_their_own_orders_or_an_empty_page(
    client: FlaskClient, version: str
) -> None:
    for headers in (MEMBER, GUEST):  # a guest is no admin either
        mine = all_orders(client, headers, version)
        assert mine
        assert all_orders(client, headers, version, f"user_id={headers['X-User-Id']}") == mine
    other = foreign_order(client)
    for user_id, owners_admin in (
        (ADMIN_ID, ADMIN),
        (GUEST_ID, ADMIN),
        (other["user_id"], admin_of(other["tenant_id"])),
    ):
        assert all_ids(client, owners_admin, version, f"user_id={user_id}"), "they have orders"
        for headers in (MEMBER, GUEST):
            if headers["X-User-Id"] == user_id:
                continue
            response = client.get(f"/{version}/orders?user_id={user_id}", headers=headers)
            assert response.status_code == 200
            assert response.get_json() == EMPTY
            assert "Link" not in response.headers
    nobody = {"X-User-Roles": "member", "X-Tenant-Id": "acme"}  # a role but no user
    response = client.get(f"/{version}/orders?user_id={MEMBER_ID}", headers=nobody)
    assert response.get_json() == EMPTY


def test_the_service_key_lists_one_users_orders_in_every_tenant(client: FlaskClient) -> None:
    traveller = {**MEMBER, "X-User-Id": "usr_traveller"}
    created = []
    for tenant in ("acme", "globex", "acme"):
        response = client.post("/v2/orders", json=V2, headers={**traveller, "X-Tenant-Id": tenant})
        assert response.status_code == 201
        created.append(response.get_json()["id"])
    query = "user_id=usr_traveller"
    assert all_ids(client, SERVICE, "v1", query) == created[::-1]  # newest first
    assert all_ids(client, {}, "v2", query) == created[::-1]  # a direct call too
    assert all_ids(client, admin_of("acme"), "v2", query) == [created[2], created[0]]
    assert all_ids(client, admin_of("globex"), "v2", query) == [created[1]]
    everything = all_orders(client, SERVICE)
    owners = {order["user_id"]: order["tenant_id"] for order in everything}
    assert len(set(owners.values())) >= 2, "the seeded owners span several tenants"
    for user_id in owners:
        assert all_orders(client, SERVICE, "v2", f"user_id={user_id}") == owned_by(
            everything, user_id
        )


def test_a_cursor_works_only_with_the_user_id_that_issued_it(client: FlaskClient) -> None:
    def first_cursor(headers: dict[str, str], query: str = "") -> str:
        body = client.get(f"/v2/orders?limit=2{query}", headers=headers).get_json()
        assert body["next_cursor"], "the listing has more than one page"
        cursor: str = body["next_cursor"]
        return cursor

    by_member, by_admin = f"&user_id={MEMBER_ID}", f"&user_id={ADMIN_ID}"
    issued: dict[tuple[str, str], str] = {}
    for name, headers in (("admin", ADMIN), ("service", SERVICE)):
        unfiltered = first_cursor(headers)
        members = first_cursor(headers, by_member)
        admins = first_cursor(headers, by_admin)
        issued[name, by_member] = members
        for query, cursor in (("", unfiltered), (by_member, members), (by_admin, admins)):
            response = client.get(f"/v1/orders?limit=2{query}&cursor={cursor}", headers=headers)
            assert response.status_code == 200, (name, query)
        for query, cursor in (
            (by_member, unfiltered),
            ("", members),
            (by_admin, members),
            (by_member, admins),
        ):
            response = client.get(f"/v1/orders?limit=2{query}&cursor={cursor}", headers=headers)
            assert problem(response, 400)["code"] == "invalid_cursor", (name, query)
    # The same user_id read by an admin and by the service key: two listings.
    for headers, cursor in (
        (ADMIN, issued["service", by_member]),
        (SERVICE, issued["admin", by_member]),
    ):
        response = client.get(f"/v2/orders?limit=2{by_member}&cursor={cursor}", headers=headers)
        assert problem(response, 400)["code"] == "invalid_cursor"
    # A member's cursor does not page through anyone else's (empty) list.
    response = client.get(
        f"/v2/orders?limit=2{by_admin}&cursor={first_cursor(MEMBER)}", headers=MEMBER
    )
    assert problem(response, 400)["code"] == "invalid_cursor"


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("user_id=", "must not be blank"),
        ("user_id=%20%20", "must not be blank"),
        ("user_id=" + "u" * 257, "must be at most 256 characters"),
        (f"user_id={MEMBER_ID}&user_id={ADMIN_ID}", "must be given once"),
    ],
)
def test_an_unusable_user_id_is_a_422(
    client: FlaskClient, version: str, query: str, message: str
) -> None:
    for headers in (ADMIN, MEMBER, SERVICE):
        body = problem(client.get(f"/{version}/orders?{query}", headers=headers), 422)
        assert body["code"] == "validation_failed"
        assert body["errors"] == [{"field": "user_id", "message": message}]


def test_the_longest_user_id_and_one_with_spaces_around_it(client: FlaskClient) -> None:
    longest = client.get("/v2/orders?user_id=" + "u" * 256, headers=ADMIN)
    assert longest.status_code == 200
    assert longest.get_json() == EMPTY
    expected = [order["id"] for order in owned_by(all_orders(client, ADMIN), MEMBER_ID)]
    assert expected
    assert all_ids(client, ADMIN, "v2", f"user_id=%20{MEMBER_ID}%20") == expected


def test_a_direct_call_without_identity_sees_everything(client: FlaskClient) -> None:
    assert all_ids(client, {}) == all_ids(client, SERVICE)
    assert len(all_ids(client, {})) == 300


def test_other_roles_see_only_their_own(client: FlaskClient) -> None:
    ids = all_ids(client, GUEST)
    assert ids, "the seed gives the demo guest orders too"
    for order_id in ids[:3]:
        assert client.get(f"/v2/orders/{order_id}", headers=GUEST).get_json()["user_id"] == GUEST_ID
    nobody = {"X-User-Roles": "member", "X-Tenant-Id": "acme"}  # a role but no user
    assert all_ids(client, nobody) == []


def test_a_members_new_order_is_theirs_only(client: FlaskClient) -> None:
    other = {**MEMBER, "X-User-Id": "usr_other"}
    created = client.post("/v2/orders", json=V2, headers=other).get_json()
    assert created["id"] in all_ids(client, other)
    assert created["id"] not in all_ids(client, MEMBER)
    problem(client.get(f"/v2/orders/{created['id']}", headers=MEMBER), 404)


def test_delete_is_204_then_404(client: FlaskClient) -> None:
    created = client.post("/v1/orders", json=V1, headers=MEMBER).get_json()
    response = client.delete(f"/v1/orders/{created['id']}", headers=ADMIN)
    assert response.status_code == 204
    assert response.data == b""
    problem(client.get(f"/v2/orders/{created['id']}", headers=ADMIN), 404)
    problem(client.delete(f"/v2/orders/{created['id']}", headers=ADMIN), 404)


def test_a_member_may_delete_their_own(client: FlaskClient) -> None:
    created = client.post("/v2/orders", json=V2, headers=MEMBER).get_json()
    assert client.delete(f"/v2/orders/{created['id']}", headers=MEMBER).status_code == 204


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["items", "total"]),
        ({"items": [], "total": 1}, ["items"]),
        ({"items": "x", "total": 1}, ["items"]),
        (
            {"items": [{"sku": "", "quantity": 0}], "total": 1},
            ["items[0].quantity", "items[0].sku"],
        ),
        ({"items": [{"quantity": 1}, 5], "total": 1}, ["items[0].sku", "items[1]"]),
        (
            {"items": [{"sku": "A", "quantity": True, "colour": "red"}], "total": 1},
            ["items[0].colour", "items[0].quantity"],
        ),
        ({"items": ITEMS, "total": "12.50"}, ["total"]),
        ({"items": ITEMS, "total": True}, ["total"]),
        ({"items": ITEMS, "total": -1}, ["total"]),
        ({"items": ITEMS, "total": 12.345}, ["total"]),
        ({"items": ITEMS, "total": {"amount_cents": 1, "currency": "EUR"}}, ["total"]),
    ],
)
def test_v1_validation(client: FlaskClient, body: dict[str, Any], fields: list[str]) -> None:
    response = client.post("/v1/orders", json=body, headers=MEMBER)
    errors = problem(response, 422)["errors"]
    assert sorted(error["field"] for error in errors) == sorted(fields)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"items": ITEMS, "total": 12.5}, ["total"]),
        ({"items": ITEMS, "total": {}}, ["total.amount_cents", "total.currency"]),
        (
            {"items": ITEMS, "total": {"amount_cents": 1.5, "currency": "eur"}},
            ["total.amount_cents", "total.currency"],
        ),
        (
            {"items": ITEMS, "total": {"amount_cents": -1, "currency": "EURO"}},
            ["total.amount_cents", "total.currency"],
        ),
        (
            {"items": ITEMS, "total": {"amount_cents": 1, "currency": "EUR", "tax": 1}},
            ["total.tax"],
        ),
        ({"items": ITEMS, "total": V2["total"], "status": "paid"}, ["status"]),
    ],
)
def test_v2_validation(client: FlaskClient, body: dict[str, Any], fields: list[str]) -> None:
    response = client.post("/v2/orders", json=body, headers=MEMBER)
    errors = problem(response, 422)["errors"]
    assert sorted(error["field"] for error in errors) == sorted(fields)


@pytest.mark.parametrize(("total", "cents"), [(0, 0), (12, 1200), (0.1, 10), (19.99, 1999)])
def test_v1_totals_convert_to_exact_cents(client: FlaskClient, total: float, cents: int) -> None:
    created = client.post("/v1/orders", json={"items": ITEMS, "total": total}, headers=MEMBER)
    order_id = created.get_json()["id"]
    as_v2 = client.get(f"/v2/orders/{order_id}", headers=MEMBER).get_json()
    assert as_v2["total"]["amount_cents"] == cents


def test_unknown_versions_and_paths_are_404_problems(client: FlaskClient) -> None:
    problem(client.get("/v3/orders"), 404)
    problem(client.get("/orders"), 404)
    problem(client.get("/v2/orders/ord_missing", headers=ADMIN), 404)


def test_wrong_methods_are_405_problems(client: FlaskClient) -> None:
    response = client.put("/v2/orders/ord_x", headers=ADMIN)
    problem(response, 405)
    assert "DELETE" in response.headers["Allow"]
    problem(client.patch("/v1/orders", headers=ADMIN), 405)


# --- conditional requests: ETag, 304, 412 ---------------------------------------------


def test_an_order_has_one_strong_etag_per_representation(client: FlaskClient) -> None:
    order = client.post("/v2/orders", json=V2, headers=MEMBER).get_json()
    v1 = client.get(f"/v1/orders/{order['id']}", headers=MEMBER)
    v2 = client.get(f"/v2/orders/{order['id']}", headers=MEMBER)
    for response in (v1, v2):
        assert response.status_code == 200
        assert response.headers["ETag"].startswith('"')
        assert response.headers["Cache-Control"] == "private, max-age=10"
    assert v1.headers["ETag"] != v2.headers["ETag"]
    again = client.get(f"/v2/orders/{order['id']}", headers=ADMIN)
    assert again.headers["ETag"] == v2.headers["ETag"], "the same for every caller who sees it"
    other = client.post("/v2/orders", json=V2, headers=MEMBER).get_json()
    assert client.get(f"/v2/orders/{other['id']}").headers["ETag"] != v2.headers["ETag"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_if_none_match_on_an_order_is_304(client: FlaskClient, version: str) -> None:
    order_id = all_ids(client, MEMBER)[0]
    path = f"/{version}/orders/{order_id}"
    etag = client.get(path, headers=MEMBER).headers["ETag"]
    for condition in (etag, f'"x", W/{etag}', "*"):
        response = client.get(path, headers={**MEMBER, "If-None-Match": condition})
        assert response.status_code == 304
        assert response.data == b""
        assert response.headers["ETag"] == etag
    other = "v2" if version == "v1" else "v1"
    other_etag = client.get(f"/{other}/orders/{order_id}", headers=MEMBER).headers["ETag"]
    response = client.get(path, headers={**MEMBER, "If-None-Match": other_etag})
    assert response.status_code == 200 and response.get_json()["id"] == order_id


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_delete_honours_if_match(client: FlaskClient, version: str) -> None:
    order = client.post(f"/{version}/orders", json=V1 if version == "v1" else V2, headers=MEMBER)
    path = f"/{version}/orders/{order.get_json()['id']}"
    current = client.get(path, headers=MEMBER)
    other = "v2" if version == "v1" else "v1"
    # The other version's tag describes another representation: it does not match here.
    other_etag = client.get(path.replace(version, other, 1), headers=MEMBER).headers["ETag"]
    for condition in ('"stale"', other_etag, f"W/{current.headers['ETag']}"):
        response = client.delete(path, headers={**MEMBER, "If-Match": condition})
        assert problem(response, 412)["code"] == "precondition_failed"
        assert client.get(path, headers=MEMBER).get_json() == current.get_json()
    response = client.delete(path, headers={**MEMBER, "If-Match": current.headers["ETag"]})
    assert response.status_code == 204
    problem(client.get(path, headers=MEMBER), 404)


def test_a_condition_never_reveals_an_invisible_order(client: FlaskClient) -> None:
    other = foreign_order(client)
    path = f"/v2/orders/{other['id']}"
    for response in (
        client.get(path, headers={**ADMIN, "If-None-Match": "*"}),
        client.delete(path, headers={**ADMIN, "If-Match": '"stale"'}),
    ):
        assert problem(response, 404)["code"] == "not_found"
    assert client.get(path).get_json() == other
