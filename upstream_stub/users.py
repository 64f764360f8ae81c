"""The users collection: list, create, read, change and delete users.

Emails are unique case-insensitively (stored in lower case), so a duplicate is a
409 whatever its spelling. Passwords are accepted on create and change, stored only
as hashes (upstream_stub.passwords), and never returned.

Each caller reaches the users of its own tenant only (upstream_stub.callers): a user
of another tenant is the same 404 as one that does not exist, and new users join the
caller's tenant. Emails stay unique across tenants, so a 409 can tell an admin that
an address is taken somewhere else; it names nothing else about that user.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, jsonify

from upstream_stub.callers import Caller, current_caller
from upstream_stub.conditional import check_preconditions, entity_tag, representation_response
from upstream_stub.models import ROLES, User, new_id
from upstream_stub.pagination import page_response
from upstream_stub.passwords import hash_password
from upstream_stub.problems import Problem
from upstream_stub.state import tenant_group, users_state
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


def _new_users_tenant(chosen: str | None, caller: Caller, errors: Errors) -> str | None:
    """The tenant a new user joins: the caller's own; a direct call must name one."""
    if caller.anonymous:
        if chosen is None:
            errors.add("tenant_id", "is required (the caller has no tenant to default to)")
        return chosen
    own = caller.tenant_id
    if own is None:
        errors.add("tenant_id", "cannot be set: the caller belongs to no tenant")
        return None
    if chosen is not None and chosen != own:
        errors.add("tenant_id", "must be the caller's own tenant")
        return None
    return own


@blueprint.get("/users")
def list_users() -> Response:
    state = users_state()
    caller = current_caller()
    # A caller without a tenant gets the group of "" (no user has that tenant): empty.
    group = None if caller.every_tenant else tenant_group(caller.tenant_id or "")
    return page_response(state.users, "users", state.cursors, User.public, group=group)


@blueprint.post("/users")
def create_user() -> Response:
    caller = current_caller()
    caller.refuse_read_only()
    body = json_object()
    errors = Errors()
    reject_unknown(body, _FIELDS, errors)
    address = email(body, "email", errors)
    name = text(body, "name", errors)
    role = _role(body, errors, required=False) or "member"
    chosen = _tenant(body, errors, required=False)
    tenant = None
    if chosen is not None or body.get("tenant_id") is None:  # not when it was invalid
        tenant = _new_users_tenant(chosen, caller, errors)
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
    if user is None or not current_caller().reads(user.tenant_id):
        raise _not_found(user_id)
    return representation_response(user.public())


@blueprint.patch("/users/<user_id>")
def update_user(user_id: str) -> Response:
    state = users_state()
    caller = current_caller()
    caller.refuse_read_only()
    target = state.users.get(user_id)
    if target is None or not caller.writes(target.tenant_id):  # 404 before 422
        raise _not_found(user_id)
    check_preconditions(entity_tag(target.public()))  # 412 before 422
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
        if caller.writes(tenant):  # only a direct call moves a user to another tenant
            changes["tenant_id"] = tenant
        else:
            errors.add("tenant_id", "must be the caller's own tenant")
    password = _password(body, errors)
    errors.raise_any()
    if password is not None:
        changes["password_hash"] = hash_password(password)
    elif "password" in body:  # an explicit null: this user can no longer log in
        changes["password_hash"] = None

    def change(old: User) -> User:
        # Checked again under the store's lock: the user may have moved meanwhile.
        if not caller.writes(old.tenant_id):
            raise _not_found(user_id)
        check_preconditions(entity_tag(old.public()))  # changed since the check above?
        # updated_at moves on every change, so the ETag does too.
        return replace(old, **changes, updated_us=max(wall_clock_us(), old.updated_us + 1))

    try:
        user = state.users.replace(user_id, change)
    except Duplicate:
        raise _duplicate(changes["email"]) from None
    if user is None:  # deleted meanwhile
        raise _not_found(user_id)
    return jsonify(user.public())


@blueprint.delete("/users/<user_id>")
def delete_user(user_id: str) -> Response:
    caller = current_caller()
    caller.refuse_read_only()

    def deletable(user: User) -> bool:
        # Under the store's lock: a 404 first, then If-Match against the user as it is.
        if not caller.writes(user.tenant_id):
            return False
        check_preconditions(entity_tag(user.public()))
        return True

    if not users_state().users.delete(user_id, where=deletable):
        raise _not_found(user_id)
    return Response(status=204)
