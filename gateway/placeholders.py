"""The target of a composed part: a path and query with placeholders, filled per request.

`/users/{identity.sub}/orders?limit={query.limit:-5}&status=open` names, in braces, a
parameter of the route's public path (`{user_id}`), a field of the caller's identity
(`{identity.sub}`, `{identity.tenant_id}`, `{identity.consumer_id}`) or a query
parameter of the client's request (`{query.limit}`, with a default after `:-`).

Placeholders may stand in the path and in query values, never in a query member's
name. Each value is percent-encoded whole for where it stands (`/`, `?`, `&`, `=`, `#`
included), so whatever a client or a token holds cannot add a path segment, a query
member or another host; a value that is empty, `.` or `..` is refused in the path
rather than sent, so no segment comes out empty or a dot segment. The template is
parsed once, when the configuration is loaded; a request only looks values up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

IDENTITY_FIELDS = ("sub", "tenant_id", "consumer_id")

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,128}")
_SLOT = re.compile(
    r"(?P<source>identity|query)\.(?P<name>[^:]*)(?::-(?P<default>.*))?|(?P<param>.*)"
)
# RFC 3986 pchar (unreserved, sub-delims, ":", "@", percent-encodings) and "/": what
# the literal text of a path may hold as written. A query also may hold "?".
_PATH_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_QUERY_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~!$'()*+,;:@/?]|%[0-9A-Fa-f]{2})*")

Source = Literal["param", "identity", "query"]


class TemplateProblem(ValueError):
    """A part path that cannot be used, said for `gateway check`."""


class MissingValue(LookupError):
    """A request that cannot fill a placeholder: no such identity field, or a query
    parameter without a default where the path needs one."""

    def __init__(self, slot: Slot, reason: str) -> None:
        super().__init__(f"{slot}: {reason}")
        self.slot = slot
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Slot:
    source: Source
    name: str
    default: str | None = None

    def __str__(self) -> str:
        if self.source == "param":
            return "{" + self.name + "}"
        default = "" if self.default is None else f":-{self.default}"
        return "{" + f"{self.source}.{self.name}{default}" + "}"


Piece = str | Slot


@dataclass(frozen=True, slots=True)
class PlaceholderValues:
    """What a request offers to fill placeholders with (decoded values)."""

    params: Mapping[str, str]
    identity: Mapping[str, str | None]  # IDENTITY_FIELDS; None: the caller has none
    query: Callable[[str], str | None]  # the first value of a query parameter


@dataclass(frozen=True, slots=True)
class PartTemplate:
    text: str
    path: tuple[Piece, ...]
    # (name, value pieces) per member; None for a member written without "="
    query: tuple[tuple[str, tuple[Piece, ...] | None], ...]

    @classmethod
    def parse(cls, text: str, route_params: Collection[str]) -> PartTemplate:
        """Raises TemplateProblem for a path the gateway could not send safely."""
        if not text.startswith("/") or text.startswith("//"):
            raise TemplateProblem("must start with a single /")
        if "#" in text:
            raise TemplateProblem("must not hold a fragment (#)")
        path_text, _, query_text = text.partition("?")
        segments = path_text.split("/")[1:]
        if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
            raise TemplateProblem("must not hold an empty, . or .. segment")
        path = _pieces(path_text, route_params, _PATH_TEXT, "the path")
        query = []
        for member in query_text.split("&") if query_text else ():
            name, has_value, value = member.partition("=")
            if not name or _PLACEHOLDER.search(name) or not _QUERY_TEXT.fullmatch(name):
                raise TemplateProblem(
                    f"query member {member!r}: a name must be plain text (placeholders "
                    "may stand in values only)"
                )
            pieces = _pieces(value, route_params, _QUERY_TEXT, f"query member {name!r}")
            query.append((name, pieces if has_value else None))
        return cls(text, path, tuple(query))

    @property
    def slots(self) -> tuple[Slot, ...]:
        pieces = [*self.path, *(p for _, value in self.query for p in value or ())]
        return tuple(p for p in pieces if isinstance(p, Slot))

    def expand(self, values: PlaceholderValues) -> str:
        """The path and query to send. Raises MissingValue."""
        path = "".join(
            p if isinstance(p, str) else quote(_path_value(p, values), safe="") for p in self.path
        )
        members = []
        for name, pieces in self.query:
            if pieces is None:
                members.append(name)
                continue
            value = []
            for piece in pieces:
                if isinstance(piece, str):
                    value.append(piece)
                    continue
                filled = _value(piece, values)
                if filled is None:
                    break  # an absent optional parameter: the member is left out
                value.append(quote(filled, safe=""))
            else:
                members.append(f"{name}={''.join(value)}")
        return path + ("?" + "&".join(members) if members else "")


def _path_value(slot: Slot, values: PlaceholderValues) -> str:
    value = _value(slot, values)
    if value is None:
        raise MissingValue(slot, "the request has no value for it")
    if value in ("", ".", ".."):
        raise MissingValue(slot, "an empty or dot value cannot stand in a path")
    return value


def _value(slot: Slot, values: PlaceholderValues) -> str | None:
    if slot.source == "param":
        return values.params[slot.name]
    if slot.source == "identity":
        value = values.identity.get(slot.name)
        if value is None:
            raise MissingValue(slot, "the caller's identity has no such value")
        return value
    given = values.query(slot.name)
    return given if given is not None else slot.default


def _pieces(
    text: str, route_params: Collection[str], allowed: re.Pattern[str], where: str
) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    at = 0
    for match in _PLACEHOLDER.finditer(text):
        pieces.append(text[at : match.start()])
        pieces.append(_slot(match.group(1), route_params))
        at = match.end()
    pieces.append(text[at:])
    for piece in pieces:
        if isinstance(piece, str) and (
            "{" in piece or "}" in piece or not allowed.fullmatch(piece)
        ):
            raise TemplateProblem(
                f"{where}: {piece!r} holds characters that must be percent-encoded, or an "
                "unclosed brace"
            )
    return tuple(p for p in pieces if p != "")


def _slot(inner: str, route_params: Collection[str]) -> Slot:
    match = _SLOT.fullmatch(inner)
    assert match is not None  # the last alternative matches anything
    if match["param"] is not None:
        if match["param"] not in route_params:
            known = ", ".join(sorted(route_params)) or "none"
            raise TemplateProblem(
                f"unknown placeholder {{{inner}}}: not a parameter of the route's path "
                f"({known}), identity.{{{','.join(IDENTITY_FIELDS)}}} or query.NAME"
            )
        return Slot("param", match["param"])
    name, default = match["name"], match["default"]
    if match["source"] == "identity":
        if name not in IDENTITY_FIELDS or default is not None:
            raise TemplateProblem(
                f"unknown placeholder {{{inner}}}: identity placeholders are "
                + ", ".join(f"{{identity.{f}}}" for f in IDENTITY_FIELDS)
            )
        return Slot("identity", name)
    if not _QUERY_NAME.fullmatch(name):
        raise TemplateProblem(
            f"placeholder {{{inner}}}: a query parameter name is 1-128 of A-Z a-z 0-9 _ . ~ -"
        )
    return Slot("query", name, default)
