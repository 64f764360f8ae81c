"""End to end: `gateway demo`, the command behind `make demo`.

It starts the users stub, the orders stub and the gateway, prints a banner whose curl
lines work when pasted into a shell as printed, and stops all three (and the gunicorn
workers under them) on Ctrl-C or SIGTERM, exiting 0. A taken port is refused up front
with one clear line, before anything starts; a demo stopped a moment ago can be
started again on the same ports at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .stack_support import REPO, stack_env, upstream_addresses
from .support import (
    LOOPBACK,
    children_of,
    cmdline,
    free_port,
    http_request,
    pid_alive,
    port_accepts,
    venv_script,
)

pytestmark = pytest.mark.integration

BANNER_SECONDS = 60.0
STOP_SECONDS = 20.0
BANNER_END = "Press Ctrl-C to stop all three."


@dataclass(frozen=True)
class Ports:
    gateway: int
    users: int
    orders: int

    @classmethod
    def free(cls) -> Ports:
        chosen: list[int] = []
        while len(chosen) < 3:
            port = free_port()
            if port not in chosen:
                chosen.append(port)
        return cls(*chosen)

    def argv(self) -> list[str]:
        return [
            "--port",
            str(self.gateway),
            "--users-port",
            str(self.users),
            "--orders-port",
            str(self.orders),
        ]

    def all(self) -> tuple[int, int, int]:
        return (self.gateway, self.users, self.orders)


@dataclass
class DemoProcess:
    """One `gateway demo` in its own session (so a Ctrl-C can be sent to its group),
    its standard output read as it comes."""

    ports: Ports
    workdir: Path
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    banner_done: threading.Event = field(default_factory=threading.Event)
    known: dict[int, bytes] = field(default_factory=dict)  # every descendant seen

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "demo-stderr.log"

    def start(self) -> DemoProcess:
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [venv_script("gateway"), "demo", *self.ports.argv()],
                cwd=REPO,  # as `make demo`: ./routes.yaml
                env=stack_env(TMPDIR=str(self.workdir)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == BANNER_END:
                self.banner_done.set()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr ---\n" + self.stderr()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_banner(self) -> list[str]:
        assert self.process is not None
        ends = time.monotonic() + BANNER_SECONDS
        while not self.banner_done.wait(0.1):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gateway demo exited with {self.process.returncode} before its banner:\n"
                    + self.output()
                )
            if time.monotonic() > ends:
                raise AssertionError(f"no banner within {BANNER_SECONDS:g} s:\n{self.output()}")
        parts = children_of(self.pid)
        assert len(parts) == 3, f"expected the users stub, orders stub and gateway: {parts}"
        self.remember_descendants()
        return list(self.lines)

    def descendants(self) -> list[int]:
        found: list[int] = []
        frontier = [self.pid]
        while frontier:
            children = children_of(frontier.pop())
            found += children
            frontier += children
        return found

    def remember_descendants(self) -> None:
        for pid in self.descendants():
            self.known.setdefault(pid, cmdline(pid))

    def left_behind(self) -> list[int]:
        """Descendants seen earlier that still run the same program."""
        return [pid for pid, cmd in self.known.items() if pid_alive(pid) and cmdline(pid) == cmd]

    def terminate(self) -> None:
        """SIGTERM to the demo alone, as `kill PID` sends it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def ctrl_c(self) -> None:
        """SIGINT to the demo's whole process group, as Ctrl-C in its terminal sends it."""
        os.killpg(self.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        """Whatever a failed test left: the demo by its PID, then its recorded children."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.remember_descendants()
            self.process.send_signal(signal.SIGTERM)
            if self.wait(STOP_SECONDS) is None:
                self.process.kill()
                self.process.wait(timeout=10)
        ends = time.monotonic() + 5
        while self.left_behind() and time.monotonic() < ends:
            time.sleep(0.1)
        for pid in self.left_behind():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[list[DemoProcess]]:
    started: list[DemoProcess] = []
    try:
        yield started
    finally:
        for demo in started:
            demo.cleanup()


def _start(demos: list[DemoProcess], ports: Ports, workdir: Path) -> DemoProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    demo = DemoProcess(ports, workdir)
    demos.append(demo)
    return demo.start()


def _start_on_free_ports(
    demos: list[DemoProcess], workdir: Path, attempts: int = 3
) -> tuple[DemoProcess, list[str]]:
    """A demo up to its banner; new ports if a chosen one got taken meanwhile."""
    for attempt in range(attempts):
        demo = _start(demos, Ports.free(), workdir / f"attempt-{attempt}")
        try:
            return demo, demo.wait_banner()
        except AssertionError:
            if demo.process is None or demo.process.poll() != 1 or "in use" not in demo.stderr():
                raise
    raise AssertionError(f"no free ports for the demo after {attempts} attempts")


def _assert_stops_cleanly(demo: DemoProcess) -> None:
    demo.remember_descendants()
    # The three parts and the gunicorn workers under each.
    assert len(demo.known) >= 6, f"expected the three parts and their workers: {demo.known}"
    code = demo.wait(STOP_SECONDS)
    assert code is not None, f"gateway demo still running {STOP_SECONDS:g} s after the signal"
    assert code == 0, f"exit {code}:\n{demo.output()}"
    assert not demo.left_behind(), f"left running: {demo.left_behind()}\n{demo.output()}"
    for port in demo.ports.all():
        assert not port_accepts(port), f"port {port} still answers after the demo stopped"


# -- the banner ------------------------------------------------------------------------


def _curl_lines(banner: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(banner) if "Paste these lines" in line)
    end = banner.index(BANNER_END)
    commands = [
        line for line in banner[start + 1 : end] if line.strip() and not line.startswith("#")
    ]
    assert commands and all("curl " in line for line in commands), commands
    return commands


@dataclass
class CurlReply:
    status: int
    headers: dict[str, list[str]]
    body: str

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def _parse_curl_i(text: str) -> CurlReply:
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    match = re.match(r"HTTP/[0-9.]+ (\d{3})", status_line)
    assert match, text[:2000]
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return CurlReply(int(match.group(1)), headers, body)


def _run_banner(commands: list[str], workdir: Path) -> tuple[list[str], dict[str, str]]:
    """Every command in one bash, as printed, with set -e; each one's output apart."""
    script = ["set -e -o pipefail"]
    for index, command in enumerate(commands):
        script += [command, f"printf '\\n@@@ %d @@@\\n' {index}"]
    script += ["printf 'TOKEN=%s\\n' \"${TOKEN:-}\"", "printf 'NEXT=%s\\n' \"${NEXT:-}\""]
    path = workdir / "banner.sh"
    path.write_text("\n".join(script) + "\n")
    result = subprocess.run(
        ["bash", str(path)],
        cwd=workdir,
        env=stack_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"the banner's lines failed (exit {result.returncode}):\n"
        f"{path.read_text()}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
    pieces = re.split(r"\n@@@ (\d+) @@@\n", "\n" + result.stdout)
    outputs = [pieces[i].lstrip("\n") for i in range(0, len(pieces) - 1, 2)]
    assert [int(pieces[i]) for i in range(1, len(pieces), 2)] == list(range(len(commands)))
    variables = dict(
        line.split("=", 1) for line in pieces[-1].splitlines() if re.match(r"^[A-Z]+=", line)
    )
    return outputs, variables


def _which(commands: list[str], *needles: str) -> int:
    found = [i for i, line in enumerate(commands) if all(n in line for n in needles)]
    assert len(found) == 1, (needles, commands)
    return found[0]


def _require_curl() -> None:
    if shutil.which("curl") is None or shutil.which("bash") is None:
        message = "the banner's lines need curl and bash, which are not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_banner_lines_work_as_printed_and_ctrl_c_stops_all(
    demos: list[DemoProcess], tmp_path: Path
) -> None:
    _require_curl()
    demo, banner = _start_on_free_ports(demos, tmp_path)
    ports = demo.ports
    gateway_url = f"http://{LOOPBACK}:{ports.gateway}"
    assert any(gateway_url in line for line in banner), banner

    commands = _curl_lines(banner)
    for command in commands:
        assert str(ports.users) not in command and str(ports.orders) not in command, command
    outputs, variables = _run_banner(commands, tmp_path)

    login = _which(commands, "TOKEN=$(", "/api/v1/auth/login")
    assert outputs[login] == "", outputs[login]
    token = variables.get("TOKEN", "")
    assert token.count(".") == 2, f"TOKEN is not a JWT: {token!r}"

    users = _which(commands, "curl -s -i", "/api/v1/users?limit=2", "Bearer $TOKEN")
    first = _parse_curl_i(outputs[users])
    assert first.status == 200, outputs[users]
    first_ids = [user["id"] for user in first.json()["data"]]
    assert len(first_ids) == 2, outputs[users]

    next_url = variables.get("NEXT", "")
    assert re.fullmatch(re.escape(gateway_url) + r"/api/v1/users\?\S*cursor=\S+", next_url), (
        f"NEXT is not a next-page URL on the gateway: {next_url!r}"
    )
    follow = _which(commands, '"$NEXT"')
    second = _parse_curl_i(outputs[follow])
    assert second.status == 200, outputs[follow]
    second_ids = [user["id"] for user in second.json()["data"]]
    assert second_ids and not set(second_ids) & set(first_ids), outputs[follow]

    api_key = _which(commands, "X-API-Key: demo-service-key")
    keyed = _parse_curl_i(outputs[api_key])
    assert keyed.status == 200 and keyed.json()["data"], outputs[api_key]

    v1 = _which(commands, "/api/v1/orders")
    old = _parse_curl_i(outputs[v1])
    assert old.status == 200, outputs[v1]
    assert old.header("Deprecation") and old.header("Sunset"), outputs[v1]
    assert all(isinstance(o["total"], int | float) for o in old.json()["data"]), outputs[v1]

    v2 = _which(commands, "/api/orders", "Accept-Version: 2")
    new = _parse_curl_i(outputs[v2])
    assert new.status == 200, outputs[v2]
    assert new.header("Deprecation") is None, outputs[v2]
    assert all(set(o["total"]) == {"amount_cents", "currency"} for o in new.json()["data"])

    dashboard = _which(commands, "/api/v1/me/dashboard")
    composed = _parse_curl_i(outputs[dashboard])
    assert composed.status == 200 and composed.header("Gateway-Partial") is None, outputs[dashboard]
    merged = composed.json()
    assert set(merged) == {"profile", "orders"}, outputs[dashboard]
    assert set(merged["profile"]) == {"id", "name", "email", "role", "tenant_id"}
    assert merged["profile"]["email"] == "admin@example.com"
    assert len(merged["orders"]["data"]) == 3  # the admin owns seeded orders: ?limit=3
    assert all(o["user_id"] == merged["profile"]["id"] for o in merged["orders"]["data"])

    seen = "\n".join(outputs).lower()
    for address in upstream_addresses([ports.users, ports.orders]):
        assert address.lower() not in seen, f"upstream address {address} in the output"

    demo.remember_descendants()
    demo.ctrl_c()
    _assert_stops_cleanly(demo)
    assert "stopped" in "\n".join(demo.lines), demo.output()


def test_second_demo_is_refused_and_sigterm_stops_the_first(
    demos: list[DemoProcess], tmp_path: Path
) -> None:
    demo, _ = _start_on_free_ports(demos, tmp_path)
    ports = demo.ports
    assert http_request(ports.gateway, "GET", "/healthz").status == 200

    # A second demo on the same ports: one line per taken port, exit 1, nothing started.
    second = subprocess.run(
        [venv_script("gateway"), "demo", *ports.argv()],
        cwd=REPO,
        env=stack_env(TMPDIR=str(tmp_path)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1, (second.returncode, second.stdout, second.stderr)
    for port in ports.all():
        assert re.search(rf"\bport {port}\b.*in use", second.stderr), second.stderr
    assert "ready" not in second.stdout and "Traceback" not in second.stderr, second
    # The first demo is untouched and still whole.
    demo.remember_descendants()
    for pid in demo.known:
        assert pid_alive(pid), f"process {pid} of the first demo died"
    assert http_request(ports.gateway, "GET", "/healthz").status == 200

    demo.terminate()
    _assert_stops_cleanly(demo)


def _server_closes_a_connection(port: int) -> None:
    """A request with Connection: close, read to the server's close: the server's side
    of that connection now waits in TIME_WAIT on `port`."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        head = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        while sock.recv(65536):
            pass


def test_restarts_on_the_same_ports_right_after_a_stop(
    demos: list[DemoProcess], tmp_path: Path
) -> None:
    """Ctrl-C, then `make demo` again at once: nothing listens on the ports any more
    (only closed connections linger in TIME_WAIT), so the new demo starts."""
    first, _ = _start_on_free_ports(demos, tmp_path / "first")
    ports = first.ports
    for port in ports.all():
        _server_closes_a_connection(port)
    first.ctrl_c()
    _assert_stops_cleanly(first)

    second = _start(demos, ports, tmp_path / "second")
    second.wait_banner()
    assert http_request(ports.gateway, "GET", "/healthz").status == 200
    second.remember_descendants()
    second.ctrl_c()
    _assert_stops_cleanly(second)


def _processes_mentioning(port: int) -> list[int]:
    needle = f"\0{port}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and needle in cmdline(int(entry.name)) + b"\0":
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("taken", ["gateway", "users", "orders"])
def test_a_taken_port_is_refused_before_anything_starts(taken: str, tmp_path: Path) -> None:
    ports = Ports.free()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, getattr(ports, taken)))
        holder.listen()
        result = subprocess.run(
            [venv_script("gateway"), "demo", *ports.argv()],
            cwd=REPO,
            env=stack_env(TMPDIR=str(tmp_path)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    port = getattr(ports, taken)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0] and "in use" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stdout and "curl" not in result.stdout, result.stdout
    for other in ports.all():
        if other != port:
            assert not port_accepts(other), f"port {other} was started after all"
            assert not _processes_mentioning(other), f"a process for port {other} was started"
