"""CORS as browsers meet it: exact origins, preflights, errors, per-route policies.

In-process through create_app(...).test_client(); the upstream is mocked with respx,
so every test can also say that a preflight never reached it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import Headers
from werkzeug.test import TestResponse

from gateway.config import ConfigError, load_config_text
from gateway.cors import is_preflight
from tests.app_support import ClientFactory, running_app
from tests.tokens import mint_token

UPSTREAM = "http://users.internal"
ISSUER = "http://issuer.example"
SECRET = "0123456789abcdef0123456789abcdef"
APP = "https://app.example.com"
LOCAL = "http://localhost:3000"
PARTNER = "https://partner.example"

CORS = """\
cors:
  allow_origins: [https://app.example.com, http://localhost:3000]
  allow_credentials: true
  allow_methods: [GET, POST, PUT, DELETE]
  allow_headers: [Authorization, Content-Type, X-Request-ID]
  expose_headers: [X-Request-ID, Location]
  max_age: 600
"""

CONFIG = f"""\
version: 1
gateway:
  max_body_bytes: 100
{CORS}auth:
  jwt:
    issuer: {ISSUER}
    audience: gateway
    algorithms: [HS256]
    secret: "{SECRET}"
upstreams:
  users:
    url: {UPSTREAM}
    retries: 0
routes:
  - name: items
    path: /items/{{item_id}}
    methods: [GET, DELETE]
    upstream: users
    auth: public
  - name: items.replace
    path: /items/{{item_id}}
    methods: [PUT]
    upstream: users
    auth: [jwt]
  - name: notes
    path: /notes
    methods: [GET, PATCH]
    upstream: users
    auth: public
  - name: secure
    path: /secure
    methods: [GET, POST]
    upstream: users
    auth: [jwt]
    roles: [admin]
  - name: upload
    path: /upload
    methods: [POST]
    upstream: users
    auth: public
  - name: options
    path: /options
    methods: [GET, OPTIONS]
    upstream: users
    auth: public
  - name: partner
    path: /partner/{{item_id}}
    methods: [GET, POST]
    upstream: users
    auth: public
    cors:
      allow_origins: [{PARTNER}]
      allow_credentials: false
  - name: private
    path: /private
    methods: [GET]
    upstream: users
    auth: public
    cors:
      allow_private_network: true
"""


def load(text: str) -> Any:
    return load_config_text(text, "routes.yaml", {})


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    with running_app(CONFIG) as application:
        yield application


UPSTREAM_CORS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Credentials", "true"),
    ("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "*"),
    ("Access-Control-Expose-Headers", "X-Internal-Secret"),
    ("Access-Control-Max-Age", "86400"),
    ("Access-Control-Allow-Private-Network", "true"),
]


def _answer(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.startswith("/items/refuse"):
        raise httpcore.ConnectError("refused")
    if path.startswith("/items/slow"):
        raise httpcore.ReadTimeout("slow")
    if path.startswith("/items/missing"):
        return httpx.Response(404, json={"error": "no such item"}, headers=UPSTREAM_CORS)
    return httpx.Response(
        200,
        json={"path": path},
        headers=[*UPSTREAM_CORS, ("Vary", "Accept-Encoding"), ("X-Internal-Secret", "s")],
    )


@pytest.fixture
def upstream_base_url() -> str:
    return UPSTREAM


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route().mock(side_effect=_answer)
    return upstream


def token(*roles: str) -> str:
    return mint_token(SECRET, issuer=ISSUER, audience="gateway", subject="user-1", roles=roles)


def preflight(
    client: FlaskClient,
    path: str,
    method: str,
    origin: str | None = APP,
    request_headers: str | None = None,
    **extra: str,
) -> TestResponse:
    headers = {"Access-Control-Request-Method": method, **extra}
    if origin is not None:
        headers["Origin"] = origin
    if request_headers is not None:
        headers["Access-Control-Request-Headers"] = request_headers
    return client.options(path, headers=headers)


def tokens(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def vary(response: TestResponse) -> set[str]:
    return {t for value in response.headers.getlist("Vary") for t in tokens(value)}


def cors_names(response: TestResponse) -> set[str]:
    return {name.lower() for name in response.headers.keys() if name.lower().startswith("access-")}


def assert_allowed(response: TestResponse, origin: str) -> None:
    """The answer a credentialed browser request from `origin` may read."""
    assert response.headers.getlist("Access-Control-Allow-Origin") == [origin]
    assert response.headers.getlist("Access-Control-Allow-Credentials") == ["true"]
    assert tokens(response.headers.get("Access-Control-Expose-Headers")) == {
        "x-request-id",
        "location",
    }
    assert "origin" in vary(response)


def assert_refused(response: TestResponse) -> None:
    """No CORS grant at all: the browser keeps the answer from the script."""
    assert cors_names(response) == set(), response.headers
    assert "origin" in vary(response)


def problem_code(response: TestResponse) -> str:
    assert response.headers["Content-Type"] == "application/problem+json"
    code: str = json.loads(response.get_data())["code"]
    return code


# --- origins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [APP, LOCAL])
def test_allowed_origin_is_echoed_with_credentials(
    client: FlaskClient, upstream: respx.MockRouter, origin: str
) -> None:
    response = client.get("/items/1", headers={"Origin": origin})
    assert response.status_code == 200
    assert_allowed(response, origin)


DISALLOWED = [
    "https://app.example.com.evil.io",
    "http://localhost:3000.evil.io",
    "http://localhost:30001",
    "http://localhost:300",
    "https://localhost:3000",
    "http://app.example.com",
    "https://evil.app.example.com",
    "https://app.example.co",
    "https://app-example.com",
    "http://localhost",
    "http://localhost:3000/",
    "null",
    "*",
    "https://app.example.comx",
    ".*",
]


@pytest.mark.parametrize("origin", DISALLOWED)
def test_other_origins_get_no_cors_headers(
    client: FlaskClient, upstream: respx.MockRouter, origin: str
) -> None:
    response = client.get("/items/1", headers={"Origin": origin})
    assert response.status_code == 200
    assert_refused(response)


@pytest.mark.parametrize("origin", DISALLOWED)
def test_other_origins_get_no_preflight_approval(
    client: FlaskClient, upstream: respx.MockRouter, origin: str
) -> None:
    response = preflight(client, "/items/1", "DELETE", origin, "authorization")
    assert response.status_code == 204
    assert_refused(response)
    assert not upstream.calls


def test_no_origin_no_cors_headers_but_vary_origin(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/items/1")
    assert response.status_code == 200
    assert_refused(response)


def test_wildcard_without_credentials_answers_star(gateway_client: ClientFactory) -> None:
    text = CONFIG.replace(CORS, 'cors:\n  allow_origins: ["*"]\n  allow_credentials: false\n')
    client = gateway_client(text)
    with respx.mock(base_url=UPSTREAM) as mock:
        mock.route().mock(side_effect=_answer)
        response = client.get("/items/1", headers={"Origin": "https://any.example"})
    assert response.headers.getlist("Access-Control-Allow-Origin") == ["*"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "origin" in vary(response)


# --- Vary: Origin everywhere -----------------------------------------------------------------

EVERY_KIND = [
    ("GET", "/items/1", {}),
    ("GET", "/items/missing", {}),
    ("GET", "/secure", {}),
    ("GET", "/secure", {"Authorization": "Bearer " + token("member")}),
    ("GET", "/nowhere", {}),
    ("PATCH", "/items/1", {}),
    ("POST", "/upload", {}),
    ("GET", "/items/refuse", {}),
    ("GET", "/items/slow", {}),
    ("GET", "/items/%2e%2e", {}),
    ("GET", "/healthz", {}),
    ("OPTIONS", "/items/1", {"Access-Control-Request-Method": "GET"}),
    ("OPTIONS", "/nowhere", {"Access-Control-Request-Method": "GET"}),
]
KIND_IDS = [
    "200",
    "upstream-404",
    "401",
    "403",
    "404",
    "405",
    "413",
    "502",
    "504",
    "400",
    "healthz",
    "preflight",
    "preflight-404",
]


@pytest.mark.parametrize("origin", [None, APP, "https://evil.example"])
@pytest.mark.parametrize(("method", "path", "headers"), EVERY_KIND, ids=KIND_IDS)
def test_vary_origin_on_every_response(
    client: FlaskClient,
    upstream: respx.MockRouter,
    origin: str | None,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    sent = dict(headers)
    if origin:
        sent["Origin"] = origin
    body = b"x" * 1000 if method == "POST" else None
    response = client.open(path, method=method, headers=sent, data=body)
    assert "origin" in vary(response), (response.status_code, response.headers)


# --- CORS on the gateway's own problems ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", "/secure", {}, 401, "unauthorized"),
        ("GET", "/secure", {"Authorization": "Bearer " + token("member")}, 403, "forbidden"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("PATCH", "/items/1", {}, 405, "method_not_allowed"),
        ("POST", "/upload", {}, 413, "payload_too_large"),
        ("GET", "/items/refuse", {}, 502, "upstream_unavailable"),
        ("GET", "/items/slow", {}, 504, "upstream_timeout"),
        ("GET", "/items/%2e%2e", {}, 400, "invalid_path"),
        ("GET", "/items/missing", {}, 404, "not_found"),
    ],
)
def test_problems_carry_cors_headers_for_an_allowed_origin(
    client: FlaskClient,
    upstream: respx.MockRouter,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    body = b"x" * 1000 if method == "POST" else None
    response = client.open(path, method=method, headers={**headers, "Origin": LOCAL}, data=body)
    assert response.status_code == status
    assert problem_code(response) == code
    assert_allowed(response, LOCAL)
    assert not {"access-control-allow-methods", "access-control-max-age"} & cors_names(response)


def test_chunked_upload_over_the_limit_is_413_with_cors(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.post(
        "/upload",
        headers={"Origin": APP, "Transfer-Encoding": "chunked"},
        input_stream=io.BytesIO(b"y" * 120),
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert_allowed(response, APP)
    assert not upstream.calls


# --- upstream CORS headers never reach the client --------------------------------------------


@pytest.mark.parametrize("path", ["/items/1", "/items/missing"])
@pytest.mark.parametrize("origin", [APP, "https://evil.example", None])
def test_upstream_cors_headers_are_replaced_by_the_gateways(
    client: FlaskClient, upstream: respx.MockRouter, path: str, origin: str | None
) -> None:
    response = client.get(path, headers={"Origin": origin} if origin else {})
    assert upstream.calls.call_count == 1
    if origin == APP:
        assert_allowed(response, APP)
        assert cors_names(response) == {
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        }
    else:
        assert_refused(response)


def test_upstream_vary_is_kept_next_to_origin(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/items/1", headers={"Origin": APP})
    assert {"accept-encoding", "origin"} <= vary(response)


def test_every_upstream_vary_line_is_kept(client: FlaskClient) -> None:
    """Dropping `Vary: Cookie` would let a cache hand one user's answer to another."""
    lines = [("Vary", "Accept-Encoding"), ("Vary", "Accept-Language"), ("Vary", "Cookie")]
    with respx.mock(base_url=UPSTREAM) as mock:
        mock.route().mock(return_value=httpx.Response(200, json={}, headers=lines))
        response = client.get("/items/1", headers={"Origin": APP})
    assert vary(response) == {"accept-encoding", "accept-language", "cookie", "origin"}
    assert_allowed(response, APP)


# --- preflights ------------------------------------------------------------------------------


def test_preflight_is_answered_by_the_gateway(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = preflight(
        client, "/items/1", "DELETE", APP, "Authorization, X-Unknown, content-type, Cookie"
    )
    assert response.status_code == 204
    assert response.get_data() == b""
    assert "Content-Type" not in response.headers
    assert_allowed(response, APP)
    assert tokens(response.headers["Access-Control-Allow-Methods"]) == {"get", "delete"}
    assert tokens(response.headers["Access-Control-Allow-Headers"]) == {
        "authorization",
        "content-type",
    }
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert {"origin", "access-control-request-method", "access-control-request-headers"} <= vary(
        response
    )
    assert "Access-Control-Allow-Private-Network" not in response.headers
    assert not upstream.calls


def test_preflight_without_request_headers_allows_none(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = preflight(client, "/items/1", "GET", LOCAL)
    assert response.status_code == 204
    assert "Access-Control-Allow-Headers" not in response.headers
    assert tokens(response.headers["Access-Control-Allow-Methods"]) == {"get", "delete"}


def test_preflight_offers_only_the_methods_of_the_matched_route(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    # PUT on /items/{id} is another route (with auth): its own methods only.
    response = preflight(client, "/items/1", "PUT", APP, "authorization")
    assert response.status_code == 204
    assert tokens(response.headers["Access-Control-Allow-Methods"]) == {"put"}
    assert not upstream.calls


@pytest.mark.parametrize("path", ["/secure", "/items/1"])
def test_preflight_needs_no_credentials_even_on_an_auth_route(
    client: FlaskClient, upstream: respx.MockRouter, path: str
) -> None:
    method = "POST" if path == "/secure" else "PUT"
    response = preflight(client, path, method, APP, "authorization, content-type")
    assert response.status_code == 204
    assert_allowed(response, APP)
    assert method.lower() in tokens(response.headers["Access-Control-Allow-Methods"])
    assert "WWW-Authenticate" not in response.headers
    assert not upstream.calls


@pytest.mark.parametrize(("path", "method"), [("/items/1", "PATCH"), ("/upload", "GET")])
def test_preflight_for_a_method_the_path_lacks_gets_no_cors_headers(
    client: FlaskClient, upstream: respx.MockRouter, path: str, method: str
) -> None:
    response = preflight(client, path, method, APP, "authorization")
    assert_refused(response)
    assert not upstream.calls


def test_preflight_for_a_method_cors_does_not_allow_is_not_approved(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    # /notes has PATCH, but cors.allow_methods does not list it.
    response = preflight(client, "/notes", "PATCH", APP)
    assert "patch" not in tokens(response.headers.get("Access-Control-Allow-Methods"))
    assert not upstream.calls


def test_preflight_to_an_unknown_path_is_a_404_problem(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = preflight(client, "/nowhere", "GET", APP)
    assert response.status_code == 404
    assert problem_code(response) == "not_found"
    assert "Access-Control-Allow-Methods" not in response.headers
    assert not upstream.calls


def test_preflight_is_never_forwarded_even_where_options_is_routed(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = preflight(client, "/options", "GET", APP)
    assert response.status_code == 204
    assert not upstream.calls
    # A plain OPTIONS (no Access-Control-Request-Method) is an ordinary request.
    plain = client.options("/options", headers={"Origin": APP})
    assert plain.status_code == 200
    assert upstream.calls.call_count == 1
    assert upstream.calls.last.request.method == "OPTIONS"


def test_max_age_zero_is_sent_as_zero(gateway_client: ClientFactory) -> None:
    """0 means "do not cache this preflight"; no header would mean 5 s in browsers."""
    client = gateway_client(CONFIG.replace("  max_age: 600\n", "  max_age: 0\n"))
    response = preflight(client, "/items/1", "GET", APP)
    assert response.status_code == 204
    assert response.headers.get("Access-Control-Max-Age") == "0"


def test_private_network_access_only_when_configured(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    extra = {"Access-Control-Request-Private-Network": "true"}
    refused = preflight(client, "/items/1", "GET", APP, **extra)
    assert refused.status_code == 204
    assert "Access-Control-Allow-Private-Network" not in refused.headers
    granted = preflight(client, "/private", "GET", APP, **extra)
    assert granted.headers.getlist("Access-Control-Allow-Private-Network") == ["true"]
    assert_allowed(granted, APP)
    plain = preflight(client, "/private", "GET", APP)
    assert "Access-Control-Allow-Private-Network" not in plain.headers
    assert not upstream.calls


def test_is_preflight() -> None:
    assert is_preflight(Headers({"Access-Control-Request-Method": "GET"}), "OPTIONS")
    assert not is_preflight(Headers(), "OPTIONS")
    assert not is_preflight(Headers({"Access-Control-Request-Method": "GET"}), "GET")


# --- a route's own cors ----------------------------------------------------------------------


def test_route_cors_admits_its_own_origin(client: FlaskClient, upstream: respx.MockRouter) -> None:
    response = client.get("/partner/1", headers={"Origin": PARTNER})
    assert response.status_code == 200
    assert response.headers.getlist("Access-Control-Allow-Origin") == [PARTNER]
    assert "Access-Control-Allow-Credentials" not in response.headers
    # Keys the route does not set come from the top-level cors.
    assert tokens(response.headers["Access-Control-Expose-Headers"]) == {"x-request-id", "location"}
    assert "origin" in vary(response)


def test_route_cors_replaces_the_top_level_origins(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    assert_refused(client.get("/partner/1", headers={"Origin": APP}))


def test_other_routes_keep_the_top_level_policy(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    assert_refused(client.get("/items/1", headers={"Origin": PARTNER}))
    assert_allowed(client.get("/items/1", headers={"Origin": APP}), APP)


def test_route_cors_answers_its_preflights(client: FlaskClient, upstream: respx.MockRouter) -> None:
    response = preflight(client, "/partner/1", "POST", PARTNER, "content-type")
    assert response.status_code == 204
    assert response.headers.getlist("Access-Control-Allow-Origin") == [PARTNER]
    assert tokens(response.headers["Access-Control-Allow-Methods"]) == {"get", "post"}
    assert tokens(response.headers["Access-Control-Allow-Headers"]) == {"content-type"}
    assert_refused(preflight(client, "/partner/1", "POST", APP))
    assert_refused(preflight(client, "/items/1", "GET", PARTNER))
    assert not upstream.calls


def test_route_cors_applies_to_its_problems(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.post("/partner/1", headers={"Origin": PARTNER}, data=b"x" * 1000)
    assert response.status_code == 413
    assert response.headers.getlist("Access-Control-Allow-Origin") == [PARTNER]


def test_route_cors_applies_to_an_unexpected_failure(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: object) -> None:
        raise RuntimeError("a bug in forwarding")

    # Raised from inside forwarding, the route's terminal step.
    monkeypatch.setattr(app.gateway.forwarder, "request_headers", broken)  # type: ignore[attr-defined]
    response = client.get("/partner/1", headers={"Origin": PARTNER})
    assert response.status_code == 500
    assert problem_code(response) == "internal_error"
    assert response.headers.getlist("Access-Control-Allow-Origin") == [PARTNER]
    assert "origin" in vary(response)


# --- config --------------------------------------------------------------------------------

ROUTE = """\
upstreams:
  users:
    url: http://127.0.0.1:8081
routes:
  - name: a
    path: /a
    methods: [GET]
    upstream: users
    auth: public
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [str(p) for p in caught.value.problems]


def test_wildcard_with_credentials_is_a_config_error() -> None:
    text = "version: 1\ncors:\n  allow_origins: ['*']\n  allow_credentials: true\n" + ROUTE
    assert problems(text) == [
        "routes.yaml:3:18: cors: '*' in allow_origins cannot be combined with "
        "allow_credentials: true (browsers refuse it; list the origins)"
    ]


@pytest.mark.parametrize(
    ("top", "route", "where"),
    [
        ("  allow_origins: ['*']\n", "      allow_credentials: true\n", "14:7"),
        ("  allow_credentials: true\n", "      allow_origins: ['*']\n", "14:22"),
    ],
    ids=["route-adds-credentials", "route-adds-wildcard"],
)
def test_wildcard_with_credentials_after_the_route_merge_is_a_config_error(
    top: str, route: str, where: str
) -> None:
    text = "version: 1\ncors:\n" + top + ROUTE + "    cors:\n" + route
    assert problems(text) == [
        f"routes.yaml:{where}: routes[0].cors: '*' in allow_origins cannot be combined with "
        "allow_credentials: true (browsers refuse it; list the origins)"
    ]


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000/",
        "https://app.example.com/app",
        "https://app.example.com/?x=1",
        "https://app.example.com#top",
        "app.example.com",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "http://localhost:99999",
    ],
)
def test_origin_must_be_scheme_host_port_only(origin: str) -> None:
    top = f"version: 1\ncors:\n  allow_origins: ['{origin}']\n" + ROUTE
    message = f"cors origin {origin!r} must be scheme://host[:port], with no path or trailing slash"
    assert problems(top) == [f"routes.yaml:3:19: {message}"]
    in_route = "version: 1\n" + ROUTE + f"    cors:\n      allow_origins: ['{origin}']\n"
    assert problems(in_route) == [f"routes.yaml:12:23: {message}"]


def test_top_level_cors_problem_is_reported_once_at_its_own_line() -> None:
    text = (
        "version: 1\ncors:\n  allow_origins: ['http://localhost:3000/']\n"
        + ROUTE
        + "    cors:\n      max_age: 5\n"
    )
    assert problems(text) == [
        "routes.yaml:3:19: cors origin 'http://localhost:3000/' must be "
        "scheme://host[:port], with no path or trailing slash"
    ]


def test_malformed_top_level_cors_next_to_a_route_cors_is_reported_not_raised() -> None:
    text = "version: 1\ncors: [http://localhost:3000]\n" + ROUTE
    alone = problems(text)
    assert len(alone) == 1 and alone[0].startswith("routes.yaml:2:"), alone
    # A route's own cors changes nothing about how the top-level one is judged.
    assert problems(text + "    cors:\n      max_age: 5\n") == alone


def test_route_cors_merges_over_the_top_level() -> None:
    config = load(CONFIG)
    partner = next(r for r in config.routes if r.name == "partner")
    assert partner.cors is not None
    assert partner.cors.allow_origins == (PARTNER,)
    assert partner.cors.allow_credentials is False
    assert partner.cors.expose_headers == config.cors.expose_headers
    assert partner.cors.max_age == 600
    assert next(r for r in config.routes if r.name == "items").cors is None
