"""The schema's descriptions state defaults; the model is where they live. Every
"(default X)" in a description must be the model's default for that key."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from gateway.config import schema
from gateway.config.model import (
    CorsSettings,
    GatewaySettings,
    JwtSettings,
    RateLimitSettings,
    Upstream,
    Versions,
)

# Schema section -> (model class, prefix of the model's field for the section's keys).
SECTIONS: dict[str, tuple[dict[str, Any], type[Any], str]] = {
    "gateway": (schema.GATEWAY, GatewaySettings, ""),
    "cors": (schema.CORS, CorsSettings, ""),
    "auth.jwt": (schema.JWT, JwtSettings, ""),
    "rate_limits": (schema.RATE_LIMITS, RateLimitSettings, ""),
    "upstreams.*": (schema.UPSTREAM, Upstream, ""),
    "upstreams.*.breaker": (schema.UPSTREAM["properties"]["breaker"], Upstream, "breaker_"),
    "routes.*.versions": (schema.VERSIONS, Versions, ""),
}
_STATED = re.compile(r"\(default:? ([^;)]+?)(?:[;)]|: )")


def _model_default(model: type[Any], name: str) -> Any:
    for field in dataclasses.fields(model):
        if field.name == name:
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
            return field.default
    raise AssertionError(f"{model.__name__} has no field {name}")


def _as_written(value: Any) -> str:
    """A model default as a description would write it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(getattr(v, "text", str(v)) for v in value) + "]"
    return str(value)


def stated_defaults() -> list[tuple[str, type[Any], str, str]]:
    found = []
    for section, (node, model, prefix) in SECTIONS.items():
        for key, prop in node["properties"].items():
            match = _STATED.search(prop.get("description", ""))
            if match:
                found.append((f"{section}.{key}", model, prefix + key, match.group(1).strip()))
    return found


def test_the_schema_states_defaults_to_check() -> None:
    assert len(stated_defaults()) >= 8


@pytest.mark.parametrize(
    ("where", "model", "field", "stated"), stated_defaults(), ids=lambda v: str(v)
)
def test_each_default_the_schema_states_is_the_models(
    where: str, model: type[Any], field: str, stated: str
) -> None:
    assert _as_written(_model_default(model, field)) == stated, where
