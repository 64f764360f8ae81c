"""End to end: conditional requests through the gateway, on real processes.

The stubs make the validators (a strong ETag and `Cache-Control: private,
max-age=10` on a single resource) and decide 304 and 412; the gateway relays the
validators unchanged (it never invents one), answers If-None-Match with a 304
without a body (from its cache on users.get, which keeps each caller's reads for
10 s, or the stub's own), forwards If-Match, and turns the stub's 412 into its own
problem (its request id, the public path as instance). Each write test makes its
own user.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .stack_support import (
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    stack_fixtures,
    unique_email,
)

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

CACHE_CONTROL = "private, max-age=10"


@pytest.fixture
def own_user(reference_stack: ReferenceStack, api: StackClient) -> Iterator[str]:
    """A new user of the admin's tenant, for one test; its id. Deleted afterwards."""
    admin = reference_stack.logins["admin"]
    created = api.post_json(
        "/api/v1/users",
        {"email": unique_email("conditional"), "name": "Connie Conditional"},
        [admin.bearer],
    )
    assert created.status == 201, created.describe()
    user_id: str = created.json()["id"]
    yield user_id
    api.request("DELETE", f"/api/v1/users/{user_id}", [admin.bearer])


def direct_user(reference_stack: ReferenceStack, user_id: str) -> tuple[str, str, bytes]:
    """ETag, Cache-Control and body as the users stub itself answers them."""
    reply = reference_stack.direct(reference_stack.users, f"/users/{user_id}")
    etag, cache = reply.header("ETag"), reply.header("Cache-Control")
    assert etag and cache, reply.describe()
    return etag, cache, reply.body


def test_validators_are_relayed_unchanged(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    etag, cache, body = direct_user(reference_stack, member.sub)
    assert etag.startswith('"') and cache == CACHE_CONTROL

    reply = api.get(f"/api/v1/users/{member.sub}", [member.bearer])
    assert reply.status == 200, reply.describe()
    assert reply.header_values("ETag") == [etag], reply.describe()
    assert reply.header_values("Cache-Control") == [cache], reply.describe()
    assert reply.body == body, "the gateway relays the body the ETag describes, byte for byte"
    assert reply.header("Last-Modified") is None, "the gateway invents no validator"


def test_a_list_gets_no_validator_from_the_gateway(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    member = reference_stack.logins["member"]
    reply = api.get("/api/v1/users?limit=2", [member.bearer])
    assert reply.status == 200, reply.describe()
    assert reply.header("ETag") is None and reply.header("Last-Modified") is None, reply.describe()


@pytest.mark.parametrize("condition", ["{etag}", '"other", {etag}', "*", "W/{etag}"])
def test_if_none_match_through_the_gateway_is_304_without_a_body(
    reference_stack: ReferenceStack, api: StackClient, condition: str
) -> None:
    member = reference_stack.logins["member"]
    etag, cache, _ = direct_user(reference_stack, member.sub)
    headers = [member.bearer, ("If-None-Match", condition.format(etag=etag))]
    for method in ("GET", "HEAD"):
        reply = api.request(method, f"/api/v1/users/{member.sub}", headers)
        assert reply.status == 304, reply.describe()
        assert reply.body == b"" and reply.complete, reply.describe()
        assert reply.header_values("ETag") == [etag], reply.describe()
        assert reply.header_values("Cache-Control") == [cache], reply.describe()
        assert reply.header("Content-Type") is None, reply.describe()

    changed = api.get(f"/api/v1/users/{member.sub}", [member.bearer, ("If-None-Match", '"x"')])
    assert changed.status == 200 and changed.json()["id"] == member.sub, changed.describe()


def test_a_stale_if_match_is_412_and_changes_nothing(
    reference_stack: ReferenceStack, api: StackClient, own_user: str
) -> None:
    admin = reference_stack.logins["admin"]
    path = f"/api/v1/users/{own_user}"
    stale = api.get(path, [admin.bearer]).header("ETag")
    assert stale, "the user has an ETag"
    first = api.send_json("PATCH", path, {"name": "First Writer"}, [admin.bearer])
    assert first.status == 200, first.describe()
    before_etag, _, before_body = direct_user(reference_stack, own_user)
    assert before_etag != stale

    request_id = f"e2e-412-{uuid.uuid4().hex}"
    lost = api.send_json(
        "PATCH",
        path,
        {"name": "Lost Update"},
        [admin.bearer, ("If-Match", stale), ("X-Request-ID", request_id)],
    )
    problem = assert_gateway_problem(lost, 412, "precondition_failed", path)
    assert problem["request_id"] == request_id == lost.header("X-Request-ID"), problem
    assert lost.header("ETag") is None, lost.describe()

    gone = api.request("DELETE", path, [admin.bearer, ("If-Match", stale)])
    assert_gateway_problem(gone, 412, "precondition_failed", path)

    after_etag, _, after_body = direct_user(reference_stack, own_user)
    assert (after_etag, after_body) == (before_etag, before_body), "the user is unchanged"
    assert api.get(path, [admin.bearer]).json()["name"] == "First Writer"


def test_the_current_if_match_succeeds_with_a_new_etag(
    reference_stack: ReferenceStack, api: StackClient, own_user: str
) -> None:
    admin = reference_stack.logins["admin"]
    path = f"/api/v1/users/{own_user}"
    current = api.get(path, [admin.bearer])
    etag = current.header("ETag")
    assert etag, current.describe()

    changed = api.send_json(
        "PATCH", path, {"name": "Careful Writer"}, [admin.bearer, ("If-Match", etag)]
    )
    assert changed.status == 200, changed.describe()
    assert changed.json()["name"] == "Careful Writer"
    new_etag, _, body = direct_user(reference_stack, own_user)
    assert new_etag != etag
    fetched = api.get(path, [admin.bearer])
    assert fetched.header("ETag") == new_etag and fetched.body == body, fetched.describe()

    deleted = api.request("DELETE", path, [admin.bearer, ("If-Match", new_etag)])
    assert deleted.status == 204, deleted.describe()
    assert_gateway_problem(api.get(path, [admin.bearer]), 404, "not_found", path)


def test_orders_are_conditional_per_version(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    admin = reference_stack.logins["admin"]
    created = api.post_json(
        "/api/v2/orders",
        {
            "items": [{"sku": "SKU-E2E", "quantity": 1}],
            "total": {"amount_cents": 5, "currency": "EUR"},
        },
        [admin.bearer],
    )
    assert created.status == 201, created.describe()
    order_id = created.json()["id"]
    tags = {}
    for version in ("v1", "v2"):
        path = f"/api/{version}/orders/{order_id}"
        direct = reference_stack.direct(reference_stack.orders, f"/{version}/orders/{order_id}")
        reply = api.get(path, [admin.bearer])
        assert reply.status == 200, reply.describe()
        assert reply.header_values("ETag") == direct.header_values("ETag") != [], reply.describe()
        assert reply.header("Cache-Control") == CACHE_CONTROL, reply.describe()
        tags[version] = reply.header("ETag")
        again = api.get(path, [admin.bearer, ("If-None-Match", tags[version] or "")])
        assert again.status == 304 and again.body == b"", again.describe()
    assert tags["v1"] != tags["v2"]

    path = f"/api/v2/orders/{order_id}"
    refused = api.request("DELETE", path, [admin.bearer, ("If-Match", tags["v1"] or "")])
    assert_gateway_problem(refused, 412, "precondition_failed", path)
    assert api.get(path, [admin.bearer]).status == 200
    deleted = api.request("DELETE", path, [admin.bearer, ("If-Match", tags["v2"] or "")])
    assert deleted.status == 204, deleted.describe()
