"""End to end: who sees which orders through the gateway, and a member's new order.

The orders stub decides visibility from the identity the gateway sends (X-User-Id from
the token's `sub`, X-User-Roles from its role, X-Tenant-Id from its `tenant_id`): a
member sees only their own orders and gets a 404 problem for anyone else's; an admin
sees every order of their tenant. Other tenants are covered in test_e2e_tenants.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from .stack_support import (
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    jwt_claims,
    stack_fixtures,
)

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

NEW_ORDER = {
    "items": [{"sku": "SKU-0007", "quantity": 3}],
    "total": {"amount_cents": 4599, "currency": "EUR"},
}


def test_member_sees_only_own_orders_admin_sees_the_tenants(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    admin = reference_stack.logins["admin"]
    tenant = jwt_claims(admin.access_token)["tenant_id"]

    mine = api.collection("/api/v2/orders", [member.bearer])
    assert mine, "the seeded data gives the demo member orders of their own"
    assert {order["user_id"] for order in mine} == {member.sub}
    assert len({order["id"] for order in mine}) == len(mine)

    tenants = api.collection("/api/v2/orders", [admin.bearer])
    owners = {order["user_id"] for order in tenants}
    assert member.sub in owners and len(owners) > 2, "admin sees other users' orders"
    direct = reference_stack.direct_collection(reference_stack.orders, "/v2/orders")
    assert {o["id"] for o in tenants} == {o["id"] for o in direct if o["tenant_id"] == tenant}
    assert len({o["id"] for o in tenants}) == len(tenants)
    assert {o["id"] for o in mine} == {o["id"] for o in direct if o["user_id"] == member.sub}

    # Someone else's order of the same tenant is not there for the member (404, not
    # 403: ids do not leak), through every path that reads one order.
    foreign = next(o["id"] for o in tenants if o["user_id"] != member.sub)
    for path in (
        f"/api/v2/orders/{foreign}",
        f"/api/v1/orders/{foreign}",
        f"/api/orders/{foreign}",
    ):
        reply = api.get(path, [member.bearer])
        assert_gateway_problem(reply, 404, "not_found", path)
    # The admin reads that same order, and the member reads an own one.
    assert api.get(f"/api/v2/orders/{foreign}", [admin.bearer]).status == 200
    own = api.get(f"/api/v2/orders/{mine[0]['id']}", [member.bearer])
    assert own.status == 200 and own.json()["user_id"] == member.sub, own.describe()


def test_member_creates_an_order_and_follows_its_location(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    admin = reference_stack.logins["admin"]

    created = api.post_json("/api/v2/orders", NEW_ORDER, [member.bearer])
    assert created.status == 201, created.describe()
    order = created.json()
    try:
        assert order["user_id"] == member.sub, order
        assert order["total"] == NEW_ORDER["total"], order
        assert order["items"] == NEW_ORDER["items"], order
        assert order["tenant_id"] == "acme", order

        location = created.header("Location")
        assert location, created.describe()
        parts = urlsplit(location)
        assert parts.path == f"/api/v2/orders/{order['id']}", location
        assert parts.netloc in ("", reference_stack.host_port), location
        target = api.gateway_target(location) if parts.netloc else location

        followed = api.get(target, [member.bearer])
        assert followed.status == 200, followed.describe()
        assert followed.json() == order

        # The newest order comes first in the member's own list, and the admin sees it.
        first = api.get("/api/v2/orders?limit=1", [member.bearer])
        assert first.status == 200 and first.json()["data"][0]["id"] == order["id"]
        assert api.get(target, [admin.bearer]).status == 200
        # v1 reads the same order, its total as a number of major units.
        v1 = api.get(f"/api/v1/orders/{order['id']}", [member.bearer])
        assert v1.status == 200 and v1.json()["total"] == 45.99, v1.describe()
    finally:
        deleted = api.request("DELETE", f"/api/v2/orders/{order['id']}", [admin.bearer])
        assert deleted.status == 204, deleted.describe()
    gone = api.get(f"/api/v2/orders/{order['id']}", [admin.bearer])
    assert_gateway_problem(gone, 404, "not_found", f"/api/v2/orders/{order['id']}")


def test_order_writes_need_the_right_role(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    guest = reference_stack.logins["guest"]
    some_order = api.get("/api/v2/orders?limit=1", [member.bearer]).json()["data"][0]["id"]

    # A member may not delete, not even an own order.
    reply = api.request("DELETE", f"/api/v2/orders/{some_order}", [member.bearer])
    assert_gateway_problem(reply, 403, "forbidden", f"/api/v2/orders/{some_order}")
    # A guest may neither read nor create orders; nothing is forwarded.
    reply = api.get("/api/v2/orders", [guest.bearer])
    assert_gateway_problem(reply, 403, "forbidden", "/api/v2/orders")
    reply = api.post_json("/api/v2/orders", NEW_ORDER, [guest.bearer])
    assert_gateway_problem(reply, 403, "forbidden", "/api/v2/orders")
    # The service key reads every order but cannot create one.
    service = ("X-API-Key", "demo-service-key")
    reply = api.get("/api/v2/orders?limit=5", [service])
    assert reply.status == 200 and len(reply.json()["data"]) == 5, reply.describe()
    # An invalid order is the stub's 422 problem, its field errors kept.
    reply = api.post_json("/api/v2/orders", {"items": [], "total": 12}, [member.bearer])
    problem = assert_gateway_problem(reply, 422, None, "/api/v2/orders")
    fields = {error["field"] for error in problem["errors"]}
    assert {"items", "total"} <= fields, problem
