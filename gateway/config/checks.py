"""The rules of routes.yaml that a JSON Schema cannot state (a network that parses,
one JWT key source, API keys listed once, a storage the gateway has a client for,
files that can be read), and the pass that runs them all.

Checker judges the sections around the routes itself and hands `routes` to RouteRules
(route_checks.py), last, through the same problem list. Like the schema's verdicts
(schema_errors.py), the rules report every problem with its position, tolerate data the
schema rejected, and never raise: load.py collects what both find and builds the model
only when nothing was found.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path as FilePath
from typing import Any
from urllib.parse import urlsplit

from gateway.config.errors import ConfigProblem
from gateway.config.file_checks import ca_bundle_problem, public_key_problem, resolve_relative
from gateway.config.model import CacheSettings
from gateway.config.route_checks import RouteRules
from gateway.config.schema_errors import display
from gateway.config.source import Document, Path
from gateway.config.value_checks import (
    check_http_url,
    check_rate_limits,
    check_roles,
    nested_value,
    string_items,
)
from gateway.extras import TRACING_HINT, tracing_installed

_HS_MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash output
# The storages whose client ships with the gateway (redis-py covers all the Redis ones).
_STORAGE_SCHEMES = {
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+cluster",
    "redis+sentinel",
}


class Checker:
    """The rules a JSON Schema cannot express, over the whole file (the routes' through
    RouteRules); tolerant of data the schema rejected."""

    def __init__(self, document: Document) -> None:
        self.doc = document
        self.data = document.data if isinstance(document.data, dict) else {}
        self.problems: list[ConfigProblem] = []

    def fail(self, path: Path, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, key=key))

    def run(self) -> list[ConfigProblem]:
        self._gateway()
        self._cors()
        self._jwt()
        self._api_keys()
        for path in (("rate_limits", "default"), ("rate_limits", "auth_failures")):
            check_rate_limits(self.fail, path, nested_value(self.data, *path))
        self._storage()
        self._cache()
        self._tracing()
        self._upstreams()
        RouteRules(self.doc, self.fail).run()
        return self.problems

    def _networks(self, section: str, key: str) -> None:
        networks = string_items(nested_value(self.data, section, key))
        for index, network in enumerate(networks):
            try:
                ip_network(network, strict=False)
            except ValueError:
                self.fail(
                    (section, key, index),
                    f"{section}.{key}: {network!r} is not a network (e.g. 10.0.0.0/8)",
                )

    def _tracing(self) -> None:
        self._networks("tracing", "trusted_networks")
        endpoint = nested_value(self.data, "tracing", "otlp_endpoint")
        if endpoint:
            check_http_url(
                self.fail, ("tracing", "otlp_endpoint"), endpoint, "otlp_endpoint", allow_path=True
            )
            if not tracing_installed():
                self.fail(("tracing", "otlp_endpoint"), f"tracing is configured: {TRACING_HINT}")

    def _gateway(self) -> None:
        self._networks("gateway", "metrics_allow")
        public_url = nested_value(self.data, "gateway", "public_url")
        if public_url:
            check_http_url(
                self.fail, ("gateway", "public_url"), public_url, "public_url", allow_path=True
            )

    def _cors(self) -> None:
        top = self.data.get("cors")
        top = top if isinstance(top, dict) else {}
        self._cors_at(("cors",), top, top)
        routes = self.data.get("routes")
        for index, route in enumerate(routes if isinstance(routes, list) else []):
            if isinstance(route, dict) and isinstance(route.get("cors"), dict):
                # A route's cors is judged as merged over the top-level one, but only
                # what the route itself writes is reported at the route.
                own = route["cors"]
                self._cors_at(("routes", index, "cors"), {**top, **own}, own)

    def _cors_at(self, at: Path, cors: dict[str, Any], own: dict[str, Any]) -> None:
        """`cors`: the effective settings; `own`: the keys written at `at`."""
        origins = string_items(cors.get("allow_origins"))
        wrote_either = "allow_origins" in own or "allow_credentials" in own
        if "*" in origins and cors.get("allow_credentials") is True and wrote_either:
            self.fail(
                (*at, "allow_origins"),
                f"{display(self.doc.local(at))}: '*' in allow_origins cannot be combined with "
                "allow_credentials: true (browsers refuse it; list the origins)",
            )
        raw = own.get("allow_origins") or []
        for index, origin in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(origin, str) or origin == "*":
                continue
            parts = urlsplit(origin)
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
                bad_port = False
            except ValueError:
                bad_port = True
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or bad_port
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username is not None
                or origin.endswith("/")
            ):
                self.fail(
                    (*at, "allow_origins", index),
                    f"cors origin {origin!r} must be scheme://host[:port], with no "
                    "path or trailing slash",
                )

    def _jwt(self) -> None:
        jwt = nested_value(self.data, "auth", "jwt")
        if not isinstance(jwt, dict):
            return
        path: Path = ("auth", "jwt")
        sources = [k for k in ("jwks_url", "public_key_file", "secret") if jwt.get(k)]
        if not sources:
            self.fail(
                path,
                "auth.jwt needs a key source: one of jwks_url, public_key_file, secret",
                key=True,
            )
        elif len(sources) > 1:
            self.fail(
                (*path, sources[1]),
                f"auth.jwt has two key sources ({sources[0]} and {sources[1]}); keep one",
                key=True,
            )
        algorithms = string_items(jwt.get("algorithms"))
        symmetric = [a for a in algorithms if a.startswith("HS")]
        asymmetric = [a for a in algorithms if not a.startswith("HS")]
        if symmetric and asymmetric:
            # RFC 8725 §2.1/§3.1: mixing families invites algorithm confusion.
            self.fail(
                (*path, "algorithms"),
                "auth.jwt.algorithms mixes HS* with public-key "
                "algorithms; one key source serves one family",
            )
        secret = jwt.get("secret")
        if isinstance(secret, str) and secret:
            if asymmetric:
                self.fail((*path, "secret"), "auth.jwt.secret serves HS* algorithms only")
            if len(secret.encode()) < _HS_MIN_SECRET_BYTES:
                self.fail(
                    (*path, "secret"),
                    f"auth.jwt.secret must be at least "
                    f"{_HS_MIN_SECRET_BYTES} bytes (it has {len(secret.encode())})",
                )
        elif symmetric and sources:
            self.fail((*path, "algorithms"), "auth.jwt: HS* algorithms need `secret`")
        if isinstance(jwt.get("jwks_url"), str) and jwt["jwks_url"]:
            check_http_url(
                self.fail, (*path, "jwks_url"), jwt["jwks_url"], "jwks_url", allow_path=True
            )
        key_file = jwt.get("public_key_file")
        if isinstance(key_file, str) and key_file:
            problem = public_key_problem(self._relative(key_file), asymmetric)
            if problem:
                self.fail(
                    (*path, "public_key_file"),
                    f"auth.jwt.public_key_file {key_file!r} {problem}",
                )

    def _relative(self, name: str) -> FilePath:
        return resolve_relative(self.doc.file, name)

    def _api_keys(self) -> None:
        keys = nested_value(self.data, "auth", "api_keys", "keys")
        if not isinstance(keys, list):
            return
        seen_ids: dict[str, int] = {}
        seen_digests: dict[str, int] = {}
        for index, key in enumerate(keys):
            if not isinstance(key, dict):
                continue
            key_id, digest = key.get("id"), key.get("sha256")
            if isinstance(key_id, str):
                if key_id in seen_ids:
                    self.fail(
                        ("auth", "api_keys", "keys", index, "id"),
                        f"api key id {key_id!r} is used twice",
                    )
                seen_ids.setdefault(key_id, index)
            owner = f"api key {key_id!r}" if isinstance(key_id, str) else f"keys[{index}]"
            check_roles(
                self.fail, ("auth", "api_keys", "keys", index, "roles"), key.get("roles"), owner
            )
            if isinstance(digest, str):
                if digest.lower() in seen_digests:
                    self.fail(
                        ("auth", "api_keys", "keys", index, "sha256"),
                        "the same key digest is listed twice",
                    )
                seen_digests.setdefault(digest.lower(), index)

    def _storage(self) -> None:
        for section in ("rate_limits", "cache"):
            storage = nested_value(self.data, section, "storage")
            if not isinstance(storage, str):
                continue
            scheme = urlsplit(storage).scheme
            if scheme not in _STORAGE_SCHEMES:
                self.fail(
                    (section, "storage"),
                    f"{section}.storage {storage!r}: use memory:// or redis://host:port/db",
                )
            elif scheme == "redis+sentinel" and not urlsplit(storage).path.strip("/"):
                self.fail(
                    (section, "storage"),
                    f"{section}.storage {storage!r}: name the sentinel service, as in "
                    "redis+sentinel://host:26379/mymaster",
                )

    def _cache(self) -> None:
        section = self.data.get("cache")
        if not isinstance(section, dict):
            return
        storage = section.get("storage")
        defaults = CacheSettings()
        largest = section.get("max_entry_bytes", defaults.max_entry_bytes)
        budget = section.get("max_bytes", defaults.max_bytes)
        memory = not isinstance(storage, str) or storage.startswith("memory://")
        if memory and isinstance(largest, int) and isinstance(budget, int) and largest >= budget:
            key = "max_entry_bytes" if "max_entry_bytes" in section else "max_bytes"
            self.fail(
                ("cache", key),
                f"cache.max_entry_bytes ({largest}) must be less than cache.max_bytes "
                f"({budget}): a memory store that size could never keep such an answer",
            )

    def _upstreams(self) -> None:
        upstreams = self.data.get("upstreams")
        if not isinstance(upstreams, dict):
            return
        for name, upstream in upstreams.items():
            if not isinstance(upstream, dict):
                continue
            check_http_url(
                self.fail,
                ("upstreams", name, "url"),
                upstream.get("url"),
                f"upstream {name!r} url",
                allow_path=True,
            )
            bundle = upstream.get("ca_bundle")
            if isinstance(bundle, str):
                # Relative to the file that defines the upstream.
                defined_in = self.doc.file_of(("upstreams", name))
                problem = ca_bundle_problem(resolve_relative(defined_in, bundle))
                if problem:
                    self.fail(
                        ("upstreams", name, "ca_bundle"),
                        f"upstream {name!r} ca_bundle {bundle!r} {problem}",
                    )
