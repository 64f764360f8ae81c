"""The users collection: list, create, read, change and delete users.

Emails are unique case-insensitively (stored in lower case), so a duplicate is a
409 whatever its spelling. Passwords are accepted on create and change, stored only
as hashes (upstream_stub.passwords), and never returned.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, jsonify

from upstream_stub.callers import current_caller
from upstream_stub.models import ROLES, User, new_id
from upstream_stub.pagination import page_response
from upstream_stub.passwords import hash_password
from upstream_stub.problems import Problem
from upstream_stub.state import users_state
from upstream_stub.store import Duplicate, wall_clock_us
from upstream_stub.validation import Errors, email, json_object, reject_unknown, text

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
# Tenant ids travel in the X-Tenant-Id header: keep them to header-safe characters.
_TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FIELDS = ("email", "name", "role", "tenant_id", "password")

blueprint = Blueprint("users", __name__)


def _not_found(user_id: str) -> Problem:
    return Problem(404, f"There is no user {user_id}.", code="not_found")


def _duplicate(address: str) -> Problem:
    return Problem(409, f"A user with the email {address} already exists.", code="duplicate_email")


def _role(body: dict[str, Any], errors: Errors, *, required: bool) -> str | None:
    value = text(body, "role", errors, required=required)
    if value is not None and value not in ROLES:
        errors.add("role", f"must be one of {', '.join(ROLES)}")
        return None
    return value


def _tenant(body: dict[str, Any], errors: Errors, *, required: bool) -> str | None:
    value = text(body, "tenant_id", errors, required=required, max_chars=64)
    if value is not None and not _TENANT.match(value):
        errors.add("tenant_id", "must be 1-64 letters, digits, '.', '_' or '-'")
        return None
    return value


def _password(body: dict[str, Any], errors: Errors) -> str | None:
    value = body.get("password")
    if "password" not in body or value is None:
        return None
    if not isinstance(value, str):
        errors.add("password", "must be a string")
        return None
    if not MIN_PASSWORD_CHARS <= len(value) <= MAX_PASSWORD_CHARS:
        errors.add(
            "password", f"must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long"
        )
        return None
    return value


def _no_nulls(body: dict[str, Any], errors: Errors) -> None:
    for name in ("email", "name", "role", "tenant_id"):
        if name in body and body[name] is None:
            errors.add(name, "must not be null")


@blueprint.get("/users")
def list_users() -> Response:
    state = users_state()
    return page_response(state.users, "users", state.cursors, User.public)


@blueprint.post("/users")
def create_user() -> Response:
    body = json_object()
    errors = Errors()
    reject_unknown(body, _FIELDS, errors)
    address = email(body, "email", errors)
    name = text(body, "name", errors)
    role = _role(body, errors, required=False) or "member"
    tenant = _tenant(body, errors, required=False)
    if tenant is None and body.get("tenant_id") is None:
        # An admin creates users in their own tenant unless told otherwise.
        tenant = current_caller().tenant_id
        if tenant is None:
            errors.add("tenant_id", "is required (the caller has no tenant to default to)")
    password = _password(body, errors)
    errors.raise_any()
    assert address is not None and name is not None and tenant is not None
    password_hash = hash_password(password) if password is not None else None
    state = users_state()
    try:
        user = state.users.insert(
            lambda created_us: User(
                id=new_id("usr"),
                email=address,
                name=name.strip(),
                role=role,
                tenant_id=tenant,
                created_us=created_us,
                updated_us=created_us,
                password_hash=password_hash,
            )
        )
    except Duplicate:
        raise _duplicate(address) from None
    response = jsonify(user.public())
    response.status_code = 201
    response.headers["Location"] = f"/users/{user.id}"
    return response


@blueprint.get("/users/<user_id>")
def get_user(user_id: str) -> Response:
    user = users_state().users.get(user_id)
    if user is None:
        raise _not_found(user_id)
    return jsonify(user.public())


@blueprint.patch("/users/<user_id>")
def update_user(user_id: str) -> Response:
    state = users_state()
    if state.users.get(user_id) is None:  # 404 before 422: the target comes first
        raise _not_found(user_id)
    body = json_object()
    errors = Errors()
    reject_unknown(body, _FIELDS, errors)
    _no_nulls(body, errors)
    changes: dict[str, Any] = {}
    if body.get("email") is not None and (address := email(body, "email", errors)):
        changes["email"] = address
    if body.get("name") is not None and (name := text(body, "name", errors)):
        changes["name"] = name.strip()
    if body.get("role") is not None and (role := _role(body, errors, required=True)):
        changes["role"] = role
    if body.get("tenant_id") is not None and (tenant := _tenant(body, errors, required=True)):
        changes["tenant_id"] = tenant
    password = _password(body, errors)
    errors.raise_any()
    if password is not None:
        changes["password_hash"] = hash_password(password)
    elif "password" in body:  # an explicit null: this user can no longer log in
        changes["password_hash"] = None
    try:
        user = state.users.replace(
            user_id,
            lambda old: replace(old, **changes, updated_us=max(wall_clock_us(), old.updated_us)),
        )
    except Duplicate:
        raise _duplicate(changes["email"]) from None
    if user is None:  # deleted meanwhile
        raise _not_found(user_id)
    return jsonify(user.public())


@blueprint.delete("/users/<user_id>")
def delete_user(user_id: str) -> Response:
    if not users_state().users.delete(user_id):
        raise _not_found(user_id)
    return Response(status=204)
