"""The rules for `routes` that a JSON Schema cannot state: each route against the rest
of the file (its upstream, auth and roles), its path templates and versions, the
parts of a composed route, its deprecation dates, and the table as a whole (names used
twice, routes that collide or shadow one another).

Like the other rules (checks.py), they report every problem with its position,
tolerate data the schema rejected, and never raise.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from typing import Any

from gateway.config.schema_errors import display
from gateway.config.source import Document, Path
from gateway.config.value_checks import (
    Fail,
    check_http_url,
    check_rate_limits,
    check_roles,
    nested_value,
    string_items,
)
from gateway.paths import NoMatch, PathMatcher, PathTemplate, TemplateError
from gateway.placeholders import PartTemplate, TemplateProblem

# Answered by the gateway itself, before the route table.
RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def parse_date(text: str) -> datetime:
    """A date or ISO 8601 date-time, as an aware UTC datetime (naive means UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class RouteRules:
    """The rules for `routes`, reporting through the `fail` of the pass that runs them."""

    def __init__(self, document: Document, fail: Fail) -> None:
        self.doc = document
        self.data = document.data if isinstance(document.data, dict) else {}
        self.fail = fail

    def run(self) -> None:
        routes = self.data.get("routes")
        if not isinstance(routes, list):
            return
        upstreams = self.data.get("upstreams")
        upstream_names = list(upstreams) if isinstance(upstreams, dict) else []
        names: dict[str, int] = {}
        openapi_path = nested_value(self.data, "gateway", "openapi_path")
        served = isinstance(openapi_path, str) and openapi_path
        reserved = RESERVED_PATHS | ({openapi_path} if served else set())
        compiled: list[tuple[int, PathTemplate, list[str]]] = []
        for index, route in enumerate(routes):
            if not isinstance(route, dict):
                continue
            at: Path = ("routes", index)
            name = route.get("name")
            label = f"route {name!r}" if isinstance(name, str) else display(self.doc.local(at))
            if isinstance(name, str):
                if name in names:
                    first = self.doc.mention(("routes", names[name], "name"), seen_from=at)
                    self.fail(
                        (*at, "name"),
                        f"route name {name!r} is used twice (first at {first})",
                    )
                names.setdefault(name, index)
            self._upstream_defined((*at, "upstream"), route.get("upstream"), upstream_names, label)
            methods = string_items(route.get("methods"))
            for method in {m for m in methods if methods.count(m) > 1}:
                self.fail((*at, "methods"), f"{label}: method {method} is listed twice")
            template = self._template((*at, "path"), route.get("path"), label)
            if template and template.text.rstrip("/") in reserved:
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
            self._compose(at, route, template, upstream_names, label)
            self._cache(at, route, label)
            self._deprecation((*at, "deprecation"), route.get("deprecation"), template, label)
            check_roles(self.fail, (*at, "roles"), route.get("roles"), label)
            auth = route.get("auth")
            if auth == "public" and route.get("roles"):
                self.fail((*at, "roles"), f"{label}: a public route cannot require roles", key=True)
            if isinstance(auth, list):
                if "jwt" in auth and not isinstance(nested_value(self.data, "auth", "jwt"), dict):
                    self.fail((*at, "auth"), f"{label}: uses jwt, but auth.jwt is not configured")
                if "api_key" in auth and not nested_value(self.data, "auth", "api_keys", "keys"):
                    self.fail(
                        (*at, "auth"),
                        f"{label}: uses api_key, but auth.api_keys has no keys",
                    )
            check_rate_limits(self.fail, (*at, "rate_limit"), route.get("rate_limit"))
            if template and methods:
                compiled.append((index, template, methods))
        self._collisions(compiled, routes)

    def _upstream_defined(
        self, at: Path, upstream: Any, upstream_names: list[str], label: str
    ) -> None:
        if not isinstance(upstream, str) or upstream in upstream_names:
            return
        hint = difflib.get_close_matches(upstream, upstream_names, n=1)
        tip = (
            f"; did you mean {hint[0]!r}?"
            if hint
            else (f"; defined: {', '.join(upstream_names)}" if upstream_names else "")
        )
        self.fail(at, f"{label}: upstream {upstream!r} is not defined in upstreams{tip}")

    def _cache(self, at: Path, route: dict[str, Any], label: str) -> None:
        """Only reads are kept (RFC 9111 §3); an answer kept per tenant or per caller
        needs a caller to know."""
        cache = route.get("cache")
        if not isinstance(cache, dict):
            return
        writes = [m for m in string_items(route.get("methods")) if m not in ("GET", "HEAD")]
        if writes:
            self.fail(
                (*at, "methods"),
                f"{label}: a cached route answers GET and HEAD only, not {', '.join(writes)} "
                "(give the writes a route of their own: they still drop its kept answers)",
            )
        scope = cache.get("scope")
        if route.get("auth") == "public" and scope in ("tenant", "identity"):
            self.fail(
                (*at, "cache", "scope"),
                f"{label}: a public route has no caller to keep answers per {scope}; "
                "use scope: public, or authenticate the route",
            )

    def _compose(
        self,
        at: Path,
        route: dict[str, Any],
        template: PathTemplate | None,
        upstream_names: list[str],
        label: str,
    ) -> None:
        """A route forwards to one upstream or composes several, never both; a composed
        route reads (GET, HEAD), and each part's path is one the gateway can fill safely."""
        compose = route.get("compose")
        if compose is None:
            if "upstream" not in route:
                self.fail(at, f"{label}: give upstream (forward) or compose (merge parts)")
            return
        for key in ("upstream", "upstream_path", "versions"):
            if key in route:
                self.fail(
                    (*at, key),
                    f"{label}: {key} cannot be given with compose (each part names its "
                    "upstream and path)",
                    key=True,
                )
        writes = [m for m in string_items(route.get("methods")) if m not in ("GET", "HEAD")]
        if writes:
            self.fail(
                (*at, "methods"),
                f"{label}: a composed route answers GET and HEAD only, not {', '.join(writes)}",
            )
        parts = compose.get("parts") if isinstance(compose, dict) else None
        if not isinstance(parts, dict):
            return
        params = list(template.params) if template else []
        for name, part in parts.items():
            where: Path = (*at, "compose", "parts", name)
            if isinstance(name, str) and name.startswith("_"):
                self.fail(
                    where,
                    f"{label}: part name {name!r}: names starting with _ are reserved for "
                    "the gateway's own members (_problems)",
                    key=True,
                )
            if not isinstance(part, dict):
                continue
            self._upstream_defined(
                (*where, "upstream"), part.get("upstream"), upstream_names, label
            )
            path = part.get("path")
            if not isinstance(path, str) or template is None:
                continue
            try:
                part_template = PartTemplate.parse(path, params)
            except TemplateProblem as exc:
                self.fail((*where, "path"), f"{label}: part {name!r}: path {path!r}: {exc}")
                continue
            if route.get("auth") == "public":
                for slot in part_template.slots:
                    if slot.source == "identity":
                        self.fail(
                            (*where, "path"),
                            f"{label}: part {name!r} uses {slot}, but a public route has "
                            "no caller identity",
                        )

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
            check_http_url(self.fail, (*at, "successor"), successor, "successor", allow_path=True)

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
            label = routes[index].get("name", display(self.doc.local(("routes", index))))
            for method in dict.fromkeys(methods):
                try:
                    winner, _ = matcher.match(template.example(), method)
                except NoMatch:  # pragma: no cover - cannot happen
                    continue
                if winner == index:
                    continue
                other = routes[winner]
                where = self.doc.mention(("routes", winner), seen_from=("routes", index))
                same = PathTemplate.parse(other["path"]).shape == template.shape
                what = "the same method and path as" if same else "shadowed by"
                self.fail(
                    ("routes", index, "path"),
                    f"route {label!r}: {method} "
                    f"{template.text} is {what} route {other.get('name')!r} ({where})",
                )
