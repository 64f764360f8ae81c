"""The route table: compiled once from the config, matched per request.

Matching follows werkzeug's router (most specific rule first, typed 404/405), with
its redirects and slash merging off: the gateway answers, it never redirects a client
to a path of its own invention. `PathMatcher` (gateway/paths.py) walks werkzeug's
state machine in a few hundred bytes per route: werkzeug's own Map, which also
compiles a URL builder per rule, took most of a 10,000-route worker's memory and
start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.config.model import ComposePart, Route, Upstream
from gateway.paths import NoMatch, PathMatcher, PathTemplate
from gateway.placeholders import PartTemplate
from gateway.problems import MethodNotAllowed, NotFound


@dataclass(frozen=True, slots=True)
class PartSpec:
    """One part of a composed route made ready to call."""

    config: ComposePart
    template: PartTemplate
    upstream: Upstream


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A configured route made ready to serve: its templates parsed, its upstream
    found (or, for a composed route, its parts). `index` is its place in the
    configuration."""

    index: int
    config: Route  # the route as configured
    public_template: PathTemplate
    upstream_template: PathTemplate | None  # None: a composed route
    upstream: Upstream | None  # None: a composed route
    parts: tuple[PartSpec, ...] = ()

    def upstream_path(self, params: dict[str, str]) -> str:
        assert self.upstream_template is not None, "a composed route has no upstream path"
        return self.upstream_template.expand(params)

    @classmethod
    def build(cls, index: int, route: Route, upstreams: Mapping[str, Upstream]) -> RouteSpec:
        public = PathTemplate.parse(route.path)
        if route.compose is None:
            assert route.upstream is not None
            return cls(
                index,
                route,
                public,
                PathTemplate.parse(route.upstream_path),
                upstreams[route.upstream],
            )
        parts = tuple(
            PartSpec(part, PartTemplate.parse(part.path, public.params), upstreams[part.upstream])
            for part in route.compose.parts
        )
        return cls(index, route, public, None, None, parts)


class Routed(Protocol):
    """Whatever the table holds per route (the app: an Endpoint) names its RouteSpec."""

    @property
    def spec(self) -> RouteSpec: ...


E = TypeVar("E", bound=Routed)


@dataclass(frozen=True, slots=True)
class Match(Generic[E]):
    endpoint: E
    params: dict[str, str]


class RouteTable(Generic[E]):
    def __init__(self, endpoints: Sequence[E]) -> None:
        self.endpoints = tuple(endpoints)
        self._matcher: PathMatcher[E] = PathMatcher()
        for endpoint in self.endpoints:
            spec = endpoint.spec
            self._matcher.add(spec.public_template, endpoint, spec.config.methods)

    def match(self, method: str, path: str) -> Match[E]:
        """The route for a decoded path, or raise the gateway's NotFound/MethodNotAllowed."""
        try:
            endpoint, params = self._matcher.match(path, method)
        except NoMatch as exc:
            if not exc.allowed:
                raise NotFound(f"No route matches {path}.") from None
            allowed = sorted(exc.allowed)
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}.",
                allowed=allowed,
            ) from None
        return Match(endpoint, params)
