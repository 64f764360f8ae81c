"""Upstream addresses in `Link` and `Location` headers, turned into public ones.

A client must never learn an upstream's address. An upstream URL is
mapped back through the route table: its path is matched against the routes'
`upstream_path` templates (the current route first, then every route of that
upstream) and rebuilt from the winning route's public `path`, query kept.

Only answers that carry such headers need any of this, so what it needs is made on
first use: each upstream's table of upstream paths once, a route's templates when a
header needs them (a few microseconds). A worker of a 10,000-route gateway would
otherwise hold 20,000 more templates and a second route table for answers that may
never come.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote, urlsplit

from gateway.config.model import Route, Upstream
from gateway.paths import NoMatch, PathMatcher, PathTemplate

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


class LinkRewriter:
    def __init__(self, upstreams: dict[str, Upstream], routes: tuple[Route, ...]) -> None:
        self._routes = routes
        # Several upstreams may share one origin under different base paths.
        self._by_origin: dict[tuple[str, str, int], list[str]] = {}
        self._origin_of: dict[str, tuple[str, str, int]] = {}
        self._base_paths: dict[str, str] = {}
        for name, upstream in upstreams.items():
            origin = _origin(upstream.url)
            if origin:
                self._by_origin.setdefault(origin, []).append(name)
                self._origin_of[name] = origin
            self._base_paths[name] = urlsplit(upstream.url).path.rstrip("/")
        self._tables: dict[str, PathMatcher[int]] = {}
        self._tables_lock = threading.Lock()

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
        base_path = self._base_paths[owner]
        path = path[len(base_path) :] or "/"
        public_path = self._public_path(path, owner, route_index, current) or path
        return public_base + public_path + query + fragment

    def _owner(self, path: str, candidates: list[str], current: str) -> str | None:
        """The upstream whose base path holds `path`: the current one first, then the
        longest base path."""

        def holds(name: str) -> bool:
            base = self._base_paths[name]
            return not base or path == base or path.startswith(base + "/")

        if current in candidates and holds(current):
            return current
        holding = [name for name in candidates if holds(name)]
        if not holding:
            return None
        return max(holding, key=lambda name: len(self._base_paths[name]))

    def _public_path(
        self, path: str, owner: str, route_index: int, current: PathTemplate | None
    ) -> str | None:
        route = self._routes[route_index]
        if route.upstream == owner:
            # The upstream path this request used (a chosen version's) comes first.
            template = current or PathTemplate.parse(route.upstream_path)
            match = template.regex.fullmatch(path)
            if match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return self._expand(route_index, params)
        try:
            index, matched = self._table(owner).match(unquote(path), "GET")
        except NoMatch:
            return None
        return self._expand(index, matched)

    def _table(self, upstream: str) -> PathMatcher[int]:
        """The upstream paths of every route of `upstream`, built on first use."""
        table = self._tables.get(upstream)
        if table is None:
            with self._tables_lock:
                table = self._tables.get(upstream)
                if table is None:
                    table = PathMatcher()
                    for index, route in enumerate(self._routes):
                        if route.upstream == upstream:
                            table.add(PathTemplate.parse(route.upstream_path), index, None)
                    self._tables[upstream] = table
        return table

    def _expand(self, index: int, params: dict[str, str]) -> str | None:
        try:
            return PathTemplate.parse(self._routes[index].path).expand(params)
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
