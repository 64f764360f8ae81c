"""The access log: one JSON line per request on the "gateway.access" logger.

Each line carries the request id the client saw, the method, the path (control and
non-ASCII characters escaped), the route, the status, the durations, the upstream,
the client key and the sizes, and never a credential: no Authorization value, no
token, no API key, wherever the client put it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient

from gateway.observability import request_id_for
from tests.app_support import AppFactory, ClientFactory
from tests.tokens import mint_token

UPSTREAM = "http://backend.internal:8080"
CLOSED = "http://closed.internal:8081"
SECRET = "0123456789abcdef0123456789abcdef-access-log"
ISSUER = "http://issuer.example"
API_KEY = "k3y-" + "s" * 24
API_KEY_ID = "reporting"
API_KEY_DIGEST = hashlib.sha256(API_KEY.encode()).hexdigest()
FIELDS = {
    "time",
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "upstream",
    "upstream_ms",
    "upstream_error",
    "cache",
    "trace_id",
    "parts",
    "client",
    "auth_method",
    "auth_failure",
    "bytes_in",
    "bytes_out",
}

CONFIG = f"""\
version: 1
gateway:
  max_body_bytes: 1000
auth:
  jwt:
    issuer: {ISSUER}
    audience: gateway
    algorithms: [HS256]
    secret: "{SECRET}"
  api_keys:
    header: X-API-Key
    keys:
      - {{id: {API_KEY_ID}, sha256: {API_KEY_DIGEST}, roles: [service]}}
upstreams:
  backend:
    url: {UPSTREAM}
    retries: 0
  closed:
    url: {CLOSED}
    retries: 0
routes:
  - name: items.get
    path: /api/items/{{item_id}}
    methods: [GET, POST]
    upstream: backend
    upstream_path: /items/{{item_id}}
    auth: public
  - name: secure
    path: /secure/{{rest:path}}
    methods: [GET, POST]
    upstream: backend
    upstream_path: /{{rest:path}}
    auth: [jwt, api_key]
  - name: closed
    path: /closed
    methods: [GET]
    upstream: closed
    auth: public
"""


@pytest.fixture
def app(gateway_app: AppFactory) -> Flask:
    return gateway_app(CONFIG)


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route(host="closed.internal").mock(side_effect=httpcore.ConnectError("refused"))
    upstream.route(host="backend.internal").mock(
        return_value=httpx.Response(200, content=b'{"ok": true}', headers={"X-Up": "1"})
    )
    return upstream


class Lines(logging.Handler):
    """The formatted records of one logger, as a test sees them on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def access() -> Iterator[Lines]:
    logger = logging.getLogger("gateway.access")
    handler = Lines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def valid_token() -> str:
    return mint_token(
        SECRET, issuer=ISSUER, audience="gateway", subject="user-17", roles=[], lifetime=60
    )


# --- one line per request, with its fields ---------------------------------------------------


def test_each_request_writes_exactly_one_json_line(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    paths = ["/api/items/1", "/nowhere", "/healthz", "/readyz", "/secure/x", "/closed"]
    for path in paths:
        client.get(path)
    client.post("/api/items/2", data=b"x" * 2000)  # 413 before forwarding
    client.open("/api/items/1", method="PATCH")  # 405
    entries = access.entries()
    assert len(entries) == len(paths) + 2
    for line, entry in zip(access.lines, entries, strict=True):
        assert "\n" not in line and line.isascii()
        assert set(entry) == FIELDS, entry


def test_a_proxied_request_logs_route_upstream_timings_client_and_sizes(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    response = client.post(
        "/api/items/7?q=1",
        data=b"0123456789",
        headers={"X-Request-ID": "req-abc.123", "Content-Type": "text/plain"},
        environ_base={"REMOTE_ADDR": "192.0.2.44"},
    )
    assert response.status_code == 200
    [entry] = access.entries()
    assert entry["request_id"] == "req-abc.123" == response.headers["X-Request-ID"]
    assert entry["method"] == "POST"
    assert entry["path"] == "/api/items/7"  # no query string
    assert entry["route"] == "items.get"
    assert entry["status"] == 200
    assert entry["upstream"] == "backend"
    assert entry["upstream_error"] is None
    assert isinstance(entry["duration_ms"], float | int) and entry["duration_ms"] >= 0
    assert isinstance(entry["upstream_ms"], float | int)
    assert 0 <= entry["upstream_ms"] <= entry["duration_ms"]
    assert entry["client"] == "ip:192.0.2.44"
    assert entry["auth_method"] is None and entry["auth_failure"] is None
    assert entry["bytes_in"] == 10
    assert entry["bytes_out"] == len(b'{"ok": true}')
    assert time.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ")


def test_an_ipv4_client_of_a_dual_stack_listener_is_logged_as_ipv4(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    client.get("/api/items/1", environ_base={"REMOTE_ADDR": "::ffff:192.0.2.44"})
    client.get("/api/items/1", environ_base={"REMOTE_ADDR": "2001:db8::9"})
    mapped, ipv6 = access.entries()
    assert mapped["client"] == "ip:192.0.2.44"
    assert ipv6["client"] == "ip:2001:db8::9"


def test_the_generated_request_id_is_the_one_the_client_sees(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    for offered in (None, "has space", "x" * 129, "ok-id_1.2"):
        headers = {} if offered is None else {"X-Request-ID": offered}
        response = client.get("/api/items/1", headers=headers)
        entry = access.entries()[-1]
        assert entry["request_id"] == response.headers["X-Request-ID"]
        if offered == "ok-id_1.2":
            assert entry["request_id"] == offered
        else:
            assert entry["request_id"] != offered


def test_a_request_that_matches_no_route_has_null_route_and_upstream(
    client: FlaskClient, access: Lines
) -> None:
    client.get("/nowhere", environ_base={"REMOTE_ADDR": "198.51.100.3"})
    [entry] = access.entries()
    assert entry["status"] == 404
    assert entry["route"] is None
    assert entry["upstream"] is None and entry["upstream_ms"] is None
    assert entry["client"] == "ip:198.51.100.3"
    assert entry["bytes_in"] == 0


def test_a_failed_upstream_call_logs_its_kind(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    assert client.get("/closed").status_code == 502
    [entry] = access.entries()
    assert entry["route"] == "closed" and entry["upstream"] == "closed"
    assert entry["upstream_error"] == "refused"
    assert entry["status"] == 502
    # Timed up to the failure.
    assert isinstance(entry["upstream_ms"], int | float) and entry["upstream_ms"] >= 0


def test_a_call_refused_by_the_open_breaker_logs_breaker_open_and_no_upstream_time(
    gateway_client: ClientFactory, upstream: respx.MockRouter, access: Lines
) -> None:
    text = CONFIG.replace(
        "  closed:\n    url: http://closed.internal:8081\n    retries: 0\n",
        "  closed:\n    url: http://closed.internal:8081\n    retries: 0\n"
        "    breaker: {failures: 1, open_seconds: 30}\n",
    )
    assert "breaker" in text
    client = gateway_client(text)
    assert client.get("/closed").status_code == 502
    assert client.get("/closed").status_code == 503
    failed, paused = access.entries()
    assert failed["upstream_error"] == "refused" and failed["upstream_ms"] is not None
    assert paused["upstream_error"] == "breaker_open" and paused["upstream_ms"] is None
    assert paused["status"] == 503 and paused["upstream"] == "closed"


def test_an_authenticated_caller_is_logged_by_identity_not_by_credential(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    client.get("/secure/a", headers={"X-API-Key": API_KEY})
    client.get("/secure/b", headers={"Authorization": f"Bearer {valid_token()}"})
    by_key, by_token = access.entries()
    assert by_key["client"] == f"key:{API_KEY_ID}" and by_key["auth_method"] == "api_key"
    assert by_token["client"] == "user:user-17" and by_token["auth_method"] == "jwt"


def test_refused_authentication_logs_the_reason(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    client.get("/secure/a")
    client.get("/secure/a", headers={"Authorization": "Bearer not.a.jwt"})
    missing, malformed = access.entries()
    assert missing["status"] == 401 and missing["auth_failure"] == "missing_or_invalid"
    assert malformed["status"] == 401 and malformed["auth_failure"] == "malformed"
    assert missing["route"] == "secure" and missing["upstream_ms"] is None


# --- nothing unsafe in the line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "must_not_contain"),
    [
        ("/api/items/a%0aFAKE%20200", "\n"),
        ("/api/items/a%0d%0a%7b%22status%22:200%7d", "\r"),
        ("/api/items/%1b%5b31mred", "\x1b"),
        ("/api/items/bell%07", "\x07"),
        ("/api/items/nul%00", "\x00"),
        ("/api/items/del%7f", "\x7f"),
        ("/api/items/%c2%85next-line", "\x85"),
        ("/api/items/caf%c3%a9", "\xe9"),
        ("/api/items/sep%e2%80%a8line", "\u2028"),
    ],
)
def test_control_and_non_ascii_characters_in_the_path_are_escaped(
    client: FlaskClient,
    upstream: respx.MockRouter,
    access: Lines,
    target: str,
    must_not_contain: str,
) -> None:
    client.get(target)
    [line] = access.lines
    assert line.isascii()
    assert all(32 <= ord(c) < 127 for c in line), repr(line)
    entry = json.loads(line)
    assert must_not_contain not in entry["path"]
    assert entry["path"].isprintable()
    assert entry["path"].startswith("/api/items/")


def test_an_escaped_path_cannot_forge_another_line(client: FlaskClient, access: Lines) -> None:
    forged = '{"request_id":"forged","status":200}'
    client.get("/x%0a" + forged.replace('"', "%22").replace("{", "%7b").replace("}", "%7d"))
    assert len(access.lines) == 1
    assert "forged" in access.lines[0]  # present, but inside the path value
    assert json.loads(access.lines[0])["request_id"] != "forged"


def test_no_credential_appears_anywhere_in_the_line(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    bearer = valid_token()
    garbage_token = "eyJhbGciOiJIUzI1NiJ9.secretpayload-" + uuid.uuid4().hex + ".sig"
    bad_key = "wrong-key-" + uuid.uuid4().hex
    password = "pw-" + uuid.uuid4().hex
    query_token = "qt-" + uuid.uuid4().hex
    secrets = [bearer, garbage_token, API_KEY, bad_key, password, query_token]

    client.get("/secure/a", headers={"Authorization": f"Bearer {bearer}"})
    client.get("/secure/a", headers={"Authorization": f"Bearer {garbage_token}"})
    client.get("/secure/a", headers={"X-API-Key": API_KEY})
    client.get("/secure/a", headers={"X-API-Key": bad_key})
    client.get("/api/items/1", headers={"Authorization": f"Bearer {bearer}", "X-API-Key": API_KEY})
    client.get("/api/items/1", headers={"Authorization": f"Basic {password}"})
    client.get(f"/api/items/1?access_token={query_token}&api_key={API_KEY}")
    client.get("/nowhere", headers={"Authorization": f"Bearer {bearer}", "X-API-Key": bad_key})
    client.get("/metrics", headers={"Authorization": f"Bearer {bearer}"})
    client.post(
        "/secure/a",
        data=json.dumps({"password": password, "token": bearer}),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )

    assert len(access.lines) == 10
    everything = "\n".join(access.lines)
    for secret in secrets:
        assert secret not in everything
        # Nor any recognisable part of it.
        assert secret[-16:] not in everything
    assert "Bearer" not in everything and "Basic" not in everything
    assert "Authorization" not in everything and "authorization" not in everything


def test_the_access_log_can_be_turned_off_without_affecting_requests(
    client: FlaskClient, upstream: respx.MockRouter, access: Lines
) -> None:
    logger = logging.getLogger("gateway.access")
    logger.setLevel(logging.WARNING)
    assert client.get("/api/items/1").status_code == 200
    assert access.lines == []


def test_caplog_sees_the_access_log_under_its_logger_name(
    client: FlaskClient, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    client.get("/api/items/1", headers={"X-Request-ID": "from-caplog"})
    records = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert json.loads(records[0].getMessage())["request_id"] == "from-caplog"


def test_request_id_for_accepts_only_safe_ids() -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    def rid(value: str | None) -> str:
        headers = {} if value is None else {"X-Request-ID": value}
        return request_id_for(Request(EnvironBuilder(headers=headers).get_environ()))

    assert rid("abc-DEF_1.2") == "abc-DEF_1.2"
    assert rid("a" * 128) == "a" * 128
    for unsafe in ("", "a" * 129, "a b", "a\tb", "é", "a,b", "<script>", "a/b"):
        generated = rid(unsafe)
        assert generated != unsafe and len(generated) == 32
    assert rid(None) != rid(None)
