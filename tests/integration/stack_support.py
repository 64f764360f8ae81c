"""The reference deployment on real processes: both stubs and `gateway serve -c routes.yaml`.

Each test process runs one stack on free loopback ports: the users stub (issuing tokens
for its own address), the orders stub, and the gateway with USERS_URL / ORDERS_URL
pointing at them. Test modules share it through `stack_fixtures()`; the stack
starts on first use and is stopped, by PID, when the last module using it is done.

Every reply the `StackClient` sees through the gateway is checked for an upstream
address (the stubs' host:port in any header or in the body).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .support import (
    LOOPBACK,
    PROBLEM_JSON,
    REQUEST_ID,
    Reply,
    ServerProcess,
    assert_problem,
    http_request,
    start_server,
    subprocess_env,
    venv_script,
)

REPO = Path(__file__).resolve().parents[2]
ROUTES = REPO / "routes.yaml"
GATEWAY_WORKERS = 2
STUB_WORKERS = 1  # the stub keeps its store in one process
API_KEY = "demo-service-key"
DEMO_LOGINS = {
    "admin": ("admin@example.com", "admin-password"),
    "member": ("member@example.com", "member-password"),
    "guest": ("guest@example.com", "guest-password"),
}
# Environment that would change the reference deployment if it leaked in from outside.
_OUTSIDE_SETTINGS = ("USERS_URL", "ORDERS_URL", "GATEWAY_CONFIG", "GATEWAY_PUBLIC_URL")
MAX_PAGES = 100  # bound on every paging loop


def stack_env(**extra: str) -> dict[str, str]:
    env = subprocess_env()
    for name in _OUTSIDE_SETTINGS:
        env.pop(name, None)
    env["RATE_LIMIT_STORAGE"] = "memory://"
    env.update(extra)
    return env


def stub_argv(service: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        args = [
            venv_script("upstream-stub"),
            "--service",
            service,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        if service == "users":
            args += ["--issuer", f"http://{LOOPBACK}:{port}"]
        return args

    return argv


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the gateway verifies; tests only read it)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


@dataclass(frozen=True)
class Login:
    """A login through the gateway: its reply, both tokens and the user id (`sub`)."""

    reply: Reply
    access_token: str
    refresh_token: str
    sub: str

    @property
    def bearer(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.access_token}")


def upstream_addresses(ports: Sequence[int]) -> list[str]:
    """Every spelling of a stub's address a leak could take."""
    hosts = (LOOPBACK, "localhost", "[::1]", "0.0.0.0")
    return [f"{host}:{port}" for port in ports for host in hosts]


def leaked_addresses(reply: Reply, addresses: Sequence[str]) -> list[str]:
    seen = "\n".join(f"{name}: {value}" for name, value in reply.headers)
    seen += "\n" + reply.body.decode("utf-8", errors="replace")
    seen = seen.lower()
    return [address for address in addresses if address.lower() in seen]


@dataclass
class ReferenceStack:
    users: ServerProcess
    orders: ServerProcess
    gateway: ServerProcess
    logins: dict[str, Login] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path, **gateway_env: str) -> ReferenceStack:
        """The stubs and the gateway on free ports; `gateway_env` is added to the
        gateway's environment (the RATE_LIMIT_* of routes.yaml, say)."""
        started: list[ServerProcess] = []
        try:
            users = start_server(
                stub_argv("users"),
                workdir=workdir,
                name="users-stub",
                env=stack_env(),
                workers=STUB_WORKERS,
                ready_timeout=30.0,
            )
            started.append(users)
            orders = start_server(
                stub_argv("orders"),
                workdir=workdir,
                name="orders-stub",
                env=stack_env(),
                workers=STUB_WORKERS,
                ready_timeout=30.0,
            )
            started.append(orders)
            env = stack_env(USERS_URL=users.base_url, ORDERS_URL=orders.base_url, **gateway_env)

            def gateway_argv(port: int) -> list[str]:
                # The reference routes.yaml builds links on GATEWAY_PUBLIC_URL, and the
                # port is only known here: env(1) sets it and execs the gateway.
                return [
                    "/usr/bin/env",
                    f"GATEWAY_PUBLIC_URL=http://{LOOPBACK}:{port}",
                    venv_script("gateway"),
                    "serve",
                    "-c",
                    str(ROUTES),
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(port),
                    "--workers",
                    str(GATEWAY_WORKERS),
                    "--threads",
                    "4",
                ]

            gateway = start_server(
                gateway_argv,
                workdir=workdir,
                name="gateway",
                env=env,
                workers=GATEWAY_WORKERS,
                ready_timeout=30.0,
            )
            started.append(gateway)
            stack = cls(users, orders, gateway)
            # Logins are limited to 5/minute per address: log each demo user in once.
            for role in DEMO_LOGINS:
                stack.logins[role] = stack.login(role)
            return stack
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise

    def stop(self) -> None:
        for server in (self.gateway, self.orders, self.users):
            server.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} log (tail) ---\n{server.log()[-4000:]}"
            for name, server in (
                ("gateway", self.gateway),
                ("users stub", self.users),
                ("orders stub", self.orders),
            )
        )

    @property
    def host_port(self) -> str:
        return f"{LOOPBACK}:{self.gateway.port}"

    @property
    def upstream_addresses(self) -> list[str]:
        return upstream_addresses([self.users.port, self.orders.port])

    def client(self) -> StackClient:
        return StackClient(self)

    def login(self, role: str) -> Login:
        email, password = DEMO_LOGINS[role]
        reply = self.client().post_json(
            "/api/v1/auth/login", {"email": email, "password": password}
        )
        assert reply.status == 200, reply.describe()
        body = reply.json()
        return Login(
            reply,
            body["access_token"],
            body["refresh_token"],
            jwt_claims(body["access_token"])["sub"],
        )

    # -- the stubs, called directly (no identity headers: a trusted, unrestricted caller)

    def direct(self, server: ServerProcess, target: str) -> Reply:
        reply = http_request(server.port, "GET", target, [("Accept", "application/json")])
        assert reply.status == 200, reply.describe()
        return reply

    def direct_collection(self, server: ServerProcess, path: str) -> list[dict[str, Any]]:
        """Every item of a stub's collection, paged by its own Link header and cursor."""
        items: list[dict[str, Any]] = []
        target: str | None = f"{path}?limit=200"
        for _ in range(MAX_PAGES):
            if target is None:
                return items
            reply = self.direct(server, target)
            body = reply.json()
            items += body["data"]
            target = next_link(reply)
            assert (target is None) == (body["next_cursor"] is None), reply.describe()
        raise AssertionError(f"{path} did not end within {MAX_PAGES} pages")


def next_link(reply: Reply) -> str | None:
    """The target of the reply's Link rel="next", if any."""
    for value in reply.header_values("Link"):
        for match in re.finditer(r"<([^>]*)>\s*;([^,]*)", value):
            params = match.group(2)
            if re.search(r'rel="?([^";]*\s)?next(\s[^";]*)?"?', params):
                return match.group(1)
    return None


def link_targets(reply: Reply, rel: str) -> list[str]:
    found = []
    for value in reply.header_values("Link"):
        for match in re.finditer(r"<([^>]*)>\s*;([^,]*)", value):
            if re.search(rf'rel="?{re.escape(rel)}"?', match.group(2)):
                found.append(match.group(1))
    return found


class StackClient:
    """Requests through the gateway; every reply is checked for an X-Request-ID and
    for any upstream address, and kept in `replies`."""

    def __init__(self, stack: ReferenceStack) -> None:
        self.stack = stack
        self.replies: list[Reply] = []

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Reply:
        reply = http_request(self.stack.gateway.port, method, target, headers, body)
        self.replies.append(reply)
        request_id = reply.header("X-Request-ID")
        assert request_id and REQUEST_ID.match(request_id), reply.describe()
        leaks = leaked_addresses(reply, self.stack.upstream_addresses)
        assert not leaks, f"{method} {target}: upstream address {leaks} seen: {reply.describe()}"
        return reply

    def get(self, target: str, headers: Sequence[tuple[str, str]] = ()) -> Reply:
        return self.request("GET", target, headers)

    def send_json(
        self, method: str, target: str, value: Any, headers: Sequence[tuple[str, str]] = ()
    ) -> Reply:
        return self.request(
            method,
            target,
            [*headers, ("Content-Type", "application/json")],
            json.dumps(value).encode(),
        )

    def post_json(self, target: str, value: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
        return self.send_json("POST", target, value, headers)

    def gateway_target(self, url: str) -> str:
        """The path and query of an absolute URL on this gateway (asserting it is one)."""
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.netloc == self.stack.host_port, url
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def collection(
        self, path: str, headers: Sequence[tuple[str, str]], limit: int = 200
    ) -> list[dict[str, Any]]:
        """Every item of a collection through the gateway, following Link rel="next"."""
        items: list[dict[str, Any]] = []
        target: str | None = f"{path}?limit={limit}"
        for _ in range(MAX_PAGES):
            if target is None:
                return items
            reply = self.get(target, headers)
            assert reply.status == 200, reply.describe()
            body = reply.json()
            assert len(body["data"]) <= limit, reply.describe()
            items += body["data"]
            link = next_link(reply)
            assert (link is None) == (body["next_cursor"] is None), reply.describe()
            if link is not None:
                assert len(body["data"]) == limit, reply.describe()
            target = None if link is None else self.gateway_target(link)
        raise AssertionError(f"{path} did not end within {MAX_PAGES} pages")


def assert_gateway_problem(
    reply: Reply, status: int, code: str | None, instance: str | None
) -> dict[str, Any]:
    assert reply.media_type == PROBLEM_JSON, reply.describe()
    return assert_problem(reply, status, code, instance)


def unique_email(tag: str) -> str:
    return f"e2e.{tag}.{uuid.uuid4().hex[:12]}@example.com"


class _Shared:
    """One reference stack per test process, however many modules use it."""

    stack: ReferenceStack | None = None
    users = 0


@contextmanager
def shared_reference_stack(factory: pytest.TempPathFactory) -> Iterator[ReferenceStack]:
    if _Shared.stack is None:
        _Shared.stack = ReferenceStack.start(factory.mktemp("reference-stack"))
    _Shared.users += 1
    try:
        yield _Shared.stack
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            stack, _Shared.stack = _Shared.stack, None
            stack.stop()


def stack_fixtures() -> tuple[Any, Any]:
    """`reference_stack` (session) and `api` (a fresh StackClient per test)."""

    @pytest.fixture(name="api")
    def api(reference_stack: ReferenceStack) -> StackClient:
        return reference_stack.client()

    @pytest.fixture(scope="session", name="reference_stack")
    def reference_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceStack]:
        with shared_reference_stack(tmp_path_factory) as stack:
            yield stack

    return reference_stack, api
