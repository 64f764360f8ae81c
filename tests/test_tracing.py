"""Traces in-process, with the SDK's in-memory exporter: the request's server span, a
client span per upstream call, and which traceparent is continued."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import httpcore
import httpx
import opentelemetry.exporter.otlp.proto.http.trace_exporter as otlp
import pytest
import respx
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.config import load_config_text
from gateway.tracing import tracing_wanted
from tests.app_support import ClientFactory, sent

BACKEND = "http://backend.internal"
CONFIG = f"""\
version: 1
tracing:
  otlp_endpoint: http://127.0.0.1:9/v1/traces
  service_name: edge
upstreams:
  backend: {{url: "{BACKEND}", retries: 0}}
routes:
  - {{name: items.get, path: "/api/items/{{item_id}}", methods: [GET], upstream: backend,
     upstream_path: "/items/{{item_id}}", auth: public}}
  - name: board
    path: /api/board
    methods: [GET]
    auth: public
    compose:
      parts:
        one: {{upstream: backend, path: /one}}
        two: {{upstream: backend, path: /two}}
"""
INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    monkeypatch.setattr(otlp, "OTLPSpanExporter", lambda **_: memory)
    return memory


@pytest.fixture
def client(gateway_client: ClientFactory, exporter: InMemorySpanExporter) -> Iterator[FlaskClient]:
    yield gateway_client(CONFIG)


def finished(client: FlaskClient, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    client.application.gateway.tracing.provider.force_flush()  # type: ignore[attr-defined]
    return list(exporter.get_finished_spans())


def test_tracing_is_off_unless_an_endpoint_is_named() -> None:
    config = load_config_text(
        CONFIG.replace("  otlp_endpoint: http://127.0.0.1:9/v1/traces\n", ""), "r.yaml"
    )
    assert not tracing_wanted(config.tracing, {})
    assert tracing_wanted(config.tracing, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    on = load_config_text(CONFIG, "r.yaml")
    assert tracing_wanted(on.tracing, {})
    assert not tracing_wanted(on.tracing, {"OTEL_SDK_DISABLED": "true"})


def test_a_request_is_a_server_span_with_a_client_span_per_upstream_call(
    client: FlaskClient, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    route = upstream.get(f"{BACKEND}/items/7").mock(return_value=httpx.Response(200, json={}))
    assert client.get("/api/items/7?secret=x").status_code == 200
    spans = finished(client, exporter)
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    call = next(s for s in spans if s.kind == SpanKind.CLIENT)
    assert server.name == "GET /api/items/{item_id}"
    assert server.attributes is not None and call.attributes is not None
    assert server.attributes["http.route"] == "/api/items/{item_id}"
    assert server.attributes["gateway.route"] == "items.get"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == "/api/items/7"  # never the query string
    assert server.attributes["gateway.client.kind"] == "anonymous"
    assert server.resource.attributes["service.name"] == "edge"
    assert call.parent is not None and call.parent.span_id == server.context.span_id
    assert call.context.trace_id == server.context.trace_id
    assert call.attributes["gateway.upstream"] == "backend"
    assert call.attributes["http.response.status_code"] == 200
    # The upstream is told the client span's traceparent: its spans hang under it.
    told = sent(route).headers["traceparent"]
    flags = int(call.context.trace_flags)
    assert told == f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-{flags:02x}"


def test_a_trusted_callers_traceparent_is_continued(
    client: FlaskClient, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    upstream.get(f"{BACKEND}/items/1").mock(return_value=httpx.Response(200, json={}))
    client.get("/api/items/1", headers={"traceparent": INCOMING})
    server = next(s for s in finished(client, exporter) if s.kind == SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" == INCOMING.split("-")[1]
    assert server.parent is not None and f"{server.parent.span_id:016x}" == INCOMING.split("-")[2]


def test_an_untrusted_callers_traceparent_starts_a_new_trace(
    client: FlaskClient, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    route = upstream.get(f"{BACKEND}/items/1").mock(return_value=httpx.Response(200, json={}))
    client.get(
        "/api/items/1",
        headers={"traceparent": INCOMING},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    server = next(s for s in finished(client, exporter) if s.kind == SpanKind.SERVER)
    assert f"{server.context.trace_id:032x}" != INCOMING.split("-")[1]
    assert server.parent is None
    assert INCOMING.split("-")[1] not in sent(route).headers["traceparent"]


def test_composed_parts_are_sibling_client_spans(
    client: FlaskClient, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    upstream.get(f"{BACKEND}/one").mock(return_value=httpx.Response(200, json={"a": 1}))
    upstream.get(f"{BACKEND}/two").mock(return_value=httpx.Response(200, json={"b": 2}))
    assert client.get("/api/board").status_code == 200
    spans = finished(client, exporter)
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    calls = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(calls) == 2
    assert {c.parent.span_id for c in calls if c.parent} == {server.context.span_id}


def test_the_access_log_names_the_trace(
    client: FlaskClient,
    upstream: respx.MockRouter,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.get(f"{BACKEND}/items/2").mock(return_value=httpx.Response(200, json={}))
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        client.get("/api/items/2", headers={"traceparent": INCOMING})
    line = next(r.getMessage() for r in caplog.records if r.name == "gateway.access")
    assert f'"trace_id":"{INCOMING.split("-")[1]}"' in line


def test_retries_are_sibling_spans_and_a_failure_marks_the_request(
    gateway_client: ClientFactory, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    client = gateway_client(CONFIG.replace("retries: 0", "retries: 1"))
    upstream.get(f"{BACKEND}/items/3").mock(side_effect=httpcore.ConnectError("refused"))
    answer = client.get("/api/items/3")
    assert answer.status_code == 502
    spans = finished(client, exporter)
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    calls = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 502
    assert server.status.status_code.name == "ERROR"
    assert [c.attributes["http.request.resend_count"] for c in calls if c.attributes] == [0, 1]
    assert {c.parent.span_id for c in calls if c.parent} == {server.context.span_id}
    assert all(c.attributes and c.attributes["error.type"] == "ConnectError" for c in calls)


def test_a_gateway_without_tracing_never_imports_the_trace_sdk() -> None:
    """Off, tracing adds nothing to a worker: its SDK and exporter are imported only
    when on. (redis-py imports OpenTelemetry's metrics SDK by itself when installed.)"""
    import subprocess
    import sys

    probe = (
        "import sys, gateway.app, gateway.serving, gateway.workers; "
        "print(sorted(m for m in sys.modules if m.startswith("
        "('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_every_problem_body_names_the_trace(
    client: FlaskClient, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    upstream.get(f"{BACKEND}/items/9").mock(
        return_value=httpx.Response(
            404,
            json={"title": "Not here", "status": 404, "trace_id": "theirs"},
            headers={"Content-Type": "application/problem+json"},
        )
    )
    trace = INCOMING.split("-")[1]
    for path in ("/nowhere", "/api/items/9"):  # the gateway's own, and an upstream's
        problem = client.get(path, headers={"traceparent": INCOMING}).get_json()
        assert problem["trace_id"] == trace, problem


def test_without_tracing_problems_carry_no_trace_id(gateway_client: ClientFactory) -> None:
    off = CONFIG.replace("  otlp_endpoint: http://127.0.0.1:9/v1/traces\n", "")
    problem = gateway_client(off).get("/nowhere", headers={"traceparent": INCOMING}).get_json()
    assert "trace_id" not in problem


def test_spans_dropped_for_a_full_queue_are_counted() -> None:
    """A collector that never answers: once the queue is full, each span more is
    dropped and counted, and nothing waits."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gateway.config.model import TracingSettings
    from gateway.tracing import MAX_QUEUED_SPANS, Tracing

    release = threading.Event()

    class Stuck(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            release.wait(10)  # a collector that does not answer
            return SpanExportResult.FAILURE

    dropped: list[int] = []
    tracing = Tracing(TracingSettings(), exporter=Stuck(), on_dropped=lambda: dropped.append(1))
    try:
        for _ in range(MAX_QUEUED_SPANS + 512 + 50):
            span = tracing.server_span("GET", "/x", {}, "127.0.0.1")
            span.end()
        # The export worker holds one batch (512) while it waits, or none yet.
        assert 50 <= len(dropped) <= 50 + 512, len(dropped)
    finally:
        release.set()
        tracing.processor.shutdown()


def test_an_unsampled_trace_records_nothing_but_still_reaches_the_upstream(
    client: FlaskClient, upstream: respx.MockRouter, exporter: InMemorySpanExporter
) -> None:
    route = upstream.get(f"{BACKEND}/items/5").mock(return_value=httpx.Response(200, json={}))
    unsampled = INCOMING[:-2] + "00"  # the caller decided not to sample
    client.get("/api/items/5", headers={"traceparent": unsampled})
    assert finished(client, exporter) == []
    told = sent(route).headers["traceparent"]
    assert told.split("-")[1] == INCOMING.split("-")[1] and told.endswith("-00")
