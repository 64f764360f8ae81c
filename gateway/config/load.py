"""routes.yaml -> Config, or ConfigError listing every problem with file, line and column.

The file and those its `include` names are read (include.py), then three passes: the
JSON Schema over each file (shape, types, unknown keys; schema_errors.py), the rules a
schema cannot state over their merged document (references, collisions, parseable
limits, key sources; checks.py), then construction of the frozen model. All problems
of the first two passes are reported together, so a backend team fixes a file in one
round.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import Any, TypeVar, cast

import limits

from gateway.config.checks import Checker
from gateway.config.errors import ConfigError, ConfigProblem
from gateway.config.file_checks import resolve_relative
from gateway.config.include import Bundle, Sources
from gateway.config.model import (
    ApiKey,
    ApiKeySettings,
    AuthSettings,
    CacheSettings,
    Compose,
    ComposePart,
    Config,
    CorsSettings,
    Deprecation,
    GatewaySettings,
    JwtSettings,
    Location,
    RateLimit,
    RateLimitSettings,
    Route,
    RouteCache,
    TracingSettings,
    Upstream,
    VersionOption,
    Versions,
)
from gateway.config.route_checks import parse_date
from gateway.config.schema import INCLUDED_SCHEMA
from gateway.config.schema_errors import schema_problems

DEFAULT_CONFIG_PATH = "routes.yaml"


def _default(model: type[Any], name: str) -> Any:
    """The model's default for one field: defaults are stated once, in model.py."""
    for field in dataclasses.fields(model):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
    raise KeyError(f"{model.__name__}.{name} has no default")


def _get(data: dict[str, Any], model: type[Any], name: str) -> Any:
    """data[name] as written, else the model's default."""
    return data[name] if name in data else _default(model, name)


T = TypeVar("T")


def resolve_config_path(explicit: str | None = None) -> str:
    """`-c` wins, then GATEWAY_CONFIG, then ./routes.yaml."""
    return explicit or os.environ.get("GATEWAY_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and compile one routes.yaml; raise ConfigError on any problem."""
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(path, 1, 1, f"cannot read the file: {exc}")]) from None
    return load_config_text(text, path, environ)


def load_config_text(text: str, file: str, environ: Mapping[str, str] | None = None) -> Config:
    """`text` is the content of `file`; the files its `include` names are read from
    the disk, relative to `file`'s folder."""
    environ = os.environ if environ is None else environ
    sources = Sources(text, file, environ)
    # The position of every value takes more memory than the values themselves, and
    # only a problem needs them: the files are read without them first, and again
    # with them only when something is wrong. (The main process forks the workers
    # from this heap: what it grows to here, each worker starts with.)
    bundle = sources.read(positions=False)
    if not (_reading_problems(bundle) or bundle.problems or _problems_found_later(bundle)):
        return _build(bundle)
    bundle = sources.read(positions=True)
    reading = _reading_problems(bundle)
    # A value that could not be read (unset ${VAR}, refused tag) is not reported again
    # by the checks that then see it empty.
    unreadable = {(p.file, p.line, p.column) for p in reading}
    later = _problems_found_later(bundle)
    problems = reading + bundle.problems
    problems += [p for p in later if (p.file, p.line, p.column) not in unreadable]
    if problems:
        raise ConfigError(problems)
    return _build(bundle)  # pragma: no cover - both reads find the same problems


def _reading_problems(bundle: Bundle) -> list[ConfigProblem]:
    return [problem for document in bundle.documents for problem in document.problems]


def _problems_found_later(bundle: Bundle) -> list[ConfigProblem]:
    problems = list(schema_problems(bundle.entry))
    for document in bundle.included:
        problems += schema_problems(document, INCLUDED_SCHEMA)
    return problems + Checker(bundle.merged).run()


def parse_rate_limits(texts: list[str]) -> tuple[RateLimit, ...]:
    parsed = []
    for text in texts:
        item = limits.parse(text)
        parsed.append(RateLimit(text, item.amount, item.get_expiry()))
    return tuple(parsed)


def _upstream_path(route: dict[str, Any]) -> str:
    if "compose" in route:
        return ""
    versions = route.get("versions")
    if versions:  # the default version's path stands for the route in tables and links
        return str(versions["options"][versions["default"]]["upstream_path"])
    return str(route.get("upstream_path", route["path"]))


def _route_cache(data: dict[str, Any] | None, public: bool) -> RouteCache | None:
    if data is None:
        return None
    return RouteCache(
        ttl=int(data["ttl"]),
        # An authenticated route's answers are each caller's unless it says otherwise.
        scope=data.get("scope", "public" if public else "identity"),
        vary=tuple(dict.fromkeys(name.lower() for name in data.get("vary", ()))),
    )


def _cache_settings(data: dict[str, Any]) -> CacheSettings:
    return CacheSettings(
        storage=_get(data, CacheSettings, "storage"),
        max_bytes=int(_get(data, CacheSettings, "max_bytes")),
        max_entry_bytes=int(_get(data, CacheSettings, "max_entry_bytes")),
        storage_timeout_ms=int(_get(data, CacheSettings, "storage_timeout_ms")),
        on_storage_error=_get(data, CacheSettings, "on_storage_error"),
    )


def _tracing_settings(data: dict[str, Any]) -> TracingSettings:
    return TracingSettings(
        otlp_endpoint=_get(data, TracingSettings, "otlp_endpoint"),
        service_name=_get(data, TracingSettings, "service_name"),
        sample_ratio=float(_get(data, TracingSettings, "sample_ratio")),
        headers=tuple(sorted((str(k), str(v)) for k, v in data.get("headers", {}).items())),
        trusted_networks=tuple(_get(data, TracingSettings, "trusted_networks")),
    )


def _compose(data: dict[str, Any] | None) -> Compose | None:
    if data is None:
        return None
    return Compose(
        parts=tuple(
            ComposePart(
                name=name,
                upstream=part["upstream"],
                path=part["path"],
                required=_get(part, ComposePart, "required"),
                fields=tuple(part["fields"]) if "fields" in part else None,
            )
            for name, part in data["parts"].items()
        ),
        timeout=float(_get(data, Compose, "timeout")),
        max_part_bytes=int(_get(data, Compose, "max_part_bytes")),
    )


def _deprecation(data: dict[str, Any] | None) -> Deprecation | None:
    if data is None:
        return None
    return Deprecation(
        since=parse_date(data["since"]),
        sunset=parse_date(data["sunset"]) if "sunset" in data else None,
        successor=data.get("successor"),
    )


def _versions(data: dict[str, Any] | None) -> Versions | None:
    if data is None:
        return None
    return Versions(
        default=data["default"],
        header=_get(data, Versions, "header"),
        options=tuple(
            VersionOption(name, option["upstream_path"], _deprecation(option.get("deprecation")))
            for name, option in data["options"].items()
        ),
    )


def _upstream(name: str, u: dict[str, Any], file: str) -> Upstream:
    """`file`: where the upstream is defined (its ca_bundle is relative to it)."""
    breaker = u.get("breaker", {})
    return Upstream(
        name=name,
        url=u["url"].rstrip("/"),
        connect_timeout=float(_get(u, Upstream, "connect_timeout")),
        timeout=float(_get(u, Upstream, "timeout")),
        retries=int(_get(u, Upstream, "retries")),
        max_connections=int(_get(u, Upstream, "max_connections")),
        ca_bundle=str(resolve_relative(file, u["ca_bundle"])) if u.get("ca_bundle") else None,
        breaker_failures=int(breaker.get("failures", _default(Upstream, "breaker_failures"))),
        breaker_open_seconds=float(
            breaker.get("open_seconds", _default(Upstream, "breaker_open_seconds"))
        ),
        breaker_on_5xx=bool(breaker.get("on_5xx", _default(Upstream, "breaker_on_5xx"))),
    )


def _cors_settings(cors: dict[str, Any]) -> CorsSettings:
    def get(name: str) -> Any:
        return _get(cors, CorsSettings, name)

    return CorsSettings(
        allow_origins=tuple(get("allow_origins")),
        allow_credentials=get("allow_credentials"),
        allow_methods=tuple(get("allow_methods")),
        allow_headers=tuple(get("allow_headers")),
        expose_headers=tuple(get("expose_headers")),
        max_age=int(get("max_age")),
        allow_private_network=get("allow_private_network"),
    )


def _build(bundle: Bundle) -> Config:
    document = bundle.merged
    data: dict[str, Any] = document.data
    file = document.file
    # Equal parts of the model are interchangeable (it is immutable): routes share one
    # ("GET",), one rate limit, one CORS setting... instead of one each.
    shared: dict[Any, Any] = {}

    def share(value: T) -> T:
        return cast(T, shared.setdefault(value, value))

    gw = data.get("gateway", {})
    cors = data.get("cors", {})
    auth = data.get("auth", {})
    rl = data.get("rate_limits", {})

    jwt_data = auth.get("jwt")
    jwt = None
    if jwt_data is not None:
        key_file = jwt_data.get("public_key_file")
        jwt = JwtSettings(
            issuer=jwt_data["issuer"],
            audience=jwt_data["audience"],
            algorithms=tuple(jwt_data["algorithms"]),
            jwks_url=jwt_data.get("jwks_url") or None,
            public_key_file=str(resolve_relative(file, key_file)) if key_file else None,
            secret=jwt_data.get("secret") or None,
            leeway=int(_get(jwt_data, JwtSettings, "leeway")),
            jwks_cache_seconds=int(_get(jwt_data, JwtSettings, "jwks_cache_seconds")),
            jwks_cooldown_seconds=float(_get(jwt_data, JwtSettings, "jwks_cooldown_seconds")),
            jwks_timeout=float(_get(jwt_data, JwtSettings, "jwks_timeout")),
            verified_token_cache=int(_get(jwt_data, JwtSettings, "verified_token_cache")),
            roles_claim=_get(jwt_data, JwtSettings, "roles_claim"),
        )
    keys_data = auth.get("api_keys")
    api_keys = None
    if keys_data is not None:
        api_keys = ApiKeySettings(
            header=_get(keys_data, ApiKeySettings, "header"),
            keys=tuple(
                ApiKey(k["id"], k["sha256"].lower(), tuple(k.get("roles", ())))
                for k in keys_data.get("keys", ())
            ),
        )

    upstreams = {
        name: _upstream(name, u, document.file_of(("upstreams", name)))
        for name, u in data["upstreams"].items()
    }
    routes = []
    for index, r in enumerate(data["routes"]):
        pos = document.where(("routes", index))
        limits_text = r.get("rate_limit")
        routes.append(
            Route(
                name=r["name"],
                path=r["path"],
                methods=share(tuple(r["methods"])),
                upstream=r.get("upstream"),
                upstream_path=_upstream_path(r),
                auth=share(() if r["auth"] == "public" else tuple(dict.fromkeys(r["auth"]))),
                roles=share(tuple(r.get("roles", ()))),
                rate_limit=(None if limits_text is None else share(parse_rate_limits(limits_text))),
                rate_limit_key=_get(r, Route, "rate_limit_key"),
                rate_limit_bucket=r.get("rate_limit_bucket"),
                cors=share(_cors_settings({**cors, **r["cors"]})) if "cors" in r else None,
                deprecation=share(_deprecation(r.get("deprecation"))),
                versions=share(_versions(r.get("versions"))),
                compose=_compose(r.get("compose")),
                cache=_route_cache(r.get("cache"), r["auth"] == "public"),
                location=Location(pos.file or file, pos.line, pos.column),
            )
        )
    return Config(
        source=file,
        gateway=GatewaySettings(
            public_url=_get(gw, GatewaySettings, "public_url").rstrip("/"),
            trusted_proxies=int(_get(gw, GatewaySettings, "trusted_proxies")),
            max_body_bytes=int(_get(gw, GatewaySettings, "max_body_bytes")),
            metrics_allow=tuple(_get(gw, GatewaySettings, "metrics_allow")),
            request_head_timeout=float(_get(gw, GatewaySettings, "request_head_timeout")),
            request_body_timeout=float(_get(gw, GatewaySettings, "request_body_timeout")),
            response_send_timeout=float(_get(gw, GatewaySettings, "response_send_timeout")),
            max_header_bytes=int(_get(gw, GatewaySettings, "max_header_bytes")),
            body_memory_bytes=int(_get(gw, GatewaySettings, "body_memory_bytes")),
            compose_concurrency=int(_get(gw, GatewaySettings, "compose_concurrency")),
            openapi_path=_get(gw, GatewaySettings, "openapi_path"),
        ),
        cors=_cors_settings(cors),
        auth=AuthSettings(jwt=jwt, api_keys=api_keys),
        rate_limits=RateLimitSettings(
            storage=_get(rl, RateLimitSettings, "storage"),
            strategy=_get(rl, RateLimitSettings, "strategy"),
            on_storage_error=_get(rl, RateLimitSettings, "on_storage_error"),
            default=parse_rate_limits(rl["default"])
            if "default" in rl
            else _default(RateLimitSettings, "default"),
            storage_timeout_ms=int(_get(rl, RateLimitSettings, "storage_timeout_ms")),
            auth_failures=parse_rate_limits(rl["auth_failures"])
            if "auth_failures" in rl
            else _default(RateLimitSettings, "auth_failures"),
        ),
        upstreams=MappingProxyType(upstreams),
        routes=tuple(routes),
        files=bundle.files,
        cache=_cache_settings(data.get("cache", {})),
        tracing=_tracing_settings(data.get("tracing", {})),
    )
