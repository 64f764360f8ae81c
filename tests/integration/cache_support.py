"""The response cache across real processes: a scripted upstream, cached gateways, and
kept-alive connections pinned to one gunicorn worker each.

The upstream answers each test's paths as the test scripts them (status, headers,
body, a delay) and records every request it receives, so a test counts exactly how
often the gateway asked it. A test's paths carry a token of its own; the upstream
finds a request's script by the token.

A gateway's workers share one listening socket, so which worker serves a new
connection is the kernel's choice. `pin_workers` opens kept-alive connections until
it holds one served by each worker (the worker is the process holding the accepted
socket, read from /proc), so a test can read through one worker and write through
another.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tokens import mint_token
from .jwt_support import AUDIENCE, ISSUER
from .support import (
    LOOPBACK,
    REQUEST_ID,
    Gateway,
    Reply,
    ServerProcess,
    _read_body,
    _Reader,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    write_config,
)
from .upstream import Received

SECRET = "cache-integration-" + uuid.uuid4().hex + uuid.uuid4().hex
CACHE_STATUS = "Cache-Status"
STORED = "gateway; fwd=uri-miss; fwd-status=200; stored"
COLLAPSED = "gateway; fwd=uri-miss; collapsed"
HIT_STATUS = re.compile(r"^gateway; hit; ttl=(\d+)$")
UPSTREAM_TIMEOUT = 5.0


def token() -> str:
    """A path segment no other test (or earlier run, on a shared Redis) uses."""
    return "c" + uuid.uuid4().hex[:16]


def bearer(
    subject: str, *, tenant: str | None = None, roles: Sequence[str] = ()
) -> tuple[str, str]:
    """An Authorization field with a token the cache gateways accept (HS256, signed here)."""
    claims: dict[str, Any] = {"tenant_id": tenant} if tenant is not None else {}
    signed = mint_token(
        SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=subject,
        roles=list(roles) if roles else None,
        **claims,
    )
    return ("Authorization", f"Bearer {signed}")


def hit_ttl(reply: Reply) -> int:
    """The ttl of a hit's Cache-Status; fails unless the reply is a hit."""
    status = reply.header(CACHE_STATUS) or ""
    match = HIT_STATUS.match(status)
    assert match, f"not a hit: {reply.describe()}"
    return int(match.group(1))


# -- the scripted upstream ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0  # seconds before the answer is sent


def json_answer(
    value: Any, *headers: tuple[str, str], status: int = 200, delay: float = 0.0
) -> Answer:
    return Answer(
        status,
        (("Content-Type", "application/json"), *headers),
        json.dumps(value, separators=(",", ":")).encode(),
        delay,
    )


# How a test's paths are answered: the request, and how many requests of its method for
# its path (query aside) the upstream has received, this one included.
Script = Callable[[Received, int], Answer]


def echo(*headers: tuple[str, str], delay: float = 0.0) -> Script:
    """The request as JSON: its number, method, target and the fields the cache keys
    on, with `headers` added to every answer."""

    def answer(received: Received, n: int) -> Answer:
        return json_answer(
            {
                "n": n,
                "method": received.method,
                "target": received.target,
                "user": received.header("X-User-Id"),
                "tenant": received.header("X-Tenant-Id"),
                "lang": received.header("Accept-Language"),
                "version": received.header("Accept-Version"),
            },
            *headers,
            delay=delay,
        )

    return answer


_ECHO = echo()
_STATUS_TEXT = {200: "OK", 204: "No Content", 304: "Not Modified", 412: "Precondition Failed"}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 15  # an idle kept-alive connection of a gateway's pool ends after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def setup(self) -> None:
        super().setup()
        self.server.upstream.opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.upstream.closed(self.connection)

    def _body(self) -> tuple[bytes, bool]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65536).strip():
                        pass
                    return body, True
                body += self.rfile.read(size)
                self.rfile.read(2)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0)), False

    def _serve(self) -> None:
        body, chunked = self._body()
        received = Received(
            self.command,
            self.path,
            self.request_version,
            [(name, value) for name, value in self.headers.items()],
            body,
            chunked,
        )
        upstream = self.server.upstream
        answer = upstream.answer(received)
        if answer.delay and upstream.stop_event.wait(answer.delay):
            self.close_connection = True
            return
        bodiless = answer.status in (204, 304) or 100 <= answer.status < 200
        lines = [f"HTTP/1.1 {answer.status} {_STATUS_TEXT.get(answer.status, 'Answer')}"]
        lines += [f"{name}: {value}" for name, value in answer.headers]
        if not bodiless:
            lines.append(f"Content-Length: {len(answer.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write: a head and a body written apart meet Nagle and delayed ACKs (40 ms).
        self.wfile.write(head + (b"" if bodiless or self.command == "HEAD" else answer.body))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    upstream: ScriptedUpstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection the gateway or a stop closed mid-request: nothing to report


class ScriptedUpstream:
    """An HTTP/1.1 upstream on 127.0.0.1 and a free port: each test scripts the answers
    of its own token's paths (the echo by default) and counts what reached it."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._records: list[Received] = []
        self._scripts: dict[str, Script] = {}
        self._connections: set[socket.socket] = set()
        self._server = _Server((LOOPBACK, 0), _Handler)
        self._server.upstream = self
        self.port = int(self._server.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scripted-upstream-{self.port}",
            daemon=True,
        )

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # kept-alive connections end now, not at their timeout
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def script(self, token: str, answer: Script) -> None:
        """Answer every request whose path holds the segment `token` with `answer`."""
        with self._lock:
            self._scripts[token] = answer

    def answer(self, received: Received) -> Answer:
        segments = received.path.split("/")
        with self._lock:
            self._records.append(received)
            same_path = sum(
                r.path == received.path and r.method == received.method for r in self._records
            )
            token = next((s for s in segments if s in self._scripts), "")
            script = self._scripts.get(token, _ECHO)
        return script(received, same_path)

    def received(self, token: str, method: str | None = None) -> list[Received]:
        """The requests whose path holds the segment `token` (of `method`, if given)."""
        with self._lock:
            return [
                r
                for r in self._records
                if token in r.path.split("/") and (method is None or r.method == method)
            ]

    def count(self, token: str, method: str = "GET") -> int:
        return len(self.received(token, method))


# -- cached gateways ------------------------------------------------------------------------


def _route(
    name: str,
    methods: list[str],
    auth: Any,
    cache: dict[str, Any] | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    prefix = prefix or name.split(".")[0]
    spec: dict[str, Any] = {
        "name": name,
        "path": f"/{prefix}/{{rest:path}}",
        "methods": methods,
        "upstream": "backend",
        "upstream_path": f"/{prefix}/{{rest:path}}",
        "auth": auth,
    }
    if cache is not None:
        spec["cache"] = cache
    return spec


WRITES = ["POST", "PUT", "PATCH", "DELETE"]


def cache_config(upstream_url: str, **cache: Any) -> dict[str, Any]:
    """The routes every cache gateway serves, each /<prefix>/{rest} to the upstream's
    /<prefix>/{rest}; `cache` is the top-level cache section."""
    return {
        "version": 1,
        "gateway": {"trusted_proxies": 0},
        "auth": {
            "jwt": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["HS256"],
                "secret": SECRET,
            }
        },
        "rate_limits": {"storage": "memory://", "default": [], "auth_failures": []},
        "cache": cache,
        "upstreams": {
            "backend": {
                "url": upstream_url,
                "connect_timeout": 1.0,
                "timeout": UPSTREAM_TIMEOUT,
                "retries": 0,
            }
        },
        "routes": [
            # public: one copy for every caller
            _route("pub", ["GET", "HEAD"], "public", {"ttl": 30}),
            _route("pub.write", WRITES, "public"),
            _route("short", ["GET"], "public", {"ttl": 1}),
            # identity (the default of an authenticated route): one copy per caller
            _route("me", ["GET", "HEAD"], ["jwt"], {"ttl": 30}),
            _route("me.write", WRITES, ["jwt"]),
            _route("team", ["GET"], ["jwt"], {"ttl": 30, "scope": "tenant"}),
            _route("versioned", ["GET"], "public", {"ttl": 30, "vary": ["Accept-Version"]}),
            _route("plain", ["GET", "HEAD"], "public"),
        ],
    }


@contextmanager
def cache_gateway(
    workdir: Path, upstream: ScriptedUpstream, *, workers: int, **cache: Any
) -> Iterator[Gateway]:
    """`gateway serve` with cache_config(upstream, **cache) and `workers` workers,
    stopped (by PID, with its workers) at the block's end."""
    config = cache_config(upstream.url, **cache)
    path = write_config(workdir / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, workers, 4),
        workdir=workdir,
        name="gateway-cache",
        env=subprocess_env(),
        workers=workers,
    )
    try:
        yield Gateway(server, config)
    finally:
        server.stop()


# -- kept-alive connections pinned to a worker -------------------------------------------------


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of a loopback TCP connection, from /proc/net/tcp."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[9])
    return None


def _holder(pids: Sequence[int], inode: int) -> int | None:
    """Which of `pids` holds the socket `inode` open."""
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                    return pid
            except OSError:
                continue
    return None


@dataclass
class Pinned:
    """One kept-alive HTTP/1.1 connection to a gateway: every request on it is served
    by the same worker (`pid`). Requests are sent byte for byte as given, one at a time."""

    server: ServerProcess
    sock: socket.socket
    pid: int = 0
    replies: list[Reply] = field(default_factory=list)

    @classmethod
    def connect(cls, server: ServerProcess) -> Pinned:
        return cls(server, socket.create_connection((LOOPBACK, server.port), timeout=10))

    def identify(self) -> int:
        """Asks /healthz on the connection (so a worker has accepted it), then finds
        the worker holding its server side."""
        reply = self.request("GET", "/healthz")
        assert reply.status == 200, reply.describe()
        client_port = self.sock.getsockname()[1]
        inode = _socket_inode(self.server.port, client_port)
        holder = _holder(self.server.workers(), inode) if inode is not None else None
        assert holder is not None, f"no worker holds the connection from port {client_port}"
        self.pid = holder
        return holder

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        all_headers = [("Host", f"{LOOPBACK}:{self.server.port}"), *headers]
        if body is not None:
            all_headers.append(("Content-Length", str(len(body))))
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
        head += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in all_headers) + b"\r\n"
        started = time.monotonic()
        self.sock.sendall(head + (body or b""))
        reader = _Reader(self.sock, started + timeout)
        raw_head = reader.until(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        _, status_text, *reason = status_line.split(" ", 2)
        reply = Reply(
            status=int(status_text),
            reason=reason[0] if reason else "",
            headers=[(n, v.strip()) for n, _, v in (line.partition(":") for line in lines)],
            raw_head=raw_head,
        )
        parts: list[bytes] = []
        _read_body(reader, reply, method, parts.append)
        assert not reader.buffer, "bytes after the answer on a kept-alive connection"
        reply.body = b"".join(parts)
        reply.body_length = len(reply.body)
        reply.elapsed = time.monotonic() - started
        request_id = reply.header("X-Request-ID")
        assert request_id and REQUEST_ID.match(request_id), reply.describe()
        assert (reply.header("Connection") or "").lower() != "close", reply.describe()
        self.replies.append(reply)
        return reply

    def close(self) -> None:
        self.sock.close()


@contextmanager
def pin_workers(server: ServerProcess, attempts: int = 60) -> Iterator[list[Pinned]]:
    """One kept-alive connection served by each of the server's workers, in worker
    order; connections are opened a few at a time (so that more than one worker is
    accepting) until every worker holds one."""
    workers = sorted(server.workers())
    chosen: dict[int, Pinned] = {}
    opened: list[Pinned] = []
    try:
        while len(chosen) < len(workers) and len(opened) < attempts:
            # All of a batch wait in the accept queue before any is used.
            batch = [Pinned.connect(server) for _ in range(4)]
            opened += batch
            for pinned in batch:
                chosen.setdefault(pinned.identify(), pinned)
        assert len(chosen) == len(workers), (
            f"{len(opened)} connections reached workers {sorted(chosen)} of {workers}"
        )
        yield [chosen[pid] for pid in workers]
    finally:
        for pinned in opened:
            pinned.close()
