"""End to end: orders v1 and v2, chosen by URL or by the Accept-Version header.

v1 shows `total` as a number, v2 as {amount_cents, currency}; v1 is deprecated and
says so (Deprecation, Sunset, Link rel="successor-version"); answers of the header-
versioned path vary on Accept-Version; an unknown version is a 400 problem.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from .stack_support import (
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    link_targets,
    stack_fixtures,
)
from .support import Reply

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

# routes.yaml: v1 deprecated since 2026-01-01, sunset 2027-06-30.
DEPRECATED_SINCE = datetime(2026, 1, 1, tzinfo=UTC)
SUNSET = datetime(2027, 6, 30, tzinfo=UTC)


def _is_v1(order: dict[str, Any]) -> bool:
    total = order["total"]
    return isinstance(total, int | float) and not isinstance(total, bool)


def _is_v2(order: dict[str, Any]) -> bool:
    total = order["total"]
    return (
        isinstance(total, dict)
        and set(total) == {"amount_cents", "currency"}
        and isinstance(total["amount_cents"], int)
        and total["currency"] == "EUR"
    )


def _vary(reply: Reply) -> set[str]:
    return {
        token.strip().lower()
        for value in reply.header_values("Vary")
        for token in value.split(",")
        if token.strip()
    }


def assert_deprecated(reply: Reply, host_port: str, successor_path: str) -> None:
    deprecation = reply.header("Deprecation")
    assert deprecation == f"@{int(DEPRECATED_SINCE.timestamp())}", reply.describe()
    sunset = reply.header("Sunset")
    assert sunset, reply.describe()
    assert parsedate_to_datetime(sunset) == SUNSET, reply.describe()
    successors = link_targets(reply, "successor-version")
    assert successors == [f"http://{host_port}{successor_path}"], reply.describe()


def assert_current(reply: Reply) -> None:
    names = reply.header_names
    assert "deprecation" not in names and "sunset" not in names, reply.describe()
    assert not link_targets(reply, "successor-version"), reply.describe()


def test_url_versions(reference_stack: ReferenceStack, api: StackClient) -> None:
    admin = reference_stack.logins["admin"]
    host = reference_stack.host_port

    v1 = api.get("/api/v1/orders?limit=5", [admin.bearer])
    assert v1.status == 200, v1.describe()
    v1_orders = v1.json()["data"]
    assert len(v1_orders) == 5 and all(_is_v1(o) for o in v1_orders), v1_orders
    assert_deprecated(v1, host, "/api/v2/orders")

    v2 = api.get("/api/v2/orders?limit=5", [admin.bearer])
    assert v2.status == 200, v2.describe()
    v2_orders = v2.json()["data"]
    assert len(v2_orders) == 5 and all(_is_v2(o) for o in v2_orders), v2_orders
    assert_current(v2)

    # The same orders, the same amounts, two representations.
    assert [o["id"] for o in v1_orders] == [o["id"] for o in v2_orders]
    for old, new in zip(v1_orders, v2_orders, strict=True):
        assert round(old["total"] * 100) == new["total"]["amount_cents"], (old, new)

    # One order: the successor of a v1 item is the same item in v2.
    order_id = v2_orders[0]["id"]
    item_v1 = api.get(f"/api/v1/orders/{order_id}", [admin.bearer])
    assert item_v1.status == 200 and _is_v1(item_v1.json()), item_v1.describe()
    assert_deprecated(item_v1, host, f"/api/v2/orders/{order_id}")
    item_v2 = api.get(f"/api/v2/orders/{order_id}", [admin.bearer])
    assert item_v2.status == 200 and _is_v2(item_v2.json()), item_v2.describe()
    assert_current(item_v2)


def test_header_versions(reference_stack: ReferenceStack, api: StackClient) -> None:
    admin = reference_stack.logins["admin"]
    host = reference_stack.host_port

    as_v1 = api.get("/api/orders?limit=3", [admin.bearer, ("Accept-Version", "1")])
    assert as_v1.status == 200, as_v1.describe()
    assert all(_is_v1(o) for o in as_v1.json()["data"]), as_v1.describe()
    assert_deprecated(as_v1, host, "/api/v2/orders")
    assert "accept-version" in _vary(as_v1), as_v1.describe()

    as_v2 = api.get("/api/orders?limit=3", [admin.bearer, ("Accept-Version", "2")])
    assert as_v2.status == 200, as_v2.describe()
    assert all(_is_v2(o) for o in as_v2.json()["data"]), as_v2.describe()
    assert_current(as_v2)
    assert "accept-version" in _vary(as_v2), as_v2.describe()

    default = api.get("/api/orders?limit=3", [admin.bearer])
    assert default.status == 200, default.describe()
    assert default.json()["data"] == as_v2.json()["data"], "no header: version 2"
    assert_current(default)
    assert "accept-version" in _vary(default), default.describe()

    # The next page stays on the header-versioned path, so the header keeps choosing.
    for reply in (as_v1, as_v2, default):
        nexts = link_targets(reply, "next")
        assert len(nexts) == 1, reply.describe()
        assert api.gateway_target(nexts[0]).startswith("/api/orders?"), reply.describe()

    order_id = as_v2.json()["data"][0]["id"]
    item_v1 = api.get(f"/api/orders/{order_id}", [admin.bearer, ("Accept-Version", "1")])
    assert item_v1.status == 200 and _is_v1(item_v1.json()), item_v1.describe()
    assert_deprecated(item_v1, host, f"/api/v2/orders/{order_id}")
    assert "accept-version" in _vary(item_v1), item_v1.describe()
    item_v2 = api.get(f"/api/orders/{order_id}", [admin.bearer])
    assert item_v2.status == 200 and _is_v2(item_v2.json()), item_v2.describe()
    assert "accept-version" in _vary(item_v2), item_v2.describe()


def test_unsupported_version_is_a_problem(
    reference_stack: ReferenceStack, api: StackClient
) -> None:
    admin = reference_stack.logins["admin"]
    for path in ("/api/orders", "/api/orders/ord_000000000000"):
        reply = api.get(path, [admin.bearer, ("Accept-Version", "9")])
        problem = assert_gateway_problem(reply, 400, "unsupported_version", path)
        assert problem["supported"] == ["1", "2"], problem
        assert "1" in problem["detail"] and "2" in problem["detail"], problem
        assert "accept-version" in _vary(reply), reply.describe()
        assert_current(reply)
