"""The stub's records and their JSON representations.

Records are frozen so the store can hand them to any thread without copying.
Money is held as integer cents, never as a float, so v1's decimal `total` and v2's
`amount_cents` always describe the same amount exactly.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ROLES = ("admin", "member", "guest")
ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
DEFAULT_CURRENCY = "EUR"


def new_id(prefix: str) -> str:
    """A random id shaped like the seeded ones (prefix and 12 hex digits)."""
    return f"{prefix}_{secrets.token_hex(6)}"


def timestamp(created_us: int) -> str:
    """RFC 3339 in UTC with microseconds, so order by string equals order by time."""
    moment = datetime.fromtimestamp(created_us // 1_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{created_us % 1_000_000:06d}Z"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str  # lower case: the unique key
    name: str
    role: str
    tenant_id: str
    created_us: int
    updated_us: int
    password_hash: str | None = None  # None: this user cannot log in

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "tenant_id": self.tenant_id,
            "created_at": timestamp(self.created_us),
            "updated_at": timestamp(self.updated_us),
        }


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    quantity: int

    def public(self) -> dict[str, Any]:
        return {"sku": self.sku, "quantity": self.quantity}


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    user_id: str  # the owner
    tenant_id: str | None
    status: str
    items: tuple[Item, ...]
    amount_cents: int
    currency: str
    created_us: int

    def _common(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "tenant_id": self.tenant_id,
            "status": self.status,
            "items": [item.public() for item in self.items],
        }

    def v1(self) -> dict[str, Any]:
        """v1 (deprecated): `total` a number in major units, e.g. 12.5."""
        return {**self._common(), "total": self.amount_cents / 100, "created_at": self._at()}

    def v2(self) -> dict[str, Any]:
        """v2: `total` an exact amount and its currency."""
        total = {"amount_cents": self.amount_cents, "currency": self.currency}
        return {**self._common(), "total": total, "created_at": self._at()}

    def _at(self) -> str:
        return timestamp(self.created_us)
