"""Redis for the rate-limit tests: the shared one, private ones, and limited gateways.

The shared Redis (127.0.0.1:6379) is used for real, never faked. When it cannot be
reached, a test that needs it fails under CI=true and is skipped, with the reason,
elsewhere. Tests on the shared Redis never flush it: each one counts under route
names and buckets of its own (`unique()`), and counters are keyed by bucket and
client key. Tests that kill or freeze Redis start a private redis-server on a free
port (OwnRedis) and stop it by its PID.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.config.model import RateLimit
from gateway.ratelimit import Counters

from .support import (
    LOOPBACK,
    Gateway,
    free_port,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    write_config,
)

SHARED_REDIS_URL = f"redis://{LOOPBACK}:6379/0"
# limits stores every counter under this prefix: LIMITS:LIMITER/<bucket>/<key>/...
KEY_PREFIX = "LIMITS:LIMITER/"


def unique(prefix: str) -> str:
    """A route or bucket name no other test (or earlier run) has counted under."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Redis is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"Redis not available: {reason}")


@functools.cache
def _shared_redis_problem() -> str | None:
    try:
        client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{SHARED_REDIS_URL} does not answer PING ({exc})"
    return None


def require_shared_redis() -> str:
    """The shared Redis URL; fails (CI=true) or skips the test when it is unreachable."""
    problem = _shared_redis_problem()
    if problem is not None:
        _unavailable(problem)
    return SHARED_REDIS_URL


@pytest.fixture(scope="session")
def shared_redis() -> str:
    """The URL of the shared Redis, or a failure (CI=true) / skip with the reason."""
    return require_shared_redis()


def counter_keys(url: str, bucket: str) -> set[str]:
    """The client keys that have counters under `bucket` (in any window)."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        found = set()
        for raw in client.scan_iter(match=f"{KEY_PREFIX}{bucket}/*", count=1000):
            rest = raw.decode()[len(KEY_PREFIX) + len(bucket) + 1 :]
            found.add(rest.split("/", 1)[0])
        return found
    finally:
        client.close()


def delete_counters(url: str, bucket: str) -> None:
    """Deletes every counter under `bucket`, a bucket of the caller's own: limits'
    keys LIMITS:LIMITER/<bucket>/... and, for the sliding window, LIMITS:{LIMITER/<bucket>/...}."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        for pattern in (f"{KEY_PREFIX}{bucket}/*", f"LIMITS:{{LIMITER/{bucket}/*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)
    finally:
        client.close()


class CommandLog:
    """The commands a Redis client sends, by name, from the moment it is wrapped."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        real: Callable[..., Any] = client.execute_command

        def counting(*args: Any, **options: Any) -> Any:
            self.sent.append(str(args[0]).upper())
            return real(*args, **options)

        monkeypatch.setattr(client, "execute_command", counting)

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


def command_log(counters: Counters, monkeypatch: pytest.MonkeyPatch) -> CommandLog:
    """Counts what `counters` sends, once its script is known to the server (the very
    first call of a script costs a SCRIPT LOAD more)."""
    counters.test((RateLimit("1/second", 1, 1),), "test-warm-up", uuid.uuid4().hex)
    return CommandLog(counters.storage.get_connection(), monkeypatch)


# -- a private redis-server --------------------------------------------------------------


@dataclass
class OwnRedis:
    """A redis-server of the test's own on a free loopback port, nothing on disk."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False
    config_file: Path | None = None  # read first; the options below override it
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> OwnRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server is not installed")
        assert binary is not None
        if not self.port:
            self.port = free_port()
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    binary,
                    *([str(self.config_file)] if self.config_file is not None else []),
                    "--port",
                    str(self.port),
                    "--bind",
                    LOOPBACK,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        self.stopped = False
        self._wait_ready(5.0)
        return self

    def _wait_ready(self, timeout: float) -> None:
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.answers():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} not ready within {timeout} s")

    def answers(self) -> bool:
        client = redis.Redis(
            host=LOOPBACK, port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: gone at once, with every counter it held."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=5)

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.stopped = False

    def close(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.stopped:
            self.thaw()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_own_cluster(workdir: Path) -> OwnRedis:
    """A one-node Redis Cluster in `workdir` (its nodes.conf lands there): every slot
    on one server, which still refuses a command whose keys span two slots, as a
    cluster of many nodes does. The caller closes it."""
    # The bus port is named: by default it is the port + 10000, past 65535 for many
    # of the ports free_port() hands out.
    bus = ("--cluster-port", str(free_port()))
    node = OwnRedis(workdir, extra_args=("--cluster-enabled", "yes", *bus)).start()
    client = redis.Redis(host=LOOPBACK, port=node.port, socket_timeout=2)
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        ends = time.monotonic() + 10
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            if time.monotonic() > ends:
                node.close()
                raise RuntimeError(f"the one-node cluster on port {node.port} is not ok")
            time.sleep(0.05)
    finally:
        client.close()
    return node


def start_own_sentinel(workdir: Path, primary: OwnRedis, service: str) -> OwnRedis:
    """A Redis Sentinel that names `primary` as the primary of `service` (a quorum
    of one). The caller closes it."""
    port = free_port()
    config = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
    config.write_text(f"sentinel monitor {service} {LOOPBACK} {primary.port} 1\n")
    return OwnRedis(workdir, port=port, config_file=config, extra_args=("--sentinel",)).start()


# -- gateways with rate limits -----------------------------------------------------------


def route(
    name: str,
    *,
    methods: tuple[str, ...] = ("GET",),
    auth: Any = "public",
    rate_limit: list[str] | None = None,
    key: str | None = None,
    bucket: str | None = None,
) -> dict[str, Any]:
    """A route /<name>/{rest} to the recording upstream's echo, /up/ok/<name>/{rest}."""
    spec: dict[str, Any] = {
        "name": name,
        "path": f"/{name}/{{rest:path}}",
        "methods": list(methods),
        "upstream": "backend",
        "upstream_path": f"/up/ok/{name}/{{rest:path}}",
        "auth": auth,
    }
    if rate_limit is not None:
        spec["rate_limit"] = rate_limit
    if key is not None:
        spec["rate_limit_key"] = key
    if bucket is not None:
        spec["rate_limit_bucket"] = bucket
    return spec


def limited_config(
    upstream_url: str,
    routes: list[dict[str, Any]],
    *,
    rate_limits: dict[str, Any],
    trusted_proxies: int = 0,
    **sections: Any,
) -> dict[str, Any]:
    return {
        "version": 1,
        "gateway": {"trusted_proxies": trusted_proxies},
        **sections,
        "rate_limits": rate_limits,
        "upstreams": {
            "backend": {
                "url": upstream_url,
                "connect_timeout": 1.0,
                "timeout": 5.0,
                "retries": 0,
            }
        },
        "routes": routes,
    }


def start_limited_gateway(
    workdir: Path, config: dict[str, Any], *, workers: int = 2, threads: int = 8
) -> Gateway:
    """`gateway serve` on a free loopback port; the caller stops `.server`."""
    path = write_config(workdir / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, workers, threads),
        workdir=workdir,
        name="gateway-rl",
        env=subprocess_env(),
        workers=workers,
    )
    return Gateway(server, config)
