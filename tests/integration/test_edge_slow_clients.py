"""Slow clients against a 2-worker gateway: the dripping never starves anyone else.

gunicorn's threaded worker gave a connection a thread at its first byte, and the
thread then waited on the client: a few dozen dripping connections held every thread,
and every other request, /healthz included, timed out.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .abuse import Probe, probe_under_drip, read_until_closed
from .support import (
    LOOPBACK,
    Gateway,
    StartGateway,
    gateway_config,
    http_request,
    memory_kib,
    serving,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration


def test_eighty_dripping_connections_do_not_slow_a_well_behaved_client(
    start_gateway: StartGateway, token: str
) -> None:
    gateway = start_gateway(workers=2, threads=4)
    attack = probe_under_drip(gateway.port, token, seconds=6.0)
    assert attack.head_connections >= 40 and attack.body_connections >= 40
    assert len(attack.probe.results) >= 20, attack.probe.results
    assert attack.probe.failures(slower_than=1.0) == [], attack.probe.results


# -- each phase's deadline -------------------------------------------------------------

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5


@pytest.fixture
def strict_gateway(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int
) -> Iterator[Gateway]:
    """Short client deadlines, and a breaker on the backend that opens after 2 failures."""
    config = gateway_config(
        upstream.url,
        f"http://{LOOPBACK}:{closed_port}",
        request_head_timeout=HEAD_TIMEOUT,
        request_body_timeout=BODY_TIMEOUT,
    )
    config["upstreams"]["backend"]["breaker"] = {"failures": 2, "open_seconds": 30}
    with serving(tmp_path, config) as gateway:
        yield gateway


def _problem_of(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/problem+json" in head.lower(), answer
    return status, json.loads(body)


def test_a_request_head_sent_too_slowly_is_408_and_closed(strict_gateway: Gateway) -> None:
    with socket.create_connection((LOOPBACK, strict_gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for i in range(10):
            try:
                sock.sendall(f"X-Drip-{i}: y\r\n".encode())
            except OSError:
                break
            time.sleep(0.3)
        answer = read_until_closed(sock, within=5)
        took = time.monotonic() - started
    status, problem = _problem_of(answer)
    assert status == 408 and problem["code"] == "request_timeout", answer
    assert b"connection: close" in answer.lower()
    assert took < HEAD_TIMEOUT + 2.0


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    strict_gateway: Gateway,
) -> None:
    with socket.create_connection((LOOPBACK, strict_gateway.port), timeout=5) as sock:
        started = time.monotonic()
        answer = read_until_closed(sock, within=HEAD_TIMEOUT + 3)
        took = time.monotonic() - started
    assert answer == b""
    assert HEAD_TIMEOUT - 0.2 < took < HEAD_TIMEOUT + 2.0


def test_a_slow_body_is_408_reaches_no_upstream_and_never_opens_the_breaker(
    strict_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    for attempt in range(3):  # the breaker opens after 2 upstream failures
        with socket.create_connection((LOOPBACK, strict_gateway.port), timeout=5) as sock:
            sock.sendall(
                f"POST /api/ok/{token}-{attempt} HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 70000\r\n\r\n".encode()
            )
            for _ in range(30):
                try:
                    sock.sendall(b"x" * 100)
                except OSError:
                    break
                time.sleep(0.1)
            answer = read_until_closed(sock, within=5)
        status, problem = _problem_of(answer)
        assert status == 408 and problem["code"] == "request_timeout", answer
    assert upstream.received(token) == []
    ready = strict_gateway.get("/readyz")
    assert ready.status == 200, ready.describe()
    assert strict_gateway.get(f"/api/ok/{token}-after").status == 200
    log = strict_gateway.server.log()
    assert "Traceback" not in log, log[-3000:]


def test_an_upload_slower_than_the_upstream_timeout_is_forwarded_whole(
    strict_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    """The upstream's 1 s deadline starts once the body is in: a client that takes
    1.2 s to upload is not the upstream's failure (it was a 504 before)."""
    body = b"y" * 70_000
    with socket.create_connection((LOOPBACK, strict_gateway.port), timeout=5) as sock:
        sock.sendall(
            f"POST /api/ok/{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for offset in range(0, len(body), 7000):
            sock.sendall(body[offset : offset + 7000])
            time.sleep(0.12)
        answer = read_until_closed(sock, within=5)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:500]
    received = upstream.only(token)
    assert received.body == body


def test_a_client_that_stops_reading_does_not_hold_the_gateway(
    strict_gateway: Gateway, token: str
) -> None:
    """Ten connections ask for a large body and never read it; others go on."""
    stalled = []
    try:
        for index in range(10):
            sock = socket.create_connection((LOOPBACK, strict_gateway.port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /bulk/huge/{token}-{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append(sock)
        probe = Probe().run(strict_gateway.port, ["/healthz", f"/items/{token}"], seconds=2.0)
    finally:
        for sock in stalled:
            sock.close()
    assert probe.failures(slower_than=1.0) == [], probe.results


def test_a_client_that_stops_reading_releases_its_upstream_connection(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    """The bulk upstream has one connection per worker and a 30 s deadline. A client
    that stops reading a large answer is dropped after response_send_timeout, and the
    connection it held serves the next caller (before: a 503 for 30 s)."""
    config = gateway_config(
        upstream.url, f"http://{LOOPBACK}:{closed_port}", response_send_timeout=1.0
    )
    config["upstreams"]["bulk"]["max_connections"] = 1
    with (
        serving(tmp_path, config) as gateway,
        socket.create_connection((LOOPBACK, gateway.port), timeout=5) as stalled,
    ):
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /bulk/huge/{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)  # the answer has begun and fills the socket buffers
        started = time.monotonic()
        while True:
            reply = http_request(gateway.port, "GET", f"/bulk/ok/{token}-next", timeout=5)
            if reply.status == 200 or time.monotonic() - started > 8:
                break
            time.sleep(0.2)
        waited = time.monotonic() - started
    assert reply.status == 200, reply.describe()
    assert waited < 5.0


def test_a_body_dripped_without_pause_still_ends_at_the_body_deadline(
    strict_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    """One byte every 0.3 s never lets a single read time out; the body deadline is a
    total all the same, and the 408 says Connection: close."""
    with socket.create_connection((LOOPBACK, strict_gateway.port), timeout=10) as sock:
        sock.sendall(
            f"POST /api/ok/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.3)
        while time.monotonic() - started < 8 and not answer:
            try:
                sock.sendall(b"x")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        took = time.monotonic() - started
        rest = read_until_closed(sock, within=2)
    answer += rest
    status, problem = _problem_of(answer)
    assert status == 408 and problem["code"] == "request_timeout", answer
    assert b"connection: close" in answer.lower(), answer
    assert took < BODY_TIMEOUT + 1.0, took
    assert upstream.received(token) == []


def test_an_unread_body_dripped_after_the_answer_does_not_hold_the_connection(
    strict_gateway: Gateway, token: str
) -> None:
    """A 404 is answered without reading the declared body; skipping it is bounded by
    request_head_timeout in total, not per read."""
    with socket.create_connection((LOOPBACK, strict_gateway.port), timeout=10) as sock:
        sock.sendall(
            f"POST /nowhere/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n".encode()
        )
        started = time.monotonic()
        closed_after = None
        sock.settimeout(0.2)
        data = b""
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"x")
            except OSError:
                closed_after = time.monotonic() - started
                break
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
            if not piece:
                closed_after = time.monotonic() - started
                break
            data += piece
    assert data.startswith(b"HTTP/1.1 404"), data[:300]
    assert closed_after is not None and closed_after < HEAD_TIMEOUT + 1.5, closed_after


def test_a_large_chunked_upload_waits_on_disk_not_in_worker_memory(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    """24 MiB sent chunked (size unknown until the end) under a 256 MiB limit: the
    worker's peak memory grows by a small fraction of it, and the upstream gets every
    byte. (It used to be held whole in memory: 300 MB took a worker to 598 MB.)"""
    config = gateway_config(
        upstream.url, f"http://{LOOPBACK}:{closed_port}", max_body_bytes=256 * 1024 * 1024
    )
    config["upstreams"]["backend"]["timeout"] = 30.0  # the test upstream reads slowly
    piece = bytes(range(256)) * 256  # 64 KiB
    pieces = 384  # 24 MiB
    with serving(tmp_path, config) as gateway:
        [worker] = gateway.server.workers()
        before = memory_kib(worker)["VmHWM"]
        with socket.create_connection((LOOPBACK, gateway.port), timeout=30) as sock:
            sock.sendall(
                f"POST /api/ok/{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            for _ in range(pieces):
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            answer = read_until_closed(sock, within=30)
        grown = memory_kib(worker)["VmHWM"] - before
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    received = upstream.only(token)
    assert len(received.body) == len(piece) * pieces
    assert received.body[: len(piece)] == piece and received.body[-len(piece) :] == piece
    assert grown < 8 * 1024, f"the worker's peak memory grew by {grown} KiB"
