"""Byte-exact HTTP/1.1 client, gateway processes, and /proc helpers for the suite."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROBLEM_JSON = "application/problem+json"
PROBLEM_MEMBERS = ("type", "title", "status", "detail", "instance", "code", "request_id")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
LOOPBACK = "127.0.0.1"


class IncompleteBody(Exception):
    """The connection ended before the response body was complete."""


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    body_length: int = 0
    complete: bool = True  # the body ended exactly as its framing said
    error: str | None = None  # why the body is incomplete
    elapsed: float = 0.0
    raw_head: bytes = b""

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    @property
    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}

    @property
    def media_type(self) -> str:
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.status} {self.reason} {self.headers!r} {self.body[:2000]!r}"


@dataclass
class _Reader:
    sock: socket.socket
    deadline: float
    buffer: bytes = b""
    eof: bool = False

    def fill(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the response took longer than the client's time limit")
        self.sock.settimeout(remaining)
        data = self.sock.recv(1024 * 1024)
        if not data:
            self.eof = True
            raise IncompleteBody("connection closed")
        self.buffer += data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > 1024 * 1024:
                raise ValueError("response head too large")
            self.fill()
        data, _, self.buffer = self.buffer.partition(marker)
        return data

    def exact(self, size: int, sink: Callable[[bytes], None]) -> None:
        while size > 0:
            if not self.buffer:
                self.fill()
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            size -= len(data)
            sink(data)

    def rest(self, sink: Callable[[bytes], None]) -> None:
        while True:
            if self.buffer:
                sink(self.buffer)
                self.buffer = b""
            try:
                self.fill()
            except IncompleteBody:
                return


def http_request(
    port: int,
    method: str,
    target: str | bytes,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    chunks: Sequence[bytes] | None = None,
    timeout: float = 10.0,
    keep_body: bool = True,
    on_body: Callable[[bytes], None] | None = None,
) -> Reply:
    """One request on a fresh connection, sent exactly as given, read exactly as framed.

    The request target is sent untouched (no normalisation, no encoding), so it can
    carry any byte. Only Host (when absent) and the body framing are added. A body
    cut short by the server is reported in `complete`/`error`, never raised.
    """
    names = {name.lower() for name, _ in headers}
    all_headers = list(headers)
    if "host" not in names:
        all_headers.insert(0, ("Host", f"{LOOPBACK}:{port}"))
    if chunks is not None:
        all_headers.append(("Transfer-Encoding", "chunked"))
    elif body is not None and "content-length" not in names:
        all_headers.append(("Content-Length", str(len(body))))
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    head = method.encode() + b" " + raw_target + b" HTTP/1.1\r\n"
    head += b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in all_headers) + b"\r\n"
    payload = head
    if chunks is not None:
        for chunk in chunks:
            payload += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        payload += b"0\r\n\r\n"
    elif body is not None:
        payload += body

    started = time.monotonic()
    deadline = started + timeout
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    try:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer before it reads everything; read what it said
        reader = _Reader(sock, deadline)
        while True:
            raw_head = reader.until(b"\r\n\r\n")
            status_line, *lines = raw_head.decode("latin-1").split("\r\n")
            _, status_text, *reason = status_line.split(" ", 2)
            status = int(status_text)
            if not 100 <= status < 200:
                break
        reply = Reply(
            status=status,
            reason=reason[0] if reason else "",
            headers=[(n, v.strip()) for n, _, v in (line.partition(":") for line in lines)],
            raw_head=raw_head,
        )
        parts: list[bytes] = []

        def sink(data: bytes) -> None:
            reply.body_length += len(data)
            if keep_body:
                parts.append(data)
            if on_body is not None:
                on_body(data)

        try:
            _read_body(reader, reply, method, sink)
        except (IncompleteBody, ConnectionResetError, BrokenPipeError) as exc:
            reply.complete = False
            reply.error = f"{type(exc).__name__}: {exc}"
        reply.body = b"".join(parts)
        reply.elapsed = time.monotonic() - started
        return reply
    finally:
        sock.close()


def _read_body(reader: _Reader, reply: Reply, method: str, sink: Callable[[bytes], None]) -> None:
    if method == "HEAD" or reply.status in (204, 304):
        return
    encoding = (reply.header("Transfer-Encoding") or "").lower()
    length = reply.header("Content-Length")
    if "chunked" in encoding:
        while True:
            size = int(reader.until(b"\r\n").split(b";", 1)[0].strip(), 16)
            if size == 0:
                while reader.until(b"\r\n"):
                    pass
                return
            reader.exact(size, sink)
            if reader.until(b"\r\n") != b"":
                raise IncompleteBody("bad chunk framing")
    elif length is not None:
        reader.exact(int(length), sink)
    else:
        reader.rest(sink)  # delimited by the close: completeness cannot be told


def assert_problem(
    reply: Reply, status: int, code: str | None, instance: str | None
) -> dict[str, Any]:
    """The reply is an RFC 9457 problem with every member the gateway promises.

    `code` or `instance` None: the member must be there, whatever its value."""
    assert reply.status == status, reply.describe()
    assert reply.media_type == PROBLEM_JSON, reply.describe()
    request_id = reply.header("X-Request-ID")
    assert request_id and REQUEST_ID.match(request_id), reply.describe()
    body = reply.json()
    assert isinstance(body, dict), reply.describe()
    for member in PROBLEM_MEMBERS:
        assert member in body, f"problem lacks {member!r}: {body!r}"
    for member in ("type", "title", "detail"):
        assert isinstance(body[member], str) and body[member], body
    assert body["status"] == status, body
    if code is not None:
        assert body["code"] == code, body
    assert re.fullmatch(r"[a-z][a-z0-9_]*", body["code"]), body
    assert isinstance(body["instance"], str), body
    if instance is not None:
        assert body["instance"] == instance, body
    assert body["request_id"] == request_id, body
    return body


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# -- /proc -----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields after it follow the last ')'.
    return text[text.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc/<child>/stat (state, ppid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# -- configuration and processes -------------------------------------------------------


def gateway_config(upstream_url: str, closed_url: str, **gateway_settings: Any) -> dict[str, Any]:
    """The suite's routes.yaml: short timeouts, a small body limit, every route public."""

    def upstream(url: str, timeout: float) -> dict[str, Any]:
        return {"url": url, "connect_timeout": 1.0, "timeout": timeout, "retries": 1}

    def route(name: str, path: str, methods: list[str], up: str, up_path: str) -> dict[str, Any]:
        return {
            "name": name,
            "path": path,
            "methods": methods,
            "upstream": up,
            "upstream_path": up_path,
            "auth": "public",
        }

    every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return {
        "version": 1,
        "gateway": {"max_body_bytes": MAX_BODY_BYTES, "trusted_proxies": 0, **gateway_settings},
        "upstreams": {
            "backend": upstream(upstream_url, UPSTREAM_TIMEOUT),
            "bulk": upstream(upstream_url, 30.0),
            "closed": upstream(closed_url, UPSTREAM_TIMEOUT),
        },
        "routes": [
            route("items.get", "/items/{item_id}", ["GET"], "backend", "/up/ok/item/{item_id}"),
            route(
                "files.get",
                "/files/{file_path:path}",
                ["GET"],
                "backend",
                "/up/ok/files/{file_path:path}",
            ),
            route("api.any", "/api/{rest:path}", every, "backend", "/up/{rest:path}"),
            route("bulk.get", "/bulk/{rest:path}", ["GET"], "bulk", "/up/{rest:path}"),
            route("closed.any", "/closed/{rest:path}", ["GET", "POST"], "closed", "/{rest:path}"),
        ],
    }


MAX_BODY_BYTES = 100_000
UPSTREAM_TIMEOUT = 1.0
CONNECT_TIMEOUT = 1.0


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def venv_script(name: str) -> str:
    """A console script installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        raise RuntimeError(f"{name} is not installed next to {sys.executable}")
    return str(candidate)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "USERS_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A gunicorn master started by the suite, stopped by its PID with its workers."""

    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str]
    cwd: Path
    workers_expected: int
    process: subprocess.Popen[bytes] | None = None
    known_workers: dict[int, bytes] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, ready_timeout: float = 20.0) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
            )
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        ends = time.monotonic() + timeout
        healthy = False
        while time.monotonic() < ends:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode} before it was ready:\n"
                    + self.log()
                )
            if not healthy:
                try:
                    healthy = http_request(self.port, "GET", "/healthz", timeout=1.0).status == 200
                except OSError:
                    healthy = False
            if healthy:
                self.remember_workers()
                if len(self.workers()) >= self.workers_expected:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"server not ready within {timeout} s:\n" + self.log())

    def workers(self) -> list[int]:
        return children_of(self.pid)

    def remember_workers(self) -> None:
        for pid in self.workers():
            self.known_workers.setdefault(pid, cmdline(pid))

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the master, SIGKILL it after `timeout`; then make sure no worker
        it ever had is left (by PID, checking it is still the same program)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.remember_workers()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        ends = time.monotonic() + 10
        leftovers = dict(self.known_workers)
        while leftovers and time.monotonic() < ends:
            leftovers = {p: c for p, c in leftovers.items() if pid_alive(p) and cmdline(p) == c}
            if leftovers:
                time.sleep(0.05)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.returncode


def start_server(
    argv_for_port: Callable[[int], list[str]],
    *,
    workdir: Path,
    name: str,
    env: dict[str, str],
    workers: int,
    attempts: int = 3,
    ready_timeout: float = 20.0,
) -> ServerProcess:
    """Start a server on a free port; try another port if the chosen one got taken."""
    last: Exception | None = None
    for attempt in range(attempts):
        port = free_port()
        server = ServerProcess(
            argv=argv_for_port(port),
            port=port,
            log_path=workdir / f"{name}-{attempt}.log",
            env=env,
            cwd=workdir,
            workers_expected=workers,
        )
        try:
            return server.start(ready_timeout=ready_timeout)
        except RuntimeError as exc:
            last = exc
            # gunicorn says "Address already in use", the stub "... is already in use".
            if "in use" not in server.log().lower():
                raise
    raise RuntimeError(f"no free port after {attempts} attempts") from last


def gateway_serve_argv(config: Path, workers: int, threads: int) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            venv_script("gateway"),
            "serve",
            "-c",
            str(config),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ]

    return argv


class Gateway:
    """A running gateway and a client for it that checks X-Request-ID on every reply."""

    def __init__(self, server: ServerProcess, config: dict[str, Any]) -> None:
        self.server = server
        self.config = config
        self.port = server.port
        self.host_port = f"{LOOPBACK}:{server.port}"
        self.base_url = server.base_url

    def request(
        self,
        method: str,
        target: str | bytes,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        **kwargs: Any,
    ) -> Reply:
        reply = http_request(self.port, method, target, headers, body, **kwargs)
        request_id = reply.header("X-Request-ID")
        assert request_id is not None, f"no X-Request-ID: {reply.describe()}"
        assert REQUEST_ID.match(request_id), reply.describe()
        return reply

    def get(self, target: str | bytes, headers: Sequence[tuple[str, str]] = (), **kw: Any) -> Reply:
        return self.request("GET", target, headers, **kw)


StartGateway = Callable[..., Gateway]


@contextmanager
def serving(
    workdir: Path, config: dict[str, Any], *, name: str = "gateway", workers: int = 1
) -> Iterator[Gateway]:
    """`gateway serve` with this config for the length of a block (4 threads, which
    only the threaded worker uses)."""
    server = start_server(
        gateway_serve_argv(write_config(workdir / "routes.yaml", config), workers, 4),
        workdir=workdir,
        name=name,
        env=subprocess_env(),
        workers=workers,
    )
    try:
        yield Gateway(server, config)
    finally:
        server.stop()


PUBLIC_URL = "https://api.example.test"
