"""Deterministic seed data: the same users and orders on every start.

Both services build the same user directory from the same seed, so the orders
service can give orders to real user ids (the `sub` of the users service's tokens)
without talking to the users service. Seeded positions end at a fixed moment in
the past, so anything created at run time sorts as newer than all of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from upstream_stub.models import ORDER_STATUSES, Item, Order

DEFAULT_SEED = 1
DEFAULT_USERS = 250
DEFAULT_ORDERS = 1000
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
# Seeded records are placed before this moment, newest last.
ANCHOR_US = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    email: str
    name: str
    role: str
    tenant_id: str
    created_us: int
    password: str | None  # demo users only; generated users cannot log in


# The three demo logins the README names.
DEMO_USERS = (
    ("admin@example.com", "Ada Admin", "admin", "admin-password"),
    ("member@example.com", "Max Member", "member", "member-password"),
    ("guest@example.com", "Gus Guest", "guest", "guest-password"),
)
DEMO_TENANT = TENANTS[0]

_FIRST = ("alex", "bea", "chen", "dana", "emil", "fatima", "goran", "hana", "ivan", "jun")
_LAST = ("berg", "costa", "diaz", "eriksen", "fischer", "garcia", "haddad", "ito", "jones")
_SKUS = tuple(f"SKU-{n:04d}" for n in range(1, 41))


def _ids(rng: random.Random, prefix: str) -> Iterator[str]:
    """Unique, unguessable-looking ids, the same for the same rng."""
    seen: set[str] = set()
    while True:
        candidate = f"{prefix}_{rng.getrandbits(48):012x}"
        if candidate not in seen:
            seen.add(candidate)
            yield candidate


def _times(rng: random.Random, count: int, max_gap_s: int) -> list[int]:
    """`count` strictly increasing microsecond times ending at ANCHOR_US."""
    gaps = [rng.randint(1_000_000, max_gap_s * 1_000_000) for _ in range(count)]
    times: list[int] = []
    moment = ANCHOR_US
    for gap in gaps:
        times.append(moment)
        moment -= gap
    times.reverse()
    return times


def people(seed: int = DEFAULT_SEED, generated: int = DEFAULT_USERS) -> list[Person]:
    """The demo users, then `generated` more over several tenants, oldest first."""
    rng = random.Random(f"users:{seed}")
    ids = _ids(rng, "usr")
    total = len(DEMO_USERS) + generated
    times = _times(rng, total, max_gap_s=6 * 3600)
    result = [
        Person(next(ids), email, name, role, DEMO_TENANT, times[index], password)
        for index, (email, name, role, password) in enumerate(DEMO_USERS)
    ]
    for number in range(1, generated + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        role = rng.choices(("member", "guest", "admin"), weights=(80, 15, 5))[0]
        result.append(
            Person(
                id=next(ids),
                email=f"{first}.{last}.{number}@example.com",
                name=f"{first.title()} {last.title()}",
                role=role,
                tenant_id=rng.choice(TENANTS),
                created_us=times[len(result)],
                password=None,
            )
        )
    return result


def orders(
    directory: list[Person], seed: int = DEFAULT_SEED, count: int = DEFAULT_ORDERS
) -> list[Order]:
    """`count` orders, oldest first; the demo admin and member own a share each."""
    if not directory:
        return []
    rng = random.Random(f"orders:{seed}")
    ids = _ids(rng, "ord")
    times = _times(rng, count, max_gap_s=3600)
    demo = {person.role: person for person in directory[: len(DEMO_USERS)]}
    result = []
    for created_us in times:
        pick = rng.random()
        if pick < 0.10 and "member" in demo:
            owner = demo["member"]
        elif pick < 0.15 and "admin" in demo:
            owner = demo["admin"]
        else:
            owner = rng.choice(directory)
        items = tuple(Item(rng.choice(_SKUS), rng.randint(1, 5)) for _ in range(rng.randint(1, 4)))
        amount = sum(item.quantity * rng.randint(199, 9_999) for item in items)
        result.append(
            Order(
                id=next(ids),
                user_id=owner.id,
                tenant_id=owner.tenant_id,
                status=rng.choice(ORDER_STATUSES),
                items=items,
                amount_cents=amount,
                currency="EUR",
                created_us=created_us,
            )
        )
    return result
