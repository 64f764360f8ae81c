"""Traces across real processes: a gunicorn gateway sends its spans over OTLP/HTTP to
a receiver in this test, which decodes the protobuf payloads with opentelemetry-proto.

One request makes one trace: the gateway's server span, a child of the caller's
traceparent, and its client span for the upstream call, whose traceparent the
upstream received; the access log names the same trace. A collector that is down
loses spans, never requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .support import (
    LOOPBACK,
    Gateway,
    gateway_config,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    write_config,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # Span.SpanKind in the OTLP protobuf


class Receiver:
    """An OTLP/HTTP traces endpoint on a free port, keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, str]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                export = ExportTraceServiceRequest()
                export.ParseFromString(body)
                with receiver._lock:
                    for resource_spans in export.resource_spans:
                        attributes = {
                            a.key: a.value.string_value for a in resource_spans.resource.attributes
                        }
                        for scope in resource_spans.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append(span)
                                receiver.resources.append(attributes)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, trace_id: str, count: int, timeout: float = 15.0) -> list[Any]:
        """The spans of `trace_id`, once there are `count` of them."""
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            with self._lock:
                found = [s for s in self.spans if s.trace_id.hex() == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{len(found)} spans of trace {trace_id} arrived, not {count}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.stop()


def traced_gateway(workdir: Path, upstream: MisbehavingUpstream, endpoint: str) -> Gateway:
    config = gateway_config(upstream.url, f"http://{LOOPBACK}:9")
    config["tracing"] = {
        "otlp_endpoint": endpoint,
        "service_name": "edge-test",
        "trusted_networks": ["127.0.0.0/8"],
    }
    server = start_server(
        gateway_serve_argv(write_config(workdir / "routes.yaml", config), 2, 4),
        workdir=workdir,
        name="gateway-traced",
        env=subprocess_env(),
        workers=2,
    )
    return Gateway(server, config)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream, receiver: Receiver
) -> Iterator[Gateway]:
    started = traced_gateway(tmp_path_factory.mktemp("traced"), upstream, receiver.url)
    yield started
    started.server.stop()


def test_one_request_is_one_trace_across_the_gateway_and_its_upstream(
    gateway: Gateway, upstream: MisbehavingUpstream, receiver: Receiver, token: str
) -> None:
    caller = f"00-{CALLER_TRACE[:-8]}{token[-8:]}-{CALLER_SPAN}-01"
    trace_id = caller.split("-")[1]
    reply = gateway.get(f"/items/{token}?secret=hunter2", [("traceparent", caller)])
    assert reply.status == 200, reply.describe()

    server, client = sorted(receiver.wait_for(trace_id, 2), key=lambda s: s.kind)
    assert (server.kind, client.kind) == (SERVER, CLIENT)
    assert server.parent_span_id.hex() == CALLER_SPAN
    assert client.parent_span_id == server.span_id
    assert server.name == "GET /items/{item_id}"
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["http.route"].string_value == "/items/{item_id}"
    assert attributes["http.response.status_code"].int_value == 200
    assert "hunter2" not in repr(server) and "hunter2" not in repr(client)
    assert receiver.resources[0]["service.name"] == "edge-test"

    # The upstream was told the client span's traceparent.
    told = upstream.only(token).header("traceparent")
    assert told is not None and told.split("-")[1:3] == [trace_id, client.span_id.hex()]

    # The access log names the same trace.
    lines = [json.loads(line) for line in gateway.server.log().splitlines() if token in line]
    access = [line for line in lines if line.get("request_id")]
    assert access and access[-1]["trace_id"] == trace_id


def test_a_collector_that_is_down_loses_spans_never_requests(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream, closed_port: int
) -> None:
    down = traced_gateway(
        tmp_path_factory.mktemp("traced-down"),
        upstream,
        f"http://{LOOPBACK}:{closed_port}/v1/traces",
    )
    try:
        started = time.monotonic()
        replies = [down.get(f"/items/down-{n}") for n in range(40)]
        assert [r.status for r in replies] == [200] * 40
        assert time.monotonic() - started < 10
        assert all(r.elapsed < 1.0 for r in replies), max(r.elapsed for r in replies)
        assert down.get("/healthz").status == 200
    finally:
        down.server.stop()


def test_a_trace_crosses_the_gateway_into_the_stub_service(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, token: str
) -> None:
    """The users stub, instrumented the same way, continues the gateway's trace: its
    server span is a child of the gateway's client span."""
    from .stack_support import stub_argv

    workdir = tmp_path_factory.mktemp("traced-stack")
    stub = start_server(
        stub_argv("users"),
        workdir=workdir,
        name="users-stub-traced",
        env=subprocess_env(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url),
        workers=1,
        ready_timeout=30.0,
    )
    try:
        config = gateway_config(stub.base_url, f"http://{LOOPBACK}:9")
        config["routes"].append(
            {
                "name": "users.get",
                "path": "/users/{user_id}",
                "methods": ["GET"],
                "upstream": "backend",
                "upstream_path": "/users/{user_id}",
                "auth": "public",
            }
        )
        config["tracing"] = {"otlp_endpoint": receiver.url, "trusted_networks": ["127.0.0.0/8"]}
        gateway = start_server(
            gateway_serve_argv(write_config(workdir / "routes.yaml", config), 1, 4),
            workdir=workdir,
            name="gateway-traced-stack",
            env=subprocess_env(),
            workers=1,
        )
        try:
            trace_id = f"{token[-16:]:0>16}{'a' * 16}"
            caller = f"00-{trace_id}-{CALLER_SPAN}-01"
            reply = http_get(gateway.port, f"/users/{token}", caller)
            assert reply.status < 500, reply.describe()
            spans = receiver.wait_for(trace_id, 3)
            gateway_server = next(
                s for s in spans if s.kind == SERVER and s.parent_span_id.hex() == CALLER_SPAN
            )
            gateway_client = next(s for s in spans if s.kind == CLIENT)
            stub_server = next(s for s in spans if s.kind == SERVER and s is not gateway_server)
            assert gateway_client.parent_span_id == gateway_server.span_id
            assert stub_server.parent_span_id == gateway_client.span_id
            assert stub_server.name == "GET /users/<user_id>"
            services = {
                receiver.resources[receiver.spans.index(s)]["service.name"]
                for s in (gateway_server, stub_server)
            }
            assert services == {"gateway", "users-stub"}
            # The gateway's access log names the same trace.
            logged = [
                json.loads(line)
                for line in gateway.log().splitlines()
                if line.startswith("{") and token in line
            ]
            assert [line["trace_id"] for line in logged if "request_id" in line] == [trace_id]
        finally:
            gateway.stop()
    finally:
        stub.stop()


def http_get(port: int, target: str, traceparent: str) -> Any:
    from .support import http_request

    return http_request(port, "GET", target, [("traceparent", traceparent)])


def test_a_stopping_worker_sends_the_spans_it_still_holds(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    receiver: Receiver,
    token: str,
) -> None:
    """Spans wait up to 5 s for their batch; a worker told to stop sends them first."""
    stopping = traced_gateway(tmp_path_factory.mktemp("traced-stop"), upstream, receiver.url)
    trace_id = f"{token[-16:]:0>16}{'b' * 16}"
    try:
        reply = stopping.get(
            f"/items/{token}", [("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01")]
        )
        assert reply.status == 200, reply.describe()
    finally:
        stopped_at = time.monotonic()
        stopping.server.stop()
    # Sent at exit, not by the batch timer: well before its 5 s would have run out.
    receiver.wait_for(trace_id, 2, timeout=max(0.5, 4.0 - (time.monotonic() - stopped_at)))
