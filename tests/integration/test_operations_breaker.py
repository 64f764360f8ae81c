"""The circuit breaker in a running gateway, against an upstream the test stops and
starts again on the same port.

While the breaker is open the upstream is not contacted at all (a listener on its port
counts every connection); after open_seconds exactly one probe goes through, which
closes the breaker when the upstream is back and opens it again when it is not.
/readyz and /metrics follow along.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import (
    LOOPBACK,
    Reply,
    ServerProcess,
    assert_problem,
    free_port,
    gateway_serve_argv,
    http_request,
    start_server,
    subprocess_env,
    write_config,
)

pytestmark = pytest.mark.integration

OPEN_SECONDS = 1.0
FAILURES = 3
BODY = b'{"flaky": "ok"}'


class ControlledUpstream:
    """An HTTP/1.1 upstream on a fixed loopback port that counts every connection.

    mode "ok": answer 200 (after `delay` seconds) and close; "reset": accept and reset
    the connection at once, as a crashing service would. stop() closes the port, so
    connections are refused until start() binds it again (SO_REUSEADDR); `accepted`
    counts the connections since the last start().
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "ok"
        self.delay = 0.0
        self.accepted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._handlers: list[threading.Thread] = []

    def start(self, mode: str = "ok") -> ControlledUpstream:
        self.mode = mode
        self.accepted = 0  # connections since this start
        self._stop.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for handler in self._handlers:
            handler.join(timeout=5)
        self._handlers = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def count(self) -> int:
        with self._lock:
            return self.accepted

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            handler = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._handlers.append(handler)
            handler.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            conn.settimeout(5)
            data = b""
            ends = time.monotonic() + 5
            try:
                while b"\r\n\r\n" not in data and time.monotonic() < ends:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                if self._stop.wait(self.delay):
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
                    + BODY
                )
            except OSError:
                return


def breaker_config(port: int) -> dict[str, Any]:
    return {
        "version": 1,
        "gateway": {"trusted_proxies": 0},
        "upstreams": {
            "flaky": {
                "url": f"http://{LOOPBACK}:{port}",
                "connect_timeout": 1.0,
                "timeout": 3.0,
                "retries": 0,
                "breaker": {"failures": FAILURES, "open_seconds": OPEN_SECONDS},
            }
        },
        "routes": [
            {
                "name": "flaky.get",
                "path": "/flaky/{rest:path}",
                "methods": ["GET"],
                "upstream": "flaky",
                "upstream_path": "/{rest:path}",
                "auth": "public",
            }
        ],
    }


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[ControlledUpstream, ServerProcess]]:
    upstream = ControlledUpstream(free_port()).start("ok")
    server: ServerProcess | None = None
    try:
        path = write_config(tmp_path / "routes.yaml", breaker_config(upstream.port))
        server = start_server(
            gateway_serve_argv(path, 1, 4),
            workdir=tmp_path,
            name="gateway-breaker",
            env=subprocess_env(),
            workers=1,
        )
        yield upstream, server
    finally:
        if server is not None:
            server.stop()
        upstream.stop()


def get(server: ServerProcess, path: str = "/flaky/x") -> Reply:
    return http_request(server.port, "GET", path, timeout=10)


def readiness(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    reply = http_request(server.port, "GET", "/readyz", timeout=10)
    return reply.status, reply.json()


def metric(server: ServerProcess, name: str, **labels: str) -> float | None:
    reply = http_request(server.port, "GET", "/metrics", timeout=10)
    assert reply.status == 200, reply.describe()
    for family in text_string_to_metric_families(reply.body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def assert_open_answer(reply: Reply) -> None:
    assert_problem(reply, 503, "service_unavailable", "/flaky/x")
    retry_after = reply.header("Retry-After")
    assert retry_after is not None and retry_after.isdigit()
    assert 1 <= int(retry_after) <= OPEN_SECONDS + 1
    assert reply.elapsed < 0.5, reply.elapsed


def test_breaker_opens_refuses_without_contact_probes_once_and_closes(
    flaky: tuple[ControlledUpstream, ServerProcess],
) -> None:
    upstream, server = flaky
    assert get(server).status == 200
    assert upstream.count() == 1
    status, body = readiness(server)
    assert status == 200 and body["checks"]["upstream_breakers"] == {"flaky": "closed"}

    # The upstream goes away: connections are refused.
    upstream.stop()
    for _ in range(FAILURES):
        assert_problem(get(server), 502, "upstream_unavailable", "/flaky/x")
    opened = time.monotonic()

    # Something listens on the port again but cannot serve (every connection is reset);
    # it also counts every connection the gateway makes while the breaker is open.
    upstream.start("reset")
    for _ in range(3):
        assert_open_answer(get(server))
    status, body = readiness(server)
    assert status == 503 and body["status"] == "not_ready"
    assert body["checks"]["upstream_breakers"] == {"flaky": "open"}
    assert metric(server, "gateway_upstream_breaker_open", upstream="flaky") == 1
    assert metric(server, "gateway_upstream_errors_total", upstream="flaky", kind="refused") == 3
    breaker_open = metric(
        server, "gateway_upstream_errors_total", upstream="flaky", kind="breaker_open"
    )
    assert breaker_open == 3
    assert time.monotonic() - opened < OPEN_SECONDS, "too slow to observe the open breaker"
    assert upstream.count() == 0  # not contacted while open

    # After open_seconds: one probe, which fails; the breaker opens again.
    time.sleep(max(0.0, opened + OPEN_SECONDS + 0.1 - time.monotonic()))
    status, body = readiness(server)
    # Half-open counts as ready, so that traffic comes back for the probe.
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["upstream_breakers"] == {"flaky": "half_open"}
    probe = get(server)
    assert probe.status == 502, probe.describe()
    reopened = time.monotonic()
    assert upstream.count() == 1
    assert_open_answer(get(server))
    assert upstream.count() == 1
    assert metric(server, "gateway_upstream_breaker_open", upstream="flaky") == 1

    # The upstream is back, slow to answer: the next probe is the only request let through
    # while it is under way.
    upstream.stop()
    upstream.delay = 0.6
    upstream.start("ok")
    time.sleep(max(0.0, reopened + OPEN_SECONDS + 0.1 - time.monotonic()))
    outcome: list[Reply] = []
    prober = threading.Thread(target=lambda: outcome.append(get(server)))
    prober.start()
    ends = time.monotonic() + 5
    while upstream.count() < 1 and time.monotonic() < ends:
        time.sleep(0.01)
    assert upstream.count() == 1
    assert_open_answer(get(server))
    prober.join(timeout=10)
    assert outcome and outcome[0].status == 200, outcome
    assert outcome[0].body == BODY
    assert upstream.count() == 1

    # Closed: requests flow again.
    upstream.delay = 0.0
    for _ in range(4):
        reply = get(server)
        assert reply.status == 200 and reply.body == BODY
    assert upstream.count() == 5
    status, body = readiness(server)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["upstream_breakers"] == {"flaky": "closed"}
    assert metric(server, "gateway_upstream_breaker_open", upstream="flaky") == 0
    assert (
        metric(server, "gateway_upstream_errors_total", upstream="flaky", kind="breaker_open")
        == breaker_open + 2
    )
    assert metric(
        server, "gateway_requests_total", route="flaky.get", method="GET", status="503"
    ) == (breaker_open + 2)
