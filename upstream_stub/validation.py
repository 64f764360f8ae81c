"""Reading JSON bodies and reporting every field problem at once.

Clients fix their requests faster when a 422 lists all bad fields, each as
{field, message}, rather than the first one only; an unreadable body is reported
the same way (field "body") so callers have one shape to handle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import request

from upstream_stub.problems import Problem

_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_CHARS = 254


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


def validation_problem(errors: Iterable[FieldError], detail: str | None = None) -> Problem:
    listed = [{"field": e.field, "message": e.message} for e in errors]
    return Problem(
        422,
        detail or "The request has invalid fields; see errors.",
        errors=listed,
    )


@dataclass(slots=True)
class Errors:
    """Field errors collected while validating one body."""

    items: list[FieldError] = field(default_factory=list)

    def add(self, name: str, message: str) -> None:
        self.items.append(FieldError(name, message))

    def raise_any(self) -> None:
        if self.items:
            raise validation_problem(self.items)


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259 §6); Python's parser allows them."""
    raise ValueError(f"{name} is not a JSON number")


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 415/422 problem.

    A missing Content-Type is accepted (many clients omit it); a non-JSON one is a
    415 so a form post does not look like "missing fields".
    """
    content_type = request.mimetype
    if content_type and not _JSON_TYPE.match(content_type):
        raise Problem(
            415,
            f"Content-Type {content_type} is not accepted; send application/json.",
            headers={"Accept-Post": "application/json"},
        )
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise validation_problem(
            [FieldError("body", "must be a JSON object")], "The body is not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise validation_problem(
            [FieldError("body", "must be a JSON object")], "The body is not a JSON object."
        )
    return body


def reject_unknown(body: dict[str, Any], allowed: Iterable[str], errors: Errors) -> None:
    known = set(allowed)
    for name in body:
        if name not in known:
            errors.add(name, "unknown field")


def text(
    body: dict[str, Any],
    name: str,
    errors: Errors,
    *,
    required: bool = True,
    max_chars: int = 200,
) -> str | None:
    """body[name] as a non-blank string of at most max_chars, else an error."""
    if name not in body or body[name] is None:
        if required:
            errors.add(name, "is required")
        return None
    value = body[name]
    if not isinstance(value, str):
        errors.add(name, "must be a string")
        return None
    if not value.strip():
        errors.add(name, "must not be blank")
        return None
    if len(value) > max_chars:
        errors.add(name, f"must be at most {max_chars} characters")
        return None
    return value


def email(body: dict[str, Any], name: str, errors: Errors, *, required: bool = True) -> str | None:
    value = text(body, name, errors, required=required, max_chars=MAX_EMAIL_CHARS)
    if value is None:
        return None
    if not EMAIL.match(value):
        errors.add(name, "must be an email address")
        return None
    return value.strip().lower()


def integer(value: Any, name: str, errors: Errors, *, minimum: int, maximum: int) -> int | None:
    """value as an int in [minimum, maximum]; JSON true/false are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(name, "must be an integer")
        return None
    if not minimum <= value <= maximum:
        errors.add(name, f"must be between {minimum} and {maximum}")
        return None
    return value
