"""The rules for values that recur across routes.yaml (URLs, roles, rate limits), and
the readers that reach into data the schema may have rejected.

Both the top-level rules (checks.py) and the route rules (route_checks.py) use them,
so a value is judged, and its problem worded, the same wherever it is written.
"""

from __future__ import annotations

import re
from typing import Any, Protocol
from urllib.parse import urlsplit

import limits

from gateway.config.source import Path

# A role as it travels in the comma-separated X-User-Roles and is compared exactly:
# printable ASCII without whitespace or comma, as roles in tokens must be.
_ROLE = re.compile(r"[!-+\--~]{1,256}")


class Fail(Protocol):
    """Records one problem at `path` (at its key rather than its value when `key`)."""

    def __call__(self, path: Path, message: str, *, key: bool = False) -> None: ...


def nested_value(data: Any, *keys: str | int) -> Any:
    """A nested value, or None where any step is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or key >= len(data):
                return None
        elif not isinstance(data, dict):
            return None
        data = data[key] if isinstance(key, int) else data.get(key)
    return data


def string_items(value: Any) -> list[str]:
    """The strings of a list, or none where `value` is not a list."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def check_http_url(fail: Fail, path: Path, url: Any, what: str, *, allow_path: bool) -> None:
    if not isinstance(url, str):
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(path, f"{what} {url!r} must be an http:// or https:// URL with a host")
    elif parts.query or parts.fragment or parts.username or parts.password:
        fail(path, f"{what} {url!r} must not carry a query, fragment or credentials")
    elif not allow_path and parts.path not in ("", "/"):
        fail(path, f"{what} {url!r} must not have a path")
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            fail(path, f"{what} {url!r} has an invalid port")


def check_roles(fail: Fail, path: Path, roles: Any, label: str) -> None:
    for index, role in enumerate(roles if isinstance(roles, list) else []):
        if isinstance(role, str) and not _ROLE.fullmatch(role):
            fail(
                (*path, index),
                f"{label}: role {role!r} must be 1 to 256 printable ASCII characters "
                "without spaces or commas",
            )


def check_rate_limits(fail: Fail, path: Path, value: Any) -> None:
    if not isinstance(value, list):
        return
    for index, text in enumerate(value):
        if not isinstance(text, str):
            continue
        try:
            parsed = limits.parse_many(text)
        except ValueError:
            fail(
                (*path, index),
                f"rate limit {text!r} does not parse; write "
                "N/second, N/minute, N/hour or N/day (e.g. 100/minute)",
            )
            continue
        if len(parsed) != 1:
            fail((*path, index), f"rate limit {text!r}: write one limit per list item")
        elif parsed[0].amount < 1:
            fail((*path, index), f"rate limit {text!r} must allow at least 1")
