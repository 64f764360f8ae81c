"""Graceful stop: SIGTERM to the gateway's master while a request is in flight.

gunicorn closes its listening sockets and tells the workers to stop; a worker stops
accepting, finishes the requests it has (for up to graceful_timeout, 30 s) and exits;
the master then exits 0 and its on_exit hook removes the metrics folder it made.

What happens to a connection made after SIGTERM: the workers still hold the listening
socket until they exit, so the kernel may complete a TCP handshake, but no worker
accepts the connection any more. It gets no HTTP answer; it is reset (or, once every
copy of the listener is closed, refused). Either way the request is never served.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .support import (
    LOOPBACK,
    Reply,
    ServerProcess,
    gateway_serve_argv,
    http_request,
    pid_alive,
    port_accepts,
    start_server,
    subprocess_env,
    write_config,
)

pytestmark = pytest.mark.integration

SLOW_SECONDS = 1.5
GRACEFUL_TIMEOUT = 30  # HARDENED_SETTINGS["graceful_timeout"]
BODY = bytes(range(256)) * 1024  # 256 KiB, to check it arrives whole


class SlowUpstream:
    """Answers every request after SLOW_SECONDS with BODY; records the paths it got."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.arrived = threading.Event()
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.paths.append(self.path)
                outer.arrived.set()
                if outer.stopping.wait(SLOW_SECONDS):
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(BODY)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> SlowUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def slow_upstream() -> Iterator[SlowUpstream]:
    server = SlowUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway_with_tmpdir(
    tmp_path: Path, slow_upstream: SlowUpstream
) -> Iterator[tuple[ServerProcess, Path]]:
    config = {
        "version": 1,
        "upstreams": {
            "slow": {
                "url": f"http://{LOOPBACK}:{slow_upstream.port}",
                "connect_timeout": 1.0,
                "timeout": SLOW_SECONDS + 3.0,
                "retries": 0,
            }
        },
        "routes": [
            {
                "name": "slow.get",
                "path": "/slow/{rest:path}",
                "methods": ["GET"],
                "upstream": "slow",
                "upstream_path": "/{rest:path}",
                "auth": "public",
            }
        ],
    }
    path = write_config(tmp_path / "routes.yaml", config)
    temp = tmp_path / "tmp"
    temp.mkdir()
    # No PROMETHEUS_MULTIPROC_DIR: the master makes its own metrics folder under TMPDIR.
    env = subprocess_env(TMPDIR=str(temp))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = start_server(
        gateway_serve_argv(path, 2, 4),
        workdir=tmp_path,
        name="gateway-stop",
        env=env,
        workers=2,
    )
    try:
        yield server, temp
    finally:
        server.stop()


def late_request(port: int, path: str) -> str:
    """What a client meets on a connection made after SIGTERM: 'refused', 'reset',
    'closed' (EOF without an answer), 'timeout', or 'answered <status>'."""
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=2)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        sock.settimeout(10)
        try:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode())
            data = sock.recv(65536)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "timeout"
        if not data:
            return "closed"
        return "answered " + data.split(b"\r\n", 1)[0].decode("latin-1")


def test_sigterm_lets_the_request_in_flight_finish_and_accepts_no_new_one(
    gateway_with_tmpdir: tuple[ServerProcess, Path], slow_upstream: SlowUpstream, token: str
) -> None:
    server, temp = gateway_with_tmpdir
    [metrics_dir] = temp.glob("gateway-metrics-*")
    assert metrics_dir.is_dir()
    workers = server.workers()
    assert len(workers) == 2

    outcome: list[Reply] = []
    in_flight = threading.Thread(
        target=lambda: outcome.append(
            http_request(server.port, "GET", f"/slow/{token}-in-flight", timeout=20)
        )
    )
    in_flight.start()
    assert slow_upstream.arrived.wait(5), "the request never reached the upstream"

    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.4)  # the workers have the signal; the first request is still in flight
    assert in_flight.is_alive()

    late = late_request(server.port, f"/slow/{token}-late")
    assert late in ("refused", "reset", "closed"), late

    in_flight.join(timeout=20)
    assert outcome, "the in-flight request got no answer"
    reply = outcome[0]
    assert reply.status == 200, reply.describe()
    assert reply.complete and reply.body == BODY

    returncode = server.process.wait(timeout=GRACEFUL_TIMEOUT)
    stopped = time.monotonic() - signalled
    assert returncode == 0, server.log()[-3000:]
    assert stopped < GRACEFUL_TIMEOUT
    assert stopped < SLOW_SECONDS + 5  # it does not sit out the whole grace period
    assert all(not pid_alive(pid) for pid in workers)
    assert not port_accepts(server.port)

    assert slow_upstream.paths == [f"/{token}-in-flight"]  # the late request never arrived
    assert not metrics_dir.exists(), "the metrics folder was left behind"
    assert list(temp.glob("gateway-metrics-*")) == []


def test_a_given_metrics_folder_is_emptied_at_start_and_kept_at_exit(
    tmp_path: Path, slow_upstream: SlowUpstream
) -> None:
    # An operator's own PROMETHEUS_MULTIPROC_DIR is theirs: stale samples from an earlier
    # run are removed at start (or they would be counted again), the folder is kept.
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"\0" * 16)
    keep = metrics_dir / "README"
    keep.write_text("not a metrics file")
    config = {
        "version": 1,
        "upstreams": {"slow": {"url": f"http://{LOOPBACK}:{slow_upstream.port}"}},
        "routes": [
            {
                "name": "slow.get",
                "path": "/slow",
                "methods": ["GET"],
                "upstream": "slow",
                "auth": "public",
            }
        ],
    }
    path = write_config(tmp_path / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, 1, 2),
        workdir=tmp_path,
        name="gateway-own-dir",
        env=subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        workers=1,
    )
    try:
        assert not stale.exists()
        reply = http_request(server.port, "GET", "/metrics")
        assert reply.status == 200, reply.describe()
        assert any(p.name.endswith(".db") for p in metrics_dir.iterdir())
    finally:
        returncode = server.stop()
    assert returncode == 0
    assert metrics_dir.is_dir() and keep.exists()
