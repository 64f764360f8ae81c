"""Records and their representations."""

from __future__ import annotations

import re

from upstream_stub.models import Item, Order, User, new_id, timestamp


def test_timestamps_are_rfc_3339_utc_with_microseconds() -> None:
    assert timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert timestamp(1_735_689_600_000_001) == "2025-01-01T00:00:00.000001Z"
    # Fixed width: string order is time order.
    assert timestamp(999_999) < timestamp(1_000_000)


def test_new_ids_look_like_seeded_ones() -> None:
    assert re.fullmatch(r"ord_[0-9a-f]{12}", new_id("ord"))
    assert new_id("usr") != new_id("usr")


def test_user_public_view_hides_the_password_hash() -> None:
    user = User("usr_1", "a@example.com", "A", "admin", "acme", 0, 1, "scrypt$secret")
    view = user.public()
    assert "password_hash" not in view
    assert "scrypt$secret" not in str(view)
    assert view["updated_at"] == timestamp(1)


def test_order_views() -> None:
    order = Order("ord_1", "usr_1", "acme", "paid", (Item("S", 2),), 1250, "EUR", 0)
    assert order.v1()["total"] == 12.5
    assert order.v2()["total"] == {"amount_cents": 1250, "currency": "EUR"}
    assert order.v1()["items"] == [{"sku": "S", "quantity": 2}]
    odd = Order("ord_2", "usr_1", None, "paid", (), 1999, "EUR", 0)
    assert odd.v1()["total"] == 19.99
