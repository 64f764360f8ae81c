"""routes.yaml text -> plain data, with the position of every node and ${ENV} applied.

PyYAML's composer gives nodes with marks; we construct plain values ourselves so that
nothing but the YAML core types can be built (a `!!python/...` tag is a problem, not
code) and so that every key and value keeps its line and column for later messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.config.errors import ConfigError, ConfigProblem

Path = tuple[str | int, ...]

_CORE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_SEQ_TAG = "tag:yaml.org,2002:seq"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MAP_TAG = "tag:yaml.org,2002:map"
# ${NAME} or ${NAME:-default}; $${ is a literal ${.
_ENV_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UNCLOSED_REF = re.compile(r"(?<!\$)\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int


@dataclass(slots=True)
class Document:
    """Plain data plus where each part of it was written."""

    file: str
    data: Any
    # path -> position of the value; key_positions: path -> position of its key
    positions: dict[Path, Position] = field(default_factory=dict)
    key_positions: dict[Path, Position] = field(default_factory=dict)
    # problems found while reading (tags, duplicate keys, ${ENV}); later checks add theirs
    problems: list[ConfigProblem] = field(default_factory=list)

    def where(self, path: Path, *, key: bool = False) -> Position:
        """The nearest recorded position for `path` (its key's when `key`)."""
        probe = tuple(path)
        while True:
            if key and probe in self.key_positions:
                return self.key_positions[probe]
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return Position(1, 1)
            probe = probe[:-1]

    def problem(self, path: Path, message: str, *, key: bool = False) -> ConfigProblem:
        pos = self.where(path, key=key)
        return ConfigProblem(self.file, pos.line, pos.column, message)


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


MAX_NODES = 100_000


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _Builder:
    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.positions: dict[Path, Position] = {}
        self.key_positions: dict[Path, Position] = {}
        self._resolver = yaml.SafeLoader("")
        self._building: set[int] = set()  # ids of the collections being built now
        self._nodes = 0

    def fail(self, node: yaml.Node, message: str) -> None:
        pos = _position(node)
        self.problems.append(ConfigProblem(self.file, pos.line, pos.column, message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            # Aliases can make a small file expand without end ("billion laughs").
            raise _TooLarge(node)
        self.positions[path] = _position(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self._building:
            self.fail(node, "an alias refers to a collection that contains it")
            return None
        self._building.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            assert isinstance(node, yaml.SequenceNode)
            if node.tag != _SEQ_TAG:
                self.fail(node, f"tag {node.tag!r} is not allowed (plain YAML only)")
                return None
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._building.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> Any:
        if node.tag != _MAP_TAG:
            self.fail(node, f"tag {node.tag!r} is not allowed (plain YAML only)")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(key_node, "merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _CORE_TAGS:
                self.fail(key_node, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            if key in result:
                first = self.key_positions[(*path, key)]
                self.fail(key_node, f"duplicate key {key!r} (first at line {first.line})")
                continue
            self.key_positions[(*path, key)] = _position(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _TIMESTAMP_TAG:
            # An unquoted date (a Sunset date, say) stays the text it was written as.
            return self._interpolate(node, node.value) if "$" in node.value else node.value
        if node.tag not in _CORE_TAGS:
            self.fail(node, f"tag {node.tag!r} is not allowed (plain YAML only)")
            return None
        value = self._resolver.construct_object(node)
        if isinstance(value, str) and "$" in value:
            return self._interpolate(node, value)
        return value

    def _interpolate(self, node: yaml.ScalarNode, text: str) -> Any:
        if _UNCLOSED_REF.search(text):
            self.fail(node, "malformed ${...} reference; write ${NAME} or ${NAME:-default}")
            return text
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            value = self.environ.get(name)
            # As in the shell, ":-" also replaces a variable that is set but empty.
            if value is not None and (value or default is None):
                return value
            if default is not None:
                return default
            missing.append(name)
            return ""

        result = _ENV_REF.sub(replace, text)
        for name in missing:
            self.fail(node, f"environment variable {name} is not set and has no default")
        if node.style is None and _ENV_REF.fullmatch(text.strip()):
            # A plain scalar that is one reference, e.g. `retries: ${RETRIES:-1}`, takes
            # the type its value would have had if written literally.
            return self._retype(result)
        return result

    def _retype(self, text: str) -> Any:
        tag = self._resolver.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        # Numbers and booleans only: an empty value stays "", never null.
        if tag in _CORE_TAGS and tag != "tag:yaml.org,2002:null":
            return self._resolver.construct_object(yaml.ScalarNode(tag, text))
        return text


def parse(text: str, file: str, environ: Mapping[str, str]) -> Document:
    """Parse YAML text into a Document carrying the problems found while reading it.

    Raises ConfigError only when the text cannot be read as YAML at all.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "malformed YAML"
        raise ConfigError([ConfigProblem(file, line, col, f"malformed YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, f"malformed YAML: {exc}")]) from None
    if root is None:
        raise ConfigError([ConfigProblem(file, 1, 1, "the file is empty")])
    builder = _Builder(file, environ)
    try:
        data = builder.build(root, ())
    except _TooLarge as exc:
        pos = _position(exc.node)
        message = f"the document expands to more than {MAX_NODES} values (aliases?)"
        raise ConfigError([ConfigProblem(file, pos.line, pos.column, message)]) from None
    return Document(file, data, builder.positions, builder.key_positions, builder.problems)
