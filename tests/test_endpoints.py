"""The endpoint factory: one Endpoint per route, policies shared where they can be."""

from __future__ import annotations

from flask import Flask

from tests.app_support import AppFactory

CONFIG = """\
version: 1
auth:
  api_keys:
    keys:
      - {id: a, sha256: "%s", roles: [reader]}
rate_limits: {default: [100/minute]}
upstreams:
  backend: {url: "http://backend.internal"}
routes:
  - {name: one, path: /one, methods: [GET], upstream: backend, auth: [api_key], roles: [reader]}
  - {name: two, path: /two, methods: [GET], upstream: backend, auth: [api_key], roles: [reader]}
  - {name: shared.a, path: /a, methods: [GET], upstream: backend, auth: [api_key],
     roles: [reader], rate_limit_bucket: shared}
  - {name: shared.b, path: /b, methods: [GET], upstream: backend, auth: [api_key],
     roles: [reader], rate_limit_bucket: shared}
  - {name: open, path: /open, methods: [GET], upstream: backend, auth: public, rate_limit: []}
""" % ("0" * 64)


def chains(app: Flask) -> dict[str, list[object]]:
    endpoints = app.gateway.table.endpoints  # type: ignore[attr-defined]
    return {e.spec.config.name: list(e.chain.policies) for e in endpoints}


def test_routes_with_the_same_settings_share_their_policies(gateway_app: AppFactory) -> None:
    by_route = chains(gateway_app(CONFIG))
    one, two = by_route["one"], by_route["two"]
    assert [type(p).__name__ for p in one] == [
        "BodyLimit",
        "Authenticate",
        "RequireRoles",
        "ApplyRateLimit",
    ]
    # Body limit, authentication and roles: one instance for both routes.
    assert all(a is b for a, b in zip(one[:3], two[:3], strict=True))
    # Each route counts in a bucket of its own, unless they name one.
    assert one[3] is not two[3]
    assert by_route["shared.a"][3] is by_route["shared.b"][3]
    assert by_route["open"] == [one[0]]


def test_routes_with_the_same_policies_share_one_chain(gateway_app: AppFactory) -> None:
    endpoints = gateway_app(CONFIG).gateway.table.endpoints  # type: ignore[attr-defined]
    chain = {e.spec.config.name: e.chain for e in endpoints}
    assert chain["shared.a"] is chain["shared.b"]
    assert chain["one"] is not chain["two"]
