"""End to end: the users write path through the gateway.

An admin creates (201, Location on the gateway's public path), changes and deletes a
user; the stub's problems (409 duplicate, 422 with its `errors`, 404) reach the client
with their members kept and the gateway's request id; members cannot write.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

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


def test_admin_creates_changes_and_deletes_a_user(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    admin = reference_stack.logins["admin"]
    email = unique_email("write")

    created = api.post_json(
        "/api/v1/users", {"email": email, "name": "Erin Endtoend"}, [admin.bearer]
    )
    assert created.status == 201, created.describe()
    user = created.json()
    assert user["email"] == email and user["role"] == "member", user
    assert user["tenant_id"] == "acme", "a new user defaults to the admin's tenant"
    path = f"/api/v1/users/{user['id']}"
    location = created.header("Location")
    assert location, created.describe()
    assert urlsplit(location).path == path, location
    assert urlsplit(location).netloc in ("", reference_stack.host_port), location
    target = api.gateway_target(location) if urlsplit(location).netloc else location
    try:
        fetched = api.get(target, [admin.bearer])
        assert fetched.status == 200 and fetched.json() == user, fetched.describe()

        # The same email again, in other letters: the stub's 409, with the gateway's id.
        request_id = f"e2e-dup-{uuid.uuid4().hex}"
        duplicate = api.post_json(
            "/api/v1/users",
            {"email": email.upper(), "name": "Erin Again"},
            [admin.bearer, ("X-Request-ID", request_id)],
        )
        problem = assert_gateway_problem(duplicate, 409, "duplicate_email", "/api/v1/users")
        assert duplicate.header("X-Request-ID") == request_id, duplicate.describe()
        assert problem["request_id"] == request_id, problem

        invalid = api.post_json(
            "/api/v1/users", {"email": "not-an-email", "name": "", "shoe": 42}, [admin.bearer]
        )
        problem = assert_gateway_problem(invalid, 422, None, "/api/v1/users")
        assert isinstance(problem["errors"], list), problem
        fields = {error["field"] for error in problem["errors"]}
        assert {"email", "name", "shoe"} <= fields, problem
        assert all(isinstance(error["message"], str) for error in problem["errors"]), problem

        changed = api.send_json("PATCH", path, {"name": "Erin Changed"}, [admin.bearer])
        assert changed.status == 200, changed.describe()
        assert changed.json()["name"] == "Erin Changed" and changed.json()["id"] == user["id"]
        assert api.get(path, [admin.bearer]).json()["name"] == "Erin Changed"

        bad_change = api.send_json("PATCH", path, {"role": "emperor"}, [admin.bearer])
        problem = assert_gateway_problem(bad_change, 422, None, path)
        assert [error["field"] for error in problem["errors"]] == ["role"], problem
    finally:
        deleted = api.request("DELETE", path, [admin.bearer])
    assert deleted.status == 204, deleted.describe()
    assert deleted.body == b"", deleted.describe()

    gone = api.get(path, [admin.bearer])
    assert_gateway_problem(gone, 404, "not_found", path)
    again = api.request("DELETE", path, [admin.bearer])
    assert_gateway_problem(again, 404, "not_found", path)
    listed = reference_stack.direct_collection(reference_stack.users, "/users")
    assert user["id"] not in {entry["id"] for entry in listed}


def test_members_cannot_write_users(reference_stack: ReferenceStack, api: StackClient) -> None:
    member = reference_stack.logins["member"]
    email = unique_email("member")
    reply = api.post_json("/api/v1/users", {"email": email, "name": "Not Created"}, [member.bearer])
    assert_gateway_problem(reply, 403, "forbidden", "/api/v1/users")

    own = f"/api/v1/users/{member.sub}"
    reply = api.send_json("PATCH", own, {"role": "admin"}, [member.bearer])
    assert_gateway_problem(reply, 403, "forbidden", own)
    reply = api.request("DELETE", own, [member.bearer])
    assert_gateway_problem(reply, 403, "forbidden", own)

    # Nothing of that reached the stub: no new user, the member unchanged.
    me = api.get(own, [member.bearer])
    assert me.status == 200 and me.json()["role"] == "member", me.describe()
    listed = reference_stack.direct_collection(reference_stack.users, "/users")
    assert email not in {entry["email"] for entry in listed}
