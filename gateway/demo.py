"""`gateway demo`: the reference stack (users stub, orders stub, gateway) in one command.

Each part runs as its own process with its log in a temporary folder; the banner
prints curl lines that work as printed; Ctrl-C or SIGTERM stops all three, waiting
for each and killing what does not stop, so no process is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
READY_SECONDS = 30.0
STOP_SECONDS = 15.0


@dataclass
class Part:
    name: str
    port: int
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _python(module_main: str, *args: str) -> list[str]:
    # The same interpreter and packages as this command, whatever PATH says.
    return [
        sys.executable,
        "-c",
        f"from {module_main} import main; raise SystemExit(main())",
        *args,
    ]


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: connections of a previous run lingering in TIME_WAIT do
        # not make the port "taken"; a listening socket still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def banner(gateway_url: str) -> str:
    login = (
        f"TOKEN=$(curl -s -X POST {gateway_url}/api/v1/auth/login "
        "-H 'Content-Type: application/json' "
        '-d \'{"email":"admin@example.com","password":"admin-password"}\' '
        "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
    )
    users = f"curl -s -i '{gateway_url}/api/v1/users?limit=2' -H \"Authorization: Bearer $TOKEN\""
    next_link = (
        f"NEXT=$(curl -s -D - -o /dev/null '{gateway_url}/api/v1/users?limit=2' "
        "-H \"Authorization: Bearer $TOKEN\" | tr -d '\\r' "
        "| sed -n 's/^[Ll]ink: <\\(.*\\)>; rel=\"next\".*/\\1/p')"
    )
    follow = 'curl -s -i "$NEXT" -H "Authorization: Bearer $TOKEN"'
    api_key = f"curl -s -i '{gateway_url}/api/v1/users?limit=2' -H 'X-API-Key: demo-service-key'"
    v1 = f"curl -s -i '{gateway_url}/api/v1/orders?limit=2' -H \"Authorization: Bearer $TOKEN\""
    v2 = (
        f"curl -s -i '{gateway_url}/api/orders?limit=2' -H \"Authorization: Bearer $TOKEN\" "
        "-H 'Accept-Version: 2'"
    )
    dashboard = (
        f"curl -s -i '{gateway_url}/api/v1/me/dashboard?limit=3' "
        '-H "Authorization: Bearer $TOKEN"'
    )
    lines = [
        "",
        f"The gateway is up at {gateway_url}. Paste these lines into a shell:",
        "",
        "# log in as the admin and keep the access token",
        login,
        "# list users through the gateway",
        users,
        "# follow the next page's Link",
        next_link,
        follow,
        "# the same list with the demo API key",
        api_key,
        "# orders, version 1 by URL (deprecated: see the Deprecation and Sunset headers)",
        v1,
        "# orders, version 2 by header",
        v2,
        "# one request, two upstream calls: the caller's profile and latest orders",
        dashboard,
        "",
        "Press Ctrl-C to stop all three.",
        "",
    ]
    return "\n".join(lines)


class Demo:
    def __init__(
        self, config: str, gateway_port: int, users_port: int, orders_port: int, workers: int
    ) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
        users_url = f"http://{HOST}:{users_port}"
        self.env = {
            **os.environ,
            "USERS_URL": users_url,
            "ORDERS_URL": f"http://{HOST}:{orders_port}",
            # Links the gateway sends name the address the banner prints, whatever Host
            # a client sends (the reference routes.yaml reads this).
            "GATEWAY_PUBLIC_URL": f"http://{HOST}:{gateway_port}",
        }
        self.parts = [
            Part(
                "users stub",
                users_port,
                _python(
                    "upstream_stub.cli",
                    "--service",
                    "users",
                    "--host",
                    HOST,
                    "--port",
                    str(users_port),
                    "--issuer",
                    users_url,
                ),
                self.logs / "users.log",
            ),
            Part(
                "orders stub",
                orders_port,
                _python(
                    "upstream_stub.cli",
                    "--service",
                    "orders",
                    "--host",
                    HOST,
                    "--port",
                    str(orders_port),
                ),
                self.logs / "orders.log",
            ),
            Part(
                "gateway",
                gateway_port,
                _python(
                    "gateway.cli",
                    "serve",
                    "-c",
                    config,
                    "--host",
                    HOST,
                    "--port",
                    str(gateway_port),
                    "--workers",
                    str(workers),
                ),
                self.logs / "gateway.log",
            ),
        ]
        self.stopping = threading.Event()

    def run(self) -> int:
        taken = [p for p in self.parts if port_taken(p.port)]
        if taken:
            for part in taken:
                print(
                    f"gateway demo: port {part.port} ({part.name}) is already in use; stop "
                    "whatever holds it (another demo?) and try again.",
                    file=sys.stderr,
                )
            return 1
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            for part in self.parts:
                if not self._start(part):
                    return 1
            print(banner(self.parts[-1].url), flush=True)
            print(f"Logs: {self.logs}", flush=True)
            while not self.stopping.wait(0.5):
                for part in self.parts:
                    assert part.process is not None
                    if part.process.poll() is not None:
                        print(
                            f"gateway demo: the {part.name} stopped (exit "
                            f"{part.process.returncode}); see {part.log}",
                            file=sys.stderr,
                        )
                        return 1
            return 0
        finally:
            self._stop_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _start(self, part: Part) -> bool:
        with open(part.log, "wb") as log:
            # Each part leads its own process group, so stopping it reaches its gunicorn
            # workers too, even if its master is gone first.
            part.process = subprocess.Popen(
                part.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and not self.stopping.is_set():
            if part.process.poll() is not None:
                tail = part.log.read_text(errors="replace")[-2000:]
                print(f"gateway demo: the {part.name} failed to start:\n{tail}", file=sys.stderr)
                return False
            if _ready(part.url):
                print(f"{part.name} ready at {part.url}", flush=True)
                return True
            time.sleep(0.2)
        if not self.stopping.is_set():
            print(
                f"gateway demo: the {part.name} did not answer within {READY_SECONDS:g} s; "
                f"see {part.log}",
                file=sys.stderr,
            )
        return False

    def _stop_all(self) -> None:
        started = [p for p in reversed(self.parts) if p.process is not None]
        for part in started:
            _signal_group(part, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for part in started:
            assert part.process is not None
            try:
                part.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever of the group outlives the deadline (or its master) is killed.
            while _group_alive(part) and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_group(part, signal.SIGKILL)
            if part.process.poll() is None:
                part.process.wait()
        if started:
            print("gateway demo: stopped the gateway and both stubs.", flush=True)


def _signal_group(part: Part, sig: signal.Signals) -> None:
    assert part.process is not None
    try:
        os.killpg(part.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is already gone


def _group_alive(part: Part) -> bool:
    assert part.process is not None
    part.process.poll()  # reap the leader if it exited, so it does not count
    try:
        os.killpg(part.process.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_demo(
    config: str,
    gateway_port: int = 8080,
    users_port: int = 8081,
    orders_port: int = 8082,
    workers: int = 1,
) -> int:
    return Demo(config, gateway_port, users_port, orders_port, workers).run()
