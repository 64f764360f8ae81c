"""Orders in two representations: v1 (deprecated) and v2, over one store.

v1 shows `total` as a number of major units (12.5); v2 as an exact object
{"amount_cents": 1250, "currency": "EUR"}. Both views read and write the same
orders, so an order created through v1 is visible through v2 and vice versa.

Visibility follows the caller's identity headers (upstream_stub.callers): an admin
sees every order of their own tenant; any other caller of a tenant (a member) sees
only the orders they own in it; the service key reads every tenant's orders. An
order the caller may not see is a 404, exactly like one that does not exist, so
neither ids nor other tenants' orders leak.

GET /v1/orders and /v2/orders take an optional `?user_id=`: only the orders that user
owns, among those the caller sees, newest first and paged like the whole list. An
admin gets that user's orders in the admin's tenant, the service key that user's
orders in every tenant, and a member their own orders, or an empty page for anyone
else's. A filtered list is a listing (a store group) like the unfiltered ones, so
its cursors page through that user's orders only and are refused anywhere else: in
the unfiltered list, or with another user_id (for a member, ?user_id= of themselves
is their whole list, the same listing). The Link to the next page keeps the filter.
An empty, blank, repeated or over-long user_id is a 422 problem.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, jsonify, request

from upstream_stub.callers import Caller, current_caller
from upstream_stub.conditional import check_preconditions, entity_tag, representation_response
from upstream_stub.models import DEFAULT_CURRENCY, Item, Order, new_id
from upstream_stub.pagination import page_response
from upstream_stub.problems import Problem
from upstream_stub.state import orders_state, owner_group, tenant_group, user_group
from upstream_stub.validation import Errors, integer, json_object, reject_unknown, text

MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_AMOUNT_CENTS = 100_000_000_000  # one billion in major units
# The longest user id the gateway passes on in X-User-Id (its claim limit), so the
# longest an order's owner can be.
MAX_USER_ID_CHARS = 256
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# The one id no real user or tenant has: what a caller without X-User-Id owns, and
# the tenant of a caller without X-Tenant-Id (so both list nothing).
_NOBODY = ""

blueprint = Blueprint("orders", __name__)

REPRESENTATIONS: dict[str, Callable[[Order], dict[str, Any]]] = {
    "v1": Order.v1,
    "v2": Order.v2,
}


def _visible(order: Order, caller: Caller) -> bool:
    if caller.every_tenant:
        return True
    return caller.reads(order.tenant_id) and (caller.admin or order.user_id == caller.user_id)


def _deletable(order: Order, caller: Caller) -> bool:
    return caller.writes(order.tenant_id) and _visible(order, caller)


def _group(caller: Caller, user_id: str | None = None) -> str | None:
    """The listing a caller pages through: None for every order.

    With `user_id`, only the orders that user owns among those the caller sees.
    """
    if caller.every_tenant:
        return None if user_id is None else user_group(user_id)
    tenant = caller.tenant_id or _NOBODY
    if caller.admin:
        return tenant_group(tenant) if user_id is None else owner_group(tenant, user_id)
    own = caller.user_id or _NOBODY
    if user_id is not None and user_id != own:
        # A member sees only their own orders, so none of anyone else's: an empty
        # listing, not an error, and not that user's orders.
        own = _NOBODY
    return owner_group(tenant, own)


def _user_filter() -> str | None:
    """The owner ?user_id= asks for, None without one; a 422 if it is not usable."""
    values = request.args.getlist("user_id")
    if not values:
        return None
    errors = Errors()
    if len(values) > 1:
        errors.add("user_id", "must be given once")
    else:
        text({"user_id": values[0]}, "user_id", errors, max_chars=MAX_USER_ID_CHARS)
    errors.raise_any()
    # Stripped, as the X-User-Id an order's owner was taken from is.
    return values[0].strip()


def _not_found(order_id: str) -> Problem:
    return Problem(404, f"There is no order {order_id}.", code="not_found")


def _items(body: dict[str, Any], errors: Errors) -> tuple[Item, ...]:
    raw = body.get("items")
    if "items" not in body:
        errors.add("items", "is required")
        return ()
    if not isinstance(raw, list):
        errors.add("items", "must be a list")
        return ()
    if not 1 <= len(raw) <= MAX_ITEMS:
        errors.add("items", f"must hold 1 to {MAX_ITEMS} items")
        return ()
    items = []
    for index, entry in enumerate(raw):
        where = f"items[{index}]"
        if not isinstance(entry, dict):
            errors.add(where, "must be an object with sku and quantity")
            continue
        entry_errors = Errors()
        reject_unknown(entry, ("sku", "quantity"), entry_errors)
        sku = text(entry, "sku", entry_errors, max_chars=64)
        quantity = None
        if "quantity" not in entry:
            entry_errors.add("quantity", "is required")
        else:
            quantity = integer(
                entry["quantity"], "quantity", entry_errors, minimum=1, maximum=MAX_QUANTITY
            )
        for error in entry_errors.items:
            errors.add(f"{where}.{error.field}", error.message)
        if sku is not None and quantity is not None:
            items.append(Item(sku.strip(), quantity))
    return tuple(items)


def _v1_total(body: dict[str, Any], errors: Errors) -> tuple[int, str] | None:
    """v1: a non-negative number with at most two decimals, in the default currency."""
    if "total" not in body:
        errors.add("total", "is required")
        return None
    value = body["total"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.add("total", "must be a number")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.add("total", "must be a finite number")
        return None
    try:
        # repr is the shortest text that reads back as the same float: 12.5, not 12.4999...
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        cents = amount * 100
    except InvalidOperation:
        errors.add("total", "must be a number")
        return None
    if cents != cents.to_integral_value():
        errors.add("total", "must have at most two decimal places")
        return None
    if not 0 <= cents <= MAX_AMOUNT_CENTS:
        errors.add("total", f"must be between 0 and {MAX_AMOUNT_CENTS // 100}")
        return None
    return int(cents), DEFAULT_CURRENCY


def _v2_total(body: dict[str, Any], errors: Errors) -> tuple[int, str] | None:
    """v2: {amount_cents: integer, currency: ISO 4217 code}."""
    if "total" not in body:
        errors.add("total", "is required")
        return None
    value = body["total"]
    if not isinstance(value, dict):
        errors.add("total", "must be an object with amount_cents and currency")
        return None
    total_errors = Errors()
    reject_unknown(value, ("amount_cents", "currency"), total_errors)
    cents = None
    if "amount_cents" not in value:
        total_errors.add("amount_cents", "is required")
    else:
        cents = integer(
            value["amount_cents"], "amount_cents", total_errors, minimum=0, maximum=MAX_AMOUNT_CENTS
        )
    currency = text(value, "currency", total_errors, max_chars=3)
    if currency is not None and not _CURRENCY.match(currency):
        total_errors.add("currency", "must be a three-letter ISO 4217 code such as EUR")
        currency = None
    for error in total_errors.items:
        errors.add(f"total.{error.field}", error.message)
    if cents is None or currency is None:
        return None
    return cents, currency


_TOTALS = {"v1": _v1_total, "v2": _v2_total}


@blueprint.get("/<any(v1, v2):version>/orders")
def list_orders(version: str) -> Response:
    """A page of the orders the caller sees; ?user_id= keeps one user's (see _group)."""
    state = orders_state()
    user_id = _user_filter()
    return page_response(
        state.orders,
        "orders",
        state.cursors,
        REPRESENTATIONS[version],
        group=_group(current_caller(), user_id),
    )


@blueprint.post("/<any(v1, v2):version>/orders")
def create_order(version: str) -> Response:
    caller = current_caller()
    caller.refuse_read_only()
    body = json_object()
    errors = Errors()
    if caller.user_id is None:
        errors.add("X-User-Id", "is required: a new order belongs to the calling user")
    if caller.tenant_id is None:
        errors.add("X-Tenant-Id", "is required: a new order belongs to the caller's tenant")
    reject_unknown(body, ("items", "total"), errors)
    items = _items(body, errors)
    total = _TOTALS[version](body, errors)
    errors.raise_any()
    assert caller.user_id is not None and caller.tenant_id is not None and total is not None
    owner, tenant = caller.user_id, caller.tenant_id
    cents, currency = total
    order = orders_state().orders.insert(
        lambda created_us: Order(
            id=new_id("ord"),
            user_id=owner,
            tenant_id=tenant,
            status="pending",
            items=items,
            amount_cents=cents,
            currency=currency,
            created_us=created_us,
        )
    )
    response = jsonify(REPRESENTATIONS[version](order))
    response.status_code = 201
    response.headers["Location"] = f"/{version}/orders/{order.id}"
    return response


@blueprint.get("/<any(v1, v2):version>/orders/<order_id>")
def get_order(version: str, order_id: str) -> Response:
    order = orders_state().orders.get(order_id)
    if order is None or not _visible(order, current_caller()):
        raise _not_found(order_id)
    return representation_response(REPRESENTATIONS[version](order))


@blueprint.delete("/<any(v1, v2):version>/orders/<order_id>")
def delete_order(version: str, order_id: str) -> Response:
    caller = current_caller()
    caller.refuse_read_only()

    def deletable(order: Order) -> bool:
        # Under the store's lock: a 404 first, then If-Match against this version's
        # representation (a v2 ETag does not match on /v1/orders/{id}, nor the reverse).
        if not _deletable(order, caller):
            return False
        check_preconditions(entity_tag(REPRESENTATIONS[version](order)))
        return True

    if not orders_state().orders.delete(order_id, where=deletable):
        raise _not_found(order_id)
    return Response(status=204)
