"""Path templates (`/users/{user_id}`, `/files/{rest:path}`) and request-path safety.

Templates are parsed once at load time. A request path is checked before routing: a
path that could mean one thing to the gateway and another to an upstream (dot
segments, encoded separators, path parameters, control characters) is refused, and
the upstream path is built only from the route's template with each parameter
re-encoded, so a parameter can never climb out of its segment.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar
from urllib.parse import quote, unquote_to_bytes

ParamKind = Literal["segment", "path"]

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}$")
# RFC 3986 pchar without ";" (we refuse path parameters) and without "%" (templates are
# written decoded).
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()*+,=:@-]+$")


class TemplateError(ValueError):
    """A path template that cannot be used."""


@dataclass(frozen=True, slots=True)
class Segment:
    text: str  # the literal, or the parameter name
    param: ParamKind | None = None


@dataclass(frozen=True, slots=True)
class PathTemplate:
    text: str
    segments: tuple[Segment, ...]

    # Templates are immutable, so a text parsed a moment ago may give the same template
    # again: a route's path and upstream path are often one text, and a worker of a
    # 10,000-route gateway then keeps one template for both.
    @classmethod
    @functools.lru_cache(maxsize=256)
    def parse(cls, text: str) -> PathTemplate:
        if not text.startswith("/"):
            raise TemplateError(f"path template {text!r} must start with '/'")
        if text == "/":
            return cls(text, ())
        segments: list[Segment] = []
        names: set[str] = set()
        parts = text[1:].split("/")
        for index, part in enumerate(parts):
            if part == "":
                raise TemplateError(f"path template {text!r} has an empty segment")
            if "{" in part or "}" in part:
                match = _PARAM.match(part)
                if not match:
                    raise TemplateError(
                        f"path template {text!r}: {part!r} is not a parameter; write "
                        "{name} or {name:path}, alone in its segment"
                    )
                name, converter = match.group(1), match.group(2)
                if converter not in (None, "path"):
                    raise TemplateError(
                        f"path template {text!r}: unknown parameter type {converter!r} "
                        "(only {name} and {name:path})"
                    )
                if name in names:
                    raise TemplateError(f"path template {text!r} repeats parameter {name!r}")
                names.add(name)
                kind: ParamKind = "path" if converter == "path" else "segment"
                if kind == "path" and index != len(parts) - 1:
                    raise TemplateError(
                        f"path template {text!r}: {{{name}:path}} must be the last segment"
                    )
                segments.append(_segment(name, kind))
            elif part in (".", "..") or not _LITERAL.match(part):
                raise TemplateError(
                    f"path template {text!r}: segment {part!r} is not a plain path segment"
                )
            else:
                segments.append(_segment(part, None))
        return cls(text, tuple(segments))

    @property
    def params(self) -> dict[str, ParamKind]:
        return {s.text: s.param for s in self.segments if s.param is not None}

    @property
    def werkzeug_rule(self) -> str:
        parts = []
        for s in self.segments:
            if s.param == "path":
                parts.append(f"<path:{s.text}>")
            elif s.param == "segment":
                parts.append(f"<{s.text}>")
            else:
                parts.append(s.text)
        return "/" + "/".join(parts)

    @property
    def shape(self) -> str:
        """The template with parameter names erased: equal shapes match equal paths."""
        return "/" + "/".join(
            "{}" if s.param == "segment" else "{*}" if s.param == "path" else s.text
            for s in self.segments
        )

    @property
    def regex(self) -> re.Pattern[str]:
        """Matches a percent-encoded path; groups hold the still-encoded parameters."""
        return _template_regex(self.text)

    def example(self) -> str:
        """A concrete path this template matches, with a neutral value per parameter.

        A {name:path} parameter gets many segments, so a template with a one-segment
        parameter in the same place is not mistaken for one that hides it.
        """
        # "{name}" can never equal a literal segment (literals have no braces), so the
        # example path exercises the parameter, not a literal route that happens to match.
        return "/" + "/".join(
            "/".join([f"{{{s.text}}}"] * 8)
            if s.param == "path"
            else f"{{{s.text}}}"
            if s.param
            else s.text
            for s in self.segments
        )

    def expand(self, values: Mapping[str, str]) -> str:
        """Build a path from decoded parameter values, each percent-encoded again.

        Raises ValueError for a value that would add a dot or empty segment: request
        paths are checked before routing, this is the second lock on the same door.
        """
        out = []
        for s in self.segments:
            if s.param is None:
                out.append(s.text)
                continue
            parts = values[s.text].split("/") if s.param == "path" else [values[s.text]]
            # A {name:path} value may end in "/": that empty segment is a trailing slash.
            trailing_slash = s.param == "path" and len(parts) > 1 and parts[-1] == ""
            checked = parts[:-1] if trailing_slash else parts
            for part in checked:
                if part in ("", ".", ".."):
                    raise ValueError(f"parameter {s.text!r} holds an empty or dot segment")
            out.append("/".join(quote(part, safe="") for part in parts))
        return "/" + "/".join(out)


@functools.lru_cache(maxsize=512)
def _segment(text: str, param: ParamKind | None) -> Segment:
    # The same segments ("api", "v1", "{id}") recur in every route of a large table:
    # one object each instead of one per template. Those that recur stay in the cache.
    return Segment(text, param)


@functools.lru_cache(maxsize=512)
def _template_regex(text: str) -> re.Pattern[str]:
    # Keyed by the text, whose hash Python keeps, and bounded: a table of many
    # thousand routes must not grow one compiled pattern per route that ever answered.
    parts = []
    for s in PathTemplate.parse(text).segments:
        if s.param == "path":
            parts.append(f"(?P<{s.text}>[^/].*)")
        elif s.param == "segment":
            parts.append(f"(?P<{s.text}>[^/]+)")
        else:
            parts.append(re.escape(quote(s.text, safe="!$&'()*+,=:@~")))
    return re.compile("/" + "/".join(parts) + "/?" if parts else "/")


E = TypeVar("E")

# What a {name:path} parameter accepts of the rest of the path: werkzeug's
# PathConverter pattern, which ends at a newline (no DOTALL).
_REST = re.compile(r"[^/].*?\Z")


class NoMatch(LookupError):
    """No template matches the path with the method.

    `allowed` holds the methods of the templates that match the path with other
    methods; empty when no template matches the path at all.
    """

    def __init__(self, allowed: frozenset[str]) -> None:
        super().__init__(", ".join(sorted(allowed)))
        self.allowed = allowed


class _Target(Generic[E]):
    __slots__ = ("endpoint", "methods", "names")

    def __init__(self, endpoint: E, methods: frozenset[str] | None, names: tuple[str, ...]) -> None:
        self.endpoint = endpoint
        self.methods = methods  # None: any method
        self.names = names  # the parameters, in the order the path holds them


class _Node(Generic[E]):
    """One segment position. Slots and children made only when used: a table of
    10,000 routes holds about 25,000 nodes."""

    __slots__ = ("static", "segment", "rest", "targets")

    def __init__(self) -> None:
        self.static: dict[str, _Node[E]] | None = None
        self.segment: _Node[E] | None = None  # after a {name} segment
        self.rest: _Node[E] | None = None  # after a {name:path} remainder
        self.targets: tuple[_Target[E], ...] = ()


class PathMatcher(Generic[E]):
    """Path templates -> endpoints, matched as werkzeug's router matches the rules
    `PathTemplate.werkzeug_rule` gives (strict_slashes, merge_slashes and
    redirect_defaults off).

    It walks the same state machine: a literal segment first, then a {name} segment,
    then a {name:path} remainder, backtracking on failure; templates that end at the
    same state in the order they were added; a trailing slash matches the template
    without it; GET also allows HEAD. Werkzeug's own rules also compile URL builders,
    which the gateway never calls and which cost about 6 KB per route; this table
    costs a few hundred bytes. tests/test_paths.py checks it against werkzeug.
    """

    def __init__(self) -> None:
        self._root: _Node[E] = _Node()
        # Routes repeat the same method sets and parameter names: share them.
        self._method_sets: dict[frozenset[str], frozenset[str]] = {}
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(self, template: PathTemplate, endpoint: E, methods: Iterable[str] | None) -> None:
        """Add a template; `methods` None matches any method."""
        allowed = None
        if methods is not None:
            upper = {m.upper() for m in methods}
            if "GET" in upper:
                upper.add("HEAD")
            key = frozenset(upper)
            allowed = self._method_sets.setdefault(key, key)
        names = tuple(s.text for s in template.segments if s.param is not None)
        names = self._names.setdefault(names, names)
        node = self._root
        # A template's states are its "/"-separated parts, the empty one before the
        # first "/" included: "/" is ["", ""], as werkzeug splits it.
        node = self._static_child(node, "")
        if not template.segments:
            node = self._static_child(node, "")
        for segment in template.segments:
            if segment.param is None:
                node = self._static_child(node, segment.text)
            elif segment.param == "segment":
                if node.segment is None:
                    node.segment = _Node()
                node = node.segment
            else:
                if node.rest is None:
                    node.rest = _Node()
                node = node.rest
        node.targets = (*node.targets, _Target(endpoint, allowed, names))

    @staticmethod
    def _static_child(node: _Node[E], text: str) -> _Node[E]:
        if node.static is None:
            node.static = {}
        child = node.static.get(text)
        if child is None:
            child = node.static[text] = _Node()
        return child

    def match(self, path: str, method: str) -> tuple[E, dict[str, str]]:
        """The endpoint and parameters for a decoded path, or raise NoMatch."""
        method = (method or "GET").upper()
        parts = f"/{path.lstrip('/')}".split("/") if path else [""]
        allowed: set[str] = set()
        found = self._search(self._root, parts, 0, method, (), allowed)
        if found is None:
            raise NoMatch(frozenset(allowed))
        target, values = found
        return target.endpoint, dict(zip(target.names, values, strict=True))

    def _search(
        self,
        node: _Node[E],
        parts: list[str],
        index: int,
        method: str,
        values: tuple[str, ...],
        allowed: set[str],
    ) -> tuple[_Target[E], tuple[str, ...]] | None:
        if index == len(parts):
            target = self._target(node, method, allowed)
            if target is not None:
                return target, values
            slash = node.static.get("") if node.static is not None else None
            if slash is not None and slash.targets:
                # A template that ends in "/" (only "/" itself) also takes the path
                # without it; werkzeug adds nothing to the allowed methods here.
                for target in slash.targets:
                    if target.methods is None or method in target.methods:
                        return target, values
            return None
        part = parts[index]
        if node.static is not None:
            child = node.static.get(part)
            if child is not None:
                found = self._search(child, parts, index + 1, method, values, allowed)
                if found is not None:
                    return found
        if node.segment is not None and part:
            found = self._search(node.segment, parts, index + 1, method, (*values, part), allowed)
            if found is not None:
                return found
        if node.rest is not None:
            rest = "/".join(parts[index:])
            if _REST.match(rest):
                found = self._search(node.rest, parts, len(parts), method, (*values, rest), allowed)
                if found is not None:
                    return found
        if part == "" and index == len(parts) - 1:
            # A trailing slash: the template without it matches.
            target = self._target(node, method, allowed)
            if target is not None:
                return target, values
        return None

    @staticmethod
    def _target(node: _Node[E], method: str, allowed: set[str]) -> _Target[E] | None:
        for target in node.targets:
            if target.methods is None or method in target.methods:
                return target
            allowed.update(target.methods)
        return None


_ENCODED_SEPARATOR = re.compile(r"%(?:2[fF]|5[cC])")
_DOUBLE_ENCODED = re.compile(r"%25(?:2[eEfF]|5[cC]|00|3[bB])")
# Still an escape of a dangerous character after one decoding: %252e, %25%32%65...
_ENCODED_AFTER_DECODING = re.compile(r"%(?:2[eEfF5]|5[cC]|00|3[bB])")
_PERCENT_OK = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unsafe_path_reason(raw_path: str) -> str | None:
    """Why a raw request path (as sent, still percent-encoded) is refused, or None.

    Each rule closes a known way to make a gateway and an upstream disagree on which
    resource a path names (the "path confusion" family of bypasses).
    """
    if not raw_path.startswith("/"):
        return "the path must start with '/'"
    if "\\" in raw_path or _ENCODED_SEPARATOR.search(raw_path):
        return "the path holds an encoded '/' or a backslash"
    if ";" in raw_path:
        return "the path holds ';' path parameters"
    if _DOUBLE_ENCODED.search(raw_path):
        return "the path holds double-encoded characters"
    if raw_path.count("%") != len(_PERCENT_OK.findall(raw_path)):
        return "the path holds a malformed percent-escape"
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return "the path is not valid UTF-8"
    if _CONTROL.search(decoded) or _CONTROL.search(raw_path):
        return "the path holds control characters"
    if _ENCODED_AFTER_DECODING.search(decoded):
        return "the path holds double-encoded characters"
    segments = decoded.split("/")[1:]
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            return "the path holds '.' or '..' segments"
        if segment == "" and index != len(segments) - 1:
            return "the path holds an empty segment ('//')"
    return None
