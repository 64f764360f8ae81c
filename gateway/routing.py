"""The route table: compiled once from the config, matched per request.

Werkzeug's router does the matching (most specific rule first, typed 404/405), with
its redirects and slash merging off: the gateway answers, it never redirects a client
to a path of its own invention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, Rule

from gateway.config.model import Route, Upstream
from gateway.paths import PathTemplate
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
        rules = [
            Rule(r.public.werkzeug_rule, endpoint=r.index, methods=list(r.route.methods))
            for r in self.routes
        ]
        self._map = Map(rules, strict_slashes=False, merge_slashes=False, redirect_defaults=False)
        self._adapter = self._map.bind("gateway.invalid")
        self._by_index = {r.index: r for r in self.routes}

    def match(self, method: str, path: str) -> Match:
        """The route for a decoded path, or raise the gateway's NotFound/MethodNotAllowed."""
        try:
            index, params = self._adapter.match(path, method)
        except WerkzeugMethodNotAllowed as exc:
            allowed = sorted(exc.valid_methods or [])
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}.",
                allowed=allowed,
            ) from None
        except WerkzeugNotFound:
            raise NotFound(f"No route matches {path}.") from None
        return Match(self._by_index[int(index)], dict(params))
