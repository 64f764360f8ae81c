"""The JSON Schema's verdicts on routes.yaml, as located problems that say what to do.

jsonschema's messages name JSON paths and schema keywords; these name the file, line
and column, suggest the key that was probably meant, and list the allowed ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Iterator
from typing import Any, cast

import jsonschema

from gateway.config.errors import ConfigProblem
from gateway.config.schema import ROUTE, SCHEMA
from gateway.config.source import Document, Path

_ROUTE_VALUE_SCHEMAS = {id(subschema) for subschema in ROUTE["properties"].values()}


def display(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"


def _properties_remembering_valid_route_values() -> Callable[..., Iterator[Any]]:
    """jsonschema's `properties` keyword, but a route's value that its subschema found
    valid once is not validated again: the routes of a large table repeat the same
    methods, auth, roles, limits and CORS settings, and the schema (no $ref, no
    unevaluated*) judges a value alone, wherever it stands."""
    valid: set[tuple[int, Hashable]] = set()

    def properties(
        validator: Any, properties: dict[str, Any], instance: Any, schema: Any
    ) -> Iterator[Any]:
        if not validator.is_type(instance, "object"):
            return
        for name, subschema in properties.items():
            if name not in instance:
                continue
            value = instance[name]
            if id(subschema) not in _ROUTE_VALUE_SCHEMAS:
                yield from validator.descend(value, subschema, path=name, schema_path=name)
                continue
            key = (id(subschema), _frozen(value))
            if key in valid:
                continue
            errors = list(validator.descend(value, subschema, path=name, schema_path=name))
            if not errors:
                valid.add(key)
            yield from errors

    return properties


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for JSON-like data; equal only for data of equal types."""
    if isinstance(value, dict):
        return (dict, tuple((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list):
        return (list, tuple(_frozen(item) for item in value))
    return (type(value), value)


def schema_problems(document: Document, schema: dict[str, Any] = SCHEMA) -> Iterator[ConfigProblem]:
    """The schema's verdicts on one file's data (SCHEMA: the entry file's;
    INCLUDED_SCHEMA: a file its `include` names)."""
    validator_class = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator,
        validators={"properties": _properties_remembering_valid_route_values()},
    )
    for error in validator_class(schema).iter_errors(document.data):
        path = cast(Path, tuple(error.absolute_path))
        where = display(path)
        kind = error.validator
        if "propertyNames" in error.schema_path:
            yield document.problem(
                (*path, str(error.instance)),
                f"{where}: name {error.instance!r} may use only letters, digits, '.', '_' and '-'",
                key=True,
            )
        elif kind == "additionalProperties" and isinstance(error.instance, dict):
            allowed = list(cast(dict[str, Any], error.schema).get("properties", {}))
            for key in error.instance:
                if key in allowed:
                    continue
                hint = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                tip = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else (f"; allowed: {', '.join(allowed)}" if allowed else "")
                )
                yield document.problem(
                    (*path, key), f"unknown key {key!r} in {where}{tip}", key=True
                )
        elif kind == "required":
            missing = [k for k in cast(list[str], error.validator_value) if k not in error.instance]
            for key in missing:
                yield document.problem(path, f"{where}: missing required key {key!r}", key=True)
        elif kind == "oneOf" and path and path[-1] == "auth":
            yield document.problem(
                path, f"{where}: must be `public` or a list of `jwt` and/or `api_key`"
            )
        elif kind in ("enum", "const"):
            options = error.validator_value if kind == "enum" else [error.validator_value]
            shown = ", ".join(str(o) for o in cast(list[Any], options))
            yield document.problem(path, f"{where}: {error.instance!r} is not one of: {shown}")
        elif kind == "pattern" and path and path[-1] == "sha256":
            yield document.problem(path, f"{where}: must be 64 hex characters (a SHA-256 digest)")
        else:
            yield document.problem(path, f"{where}: {error.message}", key=kind == "type")
