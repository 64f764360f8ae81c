"""Each service's in-memory state, built once per app and found from any request.

Kept in `app.extensions`, not in module globals, so every app (and every test)
has its own store and the factories can be called any number of times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import current_app

from upstream_stub.models import Order, User
from upstream_stub.pagination import CursorCodec
from upstream_stub.store import Collection
from upstream_stub.tokens import TokenIssuer

_KEY = "upstream_stub"


@dataclass(frozen=True, slots=True)
class UsersState:
    users: Collection[User]
    tokens: TokenIssuer
    cursors: CursorCodec


@dataclass(frozen=True, slots=True)
class OrdersState:
    orders: Collection[Order]
    cursors: CursorCodec


def tenant_group(tenant_id: str) -> str:
    """The group of a tenant's records: what a tenant admin lists."""
    return json.dumps(["tenant", tenant_id])


def owner_group(tenant_id: str, user_id: str) -> str:
    """The group of one user's records in one tenant: what a member lists."""
    # JSON, not a joined string, so no tenant and user pair can spell another's key.
    return json.dumps(["owner", tenant_id, user_id])


def user_group(user_id: str) -> str:
    """The group of one user's records in every tenant (and in none): what a reader
    of every tenant lists when it asks for one user's."""
    return json.dumps(["user", user_id])


def _order_groups(order: Order) -> tuple[str, ...]:
    if order.tenant_id is None:  # outside every tenant: only cross-tenant readers see it
        return (user_group(order.user_id),)
    return (
        tenant_group(order.tenant_id),
        owner_group(order.tenant_id, order.user_id),
        user_group(order.user_id),
    )


def new_users_collection() -> Collection[User]:
    return Collection[User](
        unique=lambda user: user.email, group=lambda user: tenant_group(user.tenant_id)
    )


def new_orders_collection() -> Collection[Order]:
    return Collection[Order](groups=_order_groups)


def users_state() -> UsersState:
    state = current_app.extensions[_KEY]
    assert isinstance(state, UsersState)
    return state


def orders_state() -> OrdersState:
    state = current_app.extensions[_KEY]
    assert isinstance(state, OrdersState)
    return state


def attach(extensions: dict[str, object], state: UsersState | OrdersState) -> None:
    extensions[_KEY] = state
