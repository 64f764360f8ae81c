"""Forwarding: retries, error mapping, headers both ways, bodies, rewriting.

The upstream is mocked with respx (which replaces httpcore's connection pool, the
pool the Forwarder calls), except where a real loopback socket is
the point of the test.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest
import respx
from flask.testing import FlaskClient

from gateway.forward.headers import HOP_BY_HOP, IDENTITY_HEADERS
from tests.app_support import ClientFactory, sent

UPSTREAM = "http://users.internal:8081"

CONFIG = """\
version: 1
gateway:
  public_url: ${PUBLIC_URL:-}
  trusted_proxies: ${TRUSTED:-0}
  max_body_bytes: 200000
  body_memory_bytes: ${BODY_MEMORY_BYTES:-1048576}
upstreams:
  users:
    url: ${USERS_URL:-http://users.internal:8081}
    connect_timeout: ${CONNECT_TIMEOUT:-1.0}
    timeout: ${TIMEOUT:-10.0}
    retries: ${RETRIES:-2}
routes:
  - name: users.list
    path: /api/v1/users
    methods: [GET, POST]
    upstream: users
    upstream_path: /users
    auth: public
  - name: users.item
    path: /api/v1/users/{user_id}
    methods: [GET, HEAD, OPTIONS, PUT, PATCH, DELETE, POST]
    upstream: users
    upstream_path: /users/{user_id}
    auth: public
  - name: files
    path: /api/v1/files/{rest:path}
    methods: [GET]
    upstream: users
    upstream_path: /storage/{rest:path}
    auth: public
"""


@pytest.fixture
def make_client(gateway_client: ClientFactory) -> ClientFactory:
    """Test clients of apps built from CONFIG with the given environment."""
    return lambda **env: gateway_client(CONFIG, environ=env)


@pytest.fixture
def client(make_client: ClientFactory) -> FlaskClient:
    return make_client()


@pytest.fixture
def upstream_base_url() -> str:
    return UPSTREAM


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries pause briefly between attempts; record the pauses instead of sleeping."""
    pauses: list[float] = []
    monkeypatch.setattr("gateway.proxy.time.sleep", pauses.append)
    return pauses


def problem(response: Any) -> dict[str, Any]:
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = json.loads(response.get_data())
    assert body["status"] == response.status_code
    return body


# --- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_idempotent_methods_are_retried_on_connect_error(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float], method: str
) -> None:
    route = upstream.route(method=method, path="/users/1").mock(
        side_effect=httpcore.ConnectError("refused")
    )
    response = client.open("/api/v1/users/1", method=method)
    assert response.status_code == 502
    assert route.call_count == 3  # the first attempt and `retries: 2`
    assert len(no_pause) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_post_and_patch_are_never_retried(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float], method: str
) -> None:
    route = upstream.route(method=method, path="/users/1").mock(
        side_effect=httpcore.ConnectError("refused")
    )
    response = client.open("/api/v1/users/1", method=method, data=b'{"a": 1}')
    assert response.status_code == 502
    assert route.call_count == 1
    assert no_pause == []


def test_a_retry_that_connects_returns_the_upstream_answer(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float]
) -> None:
    route = upstream.get("/users/1").mock(
        side_effect=[httpcore.ConnectError("refused"), httpx.Response(200, json={"id": "1"})]
    )
    response = client.get("/api/v1/users/1")
    assert response.status_code == 200
    assert response.get_json() == {"id": "1"}
    assert route.call_count == 2


def test_a_retried_put_sends_the_same_body_every_time(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float]
) -> None:
    route = upstream.put("/users/1").mock(
        side_effect=[httpcore.ConnectError("refused"), httpx.Response(204)]
    )
    response = client.put("/api/v1/users/1", json={"name": "Ada"})
    assert response.status_code == 204
    assert [call.request.content for call in route.calls] == [b'{"name": "Ada"}'] * 2


def test_retries_zero_means_one_attempt(
    upstream: respx.MockRouter, no_pause: list[float], make_client: ClientFactory
) -> None:
    client = make_client(RETRIES="0")
    route = upstream.get("/users/1").mock(side_effect=httpcore.ConnectError("refused"))
    assert client.get("/api/v1/users/1").status_code == 502
    assert route.call_count == 1


def test_a_large_body_is_read_whole_first_so_a_retry_sends_all_of_it(
    upstream: respx.MockRouter, no_pause: list[float], make_client: ClientFactory
) -> None:
    """Bodies over the in-memory size are spooled to a file and replayed from it."""
    client = make_client(BODY_MEMORY_BYTES="1000")
    body = bytes(range(256)) * 400
    route = upstream.put("/users/1").mock(
        side_effect=[httpcore.ConnectError("refused"), httpx.Response(204)]
    )
    response = client.put("/api/v1/users/1", data=body)
    assert response.status_code == 204
    assert [call.request.content for call in route.calls] == [body] * 2


@pytest.mark.parametrize(
    "error",
    [httpcore.ReadTimeout("slow"), httpcore.RemoteProtocolError("bad"), httpcore.ReadError("x")],
)
def test_failures_after_connecting_are_not_retried(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float], error: Exception
) -> None:
    route = upstream.get("/users/1").mock(side_effect=error)
    client.get("/api/v1/users/1")
    assert route.call_count == 1


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        httpcore.ConnectTimeout("connect"),
        httpcore.ReadTimeout("read"),
        httpcore.WriteTimeout("write"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_timeouts_are_504_upstream_timeout(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float], error: Exception
) -> None:
    upstream.get("/users/1").mock(side_effect=error)
    response = client.get("/api/v1/users/1", headers={"X-Request-ID": "t-1"})
    assert response.status_code == 504
    body = problem(response)
    assert body["code"] == "upstream_timeout"
    assert body["instance"] == "/api/v1/users/1"
    assert body["request_id"] == "t-1"
    assert "users.internal" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "error",
    [
        httpcore.RemoteProtocolError("illegal status line from users.internal"),
        httpcore.ReadError("reset by users.internal"),
        httpcore.ConnectError("refused by users.internal"),
        httpcore.LocalProtocolError("bad header"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_broken_upstreams_are_502_upstream_unavailable(
    client: FlaskClient, upstream: respx.MockRouter, no_pause: list[float], error: Exception
) -> None:
    upstream.get("/users/1").mock(side_effect=error)
    response = client.get("/api/v1/users/1")
    assert response.status_code == 502
    assert problem(response)["code"] == "upstream_unavailable"
    assert "users.internal" not in response.get_data(as_text=True)


def test_exhausted_pool_is_503_with_retry_after(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/users/1").mock(side_effect=httpcore.PoolTimeout("busy"))
    response = client.get("/api/v1/users/1")
    assert response.status_code == 503
    assert problem(response)["code"] == "service_unavailable"
    assert response.headers["Retry-After"].isdigit()


# --- request headers ----------------------------------------------------------------------


def test_hop_by_hop_and_connection_named_request_headers_are_dropped(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get(
        "/api/v1/users/1",
        headers={
            "Connection": "close, X-Session-Hint",
            "X-Session-Hint": "drop me",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "Expires",
            "Upgrade": "websocket",
            "Proxy-Authorization": "Basic c2VjcmV0",
            "Proxy-Connection": "keep-alive",
            "X-Kept": "yes",
        },
    )
    headers = sent(route).headers
    for name in ("X-Session-Hint", "Keep-Alive", "TE", "Trailer", "Upgrade"):
        assert name not in headers, name
    assert "Proxy-Authorization" not in headers
    assert "Proxy-Connection" not in headers
    assert headers.get("Connection", "keep-alive").lower() != "close"
    assert headers["X-Kept"] == "yes"


def test_hop_by_hop_set_covers_rfc_9110() -> None:
    assert {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"} <= (
        HOP_BY_HOP
    )


@pytest.mark.parametrize(
    "name",
    ["X-User-Id", "x-user-roles", "X-TENANT-ID", "X-Auth-Method", "X-Consumer-Id", "X_User_Id"],
)
def test_client_sent_identity_headers_never_reach_the_upstream(
    client: FlaskClient, upstream: respx.MockRouter, name: str
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get("/api/v1/users/1", headers={name: "admin"})
    headers = sent(route).headers
    for identity in IDENTITY_HEADERS:
        assert identity not in headers


def test_forwarded_headers_are_set_from_what_the_gateway_believes(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get(
        "/api/v1/users/1",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "Host": "api.example.com",
        },
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )
    headers = sent(route).headers
    assert headers["X-Forwarded-For"] == "198.51.100.4"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == "api.example.com"
    assert "Forwarded" not in headers
    assert "X-Real-IP" not in headers
    assert headers["Host"] == "users.internal:8081"


def test_trusted_proxy_chain_is_extended_with_the_peer(
    upstream: respx.MockRouter, make_client: ClientFactory
) -> None:
    client = make_client(TRUSTED="1")
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get(
        "/api/v1/users/1",
        headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    headers = sent(route).headers
    assert headers["X-Forwarded-For"] == "203.0.113.7, 10.0.0.2"
    assert headers["X-Forwarded-Proto"] == "https"


def test_a_valid_client_request_id_is_sent_upstream_and_echoed(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    response = client.get("/api/v1/users/1", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert sent(route).headers["X-Request-ID"] == "abc.DEF_123-x"
    assert response.headers["X-Request-ID"] == "abc.DEF_123-x"


@pytest.mark.parametrize("offered", ["has space", "x" * 129, "semi;colon", "\u00e9"])
def test_an_unsafe_client_request_id_is_replaced_consistently(
    client: FlaskClient, upstream: respx.MockRouter, offered: str
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    response = client.get("/api/v1/users/1", headers={"X-Request-ID": offered})
    new_id = response.headers["X-Request-ID"]
    assert new_id != offered
    assert sent(route).headers["X-Request-ID"] == new_id
    assert len(sent(route).headers.get_list("X-Request-ID")) == 1


def test_a_valid_traceparent_is_passed_on_and_a_bad_one_dropped(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get("/api/v1/users/1", headers={"traceparent": good})
    assert sent(route).headers["traceparent"] == good
    client.get("/api/v1/users/1", headers={"traceparent": "garbage"})
    assert "traceparent" not in sent(route).headers


def test_end_to_end_headers_and_the_client_user_agent_pass_through(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get(
        "/api/v1/users/1",
        headers={"Accept": "application/json", "User-Agent": "app/1.0", "If-None-Match": '"v1"'},
    )
    headers = sent(route).headers
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == "app/1.0"
    assert headers["If-None-Match"] == '"v1"'
    assert "python-httpx" not in headers.get("User-Agent", "")


def test_no_accept_encoding_is_invented_for_the_upstream(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    client.get("/api/v1/users/1")
    assert "Accept-Encoding" not in sent(route).headers


# --- request line and body ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "upstream_path"),
    [
        ("/api/v1/users/42", "/users/42"),
        ("/api/v1/users/a%20b", "/users/a%20b"),
        ("/api/v1/users/caf%C3%A9", "/users/caf%C3%A9"),
        ("/api/v1/users/a%3Fb", "/users/a%3Fb"),
        ("/api/v1/users/a%23b", "/users/a%23b"),
        ("/api/v1/users/100%25", "/users/100%25"),
        ("/api/v1/users/a+b", "/users/a%2Bb"),
        ("/api/v1/files/a/b%20c/d.txt", "/storage/a/b%20c/d.txt"),
    ],
)
def test_upstream_path_is_built_from_the_template(
    client: FlaskClient, upstream: respx.MockRouter, public: str, upstream_path: str
) -> None:
    route = upstream.get(path__regex=r".*").mock(return_value=httpx.Response(200))
    assert client.get(public).status_code == 200
    assert sent(route).url.raw_path.decode() == upstream_path


def test_query_string_is_forwarded_unchanged(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get(path="/users").mock(return_value=httpx.Response(200))
    client.get("/api/v1/users?limit=5&cursor=a%2Fb%3D&tag=x&tag=y&empty=")
    assert sent(route).url.raw_path.decode() == (
        "/users?limit=5&cursor=a%2Fb%3D&tag=x&tag=y&empty="
    )


def test_body_and_content_type_are_forwarded(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/users").mock(return_value=httpx.Response(201))
    client.post("/api/v1/users", json={"email": "ada@example.com"})
    request = sent(route)
    assert request.content == b'{"email": "ada@example.com"}'
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == str(len(request.content))


def test_empty_post_sends_content_length_zero(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/users").mock(return_value=httpx.Response(201))
    client.post("/api/v1/users")
    assert sent(route).headers["Content-Length"] == "0"


def test_large_body_is_streamed_whole(client: FlaskClient, upstream: respx.MockRouter) -> None:
    payload = bytes(range(256)) * 600  # 153600 bytes: above the read-whole threshold
    route = upstream.put("/users/1").mock(return_value=httpx.Response(204))
    assert client.put("/api/v1/users/1", data=payload).status_code == 204
    assert sent(route).read() == payload


def test_body_over_the_limit_is_413_and_never_forwarded(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.put("/users/1").mock(return_value=httpx.Response(204))
    response = client.put("/api/v1/users/1", data=b"x" * 200_001)
    assert response.status_code == 413
    assert problem(response)["code"] == "payload_too_large"
    assert route.call_count == 0


# --- responses ----------------------------------------------------------------------------


def test_status_body_and_end_to_end_headers_are_relayed(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/users/1").mock(
        return_value=httpx.Response(
            200,
            json={"id": "1"},
            headers={"ETag": '"v2"', "Cache-Control": "max-age=60", "X-Custom": "kept"},
        )
    )
    response = client.get("/api/v1/users/1")
    assert response.status_code == 200
    assert response.get_json() == {"id": "1"}
    assert response.headers["ETag"] == '"v2"'
    assert response.headers["Cache-Control"] == "max-age=60"
    assert response.headers["X-Custom"] == "kept"


def test_hop_by_hop_and_server_response_headers_are_dropped(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/users/1").mock(
        return_value=httpx.Response(
            200,
            content=b"ok",
            headers={
                "Connection": "close, X-Internal-Route",
                "X-Internal-Route": "users-7f9c.internal",
                "Keep-Alive": "timeout=5",
                "Upgrade": "h2c",
                "Proxy-Authenticate": "Basic",
                "Server": "gunicorn",
                "X-Powered-By": "Flask",
            },
        )
    )
    response = client.get("/api/v1/users/1")
    for name in (
        "X-Internal-Route",
        "Keep-Alive",
        "Upgrade",
        "Proxy-Authenticate",
        "X-Powered-By",
    ):
        assert name not in response.headers, name
    assert response.headers.get("Server", "") != "gunicorn"
    assert response.headers.get("Connection", "").lower() != "close, x-internal-route"


def test_compressed_body_passes_through_untouched(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    compressed = gzip.compress(b'{"id": "1"}' * 100)
    upstream.get("/users/1").mock(
        return_value=httpx.Response(
            200,
            content=compressed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    )
    response = client.get("/api/v1/users/1", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.get_data() == compressed


def test_location_of_a_created_resource_is_rewritten(
    upstream: respx.MockRouter, make_client: ClientFactory
) -> None:
    client = make_client(PUBLIC_URL="https://api.example.com")
    upstream.post("/users").mock(
        return_value=httpx.Response(201, headers={"Location": f"{UPSTREAM}/users/42"})
    )
    response = client.post("/api/v1/users", json={})
    assert response.status_code == 201
    assert response.headers["Location"] == "https://api.example.com/api/v1/users/42"


def test_relative_location_is_rewritten_to_the_request_host(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/users").mock(
        return_value=httpx.Response(201, headers={"Location": "/users/42"})
    )
    response = client.post("/api/v1/users", headers={"Host": "gw.example:8080"})
    assert response.headers["Location"] == "http://gw.example:8080/api/v1/users/42"


def test_redirects_are_relayed_not_followed(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    first = upstream.get("/users/1").mock(
        return_value=httpx.Response(302, headers={"Location": f"{UPSTREAM}/users/2"})
    )
    second = upstream.get("/users/2").mock(return_value=httpx.Response(200))
    response = client.get("/api/v1/users/1", headers={"Host": "gw.example"})
    assert response.status_code == 302
    assert response.headers["Location"] == "http://gw.example/api/v1/users/2"
    assert first.call_count == 1 and second.call_count == 0


def test_link_header_is_rewritten(client: FlaskClient, upstream: respx.MockRouter) -> None:
    upstream.get("/users").mock(
        return_value=httpx.Response(
            200,
            json={"data": []},
            headers={"Link": f'<{UPSTREAM}/users?cursor=abc&limit=2>; rel="next"'},
        )
    )
    response = client.get("/api/v1/users?limit=2", headers={"Host": "gw.example"})
    assert response.headers["Link"] == (
        '<http://gw.example/api/v1/users?cursor=abc&limit=2>; rel="next"'
    )


def test_upstream_problem_json_keeps_its_members(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/users").mock(
        return_value=httpx.Response(
            422,
            headers={"Content-Type": "application/problem+json"},
            json={
                "type": "https://errors.example.com/validation",
                "title": "Validation failed",
                "status": 400,
                "detail": "email is invalid",
                "instance": "/users",
                "errors": [{"field": "email"}],
            },
        )
    )
    response = client.post("/api/v1/users", json={}, headers={"X-Request-ID": "rq-1"})
    assert response.status_code == 422
    body = problem(response)
    assert body["errors"] == [{"field": "email"}]
    assert body["type"] == "https://errors.example.com/validation"
    assert body["detail"] == "email is invalid"
    assert body["instance"] == "/api/v1/users"
    assert body["request_id"] == "rq-1"
    assert body["code"] == "unprocessable_content"


def test_upstream_html_error_is_replaced(client: FlaskClient, upstream: respx.MockRouter) -> None:
    upstream.get("/users/9").mock(
        return_value=httpx.Response(
            404,
            headers={"Content-Type": "text/html", "X-Trace": "kept"},
            text="<h1>Not Found</h1><address>nginx at 10.1.2.3</address>",
        )
    )
    response = client.get("/api/v1/users/9")
    assert response.status_code == 404
    body = problem(response)
    assert body["code"] == "not_found"
    assert "nginx" not in response.get_data(as_text=True)
    assert response.headers["X-Trace"] == "kept"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_upstream_5xx_never_carries_upstream_text(
    client: FlaskClient, upstream: respx.MockRouter, status: int
) -> None:
    upstream.get("/users/1").mock(
        return_value=httpx.Response(
            status,
            headers={
                "Content-Type": "application/problem+json",
                "X-Debug-Host": "db-1.internal",
                "Retry-After": "30",
            },
            json={"title": "Boom", "detail": "Traceback ... db-1.internal:5432"},
        )
    )
    response = client.get("/api/v1/users/1")
    assert response.status_code == status
    text = response.get_data(as_text=True)
    assert "db-1.internal" not in text and "Traceback" not in text and "Boom" not in text
    assert "X-Debug-Host" not in response.headers
    assert response.headers["Retry-After"] == "30"
    assert problem(response)["detail"] == "The upstream service failed to handle the request."


def test_head_response_has_no_body(client: FlaskClient, upstream: respx.MockRouter) -> None:
    upstream.head("/users/1").mock(
        return_value=httpx.Response(200, headers={"Content-Length": "42"})
    )
    response = client.head("/api/v1/users/1")
    assert response.status_code == 200
    assert response.get_data() == b""


# --- the Forwarder itself -----------------------------------------------------------------


def test_forwarder_ignores_the_environment_and_adds_no_fields_of_its_own(
    monkeypatch: pytest.MonkeyPatch, make_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    client = make_client(CONNECT_TIMEOUT="0.5", TIMEOUT="7")
    pool = client.application.gateway.forwarder.pools["users"]  # type: ignore[attr-defined]
    assert type(pool) is httpcore.ConnectionPool  # a direct pool, never a proxy's
    route = upstream.get("/users/1").mock(return_value=httpx.Response(200))
    response = client.get("/api/v1/users/1", headers={"User-Agent": ""})
    assert response.status_code == 200
    request = sent(route)
    assert request.headers["Host"] == "users.internal:8081"
    for name in ("Accept", "Accept-Encoding", "Cookie"):
        assert name not in request.headers
    assert request.extensions["timeout"] == {"connect": 0.5, "read": 7.0, "write": 7.0, "pool": 0.5}


# --- real loopback sockets ----------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_refused_connection_on_loopback_is_retried_then_502(
    no_pause: list[float], make_client: ClientFactory
) -> None:
    client = make_client(USERS_URL=f"http://127.0.0.1:{closed_port()}")
    response = client.get("/api/v1/users/1")
    assert response.status_code == 502
    assert problem(response)["code"] == "upstream_unavailable"
    assert len(no_pause) == 2
    assert "127.0.0.1" not in response.get_data(as_text=True)


class _Handler(BaseHTTPRequestHandler):
    """Echoes the path and X-Forwarded-For; /users/slow answers after a second."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "123")
        self.end_headers()

    def do_DELETE(self) -> None:
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        if self.headers.get("If-None-Match"):
            self.send_response(304)
            self.send_header("ETag", self.headers["If-None-Match"])
            self.end_headers()
            return
        if self.path.startswith("/users/slow"):
            time.sleep(1.0)
        body = json.dumps({"path": self.path, "xff": self.headers["X-Forwarded-For"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_real_upstream_on_loopback_answers_through_the_gateway(
    loopback: str, make_client: ClientFactory
) -> None:
    client = make_client(USERS_URL=loopback)
    response = client.get("/api/v1/users/a%20b?x=1")
    assert response.status_code == 200
    assert response.get_json() == {"path": "/users/a%20b?x=1", "xff": "127.0.0.1"}


def test_slow_real_upstream_is_504_within_its_timeout(
    loopback: str, make_client: ClientFactory
) -> None:
    client = make_client(USERS_URL=loopback, TIMEOUT="0.2", CONNECT_TIMEOUT="0.2")
    started = time.monotonic()
    response = client.get("/api/v1/users/slow")
    assert response.status_code == 504
    assert problem(response)["code"] == "upstream_timeout"
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [("HEAD", {}, 200), ("DELETE", {}, 204), ("GET", {"If-None-Match": '"v1"'}, 304)],
)
def test_answers_without_a_body_hand_their_connection_back_to_the_pool(
    make_client: ClientFactory,
    loopback: str,
    method: str,
    headers: dict[str, str],
    status: int,
) -> None:
    # The server never iterates the body of these answers: the connection must not
    # wait for that, or the pool runs dry and every later request is a 503.
    client = make_client(USERS_URL=loopback)
    pool = client.application.gateway.forwarder.pools["users"]  # type: ignore[attr-defined]
    for _ in range(5):
        response = client.open("/api/v1/users/1", method=method, headers=headers)
        assert response.status_code == status
        assert response.get_data() == b""
        if method == "HEAD":
            assert response.headers["Content-Length"] == "123"  # the body it describes
        response.close()
        assert all(connection.is_idle() for connection in pool.connections)
    assert len(pool.connections) == 1  # one keep-alive connection, reused
