"""The route table: compiled once from the config, matched per request.

Matching follows werkzeug's router (most specific rule first, typed 404/405), with
its redirects and slash merging off: the gateway answers, it never redirects a client
to a path of its own invention. `PathMatcher` (gateway/paths.py) walks werkzeug's
state machine in a few hundred bytes per route: werkzeug's own Map, which also
compiles a URL builder per rule, took most of a 10,000-route worker's memory and
start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config.model import Route, Upstream
from gateway.paths import NoMatch, PathMatcher, PathTemplate
from gateway.policies.chain import PolicyChain
from gateway.policies.cors import Cors
from gateway.problems import MethodNotAllowed, NotFound


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    index: int
    route: Route
    public: PathTemplate
    upstream_template: PathTemplate
    upstream: Upstream
    chain: PolicyChain
    cors: Cors  # also answers this route's preflights, which skip the chain

    def upstream_path(self, params: dict[str, str]) -> str:
        return self.upstream_template.expand(params)


@dataclass(frozen=True, slots=True)
class Match:
    route: CompiledRoute
    params: dict[str, str]


class RouteTable:
    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        self.routes = tuple(routes)
        self._matcher: PathMatcher[CompiledRoute] = PathMatcher()
        for r in self.routes:
            self._matcher.add(r.public, r, r.route.methods)

    def match(self, method: str, path: str) -> Match:
        """The route for a decoded path, or raise the gateway's NotFound/MethodNotAllowed."""
        try:
            route, params = self._matcher.match(path, method)
        except NoMatch as exc:
            if not exc.allowed:
                raise NotFound(f"No route matches {path}.") from None
            allowed = sorted(exc.allowed)
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}.",
                allowed=allowed,
            ) from None
        return Match(route, params)
