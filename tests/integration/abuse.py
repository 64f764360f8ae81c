"""Abusive clients for the edge tests: connections that drip their request, and a
well-behaved client that measures what it gets meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .support import LOOPBACK, http_request

# One step of a dripping client: the bytes to send next, then the pause after them.
DripPlan = Callable[[], list[bytes]]


def head_drip_plan(path: str = "/healthz") -> list[bytes]:
    """A request head sent one header line at a time, never finished."""
    lines = [f"GET {path} HTTP/1.1\r\n".encode(), f"Host: {LOOPBACK}\r\n".encode()]
    return lines + [f"X-Drip-{i}: {'x' * 8}\r\n".encode() for i in range(1000)]


def body_drip_plan(path: str, declared: int = 70_000) -> list[bytes]:
    """A complete head with a declared body, then the body one byte at a time."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    return [head] + [b"x"] * declared


@dataclass
class Drippers:
    """`count` connections that each send their plan one piece every `interval` seconds,
    reconnecting whenever the server closes on them, until stopped."""

    port: int
    count: int
    plan: Callable[[], list[bytes]]
    interval: float
    stop: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    answers: list[bytes] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Drippers:
        for index in range(self.count):
            thread = threading.Thread(target=self._run, name=f"drip-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                sock = socket.create_connection((LOOPBACK, self.port), timeout=2.0)
            except OSError:
                self.stop.wait(0.05)
                continue
            with self._lock:
                self.connections += 1
            try:
                self._drip(sock)
            finally:
                sock.close()

    def _drip(self, sock: socket.socket) -> None:
        for piece in self.plan():
            try:
                sock.sendall(piece)
            except OSError:
                break
            if self.stop.wait(self.interval):
                return
            if _readable(sock):  # the server answered (or closed): note it, start again
                break
        try:
            sock.settimeout(0.5)
            answer = sock.recv(4096)
        except OSError:
            answer = b""
        with self._lock:
            self.answers.append(answer)

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


def _readable(sock: socket.socket) -> bool:
    sock.settimeout(0.0)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(2.0)
    return True  # bytes to read, or b"" for a closed connection


@dataclass
class Probe:
    """What a well-behaved client got: (target, status, seconds) per request."""

    results: list[tuple[str, int, float]] = field(default_factory=list)

    def run(self, port: int, targets: list[str], seconds: float, pause: float = 0.1) -> Probe:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            for target in targets:
                started = time.monotonic()
                try:
                    status = http_request(port, "GET", target, timeout=5.0).status
                except OSError:
                    status = 0
                self.results.append((target, status, time.monotonic() - started))
            time.sleep(pause)
        return self

    def failures(self, slower_than: float) -> list[tuple[str, int, float]]:
        return [r for r in self.results if r[1] != 200 or r[2] >= slower_than]


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes (a reset counts as the end), or
    until `within` seconds pass without a byte."""
    sock.settimeout(within)
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not piece:
            return data
        data += piece


@dataclass
class DripAttack:
    """What a well-behaved client got while 40 connections dripped request heads and
    40 dripped declared bodies, and how many connections each group opened."""

    probe: Probe
    head_connections: int
    body_connections: int


def probe_under_drip(port: int, token: str, seconds: float) -> DripAttack:
    heads = Drippers(port, 40, head_drip_plan, interval=1.0).start()
    bodies = Drippers(port, 40, lambda: body_drip_plan(f"/api/echo/{token}"), interval=1.0)
    bodies.start()
    try:
        probe = Probe().run(port, ["/healthz", f"/items/{token}"], seconds=seconds, pause=0.1)
    finally:
        heads.close()
        bodies.close()
    return DripAttack(probe, heads.connections, bodies.connections)
