"""Upstream addresses in `Link` and `Location` headers, turned into public ones.

A client must never learn an upstream's address (CONTRACT §4). An upstream URL is
mapped back through the route table: its path is matched against the routes'
`upstream_path` templates (the current route first, then every route of that
upstream) and rebuilt from the winning route's public `path`, query kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, Rule

from gateway.config.model import Route, Upstream
from gateway.paths import PathTemplate

_LINK_TARGET = re.compile(r"<([^>]*)>")


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


@dataclass(frozen=True, slots=True)
class _UpstreamPaths:
    base_path: str
    adapter: MapAdapter


class LinkRewriter:
    def __init__(self, upstreams: dict[str, Upstream], routes: tuple[Route, ...]) -> None:
        self._routes = routes
        self._public = [PathTemplate.parse(r.path) for r in routes]
        self._upstream_templates = [PathTemplate.parse(r.upstream_path) for r in routes]
        # Several upstreams may share one origin under different base paths.
        self._by_origin: dict[tuple[str, str, int], list[str]] = {}
        self._origin_of: dict[str, tuple[str, str, int]] = {}
        self._upstreams: dict[str, _UpstreamPaths] = {}
        for name, upstream in upstreams.items():
            origin = _origin(upstream.url)
            if origin:
                self._by_origin.setdefault(origin, []).append(name)
                self._origin_of[name] = origin
            rules = [
                Rule(PathTemplate.parse(r.upstream_path).werkzeug_rule, endpoint=index)
                for index, r in enumerate(routes)
                if r.upstream == name
            ]
            url_map = Map(rules, strict_slashes=False, merge_slashes=False, redirect_defaults=False)
            self._upstreams[name] = _UpstreamPaths(
                urlsplit(upstream.url).path.rstrip("/"),
                url_map.bind("upstream.invalid"),
            )

    def rewrite(
        self,
        value: str,
        *,
        upstream: str,
        route_index: int,
        public_base: str,
        current: PathTemplate | None = None,
    ) -> str:
        """One URL: upstream-relative or pointing at an upstream -> public."""
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            origin = _origin(value)
        elif value.startswith("/"):
            origin = self._origin_of.get(upstream)
        else:
            return value
        candidates = self._by_origin.get(origin) if origin else None
        if not candidates:
            return value  # not ours: an outside link stays as written
        path = parts.path or "/"
        query = f"?{parts.query}" if parts.query else ""
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        owner = self._owner(path, candidates, upstream)
        if owner is None:
            return public_base + path + query + fragment
        base_path = self._upstreams[owner].base_path
        path = path[len(base_path) :] or "/"
        public_path = self._public_path(path, owner, route_index, current) or path
        return public_base + public_path + query + fragment

    def _owner(self, path: str, candidates: list[str], current: str) -> str | None:
        """The upstream whose base path holds `path`: the current one first, then the
        longest base path."""

        def holds(name: str) -> bool:
            base = self._upstreams[name].base_path
            return not base or path == base or path.startswith(base + "/")

        if current in candidates and holds(current):
            return current
        holding = [name for name in candidates if holds(name)]
        if not holding:
            return None
        return max(holding, key=lambda name: len(self._upstreams[name].base_path))

    def _public_path(
        self, path: str, owner: str, route_index: int, current: PathTemplate | None
    ) -> str | None:
        if self._routes[route_index].upstream == owner:
            # The upstream path this request used (a chosen version's) comes first.
            template = current or self._upstream_templates[route_index]
            match = template.regex.fullmatch(path)
            if match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return self._expand(route_index, params)
        try:
            index, matched = self._upstreams[owner].adapter.match(unquote(path), "GET")
        except HTTPException:
            return None
        return self._expand(int(index), dict(matched))

    def _expand(self, index: int, params: dict[str, str]) -> str | None:
        try:
            return self._public[index].expand(params)
        except (KeyError, ValueError):
            return None

    def rewrite_link_header(
        self,
        value: str,
        *,
        upstream: str,
        route_index: int,
        public_base: str,
        current: PathTemplate | None = None,
    ) -> str:
        """Every `<URI>` of an RFC 8288 Link header value."""
        return _LINK_TARGET.sub(
            lambda m: (
                "<"
                + self.rewrite(
                    m.group(1),
                    upstream=upstream,
                    route_index=route_index,
                    public_base=public_base,
                    current=current,
                )
                + ">"
            ),
            value,
        )
