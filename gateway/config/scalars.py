"""The value of each YAML scalar: its tag, its plain Python value, and ${ENV} applied.

Only the YAML core types are built (a `!!python/...` tag is a problem, not code), and
`${NAME}` or `${NAME:-default}` in a string is replaced from the environment given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
CORE_TAGS = frozenset(
    {
        _STR_TAG,
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        _NULL_TAG,
    }
)
# ${NAME} or ${NAME:-default}; $${ is a literal ${.
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UNCLOSED_REF = re.compile(r"(?<!\$)\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")

# An event or mark of either parser: PyYAML's and libyaml's are classes of their own.
_Event = Any
_Mark = Any


class Scalars:
    """The tag and value of each scalar of one document, as it is read.

    Keys and values repeat in every route: one string is kept per distinct text, and
    the tag of each distinct plain scalar is resolved once.
    """

    def __init__(
        self, loader: Any, environ: Mapping[str, str], report: Callable[[_Mark, str], None]
    ) -> None:
        self._loader = loader  # the parser too: scalars are typed as it reads them
        self._environ = environ
        self._report = report
        self._strings: dict[str, str] = {}
        self._plain_tags: dict[str, str] = {}

    def tag(self, event: _Event) -> str:
        """The scalar's tag: the one written, else the one its text resolves to."""
        tag: str | None = event.tag
        if tag is None or tag == "!":
            value = event.value
            implicit = event.implicit
            if implicit[0]:
                # A plain scalar's tag follows from its text alone.
                tag = self._plain_tags.get(value)
                if tag is None:
                    tag = self._plain_tags[value] = self._loader.resolve(
                        yaml.ScalarNode, value, implicit
                    )
            else:
                tag = self._loader.resolve(yaml.ScalarNode, value, implicit)
        assert tag is not None
        return tag

    def string(self, text: str) -> str:
        """`text`, as the one string kept for it."""
        return self._strings.setdefault(text, text)

    def value(self, event: _Event) -> Any:
        """The scalar's value; None, with a problem reported, where it has none."""
        tag = self.tag(event)
        if tag == _TIMESTAMP_TAG:
            # An unquoted date (a Sunset date, say) stays the text it was written as.
            text = self.string(event.value)
            return self._interpolate(event, text) if "$" in text else text
        if tag not in CORE_TAGS:
            self._report(event.start_mark, f"tag {tag!r} is not allowed (plain YAML only)")
            return None
        value = self._construct(tag, event.value, event)
        if isinstance(value, str) and "$" in value:
            return self._interpolate(event, value)
        return value

    def _construct(self, tag: str, value: str, event: _Event | None = None) -> Any:
        if tag == _STR_TAG:
            return self.string(value)
        node = yaml.ScalarNode(tag, value, event.start_mark if event else None)
        try:
            return self._loader.yaml_constructors[tag](self._loader, node)
        except (ValueError, ArithmeticError, LookupError):
            # PyYAML's constructors trust the resolver: `!!int one` or `0x_` reach
            # int() and fail there. A problem at the value, never a traceback.
            if event is None:
                raise
            kind = tag.rsplit(":", 1)[-1]
            self._report(event.start_mark, f"{value!r} is not a valid {kind}")
            return None

    def _interpolate(self, event: _Event, text: str) -> Any:
        if _UNCLOSED_REF.search(text):
            self._report(
                event.start_mark, "malformed ${...} reference; write ${NAME} or ${NAME:-default}"
            )
            return text
        result, missing = _substitute(text, self._environ)
        for name in missing:
            self._report(
                event.start_mark, f"environment variable {name} is not set and has no default"
            )
        # libyaml calls a plain scalar's style "", PyYAML's parser None.
        if not event.style and _ENV_REF.fullmatch(text.strip()):
            # A plain scalar that is one reference, e.g. `retries: ${RETRIES:-1}`, takes
            # the type its value would have had if written literally.
            return self._retype(result)
        return result

    def _retype(self, text: str) -> Any:
        tag = self._loader.resolve(yaml.ScalarNode, text, (True, False))
        # Numbers and booleans only: an empty value stays "", never null.
        if tag in CORE_TAGS and tag != _NULL_TAG:
            try:
                return self._construct(tag, text)
            except (ValueError, ArithmeticError, LookupError):
                return text  # looks like a number but is none: the text itself
        return text


def _substitute(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with each well-formed reference replaced, and the names of the variables
    it refers to that are neither set nor given a default (each replaced by "")."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        # As in the shell, ":-" also replaces a variable that is set but empty.
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REF.sub(replace, text), missing
