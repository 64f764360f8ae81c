"""One routes.yaml made of several files: the entry file and those its `include` names.

Each file is read into a Document of its own (source.py: positions, ${ENV}, the size
and alias guards, per file), and the schema judges each one as it stands (the entry
file against SCHEMA, an included one against INCLUDED_SCHEMA), so every message names
the file, line and column where the problem is. The files' `upstreams` and `routes`
are then merged into one Document for the rules (checks.py) and the model (load.py):
its positions know their file (Position.file), and each route its index in its own
file (Document.route_numbers), so a merged document words its problems as the files
are written.

Until every file can be read (a named file that is missing, malformed YAML, an empty
file), only those problems are reported: the rules would otherwise complain about
upstreams and routes that are only missing because a file was not read.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from gateway.config.errors import ConfigError, ConfigProblem
from gateway.config.file_checks import resolve_relative
from gateway.config.schema import INCLUDED_SCHEMA, SCHEMA
from gateway.config.source import Document, Path, Position, parse

# What an included file may hold, and what only the entry file may.
INCLUDED_KEYS: tuple[str, ...] = tuple(INCLUDED_SCHEMA["properties"])
ENTRY_ONLY_KEYS: tuple[str, ...] = tuple(
    key for key in SCHEMA["properties"] if key not in INCLUDED_KEYS and key != "include"
)
_GLOB = re.compile(r"[*?[]")


@dataclass(slots=True)
class Bundle:
    """Every file of one configuration, read; `merged` is what the rules judge."""

    entry: Document
    included: list[Document]  # as the schema judges them: the keys refused below dropped
    merged: Document
    files: tuple[str, ...]  # every file read, the entry file first
    # Problems of including: keys an included file may not hold, an upstream defined
    # in two files, no upstreams anywhere. Reading problems stay in each Document's.
    problems: list[ConfigProblem]

    @property
    def documents(self) -> list[Document]:
        return [self.entry, *self.included]


class Sources:
    """The entry file's text and, once read, those of the files it includes: a file is
    read from the disk once however often the configuration is parsed."""

    def __init__(self, text: str, file: str, environ: Mapping[str, str]) -> None:
        self.text = text
        self.file = file
        self.environ = environ
        self._texts: dict[str, str | ConfigProblem] = {}

    def read(self, *, positions: bool) -> Bundle:
        """Every file parsed (with all positions or only the top two levels'), merged.

        Raises ConfigError when a file cannot be read: missing, unreadable, not YAML.
        """
        entry = parse(self.text, self.file, self.environ, positions=positions)
        data = entry.data
        if not isinstance(data, dict) or "include" not in data:
            return Bundle(entry, [], entry, (self.file,), [])
        names, fatal = _expand(entry)
        included: list[Document] = []
        for name in names:
            text = self._text(name)
            if isinstance(text, ConfigProblem):
                fatal.append(text)
                continue
            try:
                included.append(parse(text, name, self.environ, positions=positions))
            except ConfigError as exc:
                fatal.extend(exc.problems)
        if fatal:
            # With what the files that could be read have shown already.
            shown = [p for document in (entry, *included) for p in document.problems]
            raise ConfigError(fatal + shown)
        problems: list[ConfigProblem] = []
        judged = [_top_level(document, self.file, problems) for document in included]
        merged = _merge(entry, judged, problems)
        return Bundle(entry, judged, merged, (self.file, *names), problems)

    def _text(self, name: str) -> str | ConfigProblem:
        if name not in self._texts:
            try:
                self._texts[name] = FilePath(name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self._texts[name] = ConfigProblem(name, 1, 1, f"cannot read the file: {exc}")
        return self._texts[name]


def _expand(entry: Document) -> tuple[list[str], list[ConfigProblem]]:
    """The files `include` names, in order, each once (never the entry file itself),
    and a problem for each name without glob characters that names no file."""
    patterns = entry.data.get("include")
    if not isinstance(patterns, list):
        return [], []  # the schema says what is wrong with it
    folder = FilePath(entry.file).parent
    seen = {FilePath(entry.file).resolve()}
    names: list[str] = []
    problems: list[ConfigProblem] = []
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern:
            continue
        if _GLOB.search(pattern):
            # root_dir: glob characters in the entry file's own folder are not patterns.
            found = sorted(glob.glob(pattern, root_dir=folder, recursive=True))
            matches = [resolve_relative(entry.file, match) for match in found]
            matches = [match for match in matches if match.is_file()]
        else:
            target = resolve_relative(entry.file, pattern)
            if not target.is_file():
                what = "is a folder, not a file" if target.is_dir() else "does not exist"
                problems.append(
                    entry.problem(
                        ("include", index),
                        f"include: {pattern!r} {what} ({target}); a name without glob "
                        "characters must name a file",
                    )
                )
                continue
            matches = [target]
        for match in matches:
            identity = match.resolve()
            if identity not in seen:
                seen.add(identity)
                names.append(str(match))
    return names, problems


def _top_level(document: Document, entry_file: str, problems: list[ConfigProblem]) -> Document:
    """An included file as the schema judges it: a key only the entry file may hold,
    or a nested `include`, is reported here (and dropped) in words of its own."""
    data = document.data
    if not isinstance(data, dict):
        return document  # the schema: "is not of type 'object'"
    refused = [key for key in data if key == "include" or key in ENTRY_ONLY_KEYS]
    for key in refused:
        if key == "include":
            message = (
                "include: an included file cannot include other files; add the pattern "
                f"to the include of {entry_file}"
            )
        else:
            message = (
                f"{key!r} belongs in the entry file ({entry_file}); an included file "
                "holds only upstreams, routes and version"
            )
        problems.append(document.problem((key,), message, key=True))
    if not refused:
        return document
    kept = {key: value for key, value in data.items() if key not in refused}
    return Document(
        document.file, kept, document.positions, document.key_positions, document.problems
    )


def _merge(entry: Document, included: list[Document], problems: list[ConfigProblem]) -> Document:
    """The entry file's data with the included files' upstreams and routes added, in
    file order; an upstream defined twice keeps its first definition."""
    data: dict[str, Any] = dict(entry.data)
    # Its reading problems stay with each file's Document (Bundle.documents).
    merged = Document(entry.file, data, dict(entry.positions), dict(entry.key_positions))
    # The entry file's upstreams ({} when it has none), to which the included ones are
    # added; None when they are not a mapping (the schema says so).
    written = data.get("upstreams", {})
    upstreams: dict[str, Any] | None = None
    if isinstance(written, dict):
        upstreams = data["upstreams"] = dict(written)
    routes = data.get("routes", [])
    if isinstance(routes, list):
        routes = data["routes"] = list(routes)
        merged.route_numbers = list(range(len(routes)))
    for document in included:
        if not isinstance(document.data, dict):
            continue
        theirs = document.data.get("upstreams")
        added: set[str] = set()
        if isinstance(theirs, dict) and upstreams is not None:
            for name, upstream in theirs.items():
                if name in upstreams:
                    first = merged.where(("upstreams", name), key=True)
                    problems.append(
                        document.problem(
                            ("upstreams", name),
                            f"upstream {name!r} is defined twice (first at "
                            f"{first.file or merged.file}:{first.line})",
                            key=True,
                        )
                    )
                    continue
                upstreams[name] = upstream
                added.add(name)
        their_routes = document.data.get("routes")
        offset = len(routes) if isinstance(routes, list) else 0
        if isinstance(their_routes, list) and isinstance(routes, list):
            routes.extend(their_routes)
            assert merged.route_numbers is not None
            merged.route_numbers.extend(range(len(their_routes)))
        else:
            their_routes = None
        for source, target in (
            (document.positions, merged.positions),
            (document.key_positions, merged.key_positions),
        ):
            _add_positions(source, target, document.file, added, offset, their_routes is not None)
    if upstreams == {} and "upstreams" not in entry.data:
        problems.append(
            entry.problem(
                (),
                "the top level: missing required key 'upstreams' (in this file or a "
                "file its include names)",
                key=True,
            )
        )
    return merged


def _add_positions(
    source: dict[Path, Position],
    target: dict[Path, Position],
    file: str,
    upstreams: set[str],
    offset: int,
    routes: bool,
) -> None:
    """An included file's positions under the merged paths, each naming its file: its
    upstreams in `upstreams` (those merged), its routes moved by `offset`."""
    for path, position in source.items():
        if len(path) < 1:
            continue
        head = path[0]
        if head == "upstreams":
            if len(path) > 1 and path[1] not in upstreams:
                continue
        elif head == "routes" and routes:
            if len(path) > 1:
                index = path[1]
                assert isinstance(index, int)
                path = ("routes", offset + index, *path[2:])
        else:
            continue
        if len(path) == 1 and path in target:
            continue  # the section's own place: the first file's that has it
        target[path] = Position(position.line, position.column, file)
