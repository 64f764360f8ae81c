"""A recording, misbehaving HTTP/1.1 upstream on a loopback socket.

It speaks raw HTTP/1.1 over a socketserver so it can misbehave at the byte level
(reset the connection, send garbage, die mid-body, drip bytes), and it records
every request it receives exactly as it arrived: method, raw target, headers as a
list, body bytes, and whether the body came chunked.

The behaviour is chosen by the path: the first segment after `/up/` names it
(`/up/slow/...`, `/up/reset`, ...); anything else echoes the request as JSON.
Every wait and every loop is bounded in time, and everything ends when the
upstream is stopped.
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SLOW_SECONDS = 4.0  # longer than any upstream timeout the tests configure
DELAY_SECONDS = 0.3  # the `delay` behaviour's pause before it echoes
DRIP_INTERVAL = 0.2
DRIP_LIMIT_SECONDS = 30.0  # a dripping response gives up after this, whatever happens
IDLE_LIMIT_SECONDS = 30.0  # an idle keep-alive connection is closed after this
HUGE_SIZE = 100 * 1024 * 1024
MID_BODY_DECLARED = 1_000_000
MID_BODY_SENT = 1000
SMALL_DECLARED = 2000
INTERNAL_HOST = "db-internal-7.corp"
UPSTREAM_SERVER = "Apache/2.4.1 (Unix) upstream-secret"
UPSTREAM_POWERED_BY = "PHP/5.4.0-internal"
GZIP_PLAIN = json.dumps({"message": "compressed " * 200}).encode()
GZIP_BODY = gzip.compress(GZIP_PLAIN, mtime=0)
HTML_500 = (
    "<html><head><title>500 Internal Server Error</title></head><body>"
    "<h1>Internal Server Error</h1><pre>Traceback (most recent call last):\n"
    '  File "/srv/app/views.py", line 42, in get_user\n'
    f"    conn = connect('postgres://app:hunter2@{INTERNAL_HOST}:5432/users')\n"
    f"OperationalError: could not connect to server {INTERNAL_HOST}\n"
    "</pre></body></html>"
).encode()
PROBLEM_422 = {
    "type": "https://problems.example.test/validation",
    "title": "The request is not valid.",
    "status": 422,
    "detail": "One or more fields are invalid.",
    "instance": "/up/problem422",
    "errors": [
        {"field": "email", "message": "must be an email address"},
        {"field": "age", "message": "must be at least 0"},
    ],
    "balance": 30,
}
HTML_200 = (
    "<!doctype html><html><head><title>Welcome</title></head><body>"
    f"<p>Served by {INTERNAL_HOST}</p></body></html>"
).encode()
JSON_ARRAY = [1, 2, 3]
JSON_NAN_BODY = b'{"value": NaN, "limit": Infinity}'
BIG_JSON_CHUNKS = 16  # the `big-json` behaviour: this many chunks of BIG_JSON_CHUNK_SIZE
BIG_JSON_CHUNK_SIZE = 1024
JSON_404 = {
    "error": "user 42 not found",
    "debug": f"SELECT * FROM users WHERE id=42 on {INTERNAL_HOST}",
}


class _Stop(Exception):
    """The upstream is stopping, the peer went away, or a time limit passed."""


@dataclass(frozen=True)
class Received:
    """One request as the upstream received it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


class _Connection:
    """Buffered reads with short socket timeouts, so a stop is noticed quickly."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.buffer = b""

    def _fill(self, deadline: float) -> None:
        while True:
            if self.stop.is_set() or time.monotonic() > deadline:
                raise _Stop()
            self.sock.settimeout(0.25)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise _Stop()
            self.buffer += data
            return

    def read_until(self, marker: bytes, limit: int, deadline: float) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise _Stop()
            self._fill(deadline)
        data, _, self.buffer = self.buffer.partition(marker)
        return data

    def read_exact(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self._fill(deadline)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, data: bytes) -> None:
        if self.stop.is_set():
            raise _Stop()
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    def pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise _Stop()


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _full(status: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    return _head(status, [*headers, ("Content-Length", str(len(body)))]) + body


# A behaviour answers one request; it returns False to close the connection.
Behaviour = Callable[["_Handler", _Connection, Received], bool]


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        upstream = self.server.upstream
        conn = _Connection(self.request, upstream.stop_event)
        try:
            while True:
                received = self._read_request(conn)
                upstream.record(received)
                behaviour = BEHAVIOURS.get(_behaviour_name(received.path), _echo)
                if not behaviour(self, conn, received):
                    return
        except (_Stop, OSError, ValueError, UnicodeDecodeError):
            return

    def _read_request(self, conn: _Connection) -> Received:
        deadline = time.monotonic() + IDLE_LIMIT_SECONDS
        head = conn.read_until(b"\r\n\r\n", 256 * 1024, deadline).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        lowered = {name.lower(): value for name, value in headers}
        chunked = "chunked" in lowered.get("transfer-encoding", "").lower()
        if chunked:
            body = b""
            while True:
                size_line = conn.read_until(b"\r\n", 1024, deadline)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while conn.read_until(b"\r\n", 64 * 1024, deadline):
                        pass  # trailer fields, up to the empty line
                    break
                body += conn.read_exact(size, deadline)
                conn.read_exact(2, deadline)
        else:
            body = conn.read_exact(int(lowered.get("content-length", "0")), deadline)
        return Received(method, target, version, headers, body, chunked)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    upstream: MisbehavingUpstream

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the handler ends quietly on every connection failure by design


def _behaviour_name(path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "up" else ""


def _echo(handler: _Handler, conn: _Connection, received: Received) -> bool:
    body = json.dumps(
        {
            "method": received.method,
            "target": received.target,
            "headers": received.headers,
            "body_length": len(received.body),
            "chunked": received.chunked,
        }
    ).encode()
    headers = [("Content-Type", "application/json"), ("X-Upstream-Echo", "1")]
    if received.method == "HEAD":
        conn.send(_head("200 OK", [*headers, ("Content-Length", str(len(body)))]))
    else:
        conn.send(_full("200 OK", body, headers))
    return True


def _delay(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """The echo, DELAY_SECONDS late."""
    conn.pause(DELAY_SECONDS)
    return _echo(handler, conn, received)


def _slow(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.pause(SLOW_SECONDS)
    conn.send(_full("200 OK", b'{"late": true}', [("Content-Type", "application/json")]))
    return False


def _drip(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _head(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(MID_BODY_DECLARED))],
        )
    )
    ends = time.monotonic() + DRIP_LIMIT_SECONDS
    while time.monotonic() < ends:
        conn.send(b"x")
        conn.pause(DRIP_INTERVAL)
    return False


def _drip_headers(handler: _Handler, conn: _Connection, received: Received) -> bool:
    ends = time.monotonic() + DRIP_LIMIT_SECONDS
    for byte in b"HTTP/1.1 200 OK\r\nX-Drip: ":
        conn.send(bytes([byte]))
        conn.pause(DRIP_INTERVAL)
    while time.monotonic() < ends:
        conn.send(b"a")
        conn.pause(DRIP_INTERVAL)
    return False


def _reset(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()  # SO_LINGER 0: the close is an RST, not a FIN
    return False


def _garbage(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(b"\x00\xff\xfeSSH-2.0-NotHTTP\r\n\x1b[31mgarbage\r\n\r\n" + bytes(range(256)))
    return False


def _huge(handler: _Handler, conn: _Connection, received: Received) -> bool:
    block = bytes(range(256)) * 4096  # 1 MiB
    conn.send(
        _head(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(HUGE_SIZE))],
        )
    )
    for _ in range(HUGE_SIZE // len(block)):
        conn.send(block)
    return True


def _die_mid_body(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _head(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(MID_BODY_DECLARED))],
        )
        + b"y" * MID_BODY_SENT
    )
    return False


def _die_mid_small_body(handler: _Handler, conn: _Connection, received: Received) -> bool:
    # A body small enough for the gateway to read whole before it answers.
    conn.send(
        _head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(SMALL_DECLARED))])
        + b"s" * (SMALL_DECLARED // 2)
    )
    return False


def _drip_small_body(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(SMALL_DECLARED))])
    )
    ends = time.monotonic() + DRIP_LIMIT_SECONDS
    while time.monotonic() < ends:
        conn.send(b"d")
        conn.pause(DRIP_INTERVAL)
    return False


def _die_mid_chunked(handler: _Handler, conn: _Connection, received: Received) -> bool:
    chunk = b"z" * MID_BODY_SENT
    conn.send(
        _head("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n"
    )
    return False


def _te_and_length(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """Both framings (RFC 9112 §6.3: chunked wins): a Content-Length shorter than the
    chunked body, kept alive for the next request."""
    chunks = [b"hello ", b"world, ", b"all chunks"]
    payload = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    conn.send(
        _head(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "5"),
            ],
        )
        + payload
    )
    return True


def _odd_status(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """A status no RFC registers: three digits are all HTTP/1.1 asks for."""
    conn.send(_full("299 Odd", b'{"odd": true}', [("Content-Type", "application/json")]))
    return True


def _html500(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _full(
            "500 Internal Server Error",
            HTML_500,
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Server", UPSTREAM_SERVER),
                ("X-Powered-By", UPSTREAM_POWERED_BY),
                ("X-Backend-Host", INTERNAL_HOST),
            ],
        )
    )
    return True


def _text503(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _full(
            "503 Service Unavailable",
            f"maintenance on {INTERNAL_HOST}, back soon".encode(),
            [("Content-Type", "text/plain"), ("Retry-After", "7"), ("Server", UPSTREAM_SERVER)],
        )
    )
    return True


def _problem422(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _full(
            "422 Unprocessable Content",
            json.dumps(PROBLEM_422).encode(),
            [("Content-Type", "application/problem+json"), ("Server", UPSTREAM_SERVER)],
        )
    )
    return True


def _html200(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """A success that is not JSON: a web page naming an internal host."""
    conn.send(
        _full(
            "200 OK",
            HTML_200,
            [("Content-Type", "text/html; charset=utf-8"), ("X-Backend-Host", INTERNAL_HOST)],
        )
    )
    return True


def _json_array(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """JSON that is not an object."""
    conn.send(
        _full("200 OK", json.dumps(JSON_ARRAY).encode(), [("Content-Type", "application/json")])
    )
    return True


def _json_nan(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """Python's json reads this, but it is not JSON (RFC 8259 has no NaN or Infinity)."""
    conn.send(_full("200 OK", JSON_NAN_BODY, [("Content-Type", "application/json")]))
    return True


def _big_json(handler: _Handler, conn: _Connection, received: Received) -> bool:
    """A valid JSON string of BIG_JSON_CHUNKS * BIG_JSON_CHUNK_SIZE bytes, chunked: no
    Content-Length tells a reader its size before it has read it."""
    inner = BIG_JSON_CHUNKS * BIG_JSON_CHUNK_SIZE - 2
    body = b'"' + b"j" * inner + b'"'
    chunks = [body[i : i + BIG_JSON_CHUNK_SIZE] for i in range(0, len(body), BIG_JSON_CHUNK_SIZE)]
    conn.send(
        _head("200 OK", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
        + b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
        + b"0\r\n\r\n"
    )
    return True


def _json404(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _full(
            "404 Not Found",
            json.dumps(JSON_404).encode(),
            [("Content-Type", "application/json"), ("X-Powered-By", UPSTREAM_POWERED_BY)],
        )
    )
    return True


def _redirect(handler: _Handler, conn: _Connection, received: Received) -> bool:
    # Shaped like a typical framework redirect: the target in Location and in the body.
    target = f"{handler.server.upstream.url}/up/ok/moved?x=1&y=%20z"
    body = (
        "<!doctype html>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n"
        f'<p>You should be redirected to <a href="{target}">{target}</a>.</p>'
    ).encode()
    conn.send(_full("302 Found", body, [("Location", target), ("Content-Type", "text/html")]))
    return True


def _redirect_relative(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(_full("302 Found", b"", [("Location", "/up/ok/moved?x=1")]))
    return True


def _link(handler: _Handler, conn: _Connection, received: Received) -> bool:
    base = handler.server.upstream.url
    conn.send(
        _full(
            "200 OK",
            b'{"data": []}',
            [
                ("Content-Type", "application/json"),
                (
                    "Link",
                    f'<{base}/up/ok/list?cursor=abc%3D&limit=2>; rel="next", '
                    '<https://docs.example.org/help>; rel="help"',
                ),
                ("Link", f'<{base}/up/ok/list?cursor=first>; rel="first"'),
            ],
        )
    )
    return True


def _hop(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _full(
            "200 OK",
            b'{"hop": true}',
            [
                ("Content-Type", "application/json"),
                ("Connection", "X-Secret"),
                ("X-Secret", "s3cr3t"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("Proxy-Connection", "keep-alive"),
                ("Proxy-Authenticate", 'Basic realm="internal"'),
                ("Upgrade", "h2c"),
                ("Server", UPSTREAM_SERVER),
                ("X-Powered-By", UPSTREAM_POWERED_BY),
                ("X-Custom", "kept"),
            ],
        )
    )
    return True


def _gzip(handler: _Handler, conn: _Connection, received: Received) -> bool:
    conn.send(
        _full(
            "200 OK",
            GZIP_BODY,
            [
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Vary", "Accept-Encoding"),
            ],
        )
    )
    return True


BEHAVIOURS: dict[str, Behaviour] = {
    "ok": _echo,
    "slow": _slow,
    "delay": _delay,
    "drip": _drip,
    "drip-headers": _drip_headers,
    "reset": _reset,
    "garbage": _garbage,
    "huge": _huge,
    "die-mid-body": _die_mid_body,
    "die-mid-chunked": _die_mid_chunked,
    "die-mid-small-body": _die_mid_small_body,
    "drip-small-body": _drip_small_body,
    "html500": _html500,
    "text503": _text503,
    "problem422": _problem422,
    "json404": _json404,
    "html200": _html200,
    "json-array": _json_array,
    "json-nan": _json_nan,
    "big-json": _big_json,
    "redirect": _redirect,
    "redirect-relative": _redirect_relative,
    "link": _link,
    "hop": _hop,
    "gzip": _gzip,
    "te-and-length": _te_and_length,
    "odd-status": _odd_status,
}


class MisbehavingUpstream:
    """The upstream on 127.0.0.1 and a free port, served by a background thread."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._records: list[Received] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.upstream = self
        self.port: int = self._server.server_address[1]
        self.host_port = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstream-{self.port}",
            daemon=True,
        )

    def start(self) -> MisbehavingUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def record(self, received: Received) -> None:
        with self._lock:
            self._records.append(received)

    @property
    def records(self) -> list[Received]:
        with self._lock:
            return list(self._records)

    def count(self) -> int:
        with self._lock:
            return len(self._records)

    def received(self, token: str) -> list[Received]:
        """Every request whose raw target holds `token`."""
        return [r for r in self.records if token in r.target]

    def only(self, token: str) -> Received:
        """The one request whose target holds `token`; fails unless there is exactly one."""
        found = self.received(token)
        assert len(found) == 1, f"expected one upstream request with {token!r}, got {found!r}"
        return found[0]
