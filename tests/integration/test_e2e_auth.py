"""End to end: the reference deployment's credentials and roles.

Access tokens from the users stub, refresh tokens (never good as access tokens, good
once at /api/v1/auth/refresh), the demo API key (role service), and the demo guest
(a valid login without any role the API routes accept).
"""

from __future__ import annotations

import pytest

from .stack_support import (
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    jwt_claims,
    stack_fixtures,
    unique_email,
)
from .support import Reply

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

SERVICE_KEY = ("X-API-Key", "demo-service-key")


def _challenge(reply: Reply) -> str:
    challenge = reply.header("WWW-Authenticate")
    assert challenge, reply.describe()
    assert challenge.lower().startswith("bearer "), reply.describe()
    assert 'realm="gateway"' in challenge, reply.describe()
    return challenge


def test_refresh_token_is_no_access_token_but_refreshes(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    login = reference_stack.login("admin")
    refresh = login.refresh_token

    refused = api.get("/api/v1/users?limit=1", [("Authorization", f"Bearer {refresh}")])
    assert_gateway_problem(refused, 401, "unauthorized", "/api/v1/users")
    assert 'error="invalid_token"' in _challenge(refused), refused.describe()

    renewed = api.post_json("/api/v1/auth/refresh", {"refresh_token": refresh})
    assert renewed.status == 200, renewed.describe()
    body = renewed.json()
    assert body["token_type"].lower() == "bearer", body
    assert body["access_token"] != login.access_token
    assert body["refresh_token"] != refresh
    assert jwt_claims(body["access_token"])["sub"] == login.sub
    works = api.get("/api/v1/users?limit=1", [("Authorization", f"Bearer {body['access_token']}")])
    assert works.status == 200 and len(works.json()["data"]) == 1, works.describe()

    # Refresh tokens rotate: the used one is refused, as the stub's problem.
    again = api.post_json("/api/v1/auth/refresh", {"refresh_token": refresh})
    assert_gateway_problem(again, 401, "unauthorized", "/api/v1/auth/refresh")
    # An access token is no refresh token either.
    wrong = api.post_json("/api/v1/auth/refresh", {"refresh_token": login.access_token})
    assert_gateway_problem(wrong, 401, "unauthorized", "/api/v1/auth/refresh")


def test_api_key_reads_users_as_service(api: StackClient) -> None:
    reply = api.get("/api/v1/users?limit=3", [SERVICE_KEY])
    assert reply.status == 200, reply.describe()
    assert len(reply.json()["data"]) == 3, reply.describe()
    one = reply.json()["data"][0]["id"]
    assert api.get(f"/api/v1/users/{one}", [SERVICE_KEY]).status == 200


def test_api_key_is_refused_on_user_create(api: StackClient) -> None:
    """Creating users takes only JWTs: the service key is refused unread, with the 401
    a wrong key gets (nothing tells that the key exists), and nothing is created."""
    email = unique_email("service")
    reply = api.post_json("/api/v1/users", {"email": email, "name": "Not Created"}, [SERVICE_KEY])
    body = assert_gateway_problem(reply, 401, "unauthorized", "/api/v1/users")
    assert body["detail"] == "Credentials are missing or invalid.", body
    assert _challenge(reply) == 'Bearer realm="gateway"', reply.describe()


def test_api_key_creates_nothing(reference_stack: ReferenceStack, api: StackClient) -> None:
    """Whatever the refusal, a POST with the service key reaches no stub."""
    email = unique_email("service")
    reply = api.post_json("/api/v1/users", {"email": email, "name": "Not Created"}, [SERVICE_KEY])
    assert reply.status in (401, 403), reply.describe()
    listed = reference_stack.direct_collection(reference_stack.users, "/users")
    assert email not in {user["email"] for user in listed}


def test_guest_and_anonymous_are_refused(reference_stack: ReferenceStack, api: StackClient) -> None:
    guest = reference_stack.logins["guest"]
    reply = api.get("/api/v1/users", [guest.bearer])
    assert_gateway_problem(reply, 403, "forbidden", "/api/v1/users")
    assert reply.header("WWW-Authenticate") is None, reply.describe()

    reply = api.get("/api/v1/users")
    assert_gateway_problem(reply, 401, "unauthorized", "/api/v1/users")
    assert "error=" not in _challenge(reply), reply.describe()

    reply = api.get("/api/v1/users", [("Authorization", "Bearer not.a.token")])
    assert_gateway_problem(reply, 401, "unauthorized", "/api/v1/users")
    assert 'error="invalid_token"' in _challenge(reply), reply.describe()

    reply = api.get("/api/v1/users", [("X-API-Key", "not-the-demo-key")])
    assert_gateway_problem(reply, 401, "unauthorized", "/api/v1/users")
