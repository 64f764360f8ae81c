"""Per-app state: each app has its own store."""

from __future__ import annotations

from upstream_stub.app import StubSettings, create_orders_app
from upstream_stub.models import Order, User
from upstream_stub.state import (
    new_orders_collection,
    new_users_collection,
    orders_state,
    owner_group,
    tenant_group,
    user_group,
)


def test_each_app_has_its_own_store() -> None:
    settings = StubSettings(seed_users=3, seed_orders=10)
    first, second = create_orders_app(settings), create_orders_app(settings)
    with first.app_context():
        first_orders = orders_state().orders
    with second.app_context():
        second_orders = orders_state().orders
    assert first_orders is not second_orders
    assert len(first_orders) == len(second_orders) == 10


def test_collections_are_keyed_as_the_services_need() -> None:
    users = new_users_collection()
    users.load(
        [
            User("usr_1", "a@example.com", "A", "member", "t", 1, 1),
            User("usr_2", "b@example.com", "B", "member", "u", 2, 2),
        ]
    )
    assert users.find_unique("a@example.com") is not None
    assert [u.id for u in users.page(5, group=tenant_group("t")).items] == ["usr_1"]
    orders = new_orders_collection()
    orders.load(
        [
            Order("ord_1", "usr_1", "t", "paid", (), 1, "EUR", 1),
            Order("ord_2", "usr_2", "t", "paid", (), 1, "EUR", 2),
            Order("ord_3", "usr_1", "u", "paid", (), 1, "EUR", 3),
            Order("ord_4", "usr_1", None, "paid", (), 1, "EUR", 4),
        ]
    )
    assert [o.id for o in orders.page(5, group=owner_group("t", "usr_1")).items] == ["ord_1"]
    assert [o.id for o in orders.page(5, group=tenant_group("t")).items] == ["ord_2", "ord_1"]
    assert [o.id for o in orders.page(5, group=tenant_group("u")).items] == ["ord_3"]
    assert len(orders.page(5).items) == 4  # an order without a tenant is in no tenant's group
    # One user's orders in every tenant, and outside all of them: what ?user_id= lists
    # for a reader of every tenant.
    assert [o.id for o in orders.page(5, group=user_group("usr_1")).items] == [
        "ord_4",
        "ord_3",
        "ord_1",
    ]


def test_group_keys_cannot_be_spelt_by_another_tenant_and_user() -> None:
    assert owner_group("a,b", "c") != owner_group("a", "b,c")
    assert owner_group('a", "b', "c") != owner_group("a", 'b", "c')
    assert tenant_group("acme") != owner_group("acme", "")
    assert user_group("acme") not in (tenant_group("acme"), owner_group("acme", ""))
