"""CORS across real processes: `gateway serve` in front of the recording upstream.

Each request carries a unique token in its path, so the upstream's record says
exactly what reached it; preflights must never appear there.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from .support import (
    LOOPBACK,
    Gateway,
    Reply,
    assert_problem,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    venv_script,
    write_config,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

APP = "https://app.example.com"
LOCAL = "http://localhost:3000"
PARTNER = "https://partner.example"
ISSUER = "http://issuer.example"
SECRET = "0123456789abcdef0123456789abcdef"
MAX_BODY = 1000


class LeakyUpstream:
    """An upstream that sends its own, wide-open CORS headers on every answer."""

    HEADERS = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        ("Access-Control-Allow-Headers", "*"),
        ("Access-Control-Expose-Headers", "X-Internal-Secret"),
        ("Access-Control-Max-Age", "86400"),
        ("Access-Control-Allow-Private-Network", "true"),
        ("Vary", "Accept-Encoding"),
        ("X-Internal-Secret", "s3cr3t"),
    ]

    def __init__(self) -> None:
        self.paths: list[str] = []
        leaky = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                leaky.paths.append(f"{self.command} {self.path}")
                body = json.dumps({"leaky": True}).encode()
                self.send_response(200)
                for name, value in LeakyUpstream.HEADERS:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_OPTIONS = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def cors_config(upstream_url: str, closed_url: str, leaky_url: str) -> dict[str, Any]:
    def route(name: str, path: str, methods: list[str], up: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "path": path, "methods": methods, "upstream": up, **extra}

    public = {"auth": "public"}
    return {
        "version": 1,
        "gateway": {"max_body_bytes": MAX_BODY},
        "cors": {
            "allow_origins": [APP, LOCAL],
            "allow_credentials": True,
            "allow_methods": ["GET", "POST", "PUT", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type", "X-Request-ID"],
            "expose_headers": ["X-Request-ID"],
            "max_age": 600,
        },
        "auth": {
            "jwt": {
                "issuer": ISSUER,
                "audience": "gateway",
                "algorithms": ["HS256"],
                "secret": SECRET,
            }
        },
        "upstreams": {
            "backend": {"url": upstream_url, "connect_timeout": 1.0, "timeout": 1.0},
            "closed": {"url": closed_url, "connect_timeout": 1.0, "timeout": 1.0, "retries": 0},
            "leaky": {"url": leaky_url, "connect_timeout": 1.0, "timeout": 2.0},
        },
        "routes": [
            route(
                "items",
                "/items/{rest:path}",
                ["GET", "DELETE"],
                "backend",
                upstream_path="/up/ok/{rest:path}",
                **public,
            ),
            route(
                "secure",
                "/secure/{rest:path}",
                ["GET", "POST"],
                "backend",
                upstream_path="/up/ok/{rest:path}",
                auth=["jwt"],
                roles=["admin"],
            ),
            route(
                "upload",
                "/upload/{rest:path}",
                ["POST"],
                "backend",
                upstream_path="/up/ok/{rest:path}",
                **public,
            ),
            route(
                "slow",
                "/slow/{rest:path}",
                ["GET"],
                "backend",
                upstream_path="/up/slow/{rest:path}",
                **public,
            ),
            route("closed", "/closed/{rest:path}", ["GET"], "closed", **public),
            route("leaky", "/leaky/{rest:path}", ["GET"], "leaky", **public),
            route(
                "partner",
                "/partner/{rest:path}",
                ["GET", "POST"],
                "backend",
                upstream_path="/up/ok/{rest:path}",
                cors={"allow_origins": [PARTNER], "allow_credentials": False},
                **public,
            ),
            route(
                "private",
                "/private/{rest:path}",
                ["GET"],
                "backend",
                upstream_path="/up/ok/{rest:path}",
                cors={"allow_private_network": True},
                **public,
            ),
        ],
    }


@pytest.fixture(scope="module")
def leaky() -> Iterator[LeakyUpstream]:
    server = LeakyUpstream()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cors_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    closed_port: int,
    leaky: LeakyUpstream,
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("cors-gateway")
    config = cors_config(upstream.url, f"http://{LOOPBACK}:{closed_port}", leaky.url)
    path = write_config(workdir / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, 1, 4),
        workdir=workdir,
        name="gateway",
        env=subprocess_env(),
        workers=1,
    )
    try:
        yield Gateway(server, config)
    finally:
        server.stop()


def bearer(*roles: str) -> tuple[str, str]:
    claims = {
        "iss": ISSUER,
        "aud": "gateway",
        "sub": "user-1",
        "exp": int(time.time()) + 300,
        "role": list(roles),
    }
    return ("Authorization", "Bearer " + jwt.encode(claims, SECRET, "HS256"))


def tokens(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def vary(reply: Reply) -> set[str]:
    return {t for value in reply.header_values("Vary") for t in tokens(value)}


def cors_names(reply: Reply) -> set[str]:
    return {name for name in reply.header_names if name.startswith("access-control-")}


def assert_allowed(reply: Reply, origin: str) -> None:
    assert reply.header_values("Access-Control-Allow-Origin") == [origin], reply.describe()
    assert reply.header_values("Access-Control-Allow-Credentials") == ["true"], reply.describe()
    assert tokens(reply.header("Access-Control-Expose-Headers")) == {"x-request-id"}
    assert "origin" in vary(reply), reply.describe()


def assert_refused(reply: Reply) -> None:
    assert cors_names(reply) == set(), reply.describe()
    assert "origin" in vary(reply), reply.describe()


def preflight(
    gateway: Gateway,
    target: str,
    method: str,
    origin: str = APP,
    request_headers: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> Reply:
    headers = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if request_headers is not None:
        headers.append(("Access-Control-Request-Headers", request_headers))
    return gateway.request("OPTIONS", target, [*headers, *(extra or [])])


# --- origins ---------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [APP, LOCAL])
def test_allowed_origin_is_echoed_with_credentials(
    cors_gateway: Gateway, upstream: MisbehavingUpstream, token: str, origin: str
) -> None:
    reply = cors_gateway.get(f"/items/{token}", [("Origin", origin)])
    assert reply.status == 200, reply.describe()
    assert_allowed(reply, origin)
    assert upstream.only(token).method == "GET"


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com.evil.io",
        "http://localhost:3000.evil.io",
        "http://localhost:30001",
        "https://localhost:3000",
        "http://app.example.com",
        "null",
        "*",
    ],
)
def test_other_origins_get_no_cors_headers(cors_gateway: Gateway, token: str, origin: str) -> None:
    reply = cors_gateway.get(f"/items/{token}", [("Origin", origin)])
    assert reply.status == 200
    assert_refused(reply)
    refused = preflight(cors_gateway, f"/items/{token}", "DELETE", origin, "authorization")
    assert refused.status == 204
    assert_refused(refused)


def test_without_origin_only_vary(cors_gateway: Gateway, token: str) -> None:
    for target in (f"/items/{token}", f"/nowhere/{token}", "/healthz"):
        assert_refused(cors_gateway.get(target))


# --- preflights ------------------------------------------------------------------------------


def test_preflight_is_answered_by_the_gateway_and_never_forwarded(
    cors_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = preflight(
        cors_gateway, f"/items/{token}", "DELETE", LOCAL, "Authorization, X-Unknown, Content-Type"
    )
    assert reply.status == 204, reply.describe()
    assert reply.body == b""
    assert_allowed(reply, LOCAL)
    assert tokens(reply.header("Access-Control-Allow-Methods")) == {"get", "delete"}
    assert tokens(reply.header("Access-Control-Allow-Headers")) == {
        "authorization",
        "content-type",
    }
    assert reply.header("Access-Control-Max-Age") == "600"
    assert "access-control-allow-private-network" not in reply.header_names
    time.sleep(0.1)  # anything forwarded would have arrived by now
    assert upstream.received(token) == []


def test_preflight_needs_no_credentials_on_an_auth_route(
    cors_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = preflight(cors_gateway, f"/secure/{token}", "POST", APP, "authorization")
    assert reply.status == 204, reply.describe()
    assert_allowed(reply, APP)
    assert tokens(reply.header("Access-Control-Allow-Methods")) == {"get", "post"}
    assert tokens(reply.header("Access-Control-Allow-Headers")) == {"authorization"}
    assert "www-authenticate" not in reply.header_names
    time.sleep(0.1)
    assert upstream.received(token) == []


def test_preflight_for_a_method_the_path_lacks_gets_no_cors_headers(
    cors_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = preflight(cors_gateway, f"/items/{token}", "PUT", APP, "authorization")
    assert_refused(reply)
    time.sleep(0.1)
    assert upstream.received(token) == []


def test_preflight_to_an_unknown_path_is_a_404_problem(
    cors_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = preflight(cors_gateway, f"/nowhere/{token}", "GET", APP)
    assert_problem(reply, 404, "not_found", f"/nowhere/{token}")
    assert "access-control-allow-methods" not in reply.header_names
    assert upstream.received(token) == []


def test_private_network_access_only_where_configured(
    cors_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    asks = [("Access-Control-Request-Private-Network", "true")]
    refused = preflight(cors_gateway, f"/items/{token}", "GET", APP, extra=asks)
    assert refused.status == 204
    assert "access-control-allow-private-network" not in refused.header_names
    granted = preflight(cors_gateway, f"/private/{token}", "GET", APP, extra=asks)
    assert granted.status == 204
    assert granted.header_values("Access-Control-Allow-Private-Network") == ["true"]
    assert_allowed(granted, APP)
    time.sleep(0.1)
    assert upstream.received(token) == []


# --- problems are readable by the allowed origin ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "prefix", "auth", "body", "status", "code"),
    [
        ("GET", "/secure", False, None, 401, "unauthorized"),
        ("GET", "/secure", True, None, 403, "forbidden"),
        ("GET", "/nowhere", False, None, 404, "not_found"),
        ("PATCH", "/items", False, None, 405, "method_not_allowed"),
        ("POST", "/upload", False, b"x" * (MAX_BODY + 1), 413, "payload_too_large"),
        ("GET", "/closed", False, None, 502, "upstream_unavailable"),
        ("GET", "/slow", False, None, 504, "upstream_timeout"),
    ],
)
def test_problems_carry_cors_headers_for_an_allowed_origin(
    cors_gateway: Gateway,
    token: str,
    method: str,
    prefix: str,
    auth: bool,
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    headers = [("Origin", APP)] + ([bearer("member")] if auth else [])
    reply = cors_gateway.request(method, f"{prefix}/{token}", headers, body, timeout=10)
    assert_problem(reply, status, code, f"{prefix}/{token}")
    assert_allowed(reply, APP)


# --- the upstream's own CORS headers ---------------------------------------------------------


def test_upstream_cors_headers_never_reach_the_client(
    cors_gateway: Gateway, leaky: LeakyUpstream, token: str
) -> None:
    allowed = cors_gateway.get(f"/leaky/{token}", [("Origin", APP)])
    assert allowed.status == 200, allowed.describe()
    assert_allowed(allowed, APP)
    assert cors_names(allowed) == {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    }
    assert {"accept-encoding", "origin"} <= vary(allowed)
    for origin in ("https://evil.example", None):
        reply = cors_gateway.get(f"/leaky/{token}", [("Origin", origin)] if origin else [])
        assert reply.status == 200
        assert_refused(reply)
    assert sum(token in path for path in leaky.paths) == 3


# --- a route's own cors ----------------------------------------------------------------------


def test_route_cors_override(cors_gateway: Gateway, token: str) -> None:
    partner = cors_gateway.get(f"/partner/{token}", [("Origin", PARTNER)])
    assert partner.status == 200
    assert partner.header_values("Access-Control-Allow-Origin") == [PARTNER]
    assert "access-control-allow-credentials" not in partner.header_names
    assert tokens(partner.header("Access-Control-Expose-Headers")) == {"x-request-id"}
    assert "origin" in vary(partner)
    assert_refused(cors_gateway.get(f"/partner/{token}", [("Origin", APP)]))
    # The other routes keep the top-level policy.
    assert_refused(cors_gateway.get(f"/items/{token}", [("Origin", PARTNER)]))
    assert_allowed(cors_gateway.get(f"/items/{token}", [("Origin", APP)]), APP)
    approved = preflight(cors_gateway, f"/partner/{token}", "POST", PARTNER, "content-type")
    assert approved.status == 204
    assert approved.header_values("Access-Control-Allow-Origin") == [PARTNER]
    assert tokens(approved.header("Access-Control-Allow-Methods")) == {"get", "post"}
    assert_refused(preflight(cors_gateway, f"/partner/{token}", "POST", APP))


# --- config errors stop `gateway check` ------------------------------------------------------


def test_cors_config_errors_are_all_reported(tmp_path: Path) -> None:
    config = {
        "version": 1,
        "cors": {"allow_origins": ["*", "http://localhost:3000/"], "allow_credentials": True},
        "upstreams": {"backend": {"url": "http://127.0.0.1:9"}},
        "routes": [
            {
                "name": "a",
                "path": "/a",
                "methods": ["GET"],
                "upstream": "backend",
                "auth": "public",
                "cors": {"allow_origins": ["*", "https://app.example.com/app"]},
            },
            {
                "name": "b",
                "path": "/b",
                "methods": ["GET"],
                "upstream": "backend",
                "auth": "public",
                "cors": {"allow_origins": ["https://b.example"], "allow_credentials": False},
            },
        ],
    }
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    lines = path.read_text().splitlines()
    result = subprocess.run(
        [venv_script("gateway"), "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
    )
    assert result.returncode == 1, result
    output = result.stdout + result.stderr

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    expected = [
        (line_of("- '*'"), "cors: '*' in allow_origins cannot be combined with allow_credentials"),
        (line_of("http://localhost:3000/"), "cors origin 'http://localhost:3000/' must be"),
        (
            [i for i, line in enumerate(lines, 1) if "- '*'" in line][1],
            "routes[0].cors: '*' in allow_origins cannot be combined with allow_credentials",
        ),
        (line_of("https://app.example.com/app"), "cors origin 'https://app.example.com/app'"),
    ]
    for line, message in expected:
        assert any(
            row.startswith(f"{path}:{line}:") and message in row for row in output.splitlines()
        ), (line, message, output)
    assert "routes[1]" not in output
