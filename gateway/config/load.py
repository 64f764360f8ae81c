"""routes.yaml -> Config, or ConfigError listing every problem with file, line and column.

Three passes over one parsed document (the first two in checks.py): the JSON Schema
(shape, types, unknown keys), then the rules a schema cannot state (references,
collisions, parseable limits, key sources), then construction of the frozen model.
All problems of the first two passes are reported together, so a backend team fixes a
file in one round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import Any, TypeVar, cast

import limits

from gateway.config.checks import Checker, parse_date, resolve_relative, schema_problems
from gateway.config.errors import ConfigError, ConfigProblem
from gateway.config.model import (
    PRIVATE_NETWORKS,
    ApiKey,
    ApiKeySettings,
    AuthSettings,
    Config,
    CorsSettings,
    Deprecation,
    GatewaySettings,
    JwtSettings,
    Location,
    RateLimit,
    RateLimitSettings,
    Route,
    Upstream,
    VersionOption,
    Versions,
)
from gateway.config.source import Document, parse

DEFAULT_CONFIG_PATH = "routes.yaml"
_GATEWAY_DEFAULTS = GatewaySettings()
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
    environ = os.environ if environ is None else environ
    # The position of every value takes more memory than the values themselves, and
    # only a problem needs them: a file is read without them first, and again with
    # them only when something is wrong. (The main process forks the workers from
    # this heap: what it grows to here, each worker starts with.)
    document = parse(text, file, environ, positions=False)
    if not document.problems and not _problems_found_later(document):
        return _build(document)
    document = parse(text, file, environ)
    problems = list(document.problems)
    # A value that could not be read (unset ${VAR}, refused tag) is not reported again
    # by the checks that then see it empty.
    unreadable = {(p.line, p.column) for p in problems}
    later = _problems_found_later(document)
    problems += [p for p in later if (p.line, p.column) not in unreadable]
    if problems:
        raise ConfigError(problems)
    return _build(document)  # pragma: no cover - both reads find the same problems


def _problems_found_later(document: Document) -> list[ConfigProblem]:
    return list(schema_problems(document)) + Checker(document).run()


def parse_rate_limits(texts: list[str]) -> tuple[RateLimit, ...]:
    parsed = []
    for text in texts:
        item = limits.parse(text)
        parsed.append(RateLimit(text, item.amount, item.get_expiry()))
    return tuple(parsed)


def _upstream_path(route: dict[str, Any]) -> str:
    versions = route.get("versions")
    if versions:  # the default version's path stands for the route in tables and links
        return str(versions["options"][versions["default"]]["upstream_path"])
    return str(route.get("upstream_path", route["path"]))


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
        header=data.get("header", "Accept-Version"),
        options=tuple(
            VersionOption(name, option["upstream_path"], _deprecation(option.get("deprecation")))
            for name, option in data["options"].items()
        ),
    )


def _cors_settings(cors: dict[str, Any]) -> CorsSettings:
    defaults = CorsSettings()
    return CorsSettings(
        allow_origins=tuple(cors.get("allow_origins", ())),
        allow_credentials=cors.get("allow_credentials", False),
        allow_methods=tuple(cors.get("allow_methods", defaults.allow_methods)),
        allow_headers=tuple(cors.get("allow_headers", ())),
        expose_headers=tuple(cors.get("expose_headers", ())),
        max_age=int(cors.get("max_age", defaults.max_age)),
        allow_private_network=cors.get("allow_private_network", False),
    )


def _build(document: Document) -> Config:
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
            leeway=int(jwt_data.get("leeway", 30)),
            jwks_cache_seconds=int(jwt_data.get("jwks_cache_seconds", 300)),
            jwks_cooldown_seconds=float(jwt_data.get("jwks_cooldown_seconds", 30.0)),
            jwks_timeout=float(jwt_data.get("jwks_timeout", 2.0)),
            verified_token_cache=int(jwt_data.get("verified_token_cache", 10_000)),
            roles_claim=jwt_data.get("roles_claim", "role"),
        )
    keys_data = auth.get("api_keys")
    api_keys = None
    if keys_data is not None:
        api_keys = ApiKeySettings(
            header=keys_data.get("header", "X-API-Key"),
            keys=tuple(
                ApiKey(k["id"], k["sha256"].lower(), tuple(k.get("roles", ())))
                for k in keys_data.get("keys", ())
            ),
        )

    upstreams = {
        name: Upstream(
            name=name,
            url=u["url"].rstrip("/"),
            connect_timeout=float(u.get("connect_timeout", 1.0)),
            timeout=float(u.get("timeout", 10.0)),
            retries=int(u.get("retries", 1)),
            max_connections=int(u.get("max_connections", 100)),
            ca_bundle=str(resolve_relative(file, u["ca_bundle"])) if u.get("ca_bundle") else None,
            breaker_failures=int(u.get("breaker", {}).get("failures", 0)),
            breaker_open_seconds=float(u.get("breaker", {}).get("open_seconds", 10.0)),
            breaker_on_5xx=bool(u.get("breaker", {}).get("on_5xx", False)),
        )
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
                upstream=r["upstream"],
                upstream_path=_upstream_path(r),
                auth=share(() if r["auth"] == "public" else tuple(dict.fromkeys(r["auth"]))),
                roles=share(tuple(r.get("roles", ()))),
                rate_limit=(None if limits_text is None else share(parse_rate_limits(limits_text))),
                rate_limit_key=r.get("rate_limit_key", "identity"),
                rate_limit_bucket=r.get("rate_limit_bucket"),
                cors=share(_cors_settings({**cors, **r["cors"]})) if "cors" in r else None,
                deprecation=share(_deprecation(r.get("deprecation"))),
                versions=share(_versions(r.get("versions"))),
                location=Location(file, pos.line, pos.column),
            )
        )
    return Config(
        source=file,
        gateway=GatewaySettings(
            public_url=gw.get("public_url", "").rstrip("/"),
            trusted_proxies=int(gw.get("trusted_proxies", 0)),
            max_body_bytes=int(gw.get("max_body_bytes", 1_048_576)),
            metrics_allow=tuple(gw.get("metrics_allow", PRIVATE_NETWORKS)),
            request_head_timeout=float(
                gw.get("request_head_timeout", _GATEWAY_DEFAULTS.request_head_timeout)
            ),
            request_body_timeout=float(
                gw.get("request_body_timeout", _GATEWAY_DEFAULTS.request_body_timeout)
            ),
            response_send_timeout=float(
                gw.get("response_send_timeout", _GATEWAY_DEFAULTS.response_send_timeout)
            ),
            max_header_bytes=int(gw.get("max_header_bytes", _GATEWAY_DEFAULTS.max_header_bytes)),
            body_memory_bytes=int(gw.get("body_memory_bytes", _GATEWAY_DEFAULTS.body_memory_bytes)),
        ),
        cors=_cors_settings(cors),
        auth=AuthSettings(jwt=jwt, api_keys=api_keys),
        rate_limits=RateLimitSettings(
            storage=rl.get("storage", "memory://"),
            strategy=rl.get("strategy", "moving-window"),
            on_storage_error=rl.get("on_storage_error", "allow"),
            default=parse_rate_limits(rl.get("default", [])),
            storage_timeout_ms=int(rl.get("storage_timeout_ms", 50)),
            auth_failures=parse_rate_limits(rl.get("auth_failures", ["10/minute"])),
        ),
        upstreams=MappingProxyType(upstreams),
        routes=tuple(routes),
    )
