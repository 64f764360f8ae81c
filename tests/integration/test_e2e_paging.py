"""End to end: log in through the gateway and page the users collection to its end.

The ids seen through the gateway, page by page along Link rel="next", are exactly the
ids the users stub lists for the admin's tenant when asked directly, none twice; and
nothing the client saw names an upstream address.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from .stack_support import (
    ReferenceStack,
    StackClient,
    jwt_claims,
    leaked_addresses,
    next_link,
    stack_fixtures,
)

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

PAGE = 9  # the admin's tenant holds about 60 seeded users: several pages


def test_login_answers_tokens_and_no_cache(reference_stack: ReferenceStack) -> None:
    login = reference_stack.logins["admin"]
    body = login.reply.json()
    assert body["token_type"].lower() == "bearer", body
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0, body
    assert body["access_token"].count(".") == 2 and body["refresh_token"].count(".") == 2
    assert "no-store" in (login.reply.header("Cache-Control") or ""), login.reply.describe()
    assert login.sub.startswith("usr_"), login.sub
    assert not leaked_addresses(login.reply, reference_stack.upstream_addresses)


def test_users_paged_through_gateway_equal_users_listed_directly(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    admin = reference_stack.logins["admin"]
    seen: list[str] = []
    target: str | None = f"/api/v1/users?limit={PAGE}"
    pages = 0
    while target is not None:
        pages += 1
        assert pages <= 100, "the users collection did not end within 100 pages"
        reply = api.get(target, [admin.bearer])
        assert reply.status == 200, reply.describe()
        assert reply.media_type == "application/json", reply.describe()
        body = reply.json()
        ids = [user["id"] for user in body["data"]]
        seen += ids
        link = next_link(reply)
        if link is None:
            assert body["next_cursor"] is None, reply.describe()
            assert 1 <= len(ids) <= PAGE, reply.describe()
            target = None
            continue
        assert len(ids) == PAGE, reply.describe()
        # The next page is on the gateway, at the public path, with the page's cursor.
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "http",
            reference_stack.host_port,
            "/api/v1/users",
        ), link
        query = parse_qs(parts.query)
        assert query["limit"] == [str(PAGE)], link
        assert query["cursor"] == [body["next_cursor"]], link
        target = api.gateway_target(link)

    # The 3 demo users and the generated users of their tenant: several pages.
    assert pages >= 5, pages
    assert len(seen) == len(set(seen)), "an id came twice through the gateway's pages"
    tenant = jwt_claims(admin.access_token)["tenant_id"]
    direct = reference_stack.direct_collection(reference_stack.users, "/users")
    direct_ids = [user["id"] for user in direct if user["tenant_id"] == tenant]
    assert len(direct_ids) == len(set(direct_ids)), "the stub itself listed an id twice"
    assert set(seen) == set(direct_ids)
    # The same order too: newest first, page after page.
    assert seen == direct_ids

    for reply in api.replies:
        assert not leaked_addresses(reply, reference_stack.upstream_addresses), reply.describe()


def test_errors_and_redirect_targets_name_no_upstream(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    """Errors of every origin (the gateway's, the stub's) keep the stubs' addresses out."""
    admin = reference_stack.logins["admin"]
    replies = [
        api.get("/api/v1/users?limit=0", [admin.bearer]),  # the stub's 400
        api.get("/api/v1/users?cursor=forged.cursor", [admin.bearer]),  # the stub's 400
        api.get("/api/v1/users/usr_000000000000", [admin.bearer]),  # the stub's 404
        api.get("/api/v1/nowhere", [admin.bearer]),  # the gateway's 404
        api.request("PUT", "/api/v1/users", [admin.bearer]),  # the gateway's 405
        api.get("/api/v1/users"),  # the gateway's 401
    ]
    assert [reply.status for reply in replies] == [400, 400, 404, 404, 405, 401], [
        reply.describe() for reply in replies
    ]
    for reply in replies:
        assert reply.media_type == "application/problem+json", reply.describe()
        assert not leaked_addresses(reply, reference_stack.upstream_addresses), reply.describe()
