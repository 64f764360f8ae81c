"""Composed routes in-process: the parts each request makes, and the one answer."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpcore
import httpx
import pytest
import respx
from flask.testing import FlaskClient

from gateway.config import ConfigError, load_config_text
from tests.app_support import ClientFactory
from tests.tokens import mint_token

SECRET = "composer-secret-" + "x" * 32
ISSUER, AUDIENCE = "https://issuer.test", "gateway"
USERS = "http://users.internal"
ORDERS = "http://orders.internal/base"

ORIGIN = "https://app.example.test"
CONFIG = f"""\
version: 1
cors:
  allow_origins: ["{ORIGIN}"]
  expose_headers: [X-Request-ID]
auth:
  jwt: {{issuer: "{ISSUER}", audience: {AUDIENCE}, algorithms: [HS256], secret: "{SECRET}"}}
  api_keys:
    header: X-API-Key
    keys:
      - {{id: reporting, sha256: "{"0" * 64}", roles: [service]}}
upstreams:
  users: {{url: "{USERS}"}}
  orders: {{url: "{ORDERS}", retries: 0}}
routes:
  - name: dashboard
    path: /api/me/dashboard
    methods: [GET]
    auth: [jwt]
    compose:
      timeout: 0.5
      parts:
        profile:
          upstream: users
          path: /users/{{identity.sub}}
          fields: [id, name]
        orders:
          upstream: orders
          path: /v2/orders?limit={{query.limit:-5}}&user={{identity.sub}}
          required: false
  - name: overview
    path: /api/users/{{user_id}}/overview
    methods: [GET]
    auth: [jwt]
    compose:
      parts:
        user: {{upstream: users, path: "/users/{{user_id}}"}}
        orders: {{upstream: orders, path: "/v2/orders?user_id={{user_id}}"}}
  - name: tenant
    path: /api/tenant
    methods: [GET]
    auth: [jwt]
    compose:
      parts:
        tenant: {{upstream: users, path: "/tenants/{{identity.tenant_id}}"}}
        me: {{upstream: users, path: "/users/{{identity.sub}}", required: false}}
  - name: orders.list
    path: /api/v2/orders
    methods: [GET]
    auth: [jwt]
    upstream: orders
    upstream_path: /v2/orders
"""


@pytest.fixture
def client(gateway_client: ClientFactory) -> FlaskClient:
    return gateway_client(CONFIG)


def bearer(subject: str = "u1", **claims: Any) -> dict[str, str]:
    token = mint_token(SECRET, issuer=ISSUER, audience=AUDIENCE, subject=subject, **claims)
    return {"Authorization": f"Bearer {token}"}


def user_answers(upstream: respx.MockRouter, response: httpx.Response) -> respx.Route:
    return upstream.get(url__startswith=f"{USERS}/users/").mock(return_value=response)


def orders_answer(upstream: respx.MockRouter, response: Any) -> respx.Route:
    route = upstream.get(url__startswith=f"{ORDERS}/v2/orders")
    if isinstance(response, httpx.Response):
        return route.mock(return_value=response)
    return route.mock(side_effect=response)


PROFILE = {"id": "u1", "name": "Ann", "email": "ann@example.test", "password_hash": "x"}
ORDERS_PAGE = {"data": [{"id": "o1"}], "next_cursor": None}


def test_every_part_answered_merges_into_one_object(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(200, json=ORDERS_PAGE))
    response = client.get("/api/me/dashboard", headers=bearer())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"profile": {"id": "u1", "name": "Ann"}, "orders": ORDERS_PAGE}
    assert "Gateway-Partial" not in response.headers
    assert response.headers["Content-Length"] == str(len(response.get_data()))


def test_a_part_without_fields_is_merged_byte_for_byte(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    raw = b'{"data": [ {"id":"o1", "note":"caf\xc3\xa9"} ],\n "next_cursor": null}'
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(
        upstream, httpx.Response(200, content=raw, headers={"Content-Type": "application/json"})
    )
    body = client.get("/api/me/dashboard", headers=bearer()).get_data()
    assert b'"orders":' + raw + b"}" in body
    assert json.loads(body)["orders"]["data"][0]["note"] == "café"


def test_part_paths_are_filled_and_encoded(client: FlaskClient, upstream: respx.MockRouter) -> None:
    users = user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders = orders_answer(upstream, httpx.Response(200, json=ORDERS_PAGE))
    client.get("/api/me/dashboard?limit=2%263", headers=bearer("a/b?c"))
    assert users.calls.last.request.url.raw_path == b"/users/a%2Fb%3Fc"
    assert orders.calls.last.request.url.raw_path == b"/base/v2/orders?limit=2%263&user=a%2Fb%3Fc"


def test_each_part_carries_what_a_forwarded_request_does_and_nothing_else(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    users = user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders = orders_answer(upstream, httpx.Response(200, json=ORDERS_PAGE))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {
        **bearer("u1", tenant_id="acme"),
        "X-API-Key": "sk_not_for_upstreams",
        "X-User-Id": "forged",
        "If-None-Match": '"v1"',
        "Range": "bytes=0-10",
        "Accept-Encoding": "gzip",
        "Accept": "text/html",
        "traceparent": parent,
    }
    response = client.get("/api/me/dashboard", headers=headers)
    assert response.status_code == 200
    for route in (users, orders):
        sent = route.calls.last.request.headers
        assert sent["Authorization"] == headers["Authorization"]
        assert sent["X-User-Id"] == "u1" and sent["X-Tenant-Id"] == "acme"
        assert sent["X-Auth-Method"] == "jwt"
        assert sent["X-Request-ID"] == response.headers["X-Request-ID"]
        assert sent["traceparent"] == parent
        assert sent["Accept"] == "application/json"
        assert sent["Accept-Encoding"] == "identity"
        for never in ("X-API-Key", "If-None-Match", "Range"):
            assert never not in sent


def test_an_optional_part_that_fails_is_null_and_named(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(500, text="Traceback: db-7.internal refused"))
    response = client.get("/api/me/dashboard", headers=bearer())
    assert response.status_code == 200
    assert response.headers["Gateway-Partial"] == "orders"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["profile"] == {"id": "u1", "name": "Ann"} and body["orders"] is None
    problem = body["_problems"]["orders"]
    assert set(problem) == {"type", "title", "status", "code", "detail"}
    assert (problem["status"], problem["code"]) == (502, "upstream_unavailable")
    assert "db-7.internal" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (httpx.Response(200, text="<html>hi</html>"), 502, "upstream_unavailable"),
        (
            httpx.Response(200, content=b"{not json", headers={"Content-Type": "application/json"}),
            502,
            "upstream_unavailable",
        ),
        (httpx.Response(302, headers={"Location": "/elsewhere"}), 502, "upstream_unavailable"),
        (httpx.Response(404, json={"error": "no such user on db-7.internal"}), 404, "not_found"),
        (httpcore.ConnectError("refused"), 502, "upstream_unavailable"),
        (httpcore.ReadTimeout("slow"), 504, "upstream_timeout"),
    ],
)
def test_each_way_a_part_fails_has_its_problem(
    client: FlaskClient, upstream: respx.MockRouter, answer: Any, status: int, code: str
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, answer)
    response = client.get("/api/me/dashboard", headers=bearer())
    assert response.status_code == 200
    problem = response.get_json()["_problems"]["orders"]
    assert (problem["status"], problem["code"]) == (status, code)
    assert "db-7.internal" not in response.get_data(as_text=True)


def test_browsers_may_read_that_an_answer_is_partial(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(500))
    response = client.get("/api/me/dashboard", headers={**bearer(), "Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = response.headers["Access-Control-Expose-Headers"].split(", ")
    assert {"X-Request-ID", "Gateway-Partial"} <= set(exposed)
    forwarded = client.get("/api/v2/orders", headers={**bearer(), "Origin": ORIGIN})
    assert "Gateway-Partial" not in forwarded.headers.get("Access-Control-Expose-Headers", "")


def test_a_body_over_max_part_bytes_is_a_failure(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    client = gateway_client(CONFIG.replace("      timeout: 0.5\n", "      max_part_bytes: 100\n"))
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(200, json={"data": ["x" * 100]}))
    response = client.get("/api/me/dashboard", headers=bearer())
    problem = response.get_json()["_problems"]["orders"]
    assert problem["status"] == 502 and "over its limit of 100 bytes" in problem["detail"]
    assert response.get_json()["profile"] == {"id": "u1", "name": "Ann"}


def test_a_required_part_that_fails_fails_the_whole_answer(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(
        upstream,
        httpx.Response(
            404,
            json={
                "title": "Not Found",
                "status": 404,
                "detail": "No user u9.",
                "code": "not_found",
            },
            headers={"Content-Type": "application/problem+json"},
        ),
    )
    orders_answer(upstream, httpcore.ConnectError("refused"))
    response = client.get("/api/users/u9/overview", headers=bearer())
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "not_found" and "No user u9." in body["detail"]
    assert body["instance"] == "/api/users/u9/overview"
    assert set(body["parts"]) == {"user", "orders"}
    assert body["parts"]["user"]["detail"] == "No user u9."
    assert body["parts"]["orders"]["code"] == "upstream_unavailable"


def test_the_first_failed_required_part_names_the_status_and_succeeded_parts_are_left_out(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(503, text="down"))
    response = client.get("/api/users/u1/overview", headers=bearer())
    assert response.status_code == 502
    body = response.get_json()
    assert body["code"] == "upstream_unavailable"
    assert list(body["parts"]) == ["orders"]
    assert "Ann" not in response.get_data(as_text=True)


def test_a_slow_part_is_cut_at_the_routes_deadline(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    released = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        released.wait(5)
        return httpx.Response(200, json=ORDERS_PAGE)

    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, slow)
    started = time.perf_counter()
    try:
        response = client.get("/api/me/dashboard", headers=bearer())
    finally:
        released.set()
    assert time.perf_counter() - started < 2
    assert response.status_code == 200 and response.headers["Gateway-Partial"] == "orders"
    problem = response.get_json()["_problems"]["orders"]
    assert (problem["status"], problem["code"]) == (504, "upstream_timeout")
    assert "0.5 seconds" in problem["detail"]


def test_a_part_the_identity_cannot_fill_is_never_called(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    tenants = upstream.get(url__startswith=f"{USERS}/tenants/").mock(
        return_value=httpx.Response(200, json={})
    )
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    response = client.get("/api/tenant", headers=bearer("u1"))  # no tenant_id claim
    assert response.status_code == 403
    assert response.get_json()["parts"]["tenant"]["code"] == "forbidden"
    assert not tenants.called


def test_links_of_a_part_point_at_the_gateway_with_the_part_as_anchor(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(
        upstream,
        httpx.Response(
            200,
            json=ORDERS_PAGE,
            headers={"Link": f'<{ORDERS}/v2/orders?cursor=abc>; rel="next"'},
        ),
    )
    response = client.get("/api/me/dashboard", headers=bearer())
    assert response.headers.getlist("Link") == [
        '<http://localhost/api/v2/orders?cursor=abc>; rel="next"; anchor="#/orders"'
    ]
    assert "orders.internal" not in str(response.headers)


def test_every_link_of_a_part_gets_the_part_as_anchor(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    field = (
        f'<{ORDERS}/v2/orders?cursor=a,b>; rel="next", '
        f'<{ORDERS}/v2/orders>; rel="first"; title="first, page"'
    )
    orders_answer(upstream, httpx.Response(200, json=ORDERS_PAGE, headers={"Link": field}))
    response = client.get("/api/me/dashboard", headers=bearer())
    assert response.headers["Link"] == (
        '<http://localhost/api/v2/orders?cursor=a,b>; rel="next"; anchor="#/orders", '
        '<http://localhost/api/v2/orders>; rel="first"; title="first, page"; anchor="#/orders"'
    )


def test_nan_and_infinity_are_not_json(client: FlaskClient, upstream: respx.MockRouter) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(
        upstream,
        httpx.Response(
            200, content=b'{"v": NaN, "w": -Infinity}', headers={"Content-Type": "application/json"}
        ),
    )
    response = client.get("/api/me/dashboard", headers=bearer())
    assert response.get_json()["_problems"]["orders"]["status"] == 502
    assert b"NaN" not in response.get_data()


def test_head_answers_the_headers_of_get_without_a_body(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(200, json=ORDERS_PAGE))
    get = client.get("/api/me/dashboard", headers=bearer())
    head = client.head("/api/me/dashboard", headers=bearer())
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]


def test_each_part_counts_under_its_own_upstream(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    registry = client.application.gateway.metrics.registry  # type: ignore[attr-defined]

    def sample(name: str, **labels: str) -> float:
        return float(registry.get_sample_value(name, labels) or 0.0)

    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpcore.ConnectError("refused"))
    client.get("/api/me/dashboard", headers=bearer())
    assert sample("gateway_upstream_duration_seconds_count", upstream="users") == 1
    assert sample("gateway_upstream_duration_seconds_count", upstream="orders") == 0
    assert sample("gateway_upstream_errors_total", upstream="orders", kind="refused") == 1
    assert sample("gateway_upstream_errors_total", upstream="users", kind="refused") == 0


def test_the_access_log_names_every_part(
    client: FlaskClient, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    user_answers(upstream, httpx.Response(200, json=PROFILE))
    orders_answer(upstream, httpx.Response(500))
    with caplog.at_level("INFO", logger="gateway.access"):
        client.get("/api/me/dashboard", headers=bearer())
    line = json.loads(caplog.records[-1].getMessage())
    assert line["upstream"] is None
    assert [(p["name"], p["upstream"], p["status"]) for p in line["parts"]] == [
        ("profile", "users", 200),
        ("orders", "orders", 502),
    ]
    assert all(p["upstream_ms"] is not None for p in line["parts"])


# --- gateway check ------------------------------------------------------------------

ROUTE_HEAD = """\
version: 1
auth:
  jwt: {issuer: i, audience: a, algorithms: [HS256], secret: "%s"}
upstreams:
  users: {url: "http://users.internal"}
routes:
""" % ("s" * 40)


def problems(routes: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(ROUTE_HEAD + routes, "routes.yaml", {})
    return [str(p) for p in caught.value.problems]


def test_compose_and_upstream_together_are_refused_where_written() -> None:
    found = problems(
        """\
  - name: both
    path: /a
    methods: [GET]
    auth: [jwt]
    upstream: users
    compose:
      parts:
        one: {upstream: users, path: /x}
"""
    )
    assert found == [
        "routes.yaml:11:5: route 'both': upstream cannot be given with compose (each part "
        "names its upstream and path)"
    ]


def test_neither_compose_nor_upstream_is_refused() -> None:
    assert problems("  - {name: none, path: /a, methods: [GET], auth: [jwt]}\n") == [
        "routes.yaml:7:5: route 'none': give upstream (forward) or compose (merge parts)"
    ]


def test_part_mistakes_are_each_reported_at_their_line() -> None:
    found = problems(
        """\
  - name: bad
    path: /a/{id}
    methods: [GET, POST]
    auth: public
    compose:
      parts:
        _private: {upstream: users, path: /x}
        missing: {upstream: user, path: /x}
        unknown: {upstream: users, path: "/x/{nope}"}
        who: {upstream: users, path: "/users/{identity.sub}"}
        injected: {upstream: users, path: "/x?{query.a}=1"}
"""
    )
    assert found == [
        "routes.yaml:9:14: route 'bad': a composed route answers GET and HEAD only, not POST",
        "routes.yaml:13:9: route 'bad': part name '_private': names starting with _ are "
        "reserved for the gateway's own members (_problems)",
        "routes.yaml:14:29: route 'bad': upstream 'user' is not defined in upstreams; did you "
        "mean 'users'?",
        "routes.yaml:15:42: route 'bad': part 'unknown': path '/x/{nope}': unknown placeholder "
        "{nope}: not a parameter of the route's path (id), "
        "identity.{sub,tenant_id,consumer_id} or query.NAME",
        "routes.yaml:16:38: route 'bad': part 'who' uses {identity.sub}, but a public route "
        "has no caller identity",
        "routes.yaml:17:43: route 'bad': part 'injected': path '/x?{query.a}=1': query member "
        "'{query.a}=1': a name must be plain text (placeholders may stand in values only)",
    ]


def test_a_valid_compose_route_loads_with_its_defaults() -> None:
    config = load_config_text(CONFIG, "routes.yaml", {})
    compose = config.routes[1].compose
    assert compose is not None
    assert (compose.timeout, compose.max_part_bytes) == (5.0, 1_048_576)
    assert [(p.name, p.upstream, p.required, p.fields) for p in compose.parts] == [
        ("user", "users", True, None),
        ("orders", "orders", True, None),
    ]
    assert config.routes[1].upstream is None
    assert config.gateway.compose_concurrency == 64
