"""The rules of routes.yaml that a JSON Schema cannot state (an upstream that exists,
a limit that parses, routes that collide, files that can be read).

Like the schema's verdicts (schema_errors.py), they report every problem with its
position, tolerate data the schema rejected, and never raise: load.py collects what
both find and builds the model only when nothing was found.
"""

from __future__ import annotations

import difflib
import re
import ssl
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path as FilePath
from typing import Any
from urllib.parse import urlsplit

import limits

from gateway.config.errors import ConfigProblem
from gateway.config.schema_errors import display
from gateway.config.source import Document, Path
from gateway.credentials.keys import KeyFileError, key_fits, load_public_key
from gateway.paths import NoMatch, PathMatcher, PathTemplate, TemplateError

_HS_MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash output
# A role as it travels in the comma-separated X-User-Roles and is compared exactly:
# printable ASCII without whitespace or comma, as roles in tokens must be.
_ROLE = re.compile(r"[!-+\--~]{1,256}")
# The storages whose client ships with the gateway (redis-py covers all the Redis ones).
_STORAGE_SCHEMES = {
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+cluster",
    "redis+sentinel",
}
# Answered by the gateway itself, before the route table.
RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _get(data: Any, *keys: str | int) -> Any:
    """A nested value, or None where any step is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or key >= len(data):
                return None
        elif not isinstance(data, dict):
            return None
        data = data[key] if isinstance(key, int) else data.get(key)
    return data


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class Checker:
    """The rules a JSON Schema cannot express; tolerant of data the schema rejected."""

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
        self._rate_limits(("rate_limits", "default"))
        self._rate_limits(("rate_limits", "auth_failures"))
        self._storage()
        self._upstreams()
        self._routes()
        return self.problems

    def _http_url(self, path: Path, url: Any, what: str, *, allow_path: bool) -> None:
        if not isinstance(url, str):
            return
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(path, f"{what} {url!r} must be an http:// or https:// URL with a host")
        elif parts.query or parts.fragment or parts.username or parts.password:
            self.fail(path, f"{what} {url!r} must not carry a query, fragment or credentials")
        elif not allow_path and parts.path not in ("", "/"):
            self.fail(path, f"{what} {url!r} must not have a path")
        else:
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                self.fail(path, f"{what} {url!r} has an invalid port")

    def _gateway(self) -> None:
        for index, network in enumerate(_strings(_get(self.data, "gateway", "metrics_allow"))):
            try:
                ip_network(network, strict=False)
            except ValueError:
                self.fail(
                    ("gateway", "metrics_allow", index),
                    f"gateway.metrics_allow: {network!r} is not a network (e.g. 10.0.0.0/8)",
                )
        public_url = _get(self.data, "gateway", "public_url")
        if public_url:
            self._http_url(("gateway", "public_url"), public_url, "public_url", allow_path=True)

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
        origins = _strings(cors.get("allow_origins"))
        wrote_either = "allow_origins" in own or "allow_credentials" in own
        if "*" in origins and cors.get("allow_credentials") is True and wrote_either:
            self.fail(
                (*at, "allow_origins"),
                f"{display(at)}: '*' in allow_origins cannot be combined with "
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
        jwt = _get(self.data, "auth", "jwt")
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
        algorithms = _strings(jwt.get("algorithms"))
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
            self._http_url((*path, "jwks_url"), jwt["jwks_url"], "jwks_url", allow_path=True)
        key_file = jwt.get("public_key_file")
        if isinstance(key_file, str) and key_file:
            problem = _public_key_problem(self._relative(key_file), asymmetric)
            if problem:
                self.fail(
                    (*path, "public_key_file"),
                    f"auth.jwt.public_key_file {key_file!r} {problem}",
                )

    def _relative(self, name: str) -> FilePath:
        return resolve_relative(self.doc.file, name)

    def _api_keys(self) -> None:
        keys = _get(self.data, "auth", "api_keys", "keys")
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
            self._roles(("auth", "api_keys", "keys", index, "roles"), key.get("roles"), owner)
            if isinstance(digest, str):
                if digest.lower() in seen_digests:
                    self.fail(
                        ("auth", "api_keys", "keys", index, "sha256"),
                        "the same key digest is listed twice",
                    )
                seen_digests.setdefault(digest.lower(), index)

    def _roles(self, path: Path, roles: Any, label: str) -> None:
        for index, role in enumerate(roles if isinstance(roles, list) else []):
            if isinstance(role, str) and not _ROLE.fullmatch(role):
                self.fail(
                    (*path, index),
                    f"{label}: role {role!r} must be 1 to 256 printable ASCII characters "
                    "without spaces or commas",
                )

    def _rate_limits(self, path: Path) -> None:
        value = _get(self.data, *path)
        if not isinstance(value, list):
            return
        for index, text in enumerate(value):
            if not isinstance(text, str):
                continue
            try:
                parsed = limits.parse_many(text)
            except ValueError:
                self.fail(
                    (*path, index),
                    f"rate limit {text!r} does not parse; write "
                    "N/second, N/minute, N/hour or N/day (e.g. 100/minute)",
                )
                continue
            if len(parsed) != 1:
                self.fail((*path, index), f"rate limit {text!r}: write one limit per list item")
            elif parsed[0].amount < 1:
                self.fail((*path, index), f"rate limit {text!r} must allow at least 1")

    def _storage(self) -> None:
        storage = _get(self.data, "rate_limits", "storage")
        if isinstance(storage, str):
            scheme = urlsplit(storage).scheme
            if scheme not in _STORAGE_SCHEMES:
                self.fail(
                    ("rate_limits", "storage"),
                    f"rate_limits.storage {storage!r}: use memory:// or redis://host:port/db",
                )
            elif scheme == "redis+sentinel" and not urlsplit(storage).path.strip("/"):
                self.fail(
                    ("rate_limits", "storage"),
                    f"rate_limits.storage {storage!r}: name the sentinel service, as in "
                    "redis+sentinel://host:26379/mymaster",
                )

    def _upstreams(self) -> None:
        upstreams = self.data.get("upstreams")
        if not isinstance(upstreams, dict):
            return
        for name, upstream in upstreams.items():
            if not isinstance(upstream, dict):
                continue
            self._http_url(
                ("upstreams", name, "url"),
                upstream.get("url"),
                f"upstream {name!r} url",
                allow_path=True,
            )
            bundle = upstream.get("ca_bundle")
            if isinstance(bundle, str):
                problem = _ca_bundle_problem(self._relative(bundle))
                if problem:
                    self.fail(
                        ("upstreams", name, "ca_bundle"),
                        f"upstream {name!r} ca_bundle {bundle!r} {problem}",
                    )

    def _routes(self) -> None:
        routes = self.data.get("routes")
        if not isinstance(routes, list):
            return
        upstreams = self.data.get("upstreams")
        upstream_names = list(upstreams) if isinstance(upstreams, dict) else []
        names: dict[str, int] = {}
        compiled: list[tuple[int, PathTemplate, list[str]]] = []
        for index, route in enumerate(routes):
            if not isinstance(route, dict):
                continue
            at: Path = ("routes", index)
            name = route.get("name")
            label = f"route {name!r}" if isinstance(name, str) else f"routes[{index}]"
            if isinstance(name, str):
                if name in names:
                    first = self.doc.where(("routes", names[name], "name"))
                    self.fail(
                        (*at, "name"),
                        f"route name {name!r} is used twice (first at line {first.line})",
                    )
                names.setdefault(name, index)
            upstream = route.get("upstream")
            if isinstance(upstream, str) and upstream not in upstream_names:
                hint = difflib.get_close_matches(upstream, upstream_names, n=1)
                tip = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else (f"; defined: {', '.join(upstream_names)}" if upstream_names else "")
                )
                self.fail(
                    (*at, "upstream"),
                    f"{label}: upstream {upstream!r} is not defined in upstreams{tip}",
                )
            methods = _strings(route.get("methods"))
            for method in {m for m in methods if methods.count(m) > 1}:
                self.fail((*at, "methods"), f"{label}: method {method} is listed twice")
            template = self._template((*at, "path"), route.get("path"), label)
            if template and template.text.rstrip("/") in RESERVED_PATHS:
                self.fail(
                    (*at, "path"),
                    f"{label}: {template.text} is the gateway's own endpoint and cannot be routed",
                )
            upstream_template = (
                self._template(
                    (*at, "upstream_path"),
                    route.get("upstream_path", route.get("path")),
                    label,
                )
                if "upstream_path" in route
                else template
            )
            if template and upstream_template:
                self._same_params((*at, "upstream_path"), template, upstream_template, label)
            self._versions(at, route, template, label)
            self._deprecation((*at, "deprecation"), route.get("deprecation"), template, label)
            self._roles((*at, "roles"), route.get("roles"), label)
            auth = route.get("auth")
            if auth == "public" and route.get("roles"):
                self.fail((*at, "roles"), f"{label}: a public route cannot require roles", key=True)
            if isinstance(auth, list):
                if "jwt" in auth and not isinstance(_get(self.data, "auth", "jwt"), dict):
                    self.fail((*at, "auth"), f"{label}: uses jwt, but auth.jwt is not configured")
                if "api_key" in auth and not _get(self.data, "auth", "api_keys", "keys"):
                    self.fail(
                        (*at, "auth"),
                        f"{label}: uses api_key, but auth.api_keys has no keys",
                    )
            self._rate_limits((*at, "rate_limit"))
            if template and methods:
                compiled.append((index, template, methods))
        self._collisions(compiled, routes)

    def _same_params(
        self, at: Path, public: PathTemplate, upstream: PathTemplate, label: str
    ) -> None:
        """An upstream template may only use the public path's parameters, each as the
        same kind ({name} or {name:path})."""
        for param in sorted(set(upstream.params) - set(public.params)):
            self.fail(at, f"{label}: {at[-1]} uses {{{param}}}, which path does not define")
        for param, kind in upstream.params.items():
            if param in public.params and public.params[param] != kind:
                self.fail(
                    at, f"{label}: {{{param}}} is a different parameter type in path and {at[-1]}"
                )

    def _versions(
        self, at: Path, route: dict[str, Any], template: PathTemplate | None, label: str
    ) -> None:
        versions = route.get("versions")
        if not isinstance(versions, dict):
            return
        if "upstream_path" in route:
            self.fail(
                (*at, "upstream_path"),
                f"{label}: give either upstream_path or "
                "versions (each version has its own upstream_path)",
                key=True,
            )
        options = versions.get("options")
        if not isinstance(options, dict):
            return
        default = versions.get("default")
        if isinstance(default, str) and default not in options:
            self.fail(
                (*at, "versions", "default"),
                f"{label}: default version {default!r} "
                f"is not one of the options ({', '.join(map(str, options))})",
            )
        for name, option in options.items():
            if not isinstance(option, dict):
                continue
            where: Path = (*at, "versions", "options", name)
            upstream = self._template((*where, "upstream_path"), option.get("upstream_path"), label)
            if template and upstream:
                self._same_params((*where, "upstream_path"), template, upstream, label)
            self._deprecation((*where, "deprecation"), option.get("deprecation"), template, label)

    def _deprecation(
        self, at: Path, deprecation: Any, template: PathTemplate | None, label: str
    ) -> None:
        if not isinstance(deprecation, dict):
            return
        dates: dict[str, datetime] = {}
        for key in ("since", "sunset"):
            text = deprecation.get(key)
            if not isinstance(text, str):
                continue
            try:
                dates[key] = parse_date(text)
            except ValueError:
                self.fail(
                    (*at, key),
                    f"{label}: {key} {text!r} is not a date "
                    "(2027-06-30) or date-time (2027-06-30T00:00:00Z)",
                )
        if "since" in dates and "sunset" in dates and dates["sunset"] < dates["since"]:
            self.fail((*at, "sunset"), f"{label}: sunset is before since")
        successor = deprecation.get("successor")
        if not isinstance(successor, str):
            return
        if successor.startswith("/"):
            target = self._template((*at, "successor"), successor, label)
            if target and template:
                self._same_params((*at, "successor"), template, target, label)
        else:
            self._http_url((*at, "successor"), successor, "successor", allow_path=True)

    def _template(self, path: Path, text: Any, label: str) -> PathTemplate | None:
        if not isinstance(text, str):
            return None
        try:
            return PathTemplate.parse(text)
        except TemplateError as exc:
            self.fail(path, f"{label}: {exc}")
            return None

    def _collisions(
        self, compiled: list[tuple[int, PathTemplate, list[str]]], routes: list[Any]
    ) -> None:
        """Same method and path twice, or a route another one always wins against.

        Each route's example path is matched against the table the gateway will
        really build: if it lands elsewhere for one of the route's methods, that
        route can never be reached by such requests.
        """
        matcher: PathMatcher[int] = PathMatcher()
        for index, template, methods in compiled:
            matcher.add(template, index, methods)
        for index, template, methods in compiled:
            label = routes[index].get("name", f"routes[{index}]")
            for method in dict.fromkeys(methods):
                try:
                    winner, _ = matcher.match(template.example(), method)
                except NoMatch:  # pragma: no cover - cannot happen
                    continue
                if winner == index:
                    continue
                other = routes[winner]
                line = self.doc.where(("routes", winner)).line
                same = PathTemplate.parse(other["path"]).shape == template.shape
                what = "the same method and path as" if same else "shadowed by"
                self.fail(
                    ("routes", index, "path"),
                    f"route {label!r}: {method} "
                    f"{template.text} is {what} route {other.get('name')!r} (line "
                    f"{line})",
                )


def _public_key_problem(path: FilePath, algorithms: list[str]) -> str | None:
    try:
        key = load_public_key(path.read_bytes())
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except KeyFileError as exc:
        return str(exc)
    unfit = [a for a in algorithms if not key_fits(key, a)]
    if unfit:
        return f"holds a key that cannot verify {', '.join(unfit)}"
    return None


def parse_date(text: str) -> datetime:
    """A date or ISO 8601 date-time, as an aware UTC datetime (naive means UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _ca_bundle_problem(path: FilePath) -> str | None:
    if not path.is_file():
        return "does not exist"
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"is not a PEM file of CA certificates ({exc})"
    return None


def resolve_relative(config_file: str, name: str) -> FilePath:
    """Files named in the config are relative to the config file's folder."""
    candidate = FilePath(name)
    return candidate if candidate.is_absolute() else FilePath(config_file).parent / candidate
