"""Seed data: deterministic, the demo users present, orders owned by real ids."""

from __future__ import annotations

from collections import Counter

from upstream_stub import seed
from upstream_stub.models import ROLES


def test_people_are_the_same_on_every_start() -> None:
    assert seed.people(7, 40) == seed.people(7, 40)
    assert seed.people(7, 40) != seed.people(8, 40)


def test_demo_users_come_first_with_their_passwords_and_a_tenant() -> None:
    demo = seed.people(seed.DEFAULT_SEED, 10)[:3]
    assert [(p.email, p.role, p.password) for p in demo] == [
        ("admin@example.com", "admin", "admin-password"),
        ("member@example.com", "member", "member-password"),
        ("guest@example.com", "guest", "guest-password"),
    ]
    assert all(p.tenant_id for p in demo)


def test_default_seed_is_large_enough_for_several_pages() -> None:
    everyone = seed.people()
    assert len(everyone) == 3 + seed.DEFAULT_USERS >= 253
    assert len({p.id for p in everyone}) == len(everyone)
    assert len({p.email for p in everyone}) == len(everyone)
    assert len({p.tenant_id for p in everyone}) >= 3
    assert {p.role for p in everyone} <= set(ROLES)
    assert all(p.password is None for p in everyone[3:])
    times = [p.created_us for p in everyone]
    assert times == sorted(set(times))
    assert times[-1] == seed.ANCHOR_US


def test_orders_are_deterministic_and_owned_by_seeded_users() -> None:
    directory = seed.people()
    orders = seed.orders(directory)
    assert orders == seed.orders(directory)
    assert len(orders) == seed.DEFAULT_ORDERS >= 1000
    assert len({o.id for o in orders}) == len(orders)
    ids = {p.id for p in directory}
    assert {o.user_id for o in orders} <= ids
    owners = Counter(o.user_id for o in orders)
    member = directory[1].id
    assert owners[member] > 50  # the demo member has more than one page of orders
    assert all(o.amount_cents > 0 and o.items for o in orders)
    times = [o.created_us for o in orders]
    assert times == sorted(set(times))
    assert times[-1] == seed.ANCHOR_US


def test_counts_scale_for_load_tests() -> None:
    directory = seed.people(generated=5_000)
    assert len(directory) == 5_003
    assert len(seed.orders(directory, count=20_000)) == 20_000
    assert seed.orders([], count=10) == []
    assert seed.orders(directory, count=0) == []
