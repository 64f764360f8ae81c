"""The endpoint factory: each configured route becomes, once, the policy chain that
guards it and the CORS rules of its answers (lura's endpoint factory).

Nothing here runs per request; app.py matches a request to its Endpoint and runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast

from gateway.cache.responses import ResponseCache
from gateway.config.model import Config, Route
from gateway.cors import Cors
from gateway.credentials.apikeys import ApiKeyRing
from gateway.credentials.jwt import JwtVerifier
from gateway.headers import PARTIAL_HEADER
from gateway.policies.auth import Authenticate, FailureGuard
from gateway.policies.base import Policy
from gateway.policies.body_limit import BodyLimit
from gateway.policies.chain import PolicyChain, Terminal
from gateway.policies.ratelimit import ApplyRateLimit
from gateway.policies.roles import RequireRoles
from gateway.policies.versions import AnnounceDeprecation, ChooseVersion
from gateway.ratelimit import Counters
from gateway.routing import RouteSpec

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Endpoint:
    spec: RouteSpec
    chain: PolicyChain
    terminal: Terminal  # what a request that passed the chain meets: forward or compose
    cors: Cors  # applied to every answer of the route, and answers its preflights


@dataclass(frozen=True, slots=True)
class Terminals:
    """The terminal steps a route may end in."""

    forward: Terminal
    compose: Terminal
    cache: ResponseCache | None = None  # None: no route keeps answers


_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _terminal(route: Route, config: Config, terminals: Terminals) -> Terminal:
    """Forward or compose; a cached route's answers kept around that; an unsafe
    method's answer dropping the kept answers of its path."""
    terminal = terminals.compose if route.compose else terminals.forward
    cache = terminals.cache
    if cache is None:
        return terminal
    if route.cache is not None:
        if route.compose is not None:
            wait = route.compose.timeout
        else:
            assert route.upstream is not None
            upstream = config.upstreams[route.upstream]
            wait = upstream.connect_timeout + upstream.timeout
        return cache.terminal(route, terminal, wait)
    if _UNSAFE.intersection(route.methods):
        return cache.invalidating(terminal)
    return terminal


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the authentication policies of every route share."""

    verifier: JwtVerifier | None
    keyring: ApiKeyRing | None
    guard: FailureGuard | None


def build_endpoints(
    config: Config,
    default_cors: Cors,
    credentials: Credentials,
    counters: Counters,
    terminals: Terminals,
) -> list[Endpoint]:
    """One Endpoint per route, in the configuration's order (Endpoint.spec.index).

    A policy holds no state of a request, so routes whose policies would be built from
    the same settings share one instance (and routes with the same policies, one
    chain): with 10,000 routes, a few MiB less in every worker."""
    endpoints = []
    shared: dict[tuple[object, ...], object] = {}

    def once(key: tuple[object, ...], make: Callable[[], T]) -> T:
        found = shared.get(key)
        if found is None:
            found = shared[key] = make()
        return cast(T, found)

    for index, route in enumerate(config.routes):
        cors = Cors(route.cors) if route.cors else default_cors
        exposed = {name.lower() for name in cors.settings.expose_headers}
        if route.compose and PARTIAL_HEADER.lower() not in exposed:
            # A partial answer says so in this header: browser code must be able to read it.
            settings = cors.settings
            cors = Cors(
                dataclasses.replace(
                    settings, expose_headers=(*settings.expose_headers, PARTIAL_HEADER)
                )
            )
        policies: list[Policy] = [once(("body",), partial(BodyLimit, config.gateway))]
        if not route.is_public:
            make_auth = partial(
                Authenticate,
                route.auth,
                credentials.verifier,
                credentials.keyring,
                credentials.guard,
            )
            policies.append(once(("auth", route.auth), make_auth))
        if route.roles:
            policies.append(once(("roles", route.roles), partial(RequireRoles, route.roles)))
        route_limits = (
            route.rate_limit if route.rate_limit is not None else config.rate_limits.default
        )
        if route_limits:
            bucket = route.rate_limit_bucket or route.name
            policies.append(
                once(
                    ("limit", route_limits, bucket, route.rate_limit_key),
                    partial(ApplyRateLimit, route, route_limits, counters),
                )
            )
        if route.versions:
            versions = route.versions
            policies.append(once(("versions", versions), partial(ChooseVersion, versions)))
        if route.deprecation:
            deprecation = route.deprecation
            policies.append(
                once(("deprecation", deprecation), partial(AnnounceDeprecation, deprecation))
            )
        chain = once(("chain", *map(id, policies)), partial(PolicyChain, policies))
        spec = RouteSpec.build(index, route, config.upstreams)
        terminal = _terminal(route, config, terminals)
        endpoints.append(Endpoint(spec, chain, terminal, cors))
    return endpoints
