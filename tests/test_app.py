"""create_app and Gateway.handle: what every response looks like, end to end in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import Gateway, create_app, raw_request_path
from gateway.config import ConfigError
from tests.app_support import AppFactory, sent

UPSTREAM = "http://users.internal:8081"
DIGEST = "dc1d67428b2b1c975f03027d3f345cb1fdd323220e4d2f972632048f9df8a011"

CONFIG = f"""\
version: 1
gateway:
  max_body_bytes: 1000
auth:
  jwt:
    issuer: http://issuer.example
    audience: gateway
    algorithms: [RS256]
    jwks_url: http://issuer.example/jwks.json
  api_keys:
    keys:
      - {{id: reporting, sha256: {DIGEST}, roles: [service]}}
upstreams:
  users:
    url: {UPSTREAM}
routes:
  - name: users.list
    path: /api/v1/users
    methods: [GET]
    upstream: users
    upstream_path: /users
    auth: public
  - name: users.get
    path: /api/v1/users/{{user_id}}
    methods: [GET]
    upstream: users
    upstream_path: /users/{{user_id}}
    auth: public
  - name: users.delete
    path: /api/v1/users/{{user_id}}
    methods: [DELETE]
    upstream: users
    upstream_path: /users/{{user_id}}
    auth: [jwt, api_key]
    roles: [admin]
  - name: files
    path: /api/v1/files/{{rest:path}}
    methods: [GET, POST]
    upstream: users
    upstream_path: /storage/{{rest:path}}
    auth: public
"""

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
REQUIRED = {"type", "title", "status", "detail", "instance", "code", "request_id"}


@pytest.fixture
def app(gateway_app: AppFactory) -> Flask:
    return gateway_app(CONFIG)


@pytest.fixture
def upstream_base_url() -> str:
    return UPSTREAM


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route().mock(return_value=httpx.Response(200, json={"ok": True}))
    return upstream


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(response.get_data())
    assert REQUIRED <= set(body)
    assert body["status"] == response.status_code
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


# --- X-Request-ID -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/nowhere"),
        ("PUT", "/api/v1/users"),
        ("GET", "/api/v1/users/%2e%2e"),
        ("GET", "/api/v1/users/1"),
        ("DELETE", "/api/v1/users/1"),
    ],
)
def test_every_response_carries_a_request_id(
    client: FlaskClient, upstream: respx.MockRouter, method: str, path: str
) -> None:
    response = client.open(path, method=method)
    assert REQUEST_ID.match(response.headers["X-Request-ID"])
    response = client.open(path, method=method, headers={"X-Request-ID": "mine-1"})
    assert response.headers["X-Request-ID"] == "mine-1"


def test_each_request_without_an_id_gets_a_new_one(client: FlaskClient) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


# --- the gateway's own answers ------------------------------------------------------------


def test_unknown_path_is_404_problem(client: FlaskClient) -> None:
    response = client.get("/api/v9/nothing", headers={"X-Request-ID": "r-404"})
    assert response.status_code == 404
    body = problem(response)
    assert body["code"] == "not_found"
    assert body["instance"] == "/api/v9/nothing"
    assert body["request_id"] == "r-404"


def test_root_is_404_problem_not_html(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 404
    assert problem(response)["code"] == "not_found"


def test_wrong_method_is_405_problem_with_allow(client: FlaskClient) -> None:
    response = client.put("/api/v1/users/1")
    assert response.status_code == 405
    assert problem(response)["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "DELETE"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/files/%2e%2e/secret",
        "/api/v1/files/.%2e/secret",
        "/api/v1/files/a%2Fb",
        "/api/v1/files/a%5Cb",
        "/api/v1/files/a;b",
        "/api/v1//users",
        "/api/v1/files/%252e%252e/x",
        "/api/v1/files/%zz",
        "/api/v1/files/%ff",
        "/api/v1/files/a%00b",
    ],
)
def test_path_tricks_are_400_invalid_path_and_never_forwarded(
    client: FlaskClient, upstream: respx.MockRouter, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert problem(response)["code"] == "invalid_path"
    assert upstream.calls.call_count == 0


def test_healthz_and_readyz_answer_without_an_upstream(client: FlaskClient) -> None:
    with respx.mock(assert_all_called=False) as mock:
        health = client.get("/healthz")
        ready = client.get("/readyz")
        assert mock.calls.call_count == 0
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_builtin_endpoints_allow_only_get_and_head(client: FlaskClient) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert problem(response)["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, HEAD"
    assert client.head("/healthz").status_code == 200


def test_trailing_slash_is_routed_not_redirected(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.get("/api/v1/users/")
    assert response.status_code == 200
    assert "Location" not in response.headers


# --- order of checks ----------------------------------------------------------------------


def test_route_is_checked_before_body_size(client: FlaskClient) -> None:
    assert client.post("/api/v9/nothing", data=b"x" * 5000).status_code == 404
    assert client.put("/api/v1/users/1", data=b"x" * 5000).status_code == 405


def test_body_size_is_checked_before_auth(client: FlaskClient, upstream: respx.MockRouter) -> None:
    response = client.delete("/api/v1/users/1", data=b"x" * 5000)
    assert response.status_code == 413
    assert problem(response)["code"] == "payload_too_large"
    assert upstream.calls.call_count == 0


def test_body_within_the_limit_is_forwarded(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    assert client.post("/api/v1/files/a", data=b"x" * 1000).status_code == 200
    assert sent(upstream).content == b"x" * 1000


def test_non_numeric_content_length_is_400(client: FlaskClient, upstream: respx.MockRouter) -> None:
    response = client.post(
        "/api/v1/files/a", data=b"x", environ_overrides={"CONTENT_LENGTH": "ten"}
    )
    assert response.status_code == 400
    assert problem(response)["code"] == "bad_request"
    assert upstream.calls.call_count == 0


def test_route_with_auth_and_no_credentials_is_401_and_never_forwarded(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    response = client.delete("/api/v1/users/1")
    assert response.status_code == 401
    assert problem(response)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="gateway"')
    assert "invalid_token" not in response.headers["WWW-Authenticate"]
    assert upstream.calls.call_count == 0


# --- failures inside the gateway ----------------------------------------------------------


def test_unexpected_exception_is_a_bare_500_problem(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(ctx: object) -> None:
        raise RuntimeError("psycopg: could not connect to db-1.internal:5432")

    gateway: Gateway = app.gateway  # type: ignore[attr-defined]
    # Raised from inside forwarding, the route's terminal step.
    monkeypatch.setattr(gateway.forwarder, "request_headers", explode)
    response = client.get("/api/v1/users/1")
    assert response.status_code == 500
    body = problem(response)
    assert body["code"] == "internal_error"
    assert "db-1.internal" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_failure_before_routing_is_still_a_500_problem(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building the request context happens before Gateway.handle's own error handling.
    def explode(req: object, request_id: str) -> None:
        raise RuntimeError("secret-host.internal exploded")

    gateway: Gateway = app.gateway  # type: ignore[attr-defined]
    monkeypatch.setattr(gateway, "context", explode)
    response = client.get("/api/v1/users/1?x=1", headers={"X-Request-ID": "outer-1"})
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    body = json.loads(response.get_data())
    assert body["code"] == "internal_error"
    assert body["request_id"] == "outer-1"
    assert body["instance"] == "/api/v1/users/1"
    assert "secret-host" not in response.get_data(as_text=True)


def test_upstream_answer_is_relayed(client: FlaskClient, upstream: respx.MockRouter) -> None:
    response = client.get("/api/v1/users/7")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    assert str(sent(upstream).url) == f"{UPSTREAM}/users/7"


# --- create_app ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_create_app_accepts_a_config_path(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    app = create_app(str(path))
    try:
        assert app.test_client().get("/healthz").status_code == 200
        assert app.gateway.config.source == str(path)  # type: ignore[attr-defined]
    finally:
        app.gateway.forwarder.close()  # type: ignore[attr-defined]


def test_create_app_finds_the_config_through_gateway_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, CONFIG)
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    app = create_app()
    try:
        assert len(app.gateway.config.routes) == 4  # type: ignore[attr-defined]
    finally:
        app.gateway.forwarder.close()  # type: ignore[attr-defined]


def test_invalid_config_stops_start_up_with_every_problem(tmp_path: Path) -> None:
    text = CONFIG.replace("upstream: users\n    upstream_path: /users\n", "upstream: nope\n")
    text = text.replace("max_body_bytes: 1000", "max_body_byte: 1000")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        create_app(str(path))
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}:") for line in lines)


def test_missing_config_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_app(str(tmp_path / "absent.yaml"))


# --- raw_request_path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RAW_URI": "/a/%2e%2e/b?x=1", "PATH_INFO": "/a/../b"}, "/a/%2e%2e/b"),
        ({"REQUEST_URI": "/a%2Fb", "PATH_INFO": "/a/b"}, "/a%2Fb"),
        ({"RAW_URI": "http://host.example/a/%2e%2e?q", "PATH_INFO": "/a/.."}, "/a/%2e%2e"),
        # WSGI hands PATH_INFO over as latin-1: the bytes the client sent are UTF-8.
        ({"PATH_INFO": "/caf\u00c3\u00a9 x"}, "/caf%C3%A9%20x"),
        ({"PATH_INFO": "/a\u00ffb"}, "/a%FFb"),
        ({"PATH_INFO": "/a;b"}, "/a;b"),
        ({}, "/"),
    ],
)
def test_raw_request_path_prefers_what_the_client_sent(
    environ: dict[str, Any], expected: str
) -> None:
    assert raw_request_path(environ) == expected


def test_an_app_whose_links_follow_the_host_header_warns_at_start(
    caplog: pytest.LogCaptureFixture, gateway_app: AppFactory
) -> None:
    with caplog.at_level("WARNING", logger="gateway"):
        gateway_app(CONFIG)
    assert any("public_url is empty" in r.getMessage() for r in caplog.records)
    caplog.clear()
    configured = CONFIG.replace("  max_body_bytes: 1000", "  public_url: https://api.test")
    with caplog.at_level("WARNING", logger="gateway"):
        gateway_app(configured)
    assert not any("public_url is empty" in r.getMessage() for r in caplog.records)
