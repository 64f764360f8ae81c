#!/usr/bin/env python3
"""`make bench`: the same workload against the users stub directly, through a plain
Flask + httpx passthrough (the baseline) and through the gateway, in one run.

Every target serves `GET` of one seeded user from the same users stub:

    direct        the stub itself:               GET /users/<id>
    passthrough   loadtests/passthrough.py:      GET /users/<id>
    none          gateway, public route:         GET /api/v1/users/<id>
    jwt           + RS256 JWT (public_key_file, verified-token cache at its default)
    jwt+redis     + a rate limit on Redis (moving window, a limit never reached)
    all           + roles, API keys, CORS, header versions (a deprecated version)
    compose       gateway, public route as `none`, composing 3 parts: one JSON object
                  {users_a, users_b, users_c} from 3 concurrent calls of GET /users/<id>,
                  one upstream each (all three the same stub)
    cached        `all` + a response cache on the route (ttl 60 s, scope identity,
                  memory://): measured on cache hits only (see below)
    all@1000      `all` with 1,000 routes in the table (`all` has 10)
    all@10000     `all` with 10,000 routes

and the same on a near-free upstream, a static server answering every GET with a fixed
user-sized JSON body (nginx when installed, else loadtests/static_upstream.py), so that
the upstream's cost does not hide the gateway's:

    static-direct       the static server itself:      GET /users/<id>
    static-passthrough  the passthrough in front of it: GET /users/<id>
    static-all          `all` in front of it:           GET /api/v1/users/<id>
                        (only when `all` is one of the variants)
    static-cached       `cached` in front of it:        GET /api/v1/users/<id>
                        (only when `cached` is one of the variants)
    static-all-threaded `all` in front of it on gunicorn's threaded worker
                        (GatewayThreadWorker) instead of the event-loop one

The ratios of a static target are taken against static-direct and static-passthrough.
A cache hit's CPU per request is compared with a forwarded request's under the same
policies: static-cached against static-all, the median of the per-round ratios; and
the event-loop worker's with the threaded worker's: static-all against
static-all-threaded.

The goals (docs/perf/README.md): 1. every policy on, CPU per request at most 1.0x the
passthrough's (moonshot 0.77x), static-all against static-passthrough; 2. every
policy on, added p50 at concurrency 1 at most the passthrough's; 3. from 10 to 10,000
routes, requests/s within 5 %, under 80 MiB per worker and start-up under 2 s; 4. the
event-loop worker costs at most 5 % of goal 1's ratio over the threaded worker; and a
cache hit at most a third of the CPU of a forwarded request.

Each target gets the same request bytes apart from the path (Authorization, Origin,
Accept-Version on all of them). Two measurements per target:

- latency at concurrency 1: N sequential requests on one keep-alive connection, in
  turns of 100 per target (the targets take turns in an order rotated per turn; the
  first 10 requests of a turn are not counted), p50 and p99;
- throughput at concurrency C: a closed loop of C keep-alive connections for a fixed
  time, in rounds; each round runs every target once, in an order rotated per round,
  so drift of the machine hits all of them. Ratios are taken per round, then the
  median over the rounds. One request in 50 asks for `Connection: close` and its
  connection is opened again: gunicorn's workers accept connections unevenly, and a
  closed loop that never reconnects can leave one worker with all of them. Around
  each run, the user+system CPU time of the target's server processes (the master and
  its workers, from /proc) gives its CPU microseconds per request; for `direct` and
  `static-direct` that is the upstream's own.

`compose` is reported besides the goals, not as one: its p50 at concurrency 1 against
three times direct's, what a client making the three calls one after the other would
wait (its own round trips not even counted). Its parts are required, so a part that
fails makes the whole answer fail and counts as an error; its first answer must be
whole (no `Gateway-Partial`) with exactly the three members, or the bench stops.

`cached` and `static-cached` measure cache hits, and the bench stops rather than
report misses: the second of two requests on one connection (one worker) must carry
`Cache-Status: gateway; hit`, and in every measured run the gateway's own count of
cache lookups (from /metrics, around the run) must show hits for at least 99% of the
requests and anything else for at most 1% of the lookups (a kept answer that expires
during a run is fetched again, once per worker).

The load generator is wrk when it is installed (it costs far less CPU than the servers
it measures), else a small asyncio client in this file. Gateway and passthrough run
with the same gunicorn workers and threads. Every server listens on 127.0.0.1 on a
free port, is started by this script and stopped by its PID.

    .venv/bin/python loadtests/bench.py            # about 3 minutes
    .venv/bin/python loadtests/bench.py --quick    # about a minute

It prints one table and writes the whole result as JSON to
loadtests/results/bench-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results"
PASSTHROUGH = ROOT / "loadtests" / "passthrough.py"
LOOPBACK = "127.0.0.1"

ISSUER = "https://issuer.bench.invalid"
AUDIENCE = "gateway"
ORIGIN = "http://localhost:3000"
API_KEY = "bench-service-key"
POLICY_VARIANTS = ("none", "jwt", "jwt+redis", "all", "compose", "cached")
REDIS_VARIANTS = ("jwt+redis", "all", "cached")  # the variants with a rate limit on Redis
EVERY_POLICY = ("all", "cached")  # the variants with every policy on
BENCH_ROUTE = "bench.users.get"  # the benchmarked route's name
CACHE_TTL = 60  # `cached`: seconds a kept answer stays fresh (at most: see README)
CACHE_MISS_SHARE = 0.01  # `cached`: the share of a measured run that may not be hits
COMPOSE_PARTS = ("users_a", "users_b", "users_c")  # part names = their upstreams' names
PARTIAL_HEADER = "Gateway-Partial"  # gateway/composer.py: an optional part failed
LATENCY_BLOCK = 100  # sequential requests per target and turn at concurrency 1
LATENCY_SKIP = 10  # requests not counted at the start of each turn
REDIS_LIMIT = "1000000/minute"  # never reached: every request pays for the check alone

# The goals, checked against the figures of this run (docs/perf/README.md).
GOAL_CPU_MOONSHOT = 0.77  # static-all: 1.3x as efficient as the passthrough
GOAL_SLOW_CLIENT_COST = 0.05  # the event-loop worker's CPU ratio over the threaded one's
THREADED_TARGET = "static-all-threaded"
# Tracing's cost: `all` on the near-free upstream, sending its spans to a sink in this
# process (a collector that answers at once), at two sample ratios.
TRACED_TARGETS = (("static-all-traced", 1.0), ("static-all-traced-1pct", 0.01))
GOAL_TRACING_COST = 0.05  # at sample_ratio 0.01: CPU per request at most 5 % over static-all
THREAD_WORKER_CLASS = "gateway.workers.GatewayThreadWorker"
GOAL_ROUTES_SPREAD = 0.05  # requests/s within 5% from 10 to 10,000 routes
GOAL_RSS_MIB = 80.0  # resident memory per worker
GOAL_STARTUP_S = 2.0  # start-up with 10,000 routes, to the first /healthz answer
GOAL_CPU_RATIO = 1.0  # static-all: CPU per request at most 1.0x the static passthrough's
GOAL_CACHE_HIT_CPU_RATIO = 0.333  # static-cached: at most a third of static-all's CPU/request

STATIC_UPSTREAM = ROOT / "loadtests" / "static_upstream.py"
STATIC_SERVERS = ("auto", "nginx", "python")


class BenchError(Exception):
    """The bench cannot go on; the message says why."""


# -- HTTP/1.1 responses ------------------------------------------------------------------


def parse_response(buf: bytes | bytearray, start: int = 0) -> tuple[int, int, bool] | None:
    """One complete response at buf[start:]: (status, end offset, server closes), or None
    when more bytes are needed. Bodies are framed by Content-Length or chunked."""
    head_end = buf.find(b"\r\n\r\n", start)
    if head_end < 0:
        return None
    head = bytes(buf[start:head_end]).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = -1
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            close = "close" in value.lower()
    pos = head_end + 4
    if status in (204, 304) or 100 <= status < 200:
        return status, pos, close
    if chunked:
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", pos - 2)
                return (status, trailer_end + 4, close) if trailer_end >= 0 else None
            if len(buf) < pos + size + 2:
                return None
            pos += size + 2
    if length < 0:
        raise BenchError("a response without Content-Length or chunked framing")
    return (status, pos + length, close) if len(buf) >= pos + length else None


def build_request(path: str, port: int, headers: dict[str, str], close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Connection:
    """One blocking keep-alive connection for sequential requests."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf.clear()
        return sock

    def get(self) -> tuple[int, float]:
        """Send the request, read the whole response: (status, seconds)."""
        for attempt in (1, 2):
            if self.sock is None:
                self.sock = self._connect()
            started = time.perf_counter()
            try:
                self.sock.sendall(self.request)
                while True:
                    parsed = parse_response(self.buf)
                    if parsed is not None:
                        break
                    data = self.sock.recv(65536)
                    if not data:
                        raise ConnectionResetError("closed by the server")
                    self.buf += data
            except (ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed while idle: retry once on a
                # new one (the failed attempt is not measured).
                self.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            status, end, close = parsed
            del self.buf[:end]
            if close:
                self.close()
            return status, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- load generators -----------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, broken connections, timeouts
    cpu_s: float | None = None  # CPU seconds of the target's server processes meanwhile
    cache_lookups: dict[str, int] | None = None  # cached targets: the gateway's, by result

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_s is None or not self.requests:
            return None
        return self.cpu_s / self.requests * 1e6


class _LoadProtocol(asyncio.Protocol):
    def __init__(self, run: _PythonRun) -> None:
        self.run = run
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0
        self.closing = False
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.run.open.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.run.stop_at <= time.perf_counter():
            self.finished = True
            self.transport.close()
            return
        self.closing = self.run.next_closes()
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.run.close_request if self.closing else self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = parse_response(self.buf)
        if parsed is None:
            return
        status, end, close = parsed
        del self.buf[:end]
        self.run.record(status, time.perf_counter_ns() - self.sent_at)
        if close or self.closing:
            self.finished = True
            assert self.transport is not None
            self.transport.close()
            self.run.reconnect()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.open.discard(self)
        if not self.finished and time.perf_counter() < self.run.stop_at:
            self.run.errors += 1
            self.run.reconnect()


class _PythonRun:
    def __init__(
        self, port: int, request: bytes, close_request: bytes, close_every: int, seconds: float
    ) -> None:
        self.port = port
        self.request = request
        self.close_request = close_request
        self.close_every = close_every
        self.seconds = seconds
        self.stop_at = 0.0
        self.sent = 0
        self.latencies: list[int] = []
        self.errors = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.open: set[_LoadProtocol] = set()

    def next_closes(self) -> bool:
        self.sent += 1
        return self.close_every > 0 and self.sent % self.close_every == 0

    def record(self, status: int, nanoseconds: int) -> None:
        if time.perf_counter() <= self.stop_at:
            self.latencies.append(nanoseconds)
            if not 200 <= status < 400:
                self.errors += 1

    def reconnect(self) -> None:
        if time.perf_counter() < self.stop_at:
            task = asyncio.get_running_loop().create_task(self._open())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _LoadProtocol(self), LOOPBACK, self.port)
        except OSError:
            self.errors += 1

    async def main(self, connections: int) -> RunResult:
        started = time.perf_counter()
        self.stop_at = started + self.seconds
        for _ in range(connections):
            self.reconnect()
        await asyncio.sleep(self.seconds)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.05)
        for task in list(self.tasks):
            task.cancel()
        for protocol in list(self.open):  # still waiting for an answer: not counted
            protocol.finished = True
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.sleep(0)
        values = sorted(ns / 1e6 for ns in self.latencies)
        return RunResult(
            len(values), elapsed, percentile(values, 0.5), percentile(values, 0.99), self.errors
        )


def python_load(
    port: int, path: str, headers: dict[str, str], connections: int, seconds: float, close: int
) -> RunResult:
    run = _PythonRun(
        port,
        build_request(path, port, headers),
        build_request(path, port, headers, close=True),
        close,
        seconds,
    )
    return asyncio.run(run.main(connections))


WRK_SCRIPT = """\
local close_every = {close_every}
local sent = 0
local keep, bye
init = function(args)
  local headers = {headers}
  keep = wrk.format("GET", "{path}", headers)
  headers["Connection"] = "close"
  bye = wrk.format("GET", "{path}", headers)
end
request = function()
  sent = sent + 1
  if close_every > 0 and sent % close_every == 0 then return bye end
  return keep
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_load(
    wrk: str,
    workdir: Path,
    port: int,
    path: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    close: int,
) -> RunResult:
    table = {"Host": f"{LOOPBACK}:{port}", **headers}
    lua = "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in table.items()) + "}"
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT.format(close_every=close, headers=lua, path=path))
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
    argv += ["-s", str(script), f"http://{LOOPBACK}:{port}{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    data = json.loads(line[len("BENCH ") :])
    return RunResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["errors"],
    )


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    match = re.search(r"wrk\s+(\S+)", done.stdout + done.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process (all its threads) from /proc/<pid>/stat,
    in seconds; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3, the state
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident, shared pages included) and Pss (shared pages split) in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mib"] = int(line.split()[1]) / 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, head, body) of one request on a fresh connection."""
    return http_gets(port, path, headers)[0]


def http_gets(
    port: int, path: str, headers: dict[str, str] | None = None, count: int = 1
) -> list[tuple[int, str, str]]:
    """(status, head, body) of up to `count` requests one after the other on one fresh
    connection, so all to one server worker; the last asks to close it, and a server
    that closes it earlier ends the list there."""
    answers: list[tuple[int, str, str]] = []
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        buf = bytearray()
        for i in range(count):
            sock.sendall(build_request(path, port, headers or {}, close=i == count - 1))
            while (parsed := parse_response(buf)) is None:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("closed before the response was complete")
                buf += data
            status, end, close = parsed
            head, _, body = bytes(buf[:end]).partition(b"\r\n\r\n")
            del buf[:end]
            answers.append((status, head.decode("latin-1"), body.decode("utf-8", "replace")))
            if close:
                break
    return answers


@dataclasses.dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log: Path
    workers: int
    process: subprocess.Popen[bytes] | None = None
    startup_s: float = float("nan")
    worker_pids: list[int] = dataclasses.field(default_factory=list)

    def start(self, cwd: Path, env: dict[str, str], timeout: float = 60.0) -> Server:
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
            )
        deadline = started + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise BenchError(f"{self.name} exited with {code}:\n{self.tail()}")
            try:
                if http_get(self.port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise BenchError(f"{self.name}: no /healthz answer in {timeout} s:\n{self.tail()}")
            time.sleep(0.01)
        self.startup_s = time.perf_counter() - started
        # Every worker booted before any load: gunicorn forks them one after another.
        while len(self.worker_pids) < self.workers and time.perf_counter() < deadline:
            self.worker_pids = children_of(self.process.pid)
            time.sleep(0.02)
        return self

    def memory(self) -> dict[str, Any]:
        assert self.process is not None
        workers = [memory_mib(pid) for pid in children_of(self.process.pid)]
        rss = [w["rss_mib"] for w in workers if "rss_mib" in w]
        pss = [w["pss_mib"] for w in workers if "pss_mib" in w]
        return {
            "workers": len(workers),
            "rss_mib": [round(x, 1) for x in rss],
            "pss_mib": [round(x, 1) for x in pss],
            "max_rss_mib": round(max(rss), 1) if rss else None,
            "master_rss_mib": round(memory_mib(self.process.pid).get("rss_mib", 0.0), 1),
        }

    def cpu(self) -> tuple[float, list[int]]:
        """CPU seconds of the master and its workers, and the workers' PIDs: a worker
        that exits between two readings takes its CPU time with it."""
        assert self.process is not None
        workers = children_of(self.process.pid)
        total = 0.0
        for pid in [self.process.pid, *workers]:
            total += cpu_seconds(pid) or 0.0
        return total, workers

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the master (graceful), SIGKILL to it and its workers after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        pids = children_of(self.process.pid) or self.worker_pids
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in [self.process.pid, *pids]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(timeout=10)


# -- configurations ----------------------------------------------------------------------


def make_key(workdir: Path) -> tuple[Any, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = workdir / "jwt-public.pem"
    path.write_bytes(pem)
    return key, path


BENCH_TENANT = "acme"  # the demo users' tenant in the stub's seed


def mint_token(key: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "usr_bench",
        "iat": now,
        "exp": now + 4 * 3600,
        "role": ["admin"],
        "tenant_id": BENCH_TENANT,
    }
    return str(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"}))


def request_headers(token: str, agent: str) -> dict[str, str]:
    """What every benchmarked request carries (only the path differs between targets):
    a bearer token, an allowed Origin and a deprecated Accept-Version, so the
    variants' policies all have work to do."""
    return {
        "User-Agent": agent,
        "Accept": "application/json",
        "Authorization": f"Bearer {token}",
        "Origin": ORIGIN,
        "Accept-Version": "1",
    }


def users_stub(port: int, log: Path) -> Server:
    """The users stub (1 worker), not yet started."""
    stub_bin = Path(sys.executable).parent / "upstream-stub"
    argv = [str(stub_bin), "--service", "users", "--port", str(port)]
    return Server("users stub", argv, port, log, 1)


def first_user_id(stub_port: int) -> str:
    """The id of a seeded user of the bench token's tenant: the benchmarked GET reads
    it, and the stub shows a caller only its own tenant's users."""
    status, _, body = http_get(stub_port, "/users?limit=1", {"X-Tenant-Id": BENCH_TENANT})
    if status != 200:
        raise BenchError(f"the users stub answered {status} to GET /users?limit=1: {body}")
    return str(json.loads(body)["data"][0]["id"])


def static_body() -> bytes:
    """The static upstream's answer: the same bytes from nginx and from ours."""
    sys.path.insert(0, str(STATIC_UPSTREAM.parent))
    try:
        import static_upstream
    finally:
        sys.path.remove(str(STATIC_UPSTREAM.parent))
    return bytes(static_upstream.BODY)


def nginx_config(port: int, folder: Path) -> str:
    """nginx in the foreground, one worker, answering every GET with static_body(),
    its files (PID, logs, temporary folders) under `folder`."""
    body = static_body().decode()
    if any(c in body for c in "'$\\"):
        raise BenchError("the static body cannot go into nginx's return as it is")
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
{temp}
    server {{
        listen {LOOPBACK}:{port};
        default_type application/json;
        location / {{
            return 200 '{body}';
        }}
    }}
}}
"""


def _filler_route(i: int, auth: Any, **policies: Any) -> dict[str, Any]:
    """A route around the benchmarked one: literal, parameter and catch-all paths.

    Fillers carry the variant's `auth` and any further policies given (`roles`,
    `rate_limit`, `rate_limit_bucket`...); their upstream path defaults to their public
    path. The loader reads 10,000-route tables whose routes each carry every policy;
    the bench gives fillers `auth` alone, so its tables stay those of earlier runs."""
    kind = i % 3
    if kind == 0:
        path = f"/api/v1/svc{i:05d}/items"
    elif kind == 1:
        path = f"/api/v1/svc{i:05d}/items/{{item_id}}"
    else:
        path = f"/api/v2/svc{i:05d}/{{rest:path}}"
    return {
        "name": f"f{i}",
        "path": path,
        "methods": ["GET"],
        "upstream": "users",
        "auth": auth,
        **policies,
    }


def gateway_config(
    variant: str,
    routes: int,
    stub_url: str,
    key_file: Path,
    redis_url: str,
    strategy: str,
    bucket: str,
) -> dict[str, Any]:
    upstream = {"url": stub_url, "connect_timeout": 1.0, "timeout": 10.0, "retries": 1}
    # `compose`: one upstream per part, all the same stub, and no `users` (its fillers
    # point at the first part's upstream).
    names = COMPOSE_PARTS if variant == "compose" else ("users",)
    config: dict[str, Any] = {
        "version": 1,
        "gateway": {"trusted_proxies": 0},
        "upstreams": {name: dict(upstream) for name in names},
    }
    policies: dict[str, Any] = {"auth": "public"}
    if variant not in ("none", "compose"):
        config["auth"] = {
            "jwt": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["RS256"],
                "public_key_file": str(key_file),
                "leeway": 30,
                "roles_claim": "role",
            }
        }
        policies = {"auth": ["jwt"]}
    if variant in REDIS_VARIANTS:
        config["rate_limits"] = {
            "storage": redis_url,
            "strategy": strategy,
            # As routes.yaml: a failed or slow (over storage_timeout_ms, 50 ms) Redis call
            # lets the request through. The bench counts them from /metrics afterwards.
            "on_storage_error": "allow",
            "default": [],
        }
        policies.update(rate_limit=[REDIS_LIMIT], rate_limit_bucket=bucket)
    if variant in EVERY_POLICY:
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        config["auth"]["api_keys"] = {
            "header": "X-API-Key",
            "keys": [{"id": "bench", "sha256": digest, "roles": ["service"]}],
        }
        config["cors"] = {
            "allow_origins": [ORIGIN],
            "allow_credentials": True,
            "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type", "X-API-Key", "Accept-Version"],
            "expose_headers": ["X-Request-ID", "Link", "X-RateLimit-Limit"],
            "max_age": 600,
        }
        policies.update(auth=["jwt", "api_key"], roles=["admin", "member", "service"])
    if variant == "cached":
        # Each worker keeps its own copy: after its first request for the user, every
        # request is answered from it, after every policy ran.
        config["cache"] = {"storage": "memory://"}
    bench_route: dict[str, Any] = {
        "name": BENCH_ROUTE,
        "path": "/api/v1/users/{user_id}",
        "methods": ["GET"],
        "upstream": "users",
        **policies,
    }
    if variant == "compose":
        # Required parts (the default): a part that fails fails the whole answer, so a
        # partial answer can never pass for a measured one.
        del bench_route["upstream"]
        bench_route["compose"] = {
            "timeout": 10.0,
            "parts": {
                name: {"upstream": name, "path": "/users/{user_id}"} for name in COMPOSE_PARTS
            },
        }
    elif variant in EVERY_POLICY:
        bench_route["versions"] = {
            "header": "Accept-Version",
            "default": "2",
            "options": {
                "1": {
                    "upstream_path": "/users/{user_id}",
                    "deprecation": {
                        "since": "2026-01-01",
                        "sunset": "2099-06-30",
                        "successor": "/api/v1/users/{user_id}",
                    },
                },
                "2": {"upstream_path": "/users/{user_id}"},
            },
        }
    else:
        bench_route["upstream_path"] = "/users/{user_id}"
    if variant == "cached":
        bench_route["cache"] = {"ttl": CACHE_TTL, "scope": "identity"}
    fillers = [_filler_route(i, policies["auth"]) for i in range(routes - 1)]
    if variant == "compose":
        fillers = [{**f, "upstream": COMPOSE_PARTS[0]} for f in fillers]
    middle = len(fillers) // 2
    config["routes"] = [*fillers[:middle], bench_route, *fillers[middle:]]
    return config


def compose_problem(head: str, body: str) -> str | None:
    """What is wrong with a composed 200 answer, or None when it is whole and holds
    exactly the members COMPOSE_PARTS, each a JSON object."""
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == PARTIAL_HEADER.lower():
            return f"a partial answer ({PARTIAL_HEADER}: {value.strip()}): a part failed"
    try:
        data = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    if sorted(data) != sorted(COMPOSE_PARTS):
        return f"members {sorted(data)}, expected exactly {sorted(COMPOSE_PARTS)}"
    empty = [name for name in COMPOSE_PARTS if not isinstance(data[name], dict)]
    if empty:
        return f"parts {empty} are not JSON objects"
    return None


def cache_problem(head: str) -> str | None:
    """What shows an answer is not a hit of the gateway's cache, or None when its
    Cache-Status starts with `gateway; hit` (RFC 9211: the cache's name, then `hit`)."""
    values = [
        value.strip()
        for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])
        if name.strip().lower() == "cache-status"
    ]
    if not values:
        return "no Cache-Status: the answer did not come through the gateway's cache"
    status = ", ".join(values)
    first = [param.strip() for param in status.split(",", 1)[0].split(";")]
    if first[:2] != ["gateway", "hit"]:
        return f"not a cache hit (Cache-Status: {status})"
    return None


def metrics_cache_lookups(text: str, route: str) -> dict[str, int]:
    """gateway_cache_lookups_total of one route by result, from /metrics' text."""
    found: dict[str, int] = {}
    pattern = r"^gateway_cache_lookups_total\{([^}]*)\}\s+(\S+)"
    for labels, value in re.findall(pattern, text, re.M):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if named.get("route") == route and "result" in named:
            found[named["result"]] = found.get(named["result"], 0) + int(float(value))
    return found


def cache_round_problem(lookups: dict[str, int], requests: int) -> str | None:
    """What shows a measured run of a cached target was not one of cache hits, from
    the gateway's cache lookups by result during the run, or None: hits for at least
    99% of the requests counted, and anything else for at most 1% of the lookups (a
    kept answer that expires during a run is fetched again, once per worker)."""
    hits = lookups.get("hit", 0)
    total = sum(lookups.values())
    if hits >= (1 - CACHE_MISS_SHARE) * requests and total - hits <= CACHE_MISS_SHARE * total:
        return None
    others = {result: n for result, n in sorted(lookups.items()) if result != "hit" and n}
    return f"{hits} cache hits among {total} lookups for {requests} requests" + (
        f" (the others: {others})" if others else ""
    )


# -- the bench -----------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    name: str
    kind: str  # stub, passthrough, gateway
    variant: str | None
    routes: int | None
    server: Server
    path: str
    rounds: list[RunResult] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    checks: dict[str, Any] = dataclasses.field(default_factory=dict)
    upstream: str = "users"  # users (the stub) or static (the near-free upstream)


def redis_problem(url: str) -> str | None:
    try:
        import redis
    except ImportError:  # pragma: no cover - a dependency of the gateway
        return "the redis package is missing"
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{url} does not answer PING ({exc})"
    return None


def delete_counters(url: str, tag: str) -> int:
    """Delete this run's rate-limit counters (and nothing else) from Redis."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"*bench-{tag}-*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    except redis.RedisError:
        return 0
    finally:
        client.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run: 1 round of 1 s, 200 c1")
    p.add_argument("--duration", type=float, help="seconds per throughput run (default 3)")
    p.add_argument("--rounds", type=int, help="throughput rounds over all targets (default 5)")
    p.add_argument("--latency-requests", type=int, help="c1 requests per target (default 1000)")
    p.add_argument("--warmup", type=float, help="seconds of load per target before measuring")
    p.add_argument("--connections", type=int, default=int(env("BENCH_CONNECTIONS", "16")))
    p.add_argument("--workers", type=int, default=int(env("BENCH_WORKERS", "2")))
    p.add_argument("--threads", type=int, default=int(env("BENCH_THREADS", "8")))
    p.add_argument(
        "--close-every",
        type=int,
        default=int(env("BENCH_CLOSE_EVERY", "50")),
        help="every Nth request asks for Connection: close and that connection is opened "
        "again, so the connections spread over the workers (0: never; default 50)",
    )
    p.add_argument(
        "--variants",
        default=env("BENCH_VARIANTS", ",".join(POLICY_VARIANTS)),
        help="gateway policy variants, comma-separated (default "
        "none,jwt,jwt+redis,all,compose,cached)",
    )
    p.add_argument(
        "--routes",
        default=env("BENCH_ROUTES"),
        help="route-table sizes; the first is used by every policy variant (default "
        "10,1000,10000; 10,1000 with --quick)",
    )
    p.add_argument(
        "--sweep-variant",
        default=env("BENCH_SWEEP_VARIANT", "all"),
        help="policy variant of the larger route tables (default all)",
    )
    p.add_argument("--redis-url", default=env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--strategy", default=env("BENCH_STRATEGY", "moving-window"))
    p.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default=env("BENCH_GENERATOR", "auto"),
        help="load generator for throughput: wrk when installed (auto), or the Python one",
    )
    p.add_argument(
        "--static-server",
        choices=STATIC_SERVERS,
        default=env("BENCH_STATIC_SERVER", "auto"),
        help="the near-free upstream of the static-* targets: nginx when installed (auto), "
        "or loadtests/static_upstream.py (python)",
    )
    p.add_argument("--out", type=Path, default=Path(env("BENCH_OUT", str(RESULTS))))
    p.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    args = p.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 3.0)
    args.rounds = args.rounds or (1 if quick else 5)
    args.latency_requests = args.latency_requests or (200 if quick else 1000)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    routes = args.routes or ("10,1000" if quick else "10,1000,10000")
    args.routes = [int(n) for n in routes.split(",") if n.strip()]
    for variant in [*args.variants, args.sweep_variant]:
        if variant not in POLICY_VARIANTS:
            p.error(f"unknown variant {variant!r}; expected one of {', '.join(POLICY_VARIANTS)}")
    if not args.routes or min(args.routes) < 1:
        p.error("--routes needs sizes of 1 or more")
    return args


class TraceSink:
    """An OTLP/HTTP endpoint that takes every export at once and keeps nothing: the
    traced targets pay for making and sending their spans, not for a slow collector.
    Served by a thread of this process, whose CPU is not any target's."""

    def __init__(self) -> None:
        self.exports = 0  # batches received: 0 after a traced run would mean no tracing
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.exports += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.tag = uuid.uuid4().hex[:10]
        self.targets: list[Target] = []
        self.servers: list[Server] = []
        self.loadavg = os.getloadavg()
        self.headers: dict[str, str] = {}
        self.generator = "python"
        self.wrk: str | None = None
        bin_dir = Path(sys.executable).parent
        self.static_server = ""  # what serves the static-* targets, for the JSON
        self.gateway_bin = str(bin_dir / "gateway")
        self.stub_bin = str(bin_dir / "upstream-stub")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in ("GATEWAY_CONFIG", "RATE_LIMIT_STORAGE", "USERS_URL", "PROMETHEUS_MULTIPROC_DIR")
        }
        self.env["PYTHONUNBUFFERED"] = "1"
        self.trace_sink: TraceSink | None = None

    def say(self, text: str) -> None:
        print(f"bench: {text}", flush=True)

    # -- set-up

    def choose_generator(self) -> None:
        wanted = self.args.generator
        found = shutil.which("wrk")
        if wanted == "wrk" and not found:
            raise BenchError("--generator wrk, but wrk is not installed")
        if wanted in ("auto", "wrk") and found:
            self.wrk = found
            self.generator = wrk_version(found)
        else:
            self.generator = "python (asyncio, in the bench process)"

    def server(
        self,
        name: str,
        argv: list[str],
        port: int,
        workers: int,
        env: dict[str, str] | None = None,
    ) -> Server:
        log = self.workdir / f"{re.sub(r'[^A-Za-z0-9.-]', '_', name)}.log"
        server = Server(name, argv, port, log, workers)
        self.servers.append(server)
        server.start(self.workdir, {**self.env, **(env or {})})
        self.say(f"started {name} on port {port} in {server.startup_s:.2f} s")
        return server

    def setup(self) -> None:
        a = self.args
        needs_redis = any(v in REDIS_VARIANTS for v in a.variants) or (
            len(a.routes) > 1 and a.sweep_variant in REDIS_VARIANTS
        )
        if needs_redis and (problem := redis_problem(a.redis_url)):
            raise BenchError(
                f"the Redis variants need Redis: {problem}. Start one, set --redis-url "
                "(BENCH_REDIS_URL), or leave them out with --variants none,jwt and "
                "--sweep-variant none."
            )
        self.choose_generator()
        key, key_file = make_key(self.workdir)
        token = mint_token(key)
        self.headers = request_headers(token, "gateway-bench")
        stub_port = free_port()
        stub = self.server(
            "users stub",
            [self.stub_bin, "--service", "users", "--port", str(stub_port)],
            stub_port,
            1,
        )
        user_id = first_user_id(stub_port)
        stub_url = f"http://{LOOPBACK}:{stub_port}"
        self.targets.append(Target("direct", "stub", None, None, stub, f"/users/{user_id}"))

        self.passthrough("passthrough", stub_url, f"/users/{user_id}")

        plans = [(v, a.routes[0], v) for v in a.variants]
        plans += [(a.sweep_variant, n, f"{a.sweep_variant}@{n}") for n in a.routes[1:]]
        for variant, routes, name in plans:
            self.gateway(name, variant, routes, stub_url, key_file, f"/api/v1/users/{user_id}")

        # The same on a near-free upstream (the path is the stub's, for the same bytes).
        static = self.start_static()
        static_url = f"http://{LOOPBACK}:{static.port}"
        self.targets.append(
            Target("static-direct", "static", None, None, static, f"/users/{user_id}")
        )
        self.targets[-1].upstream = "static"
        self.passthrough("static-passthrough", static_url, f"/users/{user_id}", "static")
        path = f"/api/v1/users/{user_id}"
        for variant in EVERY_POLICY:
            if variant in a.variants:
                name = f"static-{variant}"
                self.gateway(name, variant, a.routes[0], static_url, key_file, path, "static")
        if "all" in a.variants:
            # Goal 4: what the event-loop worker's slow-client resistance costs, against
            # gunicorn's threaded worker with the same policies in the same rounds.
            self.gateway(
                THREADED_TARGET,
                "all",
                a.routes[0],
                static_url,
                key_file,
                path,
                "static",
                worker_class=THREAD_WORKER_CLASS,
            )
            self.trace_sink = TraceSink()
            for name, ratio in TRACED_TARGETS:
                traced = {"otlp_endpoint": self.trace_sink.url, "sample_ratio": ratio}
                self.gateway(
                    name, "all", a.routes[0], static_url, key_file, path, "static", tracing=traced
                )
        for target in self.targets:
            self.check(target)

    def passthrough(self, name: str, upstream_url: str, path: str, upstream: str = "users") -> None:
        a = self.args
        port = free_port()
        argv = [sys.executable, str(PASSTHROUGH), "--upstream", upstream_url, "--port", str(port)]
        argv += ["--workers", str(a.workers), "--threads", str(a.threads)]
        server = self.server(name, argv, port, a.workers)
        self.targets.append(
            Target(name, "passthrough", None, None, server, path, upstream=upstream)
        )

    def gateway(
        self,
        name: str,
        variant: str,
        routes: int,
        upstream_url: str,
        key_file: Path,
        path: str,
        upstream: str = "users",
        worker_class: str | None = None,
        tracing: dict[str, Any] | None = None,
    ) -> None:
        a = self.args
        bucket = f"bench-{self.tag}-{re.sub(r'[^A-Za-z0-9]', '', name)}"
        config = gateway_config(
            variant, routes, upstream_url, key_file, a.redis_url, a.strategy, bucket
        )
        if tracing is not None:
            config["tracing"] = tracing
        config_file = self.workdir / f"gateway-{re.sub(r'[^A-Za-z0-9]', '_', name)}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        argv = [self.gateway_bin, "serve", "-c", str(config_file), "--host", LOOPBACK]
        argv += ["--port", str(port), "--workers", str(a.workers), "--threads", str(a.threads)]
        env = {"GATEWAY_WORKER_CLASS": worker_class} if worker_class else None
        server = self.server(f"gateway {name} ({routes} routes)", argv, port, a.workers, env)
        self.targets.append(
            Target(name, "gateway", variant, routes, server, path, upstream=upstream)
        )

    def start_static(self) -> Server:
        """The near-free upstream: nginx (one worker) when installed and not refused
        by --static-server, else loadtests/static_upstream.py (one process)."""
        wanted = self.args.static_server
        nginx = shutil.which("nginx")
        if wanted == "nginx" and not nginx:
            raise BenchError("--static-server nginx, but nginx is not installed")
        port = free_port()
        if nginx and wanted in ("auto", "nginx"):
            folder = self.workdir / "nginx"
            folder.mkdir(exist_ok=True)
            config = folder / "nginx.conf"
            config.write_text(nginx_config(port, folder))
            done = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
            self.static_server = (done.stderr.strip() or "nginx").replace("nginx version: ", "")
            argv = [nginx, "-p", str(folder), "-c", str(config)]
            return self.server("static upstream (nginx)", argv, port, 1)
        self.static_server = "static_upstream.py"
        argv = [sys.executable, str(STATIC_UPSTREAM), "--port", str(port)]
        return self.server("static upstream (python)", argv, port, 0)

    def check(self, target: Target, attempts: int = 3) -> None:
        """One request first: 200, and the headers that show the policies ran (a few
        tries, as a busy machine can make the first Redis call miss its deadline). A
        composed answer must be whole (no `Gateway-Partial`) and hold exactly the three
        parts: the figures of a partial one would be meaningless. A cached target gets
        two requests on one connection (one worker): the second, checked, must be a hit
        of the gateway's cache, as the figures of misses would be meaningless too."""
        for attempt in range(1, attempts + 1):
            count = 2 if target.variant == "cached" else 1
            answers = http_gets(target.server.port, target.path, self.headers, count)
            status, head, body = answers[-1]
            names = {line.split(":", 1)[0].strip().lower() for line in head.split("\r\n")[1:]}
            checks: dict[str, Any] = {"status": status}
            if target.variant in REDIS_VARIANTS:
                checks["rate_limit_headers"] = "x-ratelimit-limit" in names
            if target.variant in EVERY_POLICY:
                checks["cors"] = "access-control-allow-origin" in names
                checks["deprecation"] = "deprecation" in names
            problem = None
            if target.variant == "compose" and status == 200:
                problem = compose_problem(head, body)
                checks["whole_answer"] = PARTIAL_HEADER.lower() not in names
                checks["parts"] = problem is None
            if target.variant == "cached" and status == 200:
                problem = cache_problem(head)
                checks["cache_hit"] = problem is None
            failed = [k for k, v in checks.items() if v is False]
            if status == 200 and not failed:
                target.checks = checks
                return
            if attempt == attempts:
                if problem is not None and target.variant == "cached":
                    raise BenchError(
                        f"{target.name}: GET {target.path}, twice on one connection: the "
                        f"second answer is {problem}; the figures of cache misses would be "
                        f"meaningless:\n{head}\n{body[:500]}"
                    )
                if problem is not None:
                    raise BenchError(
                        f"{target.name}: GET {target.path}: {problem}; the figures of a "
                        f"partial or malformed composed answer would be meaningless:\n"
                        f"{head}\n{body[:500]}"
                    )
                raise BenchError(
                    f"{target.name}: GET {target.path} answered {status}, without "
                    f"{failed or 'nothing'}:\n{head}\n{body[:500]}"
                )
            time.sleep(0.5)

    def storage_errors(self, target: Target) -> int | None:
        """gateway_ratelimit_storage_errors_total from the gateway's /metrics."""
        if target.kind != "gateway":
            return None
        try:
            status, _, body = http_get(target.server.port, "/metrics")
        except OSError:
            return None
        match = re.search(r"^gateway_ratelimit_storage_errors_total\s+(\S+)", body, re.M)
        return int(float(match.group(1))) if status == 200 and match else 0

    # -- measurements

    def load(self, target: Target, seconds: float) -> RunResult:
        a = self.args
        port = target.server.port
        if self.wrk is not None:
            return wrk_load(
                self.wrk,
                self.workdir,
                port,
                target.path,
                self.headers,
                a.connections,
                seconds,
                a.close_every,
            )
        return python_load(port, target.path, self.headers, a.connections, seconds, a.close_every)

    def warm_up(self) -> None:
        self.say(f"warming up every target ({self.args.warmup} s of load each)")
        for target in self.targets:
            if self.args.warmup > 0:
                self.load(target, self.args.warmup)

    def latency(self) -> None:
        """Concurrency 1: blocks of LATENCY_BLOCK sequential requests per target, the
        targets taking turns (in an order rotated per turn) until each has N. The first
        requests of a block, on a process that sat idle while the others ran, are not
        counted."""
        n = self.args.latency_requests
        self.say(f"latency at concurrency 1: {n} sequential requests per target, in turns")
        conns = [
            Connection(t.server.port, build_request(t.path, t.server.port, self.headers))
            for t in self.targets
        ]
        try:
            turn = 0
            while any(len(t.latencies) < n for t in self.targets):
                shift = turn % len(self.targets)
                for index in [*range(shift, len(conns)), *range(shift)]:
                    target, conn = self.targets[index], conns[index]
                    block = min(LATENCY_BLOCK, n - len(target.latencies))
                    for i in range(LATENCY_SKIP + block):
                        status, seconds = conn.get()
                        if status != 200:
                            raise BenchError(f"{target.name} answered {status}")
                        if i >= LATENCY_SKIP:
                            target.latencies.append(seconds * 1000)
                turn += 1
        finally:
            for conn in conns:
                conn.close()

    def throughput(self) -> None:
        a = self.args
        self.say(
            f"throughput: {a.rounds} round(s) x {len(self.targets)} targets x {a.duration} s, "
            f"{a.connections} connections, {self.generator}"
        )
        for r in range(a.rounds):
            shift = r % len(self.targets)
            for target in self.targets[shift:] + self.targets[:shift]:
                result = self.measured_load(target, a.duration)
                target.rounds.append(result)
                self.say(
                    f"  round {r + 1}/{a.rounds} {target.name:<18} {result.rps:8.0f} req/s  "
                    f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                    f"CPU {_fmt(result.cpu_us_per_request, '.0f')} µs/req"
                    + (f"  ERRORS {result.errors}" if result.errors else "")
                )
                time.sleep(0.2)

    def measured_load(self, target: Target, seconds: float) -> RunResult:
        """One throughput run, with the CPU time its server processes spent meanwhile.
        The bench never reloads a server (no --watch, no SIGHUP, no max_requests), so
        its workers stay; one that went (and took its CPU time with it) stops the bench
        rather than make the figure undercount."""
        lookups = self.cache_lookups(target) if target.variant == "cached" else None
        before, workers = target.server.cpu()
        result = self.load(target, seconds)
        after, workers_after = target.server.cpu()
        if workers_after != workers:
            raise BenchError(
                f"{target.name}: its workers changed during a run ({workers} -> "
                f"{workers_after}); the CPU per request would be wrong:\n{target.server.tail()}"
            )
        result.cpu_s = after - before
        if lookups is not None:
            # Read outside the CPU window: /metrics costs the gateway more than a hit.
            now = self.cache_lookups(target)
            result.cache_lookups = {
                kind: now.get(kind, 0) - lookups.get(kind, 0)
                for kind in sorted({"hit", *now, *lookups})
                if kind == "hit" or now.get(kind, 0) != lookups.get(kind, 0)
            }
            problem = cache_round_problem(result.cache_lookups, result.requests)
            if problem is not None:
                raise BenchError(
                    f"{target.name}: {problem} in a measured run; the CPU per request of "
                    f"cache misses would be meaningless:\n{target.server.tail()}"
                )
        return result

    def cache_lookups(self, target: Target) -> dict[str, int]:
        """The benchmarked route's cache lookups by result, every worker's, from the
        gateway's /metrics."""
        status, _, body = http_get(target.server.port, "/metrics")
        if status != 200:
            raise BenchError(f"{target.name}: /metrics answered {status}: {body[:500]}")
        return metrics_cache_lookups(body, BENCH_ROUTE)

    # -- results

    def by_name(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def ratio(self, target: Target, base: Target | None) -> float | None:
        """Median over the rounds of target rps / base rps in the same round."""
        if base is None or not base.rounds or not target.rounds:
            return None
        return statistics.median(
            t.rps / b.rps for t, b in zip(target.rounds, base.rounds, strict=True) if b.rps
        )

    def cpu_ratio(self, target: Target, base: Target | None) -> float | None:
        """Median over the rounds of target CPU/request over base's in the same round."""
        if base is None:
            return None
        pairs = [
            (t.cpu_us_per_request, b.cpu_us_per_request)
            for t, b in zip(target.rounds, base.rounds, strict=True)
        ]
        ratios = [t / b for t, b in pairs if t is not None and b]
        return statistics.median(ratios) if ratios else None

    def bases(self, target: Target) -> tuple[Target | None, Target | None]:
        """The direct and passthrough targets on the same upstream as `target`."""
        if target.upstream == "static":
            return self.by_name("static-direct"), self.by_name("static-passthrough")
        return self.by_name("direct"), self.by_name("passthrough")

    def summary(self, started: float) -> dict[str, Any]:
        a = self.args
        users_direct = self.by_name("direct")
        assert users_direct is not None
        users_direct_c1 = sorted(users_direct.latencies)
        rows = []
        for t in self.targets:
            direct, passthrough = self.bases(t)
            assert direct is not None
            direct_c1 = sorted(direct.latencies)
            lat = sorted(t.latencies)
            rps = [r.rps for r in t.rounds]
            cpu = [c for c in (r.cpu_us_per_request for r in t.rounds) if c is not None]
            if t.kind in ("stub", "static"):
                pid = (t.server.worker_pids or [t.server.process.pid if t.server.process else 0])[0]
                memory: dict[str, Any] = {"max_rss_mib": round(memory_mib(pid)["rss_mib"], 1)}
            else:
                memory = t.server.memory()
            rows.append(
                {
                    "name": t.name,
                    "kind": t.kind,
                    "variant": t.variant,
                    "routes": t.routes,
                    "path": t.path,
                    "upstream": t.upstream,
                    "throughput": {
                        "rps": round(statistics.median(rps), 1),
                        "p50_ms": round(statistics.median(r.p50_ms for r in t.rounds), 3),
                        "p99_ms": round(statistics.median(r.p99_ms for r in t.rounds), 3),
                        "errors": sum(r.errors for r in t.rounds),
                        "cpu_us_per_request": round(statistics.median(cpu), 1) if cpu else None,
                        "rounds": [
                            {
                                "rps": round(r.rps, 1),
                                "requests": r.requests,
                                "seconds": round(r.seconds, 3),
                                "p50_ms": round(r.p50_ms, 3),
                                "p99_ms": round(r.p99_ms, 3),
                                "errors": r.errors,
                                "cpu_s": _round(r.cpu_s, 3),
                                "cpu_us_per_request": _round(r.cpu_us_per_request, 1),
                            }
                            | (
                                {}
                                if r.cache_lookups is None
                                else {"cache_lookups": r.cache_lookups}
                            )
                            for r in t.rounds
                        ],
                    },
                    "ratio_vs_direct": _round(self.ratio(t, direct), 3),
                    "ratio_vs_passthrough": _round(self.ratio(t, passthrough), 3),
                    "ratio_cpu_vs_passthrough": _round(self.cpu_ratio(t, passthrough), 3),
                    "latency_c1": {
                        "requests": len(lat),
                        "p50_ms": round(percentile(lat, 0.5), 3),
                        "p99_ms": round(percentile(lat, 0.99), 3),
                        "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
                        "added_p50_ms": round(percentile(lat, 0.5) - percentile(direct_c1, 0.5), 3),
                    },
                    "startup_s": round(t.server.startup_s, 3),
                    "memory": memory,
                    "checks": t.checks,
                    "ratelimit_storage_errors": self.storage_errors(t),
                    "cache_lookups": cache_lookups_sum(t.rounds),
                }
            )
            if t.variant == "compose":
                rows[-1]["compose"] = compose_figures(
                    percentile(lat, 0.5), percentile(users_direct_c1, 0.5)
                )
        return {
            "bench": "gateway",
            "schema": 1,
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - started, 1),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_at_start": [round(x, 2) for x in self.loadavg],
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_generator": self.generator,
                "static_server": self.static_server,
                "clock_ticks_per_s": os.sysconf("SC_CLK_TCK"),
            },
            "settings": {
                "quick": a.quick,
                "workers": a.workers,
                "threads": a.threads,
                "connections": a.connections,
                "duration_s": a.duration,
                "rounds": a.rounds,
                "latency_requests": a.latency_requests,
                "warmup_s": a.warmup,
                "close_every": a.close_every,
                "variants": a.variants,
                "routes": a.routes,
                "sweep_variant": a.sweep_variant,
                "redis_url": a.redis_url,
                "rate_limit": REDIS_LIMIT,
                "strategy": a.strategy,
                "stub_threads": 8,
                "static_server": a.static_server,
            },
            "targets": rows,
            "goals": self.goals(rows),
        }

    def goals(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The issue's goals, each with this run's value and a line for the table."""
        a = self.args
        by_name = {row["name"]: row for row in rows}
        goals: list[dict[str, Any]] = []

        def goal(
            name: str, goal: str, value: float, limit: float, ok: bool, text: str, **extra: Any
        ) -> None:
            goals.append(
                {"name": name, "goal": goal, "value": round(value, 3), "limit": limit}
                | {"met": ok, "text": text}
                | extra
            )

        static_all, static_pass = by_name.get("static-all"), by_name.get("static-passthrough")
        if static_all is not None and static_pass is not None:
            ratio = static_all["ratio_cpu_vs_passthrough"]
            mine = static_all["throughput"]["cpu_us_per_request"]
            theirs = static_pass["throughput"]["cpu_us_per_request"]
            if ratio is not None and mine is not None and theirs is not None:
                goal(
                    "all_cpu_vs_passthrough",
                    "1. every policy on, on the near-free upstream: CPU per request at most "
                    "1.0x the passthrough's, moonshot 0.77x (value: median of the per-round "
                    "ratios)",
                    ratio,
                    GOAL_CPU_RATIO,
                    ratio <= GOAL_CPU_RATIO,
                    cpu_line("static-all", ratio, mine, theirs),
                    moonshot=GOAL_CPU_MOONSHOT,
                    moonshot_met=ratio <= GOAL_CPU_MOONSHOT,
                )
        pair = next(
            (
                (by_name[g], by_name[p])
                for g, p in (("static-all", "static-passthrough"), ("all", "passthrough"))
                if g in by_name and p in by_name
            ),
            None,
        )
        if pair is not None:
            gateway_row, passthrough_row = pair
            added = gateway_row["latency_c1"]["added_p50_ms"]
            theirs_added = passthrough_row["latency_c1"]["added_p50_ms"]
            if added is not None and theirs_added is not None:
                goal(
                    "all_added_p50_vs_passthrough_c1",
                    "2. every policy on: added p50 over direct at concurrency 1 at most the "
                    "passthrough's (value: the gateway's added p50 in ms; limit: the "
                    "passthrough's)",
                    added,
                    round(theirs_added, 3),
                    added <= theirs_added,
                    f"{gateway_row['name']}: {added:+.3f} ms p50 over direct at concurrency 1 "
                    f"(goal <= the passthrough's {theirs_added:+.3f} ms)",
                )
        names = [
            a.sweep_variant if n == a.routes[0] else f"{a.sweep_variant}@{n}" for n in a.routes
        ]
        sweep = [t for t in (self.by_name(name) for name in names) if t is not None]
        if len(sweep) > 1 and sweep[0].routes == a.routes[0]:
            # Per round, like the other ratios: each table against the smallest one.
            ratios = [(self.ratio(t, sweep[0]) or 0.0, t) for t in sweep[1:]]
            worst, target = max(ratios, key=lambda pair: abs(pair[0] - 1))
            goal(
                "routes_rps_spread",
                f"requests/s within 5% from {a.routes[0]} to {max(a.routes)} routes (value: "
                "the table's requests/s over the smallest table's, furthest from 1)",
                worst,
                GOAL_ROUTES_SPREAD,
                abs(worst - 1) <= GOAL_ROUTES_SPREAD,
                f"{target.name}: {worst:.3f}x the requests/s of {sweep[0].name} with "
                f"{a.routes[0]} routes ({(worst - 1) * 100:+.1f}%; goal within 5%)",
            )
        # Goal 3 is about the route table: the traced targets load the tracing SDK.
        gateways = [
            row
            for row in rows
            if row["kind"] == "gateway" and not row["name"].startswith("static-all-traced")
        ]
        if gateways:
            top = max(gateways, key=lambda row: row["memory"]["max_rss_mib"] or 0.0)
            rss = top["memory"]["max_rss_mib"] or 0.0
            goal(
                "rss_per_worker_mib",
                "under 80 MiB resident per gateway worker (the largest of this run)",
                rss,
                GOAL_RSS_MIB,
                rss < GOAL_RSS_MIB,
                f"{top['name']}: {rss:.1f} MiB resident per worker, the largest (goal < 80)",
            )
            biggest = max(gateways, key=_routes)
            startup = biggest["startup_s"]
            goal(
                "startup_s_largest_table",
                f"start-up to the first /healthz answer with {biggest['routes']} routes under 2 s",
                startup,
                GOAL_STARTUP_S,
                startup < GOAL_STARTUP_S,
                f"{biggest['name']}: start-up in {startup:.2f} s with {biggest['routes']} "
                "routes (goal < 2 s)",
            )
        threaded = self.by_name(THREADED_TARGET)
        evented = self.by_name("static-all")
        if threaded and evented:
            cost = cpu_over(evented, threaded)
            if cost is not None:
                goal(
                    "slow_client_resistance_cost",
                    "4. the event-loop worker's slow-client resistance costs at most 5% of "
                    "goal 1's ratio (value: static-all's CPU ratio over the same policies' "
                    "on the threaded worker, minus 1; median of the per-round values)",
                    cost,
                    GOAL_SLOW_CLIENT_COST,
                    cost <= GOAL_SLOW_CLIENT_COST,
                    f"static-all: the event-loop worker costs {cost * 100:+.1f}% of goal 1's "
                    f"ratio against the threaded worker ({THREADED_TARGET}; goal <= +5%)",
                )
        sampled, every = self.by_name("static-all-traced-1pct"), self.by_name("static-all-traced")
        if sampled and evented:
            cost = cpu_over(sampled, evented)
            full = cpu_over(every, evented) if every else None
            if cost is not None:
                also = f"; every request traced: {full * 100:+.1f}%" if full is not None else ""
                goal(
                    "tracing_cpu_cost_1pct",
                    "tracing at sample_ratio 0.01 costs under 5% of CPU per request (value: "
                    "static-all-traced-1pct's CPU per request over static-all's, minus 1; "
                    "median of the per-round values; every_request: the same at 1.0)",
                    cost,
                    GOAL_TRACING_COST,
                    cost < GOAL_TRACING_COST,
                    f"static-all-traced-1pct: tracing 1 % of requests costs {cost * 100:+.1f}% "
                    f"of CPU per request (goal < +5%{also})",
                    every_request=full,
                )
        cached, forwarded = self.by_name("static-cached"), self.by_name("static-all")
        hit = cache_hit_figures(cached, forwarded) if cached and forwarded else None
        if hit is not None:
            ratio = hit.pop("ratio")
            goal(
                "cache_hit_cpu_vs_forwarded",
                "a cache hit costs at most a third of the CPU of a forwarded request, both "
                "with every policy on, on the near-free upstream (value: median of the "
                "per-round ratios of CPU per request)",
                ratio,
                GOAL_CACHE_HIT_CPU_RATIO,
                ratio <= GOAL_CACHE_HIT_CPU_RATIO,
                cache_cpu_line(
                    hit["cached"],
                    hit["forwarded"],
                    ratio,
                    hit["cached_cpu_us_per_request"],
                    hit["forwarded_cpu_us_per_request"],
                ),
                **hit,
            )
        return goals


def cpu_over(evented: Target, threaded: Target) -> float | None:
    """Per round, one target's CPU per request over another's, minus 1; the median
    over the rounds where both ran. Goal 4: the event-loop gateway over the threaded
    one (goal 1's ratio over the threaded worker's: the passthrough cancels out);
    tracing's cost: a traced gateway over the same untraced."""
    costs = [
        e.cpu_us_per_request / t.cpu_us_per_request - 1
        for e, t in zip(evented.rounds, threaded.rounds, strict=True)
        if e.cpu_us_per_request and t.cpu_us_per_request
    ]
    return round(statistics.median(costs), 3) if costs else None


def cache_hit_figures(cached: Target, forwarded: Target) -> dict[str, Any] | None:
    """A cache hit's CPU per request against a forwarded request's, both with every
    policy on, from the same run: each target's median over its rounds (as in its row),
    and the median of the per-round ratios (the rounds interleave the two targets, so
    drift of the machine hits both). None without a round where both were measured."""
    pairs = [
        (c.cpu_us_per_request, f.cpu_us_per_request)
        for c, f in zip(cached.rounds, forwarded.rounds, strict=True)
    ]
    ratios = [c / f for c, f in pairs if c is not None and f]
    if not ratios:
        return None
    mine = [c for c, _ in pairs if c is not None]
    theirs = [f for _, f in pairs if f is not None]
    return {
        "cached": cached.name,
        "forwarded": forwarded.name,
        "cached_cpu_us_per_request": round(statistics.median(mine), 1),
        "forwarded_cpu_us_per_request": round(statistics.median(theirs), 1),
        "ratio": round(statistics.median(ratios), 3),
    }


def cache_cpu_line(cached: str, forwarded: str, ratio: float, mine: float, theirs: float) -> str:
    """The goal line of a cache hit's CPU per request against a forwarded request's."""
    return (
        f"{cached}: a cache hit costs {ratio:.3f}x the CPU per request of a forwarded one "
        f"({forwarded}; µs: {mine:.0f} against {theirs:.0f}; goal <= "
        f"{GOAL_CACHE_HIT_CPU_RATIO:.3f}x)"
    )


def cache_lookups_sum(rounds: Sequence[RunResult]) -> dict[str, int] | None:
    """A cached target's cache lookups by result over its measured runs; None for the
    other targets."""
    counted = [r.cache_lookups for r in rounds if r.cache_lookups is not None]
    if not counted:
        return None
    total: dict[str, int] = {}
    for lookups in counted:
        for kind, n in lookups.items():
            total[kind] = total.get(kind, 0) + n
    return total


def cpu_line(name: str, ratio: float, mine: float, theirs: float) -> str:
    """The goal line of the CPU per request against the passthrough's."""
    return (
        f"{name}: {ratio:.2f}x the passthrough's CPU per request (µs: {mine:.0f} against "
        f"{theirs:.0f}; goal <= {GOAL_CPU_RATIO:.1f}x)"
    )


def compose_figures(c1_p50_ms: float, direct_c1_p50_ms: float) -> dict[str, Any]:
    """A composed target's p50 at concurrency 1 against what a client calling the
    parts' resource directly, one call after the other, would wait: 3 x direct's p50
    (its own round trips between the calls not even counted). From the rounded
    figures, so that the JSON adds up."""
    c1, direct = round(c1_p50_ms, 3), round(direct_c1_p50_ms, 3)
    sequence = round(len(COMPOSE_PARTS) * direct, 3)
    return {
        "parts": len(COMPOSE_PARTS),
        "c1_p50_ms": c1,
        "direct_c1_p50_ms": direct,
        "three_direct_in_sequence_ms": sequence,
        "ratio_vs_three_direct": round(c1 / sequence, 3) if sequence > 0 else None,
    }


def compose_line(name: str, figures: dict[str, Any]) -> str:
    """The line printed after the goals for a composed target (a figure, not a goal)."""
    ratio = figures["ratio_vs_three_direct"]
    return (
        f"{name}: p50 {figures['c1_p50_ms']:.2f} ms at concurrency 1 for {figures['parts']} "
        f"parts, against {figures['parts']} direct calls in sequence "
        f"{figures['three_direct_in_sequence_ms']:.2f} ms ({_fmt(ratio, '.2f')}x)"
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _routes(row: dict[str, Any]) -> int:
    return int(row["routes"] or 0)


def _fmt(value: float | None, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    head = (
        f"{'target':<19}{'routes':>7}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'x direct':>10}{'x passthr':>10}{'c1 p50':>8}{'c1 p99':>8}{'c1 +p50':>9}"
        f"{'start s':>9}{'RSS MiB':>9}{'CPU µs/req':>12}"
    )
    lines = [
        f"requests/s, p50 and p99 at {s['connections']} connections (median of "
        f"{s['rounds']} x {s['duration_s']} s); c1: {s['latency_requests']} sequential "
        f"requests; {s['workers']} workers x {s['threads']} threads; "
        f"{result['machine']['load_generator']}; static: {result['machine']['static_server']}",
        head,
        "-" * len(head),
    ]
    for row in result["targets"]:
        tp, c1 = row["throughput"], row["latency_c1"]
        upstream = row["kind"] in ("stub", "static")
        lines.append(
            f"{row['name']:<19}{_fmt(row['routes'], 'd'):>7}{tp['rps']:>9.0f}"
            f"{tp['p50_ms']:>8.2f}{tp['p99_ms']:>8.2f}"
            f"{_fmt(row['ratio_vs_direct'], '.2f'):>10}"
            f"{_fmt(row['ratio_vs_passthrough'], '.2f'):>10}"
            f"{c1['p50_ms']:>8.3f}{c1['p99_ms']:>8.3f}"
            f"{_fmt(None if upstream else c1['added_p50_ms'], '+.3f'):>9}"
            f"{_fmt(None if upstream else row['startup_s'], '.2f'):>9}"
            f"{_fmt((row['memory'] or {}).get('max_rss_mib'), '.1f'):>9}"
            f"{_fmt(tp['cpu_us_per_request'], '.0f'):>12}"
            + (f"  errors: {tp['errors']}" if tp["errors"] else "")
        )
    lines.append("")
    for g in result["goals"]:
        lines.append(f"{'met    ' if g['met'] else 'NOT met'}  {g['text']}")
    for row in result["targets"]:
        if "compose" in row:
            lines.append(compose_line(row["name"], row["compose"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    bench = Bench(args, workdir)
    failed = True

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        bench.setup()
        bench.warm_up()
        bench.latency()
        bench.throughput()
        result = bench.summary(started)
        errors = sum(row["throughput"]["errors"] for row in result["targets"])
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = args.out / f"bench-{stamp}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print()
        print(table(result))
        print()
        print(f"bench: {result['elapsed_s']:.0f} s; results written to {out}")
        if errors:
            print(f"bench: {errors} requests failed during the runs; see the table", flush=True)
        storage = {
            row["name"]: row["ratelimit_storage_errors"]
            for row in result["targets"]
            if row["ratelimit_storage_errors"]
        }
        if storage:
            print(
                "bench: requests whose rate-limit storage call failed or took over 50 ms, "
                f"let through without the limit (on_storage_error: allow): {storage}",
                flush=True,
            )
        failed = errors > 0
        return 1 if failed else 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        for server in reversed(bench.servers):
            server.stop()
        if bench.trace_sink is not None:
            bench.trace_sink.stop()
            print(f"bench: the trace sink took {bench.trace_sink.exports} exports", flush=True)
        if any(t.variant in REDIS_VARIANTS for t in bench.targets):
            delete_counters(args.redis_url, bench.tag)
        if args.keep or failed:
            print(f"bench: work folder (configs, logs) kept at {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
