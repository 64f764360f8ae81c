"""End to end: the reference deployment's composed routes on the real stubs.

`/api/v1/me/dashboard` is the caller's profile (five fields) and latest orders;
`/api/v1/users/{user_id}/overview` is a user and their orders, for admins. What each
answer holds is checked against the stubs themselves, called directly.
"""

from __future__ import annotations

import pytest

from .stack_support import (
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    leaked_addresses,
    stack_fixtures,
)

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

PROFILE_FIELDS = {"id", "name", "email", "role", "tenant_id"}


def own_orders(stack: ReferenceStack, user_id: str) -> list[str]:
    """The ids of a user's orders, newest first, as the orders stub lists them."""
    orders = stack.direct_collection(stack.orders, "/v2/orders")
    return [o["id"] for o in orders if o["user_id"] == user_id]


@pytest.mark.parametrize("role", ["admin", "member"])
def test_the_dashboard_is_the_callers_profile_and_latest_orders(
    reference_stack: ReferenceStack, api: StackClient, role: str
) -> None:
    login = reference_stack.logins[role]
    reply = api.get("/api/v1/me/dashboard?limit=4", [login.bearer])
    assert reply.status == 200 and reply.header("Gateway-Partial") is None, reply.describe()
    assert reply.media_type == "application/json"
    body = reply.json()
    assert set(body) == {"profile", "orders"}, body
    user = reference_stack.direct(reference_stack.users, f"/users/{login.sub}").json()
    assert body["profile"] == {name: user[name] for name in PROFILE_FIELDS}
    assert [o["id"] for o in body["orders"]["data"]] == own_orders(reference_stack, login.sub)[:4]
    assert all(set(o["total"]) == {"amount_cents", "currency"} for o in body["orders"]["data"])
    assert not leaked_addresses(reply, reference_stack.upstream_addresses)


def test_the_dashboards_orders_link_to_their_next_page_on_the_gateway(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    login = reference_stack.logins["admin"]
    reply = api.get("/api/v1/me/dashboard?limit=2", [login.bearer])
    assert reply.status == 200, reply.describe()
    links = reply.header_values("Link")
    assert len(links) == 1 and 'anchor="#/orders"' in links[0], links
    target = links[0].split(">", 1)[0].lstrip("<")
    assert target.startswith(f"http://{reference_stack.host_port}/api/v2/orders?"), target
    follow = api.get(api.gateway_target(target), [login.bearer])
    assert follow.status == 200, follow.describe()
    first = [o["id"] for o in reply.json()["orders"]["data"]]
    assert [o["id"] for o in follow.json()["data"]] == own_orders(reference_stack, login.sub)[
        2:4
    ] and not set(first) & {o["id"] for o in follow.json()["data"]}


def test_an_admin_sees_a_users_overview(reference_stack: ReferenceStack, api: StackClient) -> None:
    member = reference_stack.logins["member"]
    reply = api.get(
        f"/api/v1/users/{member.sub}/overview?limit=3",
        [reference_stack.logins["admin"].bearer],
    )
    assert reply.status == 200, reply.describe()
    body = reply.json()
    user = reference_stack.direct(reference_stack.users, f"/users/{member.sub}").json()
    assert body["user"] == user
    assert [o["id"] for o in body["orders"]["data"]] == own_orders(reference_stack, member.sub)[:3]


def test_a_member_may_not_see_an_overview(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    reply = api.get(f"/api/v1/users/{member.sub}/overview", [member.bearer])
    assert_gateway_problem(reply, 403, "forbidden", f"/api/v1/users/{member.sub}/overview")


def test_the_overview_of_no_such_user_is_the_users_404_naming_the_part(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    path = "/api/v1/users/usr_nobody/overview"
    reply = api.get(path, [reference_stack.logins["admin"].bearer])
    problem = assert_gateway_problem(reply, 404, "not_found", path)
    assert set(problem["parts"]) == {"user"}, problem
    assert problem["parts"]["user"]["status"] == 404
    assert not leaked_addresses(reply, reference_stack.upstream_addresses)
