"""What HTTP says about keeping an answer (RFC 9111), apart from where it is kept.

A route's `cache` is the operator's statement that its answers may be kept, for `ttl`
seconds at most; the upstream can only shorten that or forbid it. `scope: identity`
keeps each caller's answers apart, so the gateway is then a private cache for that
caller (RFC 9111 §3: `private` answers may be kept, `s-maxage` is not for it); with
`public` or `tenant` it is a shared cache and `private` answers are never kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.model import CacheScope, RouteCache

# RFC 9111 §5.2: directive = token [ "=" ( token / quoted-string ) ], comma-separated.
_DIRECTIVE = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,;\s]*))?\s*(?:,|$)"""
)


def directives(values: Iterable[str]) -> dict[str, str | None]:
    """The Cache-Control directives of every field line, names in lower case. A
    directive given twice keeps its first value (RFC 9111 §4.2.1 lets a cache treat
    conflicting ones as it likes; the first is the one most implementations use)."""
    found: dict[str, str | None] = {}
    for value in values:
        for match in _DIRECTIVE.finditer(value):
            if not match.group(0).strip():
                continue
            name, argument = match.group(1).lower(), match.group(2)
            if argument is not None and argument.startswith('"'):
                argument = argument[1:-1].replace("\\", "")
            found.setdefault(name, argument)
    return found


def seconds(value: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 §1.2.2); None when absent or invalid, which
    RFC 9111 §4.2.1 asks to be treated as stale."""
    # isascii: "²" is a digit to str.isdigit, and int() refuses it.
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return min(int(value), 2**31)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an upstream's answer may be kept, and for how long it is fresh."""

    storable: bool
    lifetime: int  # seconds fresh from when the upstream made it (before its Age)
    reason: str  # why not, for Cache-Status detail and the logs; "" when storable


def _refused(reason: str) -> Verdict:
    return Verdict(False, 0, reason)


def verdict(
    status: int,
    cache_control: Iterable[str],
    vary: Iterable[str],
    *,
    scope: CacheScope,
    ttl: int,
    has_validator: bool,
    sets_cookie: bool,
) -> Verdict:
    """RFC 9111 §3 for an answer to a GET, under a route's `ttl` and `scope`."""
    if status != 200:
        return _refused("status")
    cc = directives(cache_control)
    if "no-store" in cc:
        return _refused("no-store")
    if "private" in cc and scope != "identity":
        return _refused("private")
    if sets_cookie:
        # A cookie is set for one client: served again, it would hand one caller's
        # session to another.
        return _refused("set-cookie")
    if any(name.strip() == "*" for value in vary for name in value.split(",")):
        return _refused("vary-star")
    lifetime = ttl
    shared_max = seconds(cc.get("s-maxage")) if scope != "identity" else None
    max_age = shared_max if shared_max is not None else seconds(cc.get("max-age"))
    if "max-age" in cc or shared_max is not None:
        lifetime = min(ttl, max_age if max_age is not None else 0)
    if "no-cache" in cc:
        lifetime = 0  # kept, but checked with the upstream before every use
    if lifetime <= 0 and not has_validator:
        return _refused("stale")  # nothing to check it with: it could never be used
    return Verdict(True, lifetime, "")


@dataclass(frozen=True, slots=True)
class Wants:
    """What a client's request directives ask of the cache (RFC 9111 §5.2.1)."""

    revalidate: bool  # no-cache, or max-age=0: a kept answer must be checked first
    no_store: bool  # the answer to this request must not be kept
    max_age: int | None  # the oldest kept answer the client accepts, in seconds


def wants(cache_control: list[str], pragma: list[str]) -> Wants:
    if not cache_control and any("no-cache" in p.lower() for p in pragma):
        return Wants(True, False, None)  # RFC 9111 §5.4: Pragma only without Cache-Control
    cc = directives(cache_control)
    max_age = seconds(cc.get("max-age")) if "max-age" in cc else None
    return Wants("no-cache" in cc or max_age == 0, "no-store" in cc, max_age)


def cache_text(cache: RouteCache) -> str:
    """e.g. `10 s per identity, vary accept-version`."""
    who = {"public": "shared by all", "tenant": "per tenant", "identity": "per identity"}
    vary = f", vary {','.join(cache.vary)}" if cache.vary else ""
    return f"{cache.ttl} s {who[cache.scope]}{vary}"
