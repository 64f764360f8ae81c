"""Cursor pagination exactly as the gateway's docs describe it.

`?limit=` defaults to 50 and is clamped to 200; below 1 or not a whole number is a
400. `?cursor=` is opaque: base64url of the last item's position (created_at, id)
and the collection it belongs to, followed by an HMAC-SHA256 tag, so a client can
neither forge a position nor carry a cursor over to another collection. The tag also
covers the listing's scope (one tenant's records, one owner's, one user's in every
tenant), so a cursor works only in the listing that issued it, never in another
tenant's. Pages are newest first and each page starts strictly after the previous
page's last item (keyset pagination), which is what makes concurrent inserts
harmless. The Link to the next page keeps the request's other query parameters (a
filter such as ?user_id=), with limit and cursor set for that page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from flask import Response, jsonify, request

from upstream_stub.problems import Problem
from upstream_stub.store import Collection, Position, Record

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_CHARS = 512
CURSOR_SECRET_ENV = "STUB_CURSOR_SECRET"
_INTEGER = re.compile(r"^([+-]?)([0-9]+)$")
_SEPARATOR = "\x1f"  # cannot occur in a collection name or an id
_SCOPE_SEPARATOR = b"\x1e"  # cannot occur in an id either: it ends the position

R = TypeVar("R", bound=Record)


def parse_limit(raw: str | None) -> int:
    """The page size from ?limit=, or a 400 problem."""
    if raw is None:
        return DEFAULT_LIMIT
    match = _INTEGER.match(raw.strip())
    if match is None:
        raise Problem(
            400, f"limit must be a whole number from 1 to {MAX_LIMIT}.", code="invalid_limit"
        )
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    if sign == "-" or digits == "0":
        raise Problem(400, f"limit must be at least 1, not {raw.strip()}.", code="invalid_limit")
    if len(digits) > len(str(MAX_LIMIT)):  # no need to parse a thousand digits
        return MAX_LIMIT
    return min(int(digits), MAX_LIMIT)


def cursor_secret() -> bytes:
    """STUB_CURSOR_SECRET if set (cursors then survive a restart), else random."""
    configured = os.environ.get(CURSOR_SECRET_ENV)
    if configured:
        return configured.encode("utf-8")
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and checks cursors for one process (or all sharing one secret)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the cursor secret must be at least 16 bytes")
        self._secret = secret

    def _tag(self, payload: bytes, scope: str | None) -> bytes:
        # The scope is signed but not carried: the listing that checks a cursor
        # supplies its own, so another listing's cursor simply fails the check.
        message = payload if scope is None else payload + _SCOPE_SEPARATOR + scope.encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def encode(self, collection: str, position: Position, scope: str | None = None) -> str:
        created_us, record_id = position
        payload = _SEPARATOR.join((collection, str(created_us), record_id)).encode("utf-8")
        return f"{_b64(payload)}.{_b64(self._tag(payload, scope))}"

    def decode(self, collection: str, cursor: str, scope: str | None = None) -> Position:
        """The position in `cursor`, or a 400 problem if it is not one of ours for
        this collection and scope."""
        invalid = Problem(
            400,
            "The cursor is not valid here; start again without one.",
            code="invalid_cursor",
        )
        if len(cursor) > MAX_CURSOR_CHARS or cursor.count(".") != 1:
            raise invalid
        payload_text, tag_text = cursor.split(".")
        try:
            payload = _unb64(payload_text)
            tag = _unb64(tag_text)
        except (ValueError, binascii.Error):
            raise invalid from None
        if not hmac.compare_digest(tag, self._tag(payload, scope)):
            raise invalid
        try:
            name, created, record_id = payload.decode("utf-8").split(_SEPARATOR)
            created_us = int(created)
        except ValueError:
            raise invalid from None
        if name != collection:
            raise invalid
        return created_us, record_id


def page_response(
    collection: Collection[R],
    name: str,
    codec: CursorCodec,
    represent: Callable[[R], dict[str, Any]],
    *,
    group: str | None = None,
) -> Response:
    """One page of `collection` for the current request, with next_cursor and Link.

    With `group`, only that group's records, and cursors valid for that group only.
    """
    limit = parse_limit(request.args.get("limit"))
    raw_cursor = request.args.get("cursor")
    before = codec.decode(name, raw_cursor, group) if raw_cursor else None
    page = collection.page(limit, before=before, group=group)
    next_cursor = None
    if page.has_more and page.items:
        last = page.items[-1]
        next_cursor = codec.encode(name, (last.created_us, last.id), group)
    response = jsonify(
        {"data": [represent(item) for item in page.items], "next_cursor": next_cursor}
    )
    if next_cursor is not None:
        response.headers["Link"] = f'<{next_link(limit, next_cursor)}>; rel="next"'
    return response


def next_link(limit: int, cursor: str) -> str:
    """This request's own path and query, with limit and cursor set for the next page.

    Relative to this service; the gateway rewrites it to its public address.
    """
    query = [
        (key, value)
        for key, value in request.args.items(multi=True)
        if key not in ("limit", "cursor")
    ]
    query += [("limit", str(limit)), ("cursor", cursor)]
    return f"{request.path}?{urlencode(query)}"
