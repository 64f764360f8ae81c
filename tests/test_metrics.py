"""The Metrics registry and /metrics, in one process (no PROMETHEUS_MULTIPROC_DIR).

Requests by route, method and status; latency histograms of the whole request and of
the upstream call; rate-limit refusals; auth failures by reason; failed upstream
calls by kind; rate-limit storage failures. /metrics answers clients on
`gateway.metrics_allow` networks only (default: loopback and private networks), in
the Prometheus text format.
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid

import httpcore
import httpx
import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import method_label, status_label
from tests.app_support import AppFactory, ClientFactory
from tests.tokens import mint_token

UPSTREAM = "http://backend.internal:8080"
FLAKY = "http://flaky.internal:8090"
SECRET = "0123456789abcdef0123456789abcdef-metrics-secret"
ISSUER = "http://issuer.example"
SERVICE_KEY = "service-key-for-the-metrics-tests"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FAMILIES = {
    "gateway_requests": "counter",
    "gateway_request_duration_seconds": "histogram",
    "gateway_upstream_duration_seconds": "histogram",
    "gateway_rate_limited": "counter",
    "gateway_auth_failures": "counter",
    "gateway_upstream_errors": "counter",
    "gateway_upstream_breaker_open": "gauge",
    "gateway_ratelimit_storage_errors": "counter",
}


def config_text(
    *,
    storage: str = "memory://",
    gateway_extra: str = "",
    breaker: str = "{failures: 3, open_seconds: 30}",
) -> str:
    digest = hashlib.sha256(SERVICE_KEY.encode()).hexdigest()
    return f"""\
version: 1
gateway:
  trusted_proxies: 0
{gateway_extra}auth:
  jwt:
    issuer: {ISSUER}
    audience: gateway
    algorithms: [HS256]
    secret: "{SECRET}"
  api_keys:
    header: X-API-Key
    keys:
      - {{id: reporting, sha256: {digest}, roles: [service]}}
rate_limits:
  storage: "{storage}"
  on_storage_error: allow
  storage_timeout_ms: 50
  default: []
  auth_failures: [3/minute]
upstreams:
  backend:
    url: {UPSTREAM}
    retries: 0
  flaky:
    url: {FLAKY}
    connect_timeout: 0.5
    timeout: 1.0
    retries: 0
    breaker: {breaker}
routes:
  - name: items
    path: /api/items/{{item_id}}
    methods: [GET, POST]
    upstream: backend
    upstream_path: /items/{{item_id}}
    auth: public
  - name: secure
    path: /secure
    methods: [GET]
    upstream: backend
    auth: [jwt, api_key]
  - name: members
    path: /members
    methods: [GET]
    upstream: backend
    auth: [jwt]
    roles: [member]
  - name: open
    path: /open
    methods: [GET]
    upstream: backend
    auth: public
    rate_limit: [2/minute]
  - name: flaky
    path: /flaky/{{rest:path}}
    methods: [GET]
    upstream: flaky
    upstream_path: /{{rest:path}}
    auth: public
"""


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.fixture
def app(gateway_app: AppFactory) -> Flask:
    return gateway_app(config_text())


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route(host="backend.internal", path="/items/missing").mock(
        return_value=httpx.Response(404, json={"error": "no such item"})
    )
    upstream.route(host="backend.internal").mock(return_value=httpx.Response(200, json={}))
    return upstream


def value(app: Flask, name: str, **labels: str) -> float:
    found = app.gateway.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if found is None else float(found)


def scrape(client: FlaskClient, address: str = "127.0.0.1") -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200, response.get_data(as_text=True)
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def token(*, roles: tuple[str, ...] = (), expires_in: int = 60, secret: str = SECRET) -> str:
    return mint_token(secret, issuer=ISSUER, audience="gateway", roles=roles, lifetime=expires_in)


def fresh_address() -> str:
    """A client address of its own (the brute-force guard counts per address)."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- requests by route, method and status ------------------------------------------------


def test_requests_are_counted_by_route_method_and_status(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    for _ in range(3):
        assert client.get("/api/items/1").status_code == 200
    for _ in range(2):
        assert client.get("/api/items/missing").status_code == 404
    assert client.post("/api/items/1", json={"a": 1}).status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/api/items/1").status_code == 405

    requests = "gateway_requests_total"
    assert value(app, requests, route="items", method="GET", status="200") == 3
    assert value(app, requests, route="items", method="GET", status="404") == 2
    assert value(app, requests, route="items", method="POST", status="200") == 1
    assert value(app, requests, route="unmatched", method="GET", status="404") == 1
    assert value(app, requests, route="unmatched", method="DELETE", status="405") == 1


def test_health_probes_are_counted_under_their_own_names(app: Flask, client: FlaskClient) -> None:
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert client.head("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz/extra").status_code == 404
    requests = "gateway_requests_total"
    assert value(app, requests, route="healthz", method="GET", status="200") == 3
    assert value(app, requests, route="healthz", method="HEAD", status="200") == 1
    assert value(app, requests, route="readyz", method="GET", status="200") == 1
    assert value(app, requests, route="unmatched", method="GET", status="404") == 1
    assert value(app, requests, route="unmatched", method="GET", status="200") == 0
    assert value(app, "gateway_request_duration_seconds_count", route="healthz") == 4


def test_latency_histograms_count_every_request_and_every_upstream_call(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    for path in ("/api/items/1", "/api/items/2", "/api/items/missing", "/secure"):
        client.get(path)
    # Three requests on the route, one refused before forwarding (401).
    assert value(app, "gateway_request_duration_seconds_count", route="items") == 3
    assert value(app, "gateway_request_duration_seconds_count", route="secure") == 1
    assert value(app, "gateway_request_duration_seconds_sum", route="items") > 0
    assert value(app, "gateway_upstream_duration_seconds_count", upstream="backend") == 3
    assert value(app, "gateway_upstream_duration_seconds_sum", upstream="backend") > 0
    # Buckets are cumulative and end at +Inf with the count.
    assert value(app, "gateway_request_duration_seconds_bucket", route="items", le="+Inf") == 3
    assert (
        value(app, "gateway_upstream_duration_seconds_bucket", upstream="backend", le="10.0") == 3
    )


def test_scrapes_of_metrics_are_not_counted(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    client.get("/api/items/1")
    for _ in range(3):
        scrape(client)
    samples = scrape(client)
    requests = {k: v for k, v in samples.items() if k[0] == "gateway_requests_total"}
    assert sum(requests.values()) == 1
    assert value(app, "gateway_requests_total", route="items", method="GET", status="200") == 1


# --- auth failures, rate limits -------------------------------------------------------------


def test_auth_failures_are_counted_by_reason(app: Flask, client: FlaskClient) -> None:
    def get(path: str, **headers: str) -> int:
        response = client.get(path, headers=headers, environ_base={"REMOTE_ADDR": fresh_address()})
        return response.status_code

    assert get("/secure") == 401
    assert get("/secure", X_API_Key="not-a-key") == 401
    assert get("/secure", Authorization="Bearer abc") == 401
    assert get("/secure", Authorization=f"Bearer {token(expires_in=-3600)}") == 401
    forged = token(secret="another-secret-of-at-least-32-bytes!!")
    assert get("/secure", Authorization=f"Bearer {forged}") == 401
    assert get("/members", Authorization=f"Bearer {token(roles=('guest',))}") == 403
    assert get("/members", **{"X-API-Key": SERVICE_KEY}) == 401

    failures = "gateway_auth_failures_total"
    assert value(app, failures, reason="missing_or_invalid") == 2
    assert value(app, failures, reason="malformed") == 1
    assert value(app, failures, reason="expired") == 1
    assert value(app, failures, reason="signature") == 1
    assert value(app, failures, reason="role") == 1
    assert value(app, failures, reason="api_key_not_accepted") == 1
    requests = "gateway_requests_total"
    assert value(app, requests, route="secure", method="GET", status="401") == 5
    assert value(app, requests, route="members", method="GET", status="403") == 1
    assert value(app, requests, route="members", method="GET", status="401") == 1


def test_the_brute_force_guard_counts_as_too_many_failures(app: Flask, client: FlaskClient) -> None:
    address = fresh_address()
    statuses = [
        client.get(
            "/secure", headers={"X-API-Key": "wrong"}, environ_base={"REMOTE_ADDR": address}
        ).status_code
        for _ in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]
    assert value(app, "gateway_auth_failures_total", reason="missing_or_invalid") == 3
    assert value(app, "gateway_auth_failures_total", reason="too_many_failures") == 2
    # The guard's 429s are rate-limit refusals of the route too.
    assert value(app, "gateway_rate_limited_total", route="secure") == 2


def test_successful_authentication_counts_no_failure(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    assert client.get("/secure", headers={"X-API-Key": SERVICE_KEY}).status_code == 200
    bearer = f"Bearer {token(roles=('member',))}"
    assert client.get("/members", headers={"Authorization": bearer}).status_code == 200
    samples = scrape(client)
    assert not [k for k in samples if k[0] == "gateway_auth_failures_total"]


def test_rate_limited_requests_are_counted_by_route(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    statuses = [client.get("/open").status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    assert value(app, "gateway_rate_limited_total", route="open") == 3
    assert value(app, "gateway_requests_total", route="open", method="GET", status="429") == 3
    assert value(app, "gateway_requests_total", route="open", method="GET", status="200") == 2
    assert value(app, "gateway_rate_limited_total", route="items") == 0


def test_a_429_passed_on_from_the_upstream_counts_as_rate_limited(
    app: Flask, client: FlaskClient
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="backend.internal").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "3"})
        )
        assert client.get("/api/items/1").status_code == 429
    assert value(app, "gateway_rate_limited_total", route="items") == 1
    assert value(app, "gateway_requests_total", route="items", method="GET", status="429") == 1


# --- upstream failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpcore.ConnectError("refused"), "refused"),
        (httpcore.ConnectTimeout("no answer"), "timeout"),
        (httpcore.ReadTimeout("slow"), "timeout"),
        (httpcore.ReadError("reset"), "reset"),
        (httpcore.RemoteProtocolError("garbage"), "bad_response"),
    ],
)
def test_upstream_errors_are_counted_by_upstream_and_kind(
    app: Flask, client: FlaskClient, error: Exception, kind: str
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="flaky.internal").mock(side_effect=error)
        for _ in range(2):
            assert client.get("/flaky/x").status_code in (502, 504)
    assert value(app, "gateway_upstream_errors_total", upstream="flaky", kind=kind) == 2
    others = {
        k: v
        for k, v in scrape(client).items()
        if k[0] == "gateway_upstream_errors_total" and ("kind", kind) not in k[1]
    }
    assert others == {}


def test_an_open_breaker_counts_breaker_open_and_sets_its_gauge(
    app: Flask, client: FlaskClient
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
        assert value(app, "gateway_upstream_breaker_open", upstream="flaky") == 0
        statuses = [client.get("/flaky/x").status_code for _ in range(5)]
    assert statuses == [502, 502, 502, 503, 503]
    assert value(app, "gateway_upstream_errors_total", upstream="flaky", kind="refused") == 3
    assert value(app, "gateway_upstream_errors_total", upstream="flaky", kind="breaker_open") == 2
    # Failed calls are observed up to the failure; calls never made are not observed.
    assert value(app, "gateway_upstream_duration_seconds_count", upstream="flaky") == 3
    assert value(app, "gateway_upstream_breaker_open", upstream="flaky") == 1
    samples = scrape(client)
    assert samples[("gateway_upstream_breaker_open", frozenset({("upstream", "flaky")}))] == 1


def test_an_upstream_error_answer_is_not_an_upstream_error(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    assert client.get("/api/items/missing").status_code == 404
    assert not [k for k in scrape(client) if k[0] == "gateway_upstream_errors_total"]


# --- rate-limit storage failures ------------------------------------------------------------


@pytest.fixture
def dead_storage_app(gateway_app: AppFactory) -> Flask:
    return gateway_app(config_text(storage=f"redis://127.0.0.1:{closed_port()}/0"))


def test_storage_failures_on_a_limited_route_are_counted(
    dead_storage_app: Flask, upstream: respx.MockRouter
) -> None:
    client = dead_storage_app.test_client()
    for _ in range(3):
        assert client.get("/open").status_code == 200  # on_storage_error: allow
    assert value(dead_storage_app, "gateway_ratelimit_storage_errors_total") == 3
    assert value(dead_storage_app, "gateway_rate_limited_total", route="open") == 0


def test_storage_failures_of_the_brute_force_guard_are_counted(
    dead_storage_app: Flask, upstream: respx.MockRouter
) -> None:
    # /secure has no rate limit of its own: only the brute-force guard (auth_failures)
    # asks the storage, and its failures are failures of the rate-limit storage too.
    client = dead_storage_app.test_client()
    for _ in range(2):
        assert client.get("/secure", headers={"X-API-Key": SERVICE_KEY}).status_code == 200
    gateway = dead_storage_app.gateway  # type: ignore[attr-defined]
    assert gateway.counters.storage_errors >= 2
    assert value(dead_storage_app, "gateway_ratelimit_storage_errors_total") >= 2


# --- /metrics: who may read it, and its format ----------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.9", "172.31.255.1", "192.168.1.5"]
    + ["fd00::5", "fc12:3456::1"],
)
def test_metrics_are_served_to_loopback_and_private_networks_by_default(
    client: FlaskClient, address: str
) -> None:
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE


@pytest.mark.parametrize(
    "address", ["203.0.113.7", "8.8.8.8", "172.32.0.1", "192.169.0.1", "2001:db8::1", "fe80::1"]
)
def test_metrics_are_refused_to_other_addresses_with_a_403_problem(
    client: FlaskClient, address: str
) -> None:
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/problem+json"
    body = json.loads(response.get_data())
    assert body["code"] == "forbidden"
    assert body["instance"] == "/metrics"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert b"gateway_requests" not in response.get_data()


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:192.168.0.7"])
def test_ipv4_mapped_addresses_of_allowed_networks_are_allowed(
    client: FlaskClient, address: str
) -> None:
    # A gateway listening on "::" sees IPv4 clients as ::ffff:a.b.c.d; that is the
    # same IPv4 client, on the same allowed network.
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_ipv4_mapped_addresses_of_other_networks_are_refused(client: FlaskClient) -> None:
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "::ffff:203.0.113.7"})
    assert response.status_code == 403


def test_a_client_cannot_claim_an_allowed_address_in_x_forwarded_for(
    client: FlaskClient,
) -> None:
    response = client.get(
        "/metrics",
        headers={"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "10.0.0.1"},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert response.status_code == 403


def test_behind_a_trusted_proxy_the_believed_client_address_decides(
    gateway_client: ClientFactory,
) -> None:
    client = gateway_client(config_text().replace("trusted_proxies: 0", "trusted_proxies: 1"))
    # The proxy (a private address) relays a public client: refused.
    response = client.get(
        "/metrics",
        headers={"X-Forwarded-For": "203.0.113.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert response.status_code == 403
    # The proxy relays a client on the private network: served.
    response = client.get(
        "/metrics",
        headers={"X-Forwarded-For": "10.9.8.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("allow", "address", "status"),
    [
        ('["10.0.0.0/8"]', "10.200.1.1", 200),
        ('["10.0.0.0/8"]', "127.0.0.1", 403),
        ('["10.0.0.0/8"]', "::1", 403),
        ('["10.0.0.0/8"]', "192.168.1.1", 403),
        ('["203.0.113.0/24", "2001:db8::/32"]', "203.0.113.50", 200),
        ('["203.0.113.0/24", "2001:db8::/32"]', "2001:db8::77", 200),
        ('["203.0.113.0/24", "2001:db8::/32"]', "198.51.100.1", 403),
        ('["127.0.0.1/32"]', "127.0.0.1", 200),
        ('["127.0.0.1/32"]', "127.0.0.2", 403),
        ("[]", "127.0.0.1", 403),
    ],
)
def test_metrics_allow_replaces_the_default_networks(
    gateway_client: ClientFactory, allow: str, address: str, status: int
) -> None:
    client = gateway_client(config_text(gateway_extra=f"  metrics_allow: {allow}\n"))
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == status


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_metrics_answers_get_and_head_only(client: FlaskClient, method: str) -> None:
    response = client.open("/metrics", method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_head_metrics_is_allowed(client: FlaskClient) -> None:
    response = client.head("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE


def test_metrics_text_is_prometheus_exposition_with_every_family(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    client.get("/api/items/1")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
    text = response.get_data(as_text=True)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        assert families.get(name) == kind, (name, families)
        assert f"# HELP {name if kind != 'counter' else name + '_total'} " in text, name
    for line in text.splitlines():
        assert line.isascii()


def test_each_app_has_its_own_registry(gateway_app: AppFactory, upstream: respx.MockRouter) -> None:
    first, second = gateway_app(config_text()), gateway_app(config_text())
    first.test_client().get("/api/items/1")
    assert value(first, "gateway_requests_total", route="items", method="GET", status="200") == 1
    assert value(second, "gateway_requests_total", route="items", method="GET", status="200") == 0


@pytest.mark.parametrize(
    ("method", "label"),
    [("GET", "GET"), ("PATCH", "PATCH"), ("PROPFIND", "other"), ("get", "other"), ("X1", "other")],
)
def test_methods_outside_the_known_set_are_other(method: str, label: str) -> None:
    assert method_label(method) == label


@pytest.mark.parametrize(
    ("status", "label"), [(200, "200"), (404, "404"), (299, "2xx"), (599, "5xx"), (431, "431")]
)
def test_unregistered_statuses_are_counted_by_class(status: int, label: str) -> None:
    assert status_label(status) == label
