"""Each service's in-memory state, built once per app and found from any request.

Kept in `app.extensions`, not in module globals, so every app (and every test)
has its own store and the factories can be called any number of times.
"""

from __future__ import annotations

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


def new_users_collection() -> Collection[User]:
    return Collection[User](unique=lambda user: user.email)


def new_orders_collection() -> Collection[Order]:
    return Collection[Order](group=lambda order: order.user_id)


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
