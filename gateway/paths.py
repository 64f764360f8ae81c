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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
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

    @classmethod
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
                segments.append(Segment(name, kind))
            elif part in (".", "..") or not _LITERAL.match(part):
                raise TemplateError(
                    f"path template {text!r}: segment {part!r} is not a plain path segment"
                )
            else:
                segments.append(Segment(part))
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
        return _template_regex(self)

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


@functools.cache
def _template_regex(template: PathTemplate) -> re.Pattern[str]:
    # Cached: templates come from the config, so there are only ever a few.
    parts = []
    for s in template.segments:
        if s.param == "path":
            parts.append(f"(?P<{s.text}>[^/].*)")
        elif s.param == "segment":
            parts.append(f"(?P<{s.text}>[^/]+)")
        else:
            parts.append(re.escape(quote(s.text, safe="!$&'()*+,=:@~")))
    return re.compile("/" + "/".join(parts) + "/?" if parts else "/")


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
