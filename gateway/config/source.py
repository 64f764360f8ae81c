"""routes.yaml text -> plain data, with the position of every node and ${ENV} applied.

PyYAML's parser (libyaml's, where it reads the text alike) gives events with marks; we
compose plain values from them ourselves so that every key and value keeps its line
and column for later messages, and so that aliases cannot expand without end. Each
scalar's value (core types only, ${ENV} applied) comes from gateway.config.scalars.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.config.errors import ConfigError, ConfigProblem
from gateway.config.scalars import CORE_TAGS, Scalars

Path = tuple[str | int, ...]

_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int
    # The file it is in; None: the document's own. Only the documents merged from
    # several files (gateway.config.include) hold positions of other files.
    file: str | None = None


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
    # A document merged from several files: each route's index in its own file's
    # `routes` (None: one file, the indexes are its own).
    route_numbers: list[int] | None = None

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

    def file_of(self, path: Path) -> str:
        """The file in which `path` was written."""
        return self.where(path).file or self.file

    def local(self, path: Path) -> Path:
        """`path` as its own file counts: a merged route's index in that file."""
        if self.route_numbers is None or len(path) < 2 or path[0] != "routes":
            return path
        index = path[1]
        if not isinstance(index, int) or not 0 <= index < len(self.route_numbers):
            return path
        return ("routes", self.route_numbers[index], *path[2:])

    def mention(self, path: Path, *, seen_from: Path) -> str:
        """Where `path` is, for a message about `seen_from`: `line N` in the same
        file, else `FILE:N`."""
        pos = self.where(path)
        file = pos.file or self.file
        return f"line {pos.line}" if file == self.file_of(seen_from) else f"{file}:{pos.line}"

    def problem(self, path: Path, message: str, *, key: bool = False) -> ConfigProblem:
        pos = self.where(path, key=key)
        return ConfigProblem(pos.file or self.file, pos.line, pos.column, message)


# An event or mark of either parser: PyYAML's and libyaml's are classes of their own.
_Event = Any
_Mark = Any


def _position(mark: _Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


# Aliases can make a small file expand without end ("billion laughs"). Values reached
# through aliases may number this many, or ALIAS_RATIO per value written out in the
# file, whichever is more: an honest file that shares a block of policies between its
# routes stays well inside, and a bomb stops long before it fills the memory.
MAX_ALIAS_VALUES = 100_000
ALIAS_RATIO = 10

_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml reads a few corners of YAML differently from PyYAML's own parser: tabs, "!"
# tags, "?" in flow collections, a byte order mark inside the text, a comment glued
# to a block scalar's header, directives (`%YAML`, `%TAG`), the end of a text without
# a final newline, and where it places an empty value in a flow collection
# (`{a: , b: 1}`). Where the text may hold
# any of these, PyYAML's parser reads it, so that both read every document alike;
# tests/test_config_source.py holds the two against each other.
_LIBYAML_DIFFERS = re.compile(r"[\t!?\ufeff]|[|>][-+0-9]*#|:(?:\s|#[^\n]*)*[,\]}]|^%", re.M)
_LIBYAML_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None)


class _TooLarge(Exception):
    def __init__(self, mark: _Mark, limit: int) -> None:
        self.mark = mark
        self.limit = limit


class _Unreadable(Exception):
    """A problem PyYAML's composer words (an undefined or repeated anchor, a second
    document): parse() lets the composer report it as it always has."""


class _Events:
    """The parser's events, each also kept for every anchored node still open."""

    def __init__(self, parser: Any) -> None:
        self._get = parser.get_event
        self.peek = parser.peek_event
        self.recording: list[list[_Event]] = []

    def next(self) -> _Event:
        event = self._get()
        for events in self.recording:
            events.append(event)
        return event


class _Replay:
    """The events of an anchored node again, for an alias of it."""

    def __init__(self, events: list[_Event]) -> None:
        self.next = iter(events).__next__


class _Builder:
    """Plain data and positions straight from the parser's events.

    It composes as PyYAML's composer does (anchors, aliases, one document) without
    keeping a node per value: a 10,000-route file would otherwise hold about 40 MB of
    nodes at once, memory the gateway's main process keeps and its workers inherit.
    """

    def __init__(
        self, file: str, environ: Mapping[str, str], loader: Any, *, positions: bool
    ) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []
        self.positions: dict[Path, Position] = {}
        self.key_positions: dict[Path, Position] = {}
        # Without `positions`, only those of the top two levels (each route's) are kept.
        self._depth = None if positions else 2
        self._events = _Events(loader)
        self._scalars = Scalars(loader, environ, self.fail)
        self._anchors: dict[str, list[_Event]] = {}
        self._building: set[str] = set()  # anchors of the collections being built now
        self._written = 0
        self._aliased = 0

    def fail(self, mark: _Mark, message: str) -> None:
        pos = _position(mark)
        self.problems.append(ConfigProblem(self.file, pos.line, pos.column, message))

    def document(self) -> Any:
        """The one document's data; ConfigError for an empty file."""
        events = self._events
        events.next()  # stream start
        if isinstance(events.peek(), yaml.StreamEndEvent):
            raise ConfigError([ConfigProblem(self.file, 1, 1, "the file is empty")])
        events.next()  # document start
        data = self._node(events, events.next(), (), build=True)
        events.next()  # document end
        if not isinstance(events.peek(), yaml.StreamEndEvent):
            raise _Unreadable  # a second document
        return data

    def _node(self, events: _Events | _Replay, event: _Event, path: Path, *, build: bool) -> Any:
        """The value of the node `event` starts (None when not `build`: the node's
        events are only read)."""
        anchor = event.anchor
        if isinstance(event, yaml.AliasEvent):
            recorded = self._anchors.get(anchor)
            if recorded is None:
                raise _Unreadable  # an alias of no anchor
            return self._alias(recorded, path) if build else None
        recording = None
        if anchor is not None and isinstance(events, _Events):
            if anchor in self._anchors:
                raise _Unreadable  # an anchor defined twice
            recording = self._anchors[anchor] = [event]
        if isinstance(event, yaml.ScalarEvent):
            if not build:
                return None
            self._count(event, aliased=isinstance(events, _Replay))
            self._place(path, event)
            return self._scalars.value(event)
        if recording is None:
            return self._collection(events, event, path, build=build)
        assert isinstance(events, _Events)
        events.recording.append(recording)
        try:
            return self._collection(events, event, path, build=build)
        finally:
            events.recording.remove(recording)

    def _alias(self, recorded: list[_Event], path: Path) -> Any:
        first = recorded[0]
        if first.anchor in self._building:
            self._count(first, aliased=True)
            self._place(path, first)
            self.fail(first.start_mark, "an alias refers to a collection that contains it")
            return None
        replay = _Replay(recorded)
        return self._node(replay, replay.next(), path, build=True)

    def _place(self, path: Path, event: _Event) -> None:
        if self._depth is None or len(path) <= self._depth:
            self.positions[path] = _position(event.start_mark)

    def _count(self, event: _Event, *, aliased: bool) -> None:
        if not aliased:
            self._written += 1
            return
        self._aliased += 1
        limit = max(MAX_ALIAS_VALUES, ALIAS_RATIO * self._written)
        if self._aliased > limit:
            raise _TooLarge(event.start_mark, limit)

    def _collection(
        self, events: _Events | _Replay, start: _Event, path: Path, *, build: bool
    ) -> Any:
        mapping = isinstance(start, yaml.MappingStartEvent)
        end = yaml.MappingEndEvent if mapping else yaml.SequenceEndEvent
        if build:
            self._count(start, aliased=isinstance(events, _Replay))
            self._place(path, start)
            tag = start.tag
            if tag is None or tag == "!":
                tag = _MAP_TAG if mapping else _SEQ_TAG
            if tag != (_MAP_TAG if mapping else _SEQ_TAG):
                self.fail(start.start_mark, f"tag {tag!r} is not allowed (plain YAML only)")
                build = False
        if not build:
            event = events.next()
            while not isinstance(event, end):
                self._node(events, event, path, build=False)
                event = events.next()
            return None
        anchor = start.anchor
        if anchor is not None:
            self._building.add(anchor)
        try:
            if mapping:
                return self._mapping(events, path)
            items: list[Any] = []
            event = events.next()
            while not isinstance(event, yaml.SequenceEndEvent):
                items.append(self._node(events, event, (*path, len(items)), build=True))
                event = events.next()
            return items
        finally:
            if anchor is not None:
                self._building.discard(anchor)

    def _mapping(self, events: _Events | _Replay, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        event = events.next()
        while not isinstance(event, yaml.MappingEndEvent):
            key_event, key_tag = self._key(events, event)
            if key_tag == _MERGE_TAG:
                self.fail(
                    key_event.start_mark, "merge keys (<<) are not supported; write the keys out"
                )
                self._node(events, events.next(), path, build=False)
            elif key_tag not in CORE_TAGS:
                self.fail(key_event.start_mark, "mapping keys must be plain strings")
                self._node(events, events.next(), path, build=False)
            else:
                key = self._scalars.string(str(key_event.value))
                if key in result:
                    # Without positions the message is never shown: a problem makes
                    # the caller read the text again with them.
                    first = self.key_positions.get((*path, key), Position(0, 0))
                    self.fail(
                        key_event.start_mark,
                        f"duplicate key {key!r} (first at line {first.line})",
                    )
                    self._node(events, events.next(), path, build=False)
                else:
                    if self._depth is None or len(path) < self._depth:
                        self.key_positions[(*path, key)] = _position(key_event.start_mark)
                    result[key] = self._node(events, events.next(), (*path, key), build=True)
            event = events.next()
        return result

    def _key(self, events: _Events | _Replay, event: _Event) -> tuple[_Event, str | None]:
        """A key's node (an alias's anchored one) and its tag; None for a collection."""
        anchor = event.anchor
        if isinstance(event, yaml.AliasEvent):
            recorded = self._anchors.get(anchor)
            if recorded is None:
                raise _Unreadable  # an alias of no anchor
            event = recorded[0]
        elif anchor is not None or not isinstance(event, yaml.ScalarEvent):
            self._node(events, event, (), build=False)  # its anchor, a collection's events
        return event, self._scalars.tag(event) if isinstance(event, yaml.ScalarEvent) else None


def parse(text: str, file: str, environ: Mapping[str, str], *, positions: bool = True) -> Document:
    """Parse YAML text into a Document carrying the problems found while reading it.

    Without `positions`, only the positions of the top two levels are kept (where each
    route starts): enough for a file without problems, in a fraction of the memory.
    Problems are then not placed exactly; read the text again with positions to
    report them.

    Raises ConfigError only when the text cannot be read as YAML at all.
    """
    body = text[1:] if text.startswith("\ufeff") else text
    if _LIBYAML_LOADER is not None and text.endswith("\n") and not _LIBYAML_DIFFERS.search(body):
        # libyaml parses many times faster than PyYAML's own parser. Whatever it
        # refuses, PyYAML's parser reads again, so a problem is worded as always.
        try:
            return _read(text, file, environ, _LIBYAML_LOADER, positions)
        except (yaml.YAMLError, UnicodeError, ValueError, RecursionError, _Unreadable):
            pass
    try:
        return _read(text, file, environ, yaml.SafeLoader, positions)
    except (yaml.YAMLError, _Unreadable):
        _raise_composer_problem(text, file)
        raise  # pragma: no cover - the composer refuses what the reader refused
    except RecursionError:
        raise ConfigError(
            [ConfigProblem(file, 1, 1, "malformed YAML: the document is nested too deeply")]
        ) from None
    except ValueError as exc:  # PyYAML's scanner on an escape beyond Unicode, say
        raise ConfigError([ConfigProblem(file, 1, 1, f"malformed YAML: {exc}")]) from None


def _read(
    text: str,
    file: str,
    environ: Mapping[str, str],
    loader_class: type[Any],
    positions: bool,
) -> Document:
    loader = loader_class(text)
    try:
        builder = _Builder(file, environ, loader, positions=positions)
        try:
            data = builder.document()
        except _TooLarge as exc:
            # A problem of the text itself comes first, as when it was composed whole.
            _raise_composer_problem(text, file, loader_class)
            pos = _position(exc.mark)
            message = (
                f"the document expands to more than {exc.limit} values through aliases "
                f"({ALIAS_RATIO} per value written out, at least {MAX_ALIAS_VALUES}); "
                "an alias bomb?"
            )
            raise ConfigError([ConfigProblem(file, pos.line, pos.column, message)]) from None
    finally:
        loader.dispose()
    return Document(file, data, builder.positions, builder.key_positions, builder.problems)


def _raise_composer_problem(
    text: str, file: str, loader_class: type[Any] = yaml.SafeLoader
) -> None:
    """ConfigError for whatever PyYAML's composer refuses in the text, if anything.

    `loader_class` may say there is nothing to refuse, faster; PyYAML's own composer
    words any problem.
    """
    if loader_class is not yaml.SafeLoader:
        try:
            yaml.compose(text, Loader=loader_class)
            return
        except (yaml.YAMLError, UnicodeError):
            pass
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "malformed YAML"
        raise ConfigError([ConfigProblem(file, line, col, f"malformed YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, f"malformed YAML: {exc}")]) from None
