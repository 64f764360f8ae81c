"""The users service's token endpoints: login, refresh, and the public keys.

Login answers a wrong password and an unknown email identically (same status,
body and cost), so the endpoint cannot be used to find out who has an account.
Refresh rotates: each refresh token is good for one exchange, and the new access
token carries the user's current role and tenant, not the ones from login time.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from upstream_stub.passwords import verify_password
from upstream_stub.problems import Problem
from upstream_stub.state import users_state
from upstream_stub.tokens import RefreshRefused
from upstream_stub.validation import Errors, json_object, reject_unknown, text

MAX_PASSWORD_CHARS = 1024
MAX_TOKEN_CHARS = 8192

blueprint = Blueprint("auth", __name__)


def _no_store(response: Response) -> Response:
    # RFC 6749 §5.1: token responses must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@blueprint.post("/auth/login")
def login() -> Response:
    body = json_object()
    errors = Errors()
    reject_unknown(body, ("email", "password"), errors)
    email = text(body, "email", errors, max_chars=254)
    password = text(body, "password", errors, max_chars=MAX_PASSWORD_CHARS)
    errors.raise_any()
    assert email is not None and password is not None
    state = users_state()
    user = state.users.find_unique(email.strip().lower())
    # Always one hash check, against the dummy hash when there is no user.
    if not verify_password(password, user.password_hash if user else None) or user is None:
        raise Problem(
            401,
            "The email or password is wrong.",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="gateway"'},
        )
    return _no_store(jsonify(state.tokens.issue(user).body()))


@blueprint.post("/auth/refresh")
def refresh() -> Response:
    body = json_object()
    errors = Errors()
    reject_unknown(body, ("refresh_token",), errors)
    token = text(body, "refresh_token", errors, max_chars=MAX_TOKEN_CHARS)
    errors.raise_any()
    assert token is not None
    state = users_state()
    refused = Problem(
        401,
        "The refresh token is invalid, expired or already used; log in again.",
        code="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="gateway", error="invalid_token"'},
    )
    try:
        user_id = state.tokens.redeem_refresh(token)
    except RefreshRefused:
        raise refused from None
    user = state.users.get(user_id)
    if user is None or user.password_hash is None:  # deleted, or can no longer log in
        raise refused
    return _no_store(jsonify(state.tokens.issue(user).body()))


@blueprint.get("/.well-known/jwks.json")
def jwks() -> Response:
    response = jsonify(users_state().tokens.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
