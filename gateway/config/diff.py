"""`gateway diff -c OLD NEW`: what changed in effect between two configs, for review.

Both files are loaded and validated as the gateway would load them; the comparison
runs over the frozen model, never over the YAML text, so comments, key order, YAML
style, anchors and line positions cannot show up as changes.

Each route is seen through its *effective policy*: the values a request meets, with
defaults resolved (the default limits when the route has none of its own, the
top-level CORS when it has no `cors`, its name as its bucket, its path as its upstream
path). Two routes are the same in effect when those values are equal, however they
are written: `rate_limit: [1000/minute]` and "no `rate_limit` with a default of
`1000/minute`" are the same. Routes are matched by name. Settings that apply to every
route alike (`gateway`, `auth`, `rate_limits`, `upstreams`) are listed once, under
`settings:`; a route lists what reaches it alone (its default limits, the definitions
of the upstreams it calls, the top-level CORS it inherits).

Nothing secret is printed: JWT secrets and API key digests are said to have changed,
never shown, and URLs lose the credentials in them. The format is documented in
docs/operations.md ("Reviewing a change").
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import PurePath
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from gateway.config.errors import ConfigError
from gateway.config.load import load_config
from gateway.config.model import (
    ApiKey,
    ApiKeySettings,
    Compose,
    Config,
    CorsSettings,
    Deprecation,
    JwtSettings,
    RateLimit,
    Route,
    RouteCache,
    Versions,
)

# (label, text): one line of the report, e.g. ("roles", "admin, member -> admin").
Line = tuple[str, str]

# Lists whose order has an effect (a request meets the limits in list order, and the
# rate-limit headers name the first); every other list of the model is a set.
_ORDERED_FIELDS = frozenset({"default", "auth_failures"})
_SECRET_FIELDS = frozenset({"secret", "sha256", "headers"})  # tracing.headers: API keys
_URL_FIELDS = frozenset({"url", "jwks_url", "storage", "otlp_endpoint"})
_FILE_FIELDS = frozenset({"ca_bundle", "public_key_file"})
# The model's names of keys that routes.yaml writes nested.
_YAML_NAMES = {
    "breaker_failures": "breaker.failures",
    "breaker_open_seconds": "breaker.open_seconds",
    "breaker_on_5xx": "breaker.on_5xx",
}
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_AUTH_ORDER = ("jwt", "api_key")


# -- how values read -----------------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _in_order(items: Iterable[str], order: Sequence[str]) -> list[str]:
    """A set's items in a fixed order: `order` first, then the others alphabetically."""
    rank = {name: index for index, name in enumerate(order)}
    return sorted(set(items), key=lambda item: (rank.get(item, len(order)), item))


def _list(items: Iterable[str], order: Sequence[str] = ()) -> str:
    shown = _in_order(items, order)
    return ", ".join(shown) if shown else "none"


def _limits(limits: Sequence[RateLimit]) -> str:
    return ", ".join(limit.text for limit in limits) if limits else "none"


def _date(value: datetime) -> str:
    value = value.astimezone(UTC)
    if value.time() == time(0, 0):
        return value.date().isoformat()
    return value.isoformat().replace("+00:00", "Z")


def _redact(url: str) -> str:
    """The URL without the credentials it may hold (`redis://:pw@host` -> `:***@`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    shown = f"{user}:***" if has_password else "***"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def _file(config: Config, path: str | None) -> str:
    """A file the config names, as relative to the config's folder as it can be."""
    if path is None:
        return "none"
    try:
        return str(PurePath(path).relative_to(PurePath(config.source).parent))
    except ValueError:
        return path


def _change(old: str, new: str) -> str:
    return f"{old} -> {new}"


# -- one model object against another, field by field --------------------------------


def _field_lines(
    old: Any,
    new: Any,
    old_config: Config,
    new_config: Config,
    *,
    skip: Iterable[str] = (),
) -> list[Line]:
    """(field, "OLD -> NEW") for each field of two objects of one dataclass that differs
    in effect. Lists compare as sets unless their order has an effect; secrets are
    never shown; URLs are shown without credentials; files relative to their config."""
    lines: list[Line] = []
    for field in dataclasses.fields(old):
        name = field.name
        if name in skip:
            continue
        a, b = getattr(old, name), getattr(new, name)
        label = _YAML_NAMES.get(name, name)
        if name in _SECRET_FIELDS:
            if a != b:
                shown_a = "none" if a is None else "(set)"
                shown_b = "none" if b is None else "(set)"
                both = a is not None and b is not None
                lines.append((label, "changed (not shown)" if both else _change(shown_a, shown_b)))
        elif name in _FILE_FIELDS:
            shown_a, shown_b = _file(old_config, a), _file(new_config, b)
            if a != b and shown_a != shown_b:
                lines.append((label, _change(shown_a, shown_b)))
        elif name in _URL_FIELDS:
            if a != b:
                shown_a, shown_b = _redact(a or "none"), _redact(b or "none")
                text = _change(shown_a, shown_b)
                if shown_a == shown_b:
                    text = "credentials changed (not shown)"
                lines.append((label, text))
        elif name in _ORDERED_FIELDS:
            if [r.text for r in a] != [r.text for r in b]:
                lines.append((label, _change(_limits(a), _limits(b))))
        elif isinstance(a, tuple):
            if set(a) != set(b):
                lines.append((label, _change(_list(a, _METHOD_ORDER), _list(b, _METHOD_ORDER))))
        elif a != b:
            lines.append((label, _change(_scalar(a), _scalar(b))))
    return lines


def _scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    return str(value)


# -- a route's effective policy --------------------------------------------------------


def _methods(route: Route) -> str:
    return ",".join(_in_order(route.methods, _METHOD_ORDER))


def _endpoint(route: Route) -> str:
    return f"{_methods(route)} {route.path}"


def _roles(route: Route) -> str:
    """A route's roles; without any, every authenticated caller is admitted."""
    return _list(route.roles) if route.roles else "any"


def _effective_limits(config: Config, route: Route) -> tuple[RateLimit, ...]:
    return config.rate_limits.default if route.rate_limit is None else route.rate_limit


def _limits_text(config: Config, route: Route) -> str:
    if route.rate_limit is None:
        return f"default ({_limits(config.rate_limits.default)})"
    return _limits(route.rate_limit)


def _upstream_path(route: Route) -> str:
    if route.compose is not None:
        return "(compose)"
    if route.versions is not None:
        return "(by version)"
    return route.upstream_path


def _reached(route: Route) -> set[str]:
    """The upstreams a route calls: its own, or its parts'."""
    if route.compose is not None:
        return {part.upstream for part in route.compose.parts}
    return {route.upstream} if route.upstream else set()


def _effective_cors(config: Config, route: Route) -> CorsSettings:
    return route.cors if route.cors is not None else config.cors


def _deprecation_text(value: Deprecation | None) -> str:
    if value is None:
        return "none"
    text = f"since {_date(value.since)}"
    if value.sunset is not None:
        text += f", sunset {_date(value.sunset)}"
    if value.successor is not None:
        text += f", successor {value.successor}"
    return text


def _deprecation_lines(old: Deprecation | None, new: Deprecation | None) -> list[str]:
    if old == new:
        return []
    if old is None or new is None:
        return [_change(_deprecation_text(old), _deprecation_text(new))]
    lines = []
    if old.since != new.since:
        lines.append(f"since {_change(_date(old.since), _date(new.since))}")
    if old.sunset != new.sunset:
        a = "none" if old.sunset is None else _date(old.sunset)
        b = "none" if new.sunset is None else _date(new.sunset)
        lines.append(f"sunset {_change(a, b)}")
    if old.successor != new.successor:
        lines.append(f"successor {_change(_scalar(old.successor), _scalar(new.successor))}")
    return lines


def _versions_text(versions: Versions | None) -> str:
    if versions is None:
        return "none"
    names = ", ".join(o.name + ("*" if o.deprecation else "") for o in versions.options)
    return f"{names} by {versions.header} (default {versions.default})"


def _versions_lines(old: Versions | None, new: Versions | None) -> list[str]:
    if old is None or new is None:
        return [] if old == new else [_change(_versions_text(old), _versions_text(new))]
    lines = []
    if old.header != new.header:
        lines.append(f"header {_change(old.header, new.header)}")
    if old.default != new.default:
        lines.append(f"default {_change(old.default, new.default)}")
    before = {o.name: o for o in old.options}
    after = {o.name: o for o in new.options}
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is None and b is not None:
            added = f"option {name} added ({b.upstream_path}"
            if b.deprecation is not None:
                added += f"; deprecated {_deprecation_text(b.deprecation)}"
            lines.append(added + ")")
        elif b is None:
            lines.append(f"option {name} removed")
        elif a is not None and a != b:
            if a.upstream_path != b.upstream_path:
                lines.append(
                    f"option {name}: upstream_path {_change(a.upstream_path, b.upstream_path)}"
                )
            for text in _deprecation_lines(a.deprecation, b.deprecation):
                lines.append(f"option {name}: deprecation {text}")
    return lines


def _fields_text(fields: tuple[str, ...] | None) -> str:
    return "all" if fields is None else (", ".join(fields) or "none")


def _compose_text(compose: Compose | None) -> str:
    if compose is None:
        return "none"
    names = ", ".join(part.name for part in compose.parts)
    return f"parts {names} (timeout {_number(compose.timeout)})"


def _compose_lines(old: Compose | None, new: Compose | None) -> list[str]:
    if old is None or new is None:
        return [] if old == new else [_change(_compose_text(old), _compose_text(new))]
    lines = []
    before = {part.name: part for part in old.parts}
    after = {part.name: part for part in new.parts}
    for name in sorted(before.keys() | after.keys()):
        a, b = before.get(name), after.get(name)
        if a is None and b is not None:
            lines.append(
                f"part {name} added (upstream {b.upstream}, path {b.path}, "
                f"{'required' if b.required else 'optional'}, fields {_fields_text(b.fields)})"
            )
        elif b is None:
            lines.append(f"part {name} removed")
        elif a is not None:
            if a.upstream != b.upstream:
                lines.append(f"part {name}: upstream {_change(a.upstream, b.upstream)}")
            if a.path != b.path:
                lines.append(f"part {name}: path {_change(a.path, b.path)}")
            if a.required != b.required:
                lines.append(
                    f"part {name}: required {_change(_scalar(a.required), _scalar(b.required))}"
                )
            if (a.fields is None) != (b.fields is None) or set(a.fields or ()) != set(
                b.fields or ()
            ):
                lines.append(
                    f"part {name}: fields {_change(_fields_text(a.fields), _fields_text(b.fields))}"
                )
    # The answer's members, and which failed required part names its status, follow
    # the order of the parts.
    kept_before = [p.name for p in old.parts if p.name in after]
    kept_after = [p.name for p in new.parts if p.name in before]
    if kept_before != kept_after:
        lines.append(f"parts order {_change(', '.join(kept_before), ', '.join(kept_after))}")
    if old.timeout != new.timeout:
        lines.append(f"timeout {_change(_number(old.timeout), _number(new.timeout))}")
    if old.max_part_bytes != new.max_part_bytes:
        lines.append(f"max_part_bytes {_change(str(old.max_part_bytes), str(new.max_part_bytes))}")
    return lines


def _cache_text(cache: RouteCache | None) -> str:
    if cache is None:
        return "none"
    vary = f", vary {', '.join(cache.vary)}" if cache.vary else ""
    return f"ttl {cache.ttl}s, scope {cache.scope}{vary}"


def route_summary(config: Config, route: Route) -> list[Line]:
    """What an added route lets in and where it sends it."""
    if route.compose is not None:
        target = "(compose) " + _compose_text(route.compose)
    elif route.versions is not None:
        target = f"{route.upstream} {_versions_text(route.versions)}"
    else:
        target = f"{route.upstream} {route.upstream_path}"
    lines: list[Line] = [
        ("auth", _list(route.auth, _AUTH_ORDER) if route.auth else "public"),
        ("roles", _roles(route)),
        ("rate limit", _limits_text(config, route)),
        ("upstream", target),
    ]
    if route.deprecation is not None:
        lines.append(("deprecation", _deprecation_text(route.deprecation)))
    if route.cache is not None:
        lines.append(("cache", _cache_text(route.cache)))
    return lines


def route_changes(old_config: Config, old: Route, new_config: Config, new: Route) -> list[Line]:
    """Every difference in effect between two routes (of the same name, or a rename),
    in a fixed order of policies."""
    lines: list[Line] = []

    def add(label: str, texts: Iterable[str]) -> None:
        lines.extend((label, text) for text in texts)

    if _endpoint(old) != _endpoint(new):
        add("path", [_change(_endpoint(old), _endpoint(new))])
    if set(old.auth) != set(new.auth):
        a = _list(old.auth, _AUTH_ORDER) if old.auth else "public"
        b = _list(new.auth, _AUTH_ORDER) if new.auth else "public"
        add("auth", [_change(a, b)])
    if set(old.roles) != set(new.roles):
        add("roles", [_change(_roles(old), _roles(new))])

    old_limits = _effective_limits(old_config, old)
    new_limits = _effective_limits(new_config, new)
    if [r.text for r in old_limits] != [r.text for r in new_limits]:
        add("rate limit", [_change(_limits_text(old_config, old), _limits_text(new_config, new))])
    if old_limits or new_limits:  # without limits, nothing is counted by key or bucket
        if old.rate_limit_key != new.rate_limit_key:
            add("rate limit key", [_change(old.rate_limit_key, new.rate_limit_key)])
        old_bucket = old.rate_limit_bucket or old.name
        new_bucket = new.rate_limit_bucket or new.name
        if old_bucket != new_bucket:
            add("rate limit bucket", [_change(old_bucket, new_bucket)])

    if old.upstream != new.upstream:
        add("upstream", [_change(old.upstream or "(compose)", new.upstream or "(compose)")])
    for name in sorted(_reached(old) & _reached(new)):
        before, after = old_config.upstreams[name], new_config.upstreams[name]
        for field, text in _field_lines(before, after, old_config, new_config, skip={"name"}):
            add("upstream", [f"{name}: {field} {text}"])
    if _upstream_path(old) != _upstream_path(new):
        add("upstream_path", [_change(_upstream_path(old), _upstream_path(new))])
    add("versions", _versions_lines(old.versions, new.versions))
    add("deprecation", _deprecation_lines(old.deprecation, new.deprecation))
    add("compose", _compose_lines(old.compose, new.compose))
    if old.cache != new.cache:
        add("cache", [_change(_cache_text(old.cache), _cache_text(new.cache))])
    old_cors = _effective_cors(old_config, old)
    new_cors = _effective_cors(new_config, new)
    for field, text in _field_lines(old_cors, new_cors, old_config, new_config):
        add("cors", [f"{field} {text}"])
    return lines


# -- the top-level sections ------------------------------------------------------------


def _prefixed(prefix: str, lines: Iterable[Line]) -> list[Line]:
    return [(f"{prefix}.{label}", text) for label, text in lines]


def _jwt_text(jwt: JwtSettings) -> str:
    return f"issuer {jwt.issuer}, audience {jwt.audience}"


def _key_text(key: ApiKey) -> str:
    return f"roles {_list(key.roles)}"


def _api_keys_lines(old: ApiKeySettings | None, new: ApiKeySettings | None) -> list[Line]:
    """Keys by id; a key's digest is said to have changed, never printed."""
    if old is None or new is None:
        if old == new:
            return []
        gone = old is not None
        settings = old if old is not None else new
        assert settings is not None
        ids = ", ".join(sorted(k.id for k in settings.keys)) or "none"
        text = "removed" if gone else f"added (header {settings.header}, keys {ids})"
        return [("auth.api_keys", text)]
    lines: list[Line] = []
    if old.header != new.header:
        lines.append(("auth.api_keys.header", _change(old.header, new.header)))
    before = {key.id: key for key in old.keys}
    after = {key.id: key for key in new.keys}
    for key_id in sorted(before.keys() | after.keys()):
        a, b = before.get(key_id), after.get(key_id)
        label = f"auth.api_keys.keys.{key_id}"
        if a is None and b is not None:
            lines.append((label, f"added ({_key_text(b)})"))
        elif b is None:
            lines.append((label, "removed"))
        elif a is not None:
            if a.sha256 != b.sha256:
                lines.append((label, "sha256 changed: another key (digest not shown)"))
            if set(a.roles) != set(b.roles):
                lines.append((f"{label}.roles", _change(_list(a.roles), _list(b.roles))))
    return lines


def settings_changes(old: Config, new: Config) -> list[Line]:
    """Differences in effect of the top-level sections, by dotted key."""
    lines: list[Line] = []
    lines += _prefixed("gateway", _field_lines(old.gateway, new.gateway, old, new))
    lines += _prefixed("cors", _field_lines(old.cors, new.cors, old, new))
    jwt_old, jwt_new = old.auth.jwt, new.auth.jwt
    if jwt_old is not None and jwt_new is not None:
        lines += _prefixed("auth.jwt", _field_lines(jwt_old, jwt_new, old, new))
    elif jwt_new is not None:
        lines.append(("auth.jwt", f"added ({_jwt_text(jwt_new)})"))
    elif jwt_old is not None:
        lines.append(("auth.jwt", "removed"))
    lines += _api_keys_lines(old.auth.api_keys, new.auth.api_keys)
    lines += _prefixed("rate_limits", _field_lines(old.rate_limits, new.rate_limits, old, new))
    lines += _prefixed("cache", _field_lines(old.cache, new.cache, old, new))
    lines += _prefixed("tracing", _field_lines(old.tracing, new.tracing, old, new))
    for name in sorted(old.upstreams.keys() | new.upstreams.keys()):
        a, b = old.upstreams.get(name), new.upstreams.get(name)
        label = f"upstreams.{name}"
        if a is None and b is not None:
            lines.append((label, f"added ({_redact(b.url)})"))
        elif b is None:
            lines.append((label, "removed"))
        elif a is not None:
            lines += _prefixed(label, _field_lines(a, b, old, new, skip={"name"}))
    return lines


# -- the whole comparison --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route in the report: `+` added, `-` removed, `~` changed."""

    sign: str
    route: Route
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    added: tuple[RouteEntry, ...]
    removed: tuple[RouteEntry, ...]
    changed: tuple[RouteEntry, ...]
    unchanged: int
    renamed: int
    settings: tuple[Line, ...]

    @property
    def same_in_effect(self) -> bool:
        return not (self.added or self.removed or self.changed or self.settings)


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    before = {route.name: route for route in old.routes}
    after = {route.name: route for route in new.routes}
    added_names = sorted(after.keys() - before.keys())
    removed_names = sorted(before.keys() - after.keys())

    # A rename is a removed and an added route with the same methods and path, each the
    # only one of its side with them. Routes are matched by name, so it stays removed +
    # added (its counters, metrics and logs go by the new name); the pair is said.
    def by_endpoint(names: list[str], routes: dict[str, Route]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name in names:
            found.setdefault(_endpoint(routes[name]), []).append(name)
        return found

    gone_at = by_endpoint(removed_names, before)
    new_at = by_endpoint(added_names, after)
    renamed_from: dict[str, str] = {}
    for endpoint, names in new_at.items():
        if len(names) == 1 and len(gone_at.get(endpoint, ())) == 1:
            renamed_from[names[0]] = gone_at[endpoint][0]
    renamed_to = {old_name: new_name for new_name, old_name in renamed_from.items()}

    added = []
    for name in added_names:
        lines: list[Line] = []
        if name in renamed_from:
            was = renamed_from[name]
            lines.append(("renamed from", f"{was} (same methods and path)"))
            lines += route_changes(old, before[was], new, after[name])
        else:
            lines += route_summary(new, after[name])
        added.append(RouteEntry("+", after[name], tuple(lines)))
    removed = [
        RouteEntry(
            "-",
            before[name],
            (("renamed to", renamed_to[name]),) if name in renamed_to else (),
        )
        for name in removed_names
    ]
    changed = []
    unchanged = 0
    for name in sorted(before.keys() & after.keys()):
        lines = route_changes(old, before[name], new, after[name])
        if lines:
            changed.append(RouteEntry("~", after[name], tuple(lines)))
        else:
            unchanged += 1
    return ConfigDiff(
        added=tuple(added),
        removed=tuple(removed),
        changed=tuple(changed),
        unchanged=unchanged,
        renamed=len(renamed_from),
        settings=tuple(settings_changes(old, new)),
    )


def _width(lines: Iterable[Line]) -> int:
    return max((len(label) + 1 for label, _ in lines), default=0)


def _block(lines: Sequence[Line], width: int) -> list[str]:
    return [f"    {(label + ':').ljust(width)}  {text}" for label, text in lines]


def render(diff: ConfigDiff, routes: int) -> list[str]:
    """The report's lines. `routes`: how many routes the new config has."""
    if diff.same_in_effect:
        return [f"no changes: the same in effect ({routes} route{'s' if routes != 1 else ''})"]
    counts = (
        f"routes: {len(diff.added)} added, {len(diff.removed)} removed, "
        f"{len(diff.changed)} changed, {diff.unchanged} unchanged"
    )
    if diff.renamed:
        counts += f" ({diff.renamed} added {'is a rename' if diff.renamed == 1 else 'are renames'})"
    out = [counts]
    entries = [*diff.added, *diff.removed, *diff.changed]
    names = max((len(entry.route.name) for entry in entries), default=0)
    width = _width(line for entry in entries for line in entry.lines)
    for entry in entries:
        out.append(f"{entry.sign} {entry.route.name.ljust(names)}  {_endpoint(entry.route)}")
        out += _block(entry.lines, width)
    if diff.settings:
        out.append("settings:")
        out += _block(diff.settings, _width(diff.settings))
    else:
        out.append("settings: no changes")
    return out


def _load_or_report(path: str, err: TextIO) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        count = len(exc.problems)
        print(f"{path}: {count} problem{'s' if count != 1 else ''}", file=err)
        return None


def run_diff(old: str, new: str, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the report; 0 when the same in effect, 1 when they differ, 2 when either
    file is invalid (its problems, as FILE:LINE:COL: message, go to stderr)."""
    out = out or sys.stdout
    err = err or sys.stderr
    old_config = _load_or_report(old, err)
    new_config = _load_or_report(new, err)  # both files are checked, so both get their problems
    if old_config is None or new_config is None:
        return 2
    diff = diff_configs(old_config, new_config)
    print("\n".join(render(diff, len(new_config.routes))), file=out)
    return 0 if diff.same_in_effect else 1
