"""End to end: tenant isolation through the gateway, on the reference stack.

The demo users log in at the users stub (through the gateway) and belong to one tenant;
the seeded users and orders are spread over several. Through `gateway serve`, with the
tokens of those logins, a member and an admin reach their own tenant only: another
tenant's user or order is the same 404 problem as one that does not exist, listings
hold their tenant alone, and a cursor works only for the listing that issued it. The
service API key (no tenant) reads every tenant.
"""

from __future__ import annotations

from typing import Any

import pytest

from .stack_support import (
    API_KEY,
    Login,
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    jwt_claims,
    stack_fixtures,
    unique_email,
)

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

SERVICE = ("X-API-Key", API_KEY)
MISSING_USER = "usr_000000000000"
MISSING_ORDER = "ord_000000000000"
ORDER_PATHS = ("/api/v2/orders/{}", "/api/v1/orders/{}", "/api/orders/{}")


def _tenant(login: Login) -> str:
    tenant = jwt_claims(login.access_token)["tenant_id"]
    assert isinstance(tenant, str) and tenant, tenant
    return tenant


def _split(items: list[dict[str, Any]], tenant: str) -> tuple[list[dict[str, Any]], ...]:
    """(the tenant's items, every other tenant's items), asserting both exist."""
    own = [item for item in items if item["tenant_id"] == tenant]
    others = [item for item in items if item["tenant_id"] != tenant]
    assert own and others, "the seed spreads users and orders over several tenants"
    return own, others


def _assert_hidden(
    api: StackClient, method: str, path: str, missing_path: str, headers: list[tuple[str, str]]
) -> None:
    """`path` answers exactly as `missing_path` (an id that does not exist) does."""
    hidden = assert_gateway_problem(api.request(method, path, headers), 404, "not_found", path)
    missing = assert_gateway_problem(
        api.request(method, missing_path, headers), 404, "not_found", missing_path
    )
    hidden_id, missing_id = path.rsplit("/", 1)[1], missing_path.rsplit("/", 1)[1]
    assert hidden["detail"] == missing["detail"].replace(missing_id, hidden_id), hidden
    same = ("type", "title", "status", "code")
    assert {k: hidden[k] for k in same} == {k: missing[k] for k in same}, (hidden, missing)
    assert set(hidden) == set(missing), (hidden, missing)


def test_a_member_reaches_users_and_orders_of_their_own_tenant_only(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    tenant = _tenant(member)
    direct = reference_stack.direct_collection(reference_stack.users, "/users")
    own, others = _split(direct, tenant)
    orders = reference_stack.direct_collection(reference_stack.orders, "/v2/orders")
    _, other_orders = _split(orders, tenant)

    listed = api.collection("/api/v1/users", [member.bearer], limit=50)
    assert [user["id"] for user in listed] == [user["id"] for user in own]
    seen = b"".join(reply.body for reply in api.replies)
    for stranger in others:
        assert f'"{stranger["email"]}"'.encode() not in seen, stranger

    me = api.get(f"/api/v1/users/{member.sub}", [member.bearer])
    assert me.status == 200 and me.json()["tenant_id"] == tenant, me.describe()
    for stranger in others[:3]:
        _assert_hidden(
            api,
            "GET",
            f"/api/v1/users/{stranger['id']}",
            f"/api/v1/users/{MISSING_USER}",
            [member.bearer],
        )

    mine = api.collection("/api/v2/orders", [member.bearer])
    assert mine and {order["tenant_id"] for order in mine} == {tenant}
    own_order = api.get(f"/api/v2/orders/{mine[0]['id']}", [member.bearer])
    assert own_order.status == 200, own_order.describe()
    assert own_order.json()["user_id"] == member.sub, own_order.describe()
    for path in ORDER_PATHS:
        _assert_hidden(
            api,
            "GET",
            path.format(other_orders[0]["id"]),
            path.format(MISSING_ORDER),
            [member.bearer],
        )


def test_an_admin_reaches_their_own_tenant_only(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    admin = reference_stack.logins["admin"]
    tenant = _tenant(admin)
    users = reference_stack.direct_collection(reference_stack.users, "/users")
    own_users, other_users = _split(users, tenant)
    orders = reference_stack.direct_collection(reference_stack.orders, "/v2/orders")
    own_orders, other_orders = _split(orders, tenant)

    listed = api.collection("/api/v1/users", [admin.bearer])
    assert [user["id"] for user in listed] == [user["id"] for user in own_users]
    listed_orders = api.collection("/api/v2/orders", [admin.bearer])
    assert {o["id"] for o in listed_orders} == {o["id"] for o in own_orders}

    stranger = other_users[0]
    path = f"/api/v1/users/{stranger['id']}"
    missing = f"/api/v1/users/{MISSING_USER}"
    _assert_hidden(api, "GET", path, missing, [admin.bearer])
    _assert_hidden(api, "DELETE", path, missing, [admin.bearer])
    changed = api.send_json("PATCH", path, {"name": "Taken Over"}, [admin.bearer])
    assert_gateway_problem(changed, 404, "not_found", path)
    order_path = f"/api/v2/orders/{other_orders[0]['id']}"
    _assert_hidden(api, "GET", order_path, f"/api/v2/orders/{MISSING_ORDER}", [admin.bearer])
    _assert_hidden(api, "DELETE", order_path, f"/api/v2/orders/{MISSING_ORDER}", [admin.bearer])

    # A new user cannot be placed in another tenant either.
    email = unique_email("tenant")
    body = {"email": email, "name": "Elsewhere", "tenant_id": stranger["tenant_id"]}
    refused = api.post_json("/api/v1/users", body, [admin.bearer])
    problem = assert_gateway_problem(refused, 422, None, "/api/v1/users")
    assert [error["field"] for error in problem["errors"]] == ["tenant_id"], problem

    # Nothing of the other tenant changed.
    after = reference_stack.direct(reference_stack.users, f"/users/{stranger['id']}")
    assert after.json() == stranger
    order = reference_stack.direct(reference_stack.orders, f"/v2/orders/{other_orders[0]['id']}")
    assert order.json() == other_orders[0]
    everyone = reference_stack.direct_collection(reference_stack.users, "/users")
    assert email not in {user["email"] for user in everyone}


def test_the_service_key_reads_every_tenant_where_the_admin_cannot(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    admin = reference_stack.logins["admin"]
    users = reference_stack.direct_collection(reference_stack.users, "/users")
    orders = reference_stack.direct_collection(reference_stack.orders, "/v2/orders")
    _, other_users = _split(users, _tenant(admin))
    _, other_orders = _split(orders, _tenant(admin))

    listed = api.collection("/api/v1/users", [SERVICE])
    assert [user["id"] for user in listed] == [user["id"] for user in users]
    listed_orders = api.collection("/api/v2/orders", [SERVICE])
    assert {o["id"] for o in listed_orders} == {o["id"] for o in orders}
    admins = api.collection("/api/v1/users", [admin.bearer])
    assert len(admins) < len(listed), "the admin's list is their tenant's share"

    user_path = f"/api/v1/users/{other_users[0]['id']}"
    user = api.get(user_path, [SERVICE])
    assert user.status == 200 and user.json() == other_users[0], user.describe()
    assert_gateway_problem(api.get(user_path, [admin.bearer]), 404, "not_found", user_path)
    order_path = f"/api/v2/orders/{other_orders[0]['id']}"
    order = api.get(order_path, [SERVICE])
    assert order.status == 200 and order.json() == other_orders[0], order.describe()
    assert_gateway_problem(api.get(order_path, [admin.bearer]), 404, "not_found", order_path)


def test_a_cursor_is_good_only_for_the_listing_that_issued_it(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    admin = reference_stack.logins["admin"]
    for path, issuer, other in (
        ("/api/v1/users", [SERVICE], [member.bearer]),  # every tenant's list
        ("/api/v2/orders", [admin.bearer], [member.bearer]),  # the tenant's, not the owner's
        ("/api/v2/orders", [SERVICE], [admin.bearer]),
    ):
        first = api.get(f"{path}?limit=2", issuer)
        assert first.status == 200, first.describe()
        cursor = first.json()["next_cursor"]
        assert cursor, first.describe()
        target = f"{path}?limit=2&cursor={cursor}"
        assert api.get(target, issuer).status == 200
        assert_gateway_problem(api.get(target, other), 400, "invalid_cursor", path)
