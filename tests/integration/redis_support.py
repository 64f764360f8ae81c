"""Redis for the rate-limit tests: the shared one, private ones, and limited gateways.

The shared Redis (127.0.0.1:6379) is used for real, never faked. When it cannot be
reached, a test that needs it fails under CI=true and is skipped, with the reason,
elsewhere. Tests on the shared Redis never flush it: each one counts under route
names and buckets of its own (`unique()`), and counters are keyed by bucket and
client key. Tests that kill or freeze Redis start a private redis-server on a free
port (OwnRedis), or several as a cluster (start_redis_cluster) or a primary, replica
and Sentinels (start_sentinels), and stop each by its PID.
"""

from __future__ import annotations

import functools
import ipaddress
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

import limits
import pytest
import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

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


def address() -> str:
    """A client address of the calling test's own, in 2001:db8::/32 (for documentation):
    the brute-force guard and per-address limits count by client address."""
    return str(ipaddress.IPv6Address("2001:db8::") + uuid.uuid4().int % 2**64)


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


def release(counters: Counters) -> None:
    """Close the sockets of a storage on a server the test started: left to the
    garbage collector, they warn in whichever test happens to run next."""
    storage: Any = counters.storage
    clients = [getattr(storage, "storage", None), getattr(storage, "storage_slave", None)]
    clients += list(getattr(getattr(storage, "sentinel", None), "sentinels", []))
    for client in clients:
        if isinstance(client, redis.RedisCluster):
            client.close()
        elif client is not None:
            client.connection_pool.disconnect()


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
    """A one-node Redis Cluster in `workdir` (its nodes file lands there): every slot
    on one server, which still refuses a command whose keys span two slots, as a
    cluster of many nodes does. The caller closes it."""
    return start_redis_cluster(workdir, masters=1, replicas=False).masters[0]


def start_own_sentinel(workdir: Path, primary: OwnRedis, service: str) -> OwnRedis:
    """A Redis Sentinel that names `primary` as the primary of `service` (a quorum
    of one). The caller closes it."""
    port = free_port()
    config = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
    config.write_text(f"sentinel monitor {service} {LOOPBACK} {primary.port} 1\n")
    return OwnRedis(workdir, port=port, config_file=config, extra_args=("--sentinel",)).start()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `check` until it holds (a Redis error counts as not yet), or fails the
    test saying `what` did not happen."""
    ends = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > ends:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def ask(port: int, *command: Any) -> Any:
    """One command to the server on `port`, on a connection of its own."""
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def role(port: int) -> str:
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


# A replica's first sync starts at once, not after the default 5 s wait for others.
NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")


@dataclass
class OwnCluster:
    """A Redis Cluster of the test's own: masters[i] serves the i-th share of the
    slots, replicas[i] (when there are replicas) replicates it."""

    masters: list[OwnRedis]
    replicas: list[OwnRedis]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{m.port}" for m in self.masters)

    def nodes(self) -> list[OwnRedis]:
        return [*self.masters, *self.replicas]

    def slots(self, index: int) -> range:
        """The slots masters[index] was given."""
        share = REDIS_CLUSTER_HASH_SLOTS // len(self.masters)
        last = REDIS_CLUSTER_HASH_SLOTS if index == len(self.masters) - 1 else share * (index + 1)
        return range(share * index, last)

    def state_ok(self, node: OwnRedis) -> bool:
        return "cluster_state:ok" in _cluster_info(node.port)

    def close(self) -> None:
        for node in self.nodes():
            node.close()


def limit_key(bucket: str, limit: str, client_key: str = f"ip:{LOOPBACK}") -> str:
    """The Redis key of a moving-window counter: limits' key, with its prefix."""
    return f"LIMITS:{limits.parse(limit).key_for(bucket, client_key)}"


def name_in_slots(slots: range, limit: str, client_key: str = f"ip:{LOOPBACK}") -> str:
    """A fresh route (bucket) name whose `limit` counter for `client_key` hashes to
    one of `slots`: on a cluster, a counter on the master of the test's choosing."""
    while True:
        name = unique("slot")
        if key_slot(limit_key(name, limit, client_key).encode()) in slots:
            return name


def _cluster_info(port: int) -> str:
    reply = ask(port, "CLUSTER", "INFO")
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _replicas_known(port: int) -> int:
    """How many nodes the node on `port` takes for replicas (itself included)."""
    lines = ask(port, "CLUSTER", "NODES").decode().splitlines()
    return sum("slave" in line.split()[2].split(",") for line in lines)


def start_redis_cluster(
    workdir: Path, *, masters: int = 3, replicas: bool = True, node_timeout_ms: int = 1000
) -> OwnCluster:
    """A Redis Cluster of `masters` masters (each with a replica when `replicas`) on
    free loopback ports. A master that stops answering for `node_timeout_ms` is
    failed over to its replica. The caller closes it; on a failure here every server
    started so far is stopped."""
    started: list[OwnRedis] = []
    buses: dict[int, int] = {}
    try:
        for _ in range(masters * (2 if replicas else 1)):
            port, bus = free_port(), free_port()
            buses[port] = bus
            # Each node rewrites its own nodes file; the bus port is named, as the
            # default (port + 10000) is past 65535 for many of the ports handed out.
            node = OwnRedis(
                workdir,
                port=port,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    *NO_SYNC_DELAY,
                ),
            )
            started.append(node)  # before it starts: stopped even if it never answers
            node.start()
        cluster = OwnCluster(started[:masters], started[masters:])
        first = started[0]
        for node in started[1:]:
            ask(node.port, "CLUSTER", "MEET", LOOPBACK, first.port, buses[first.port])
        for index, master in enumerate(cluster.masters):
            slots = cluster.slots(index)
            ask(master.port, "CLUSTER", "ADDSLOTSRANGE", slots.start, slots.stop - 1)
        wait_until(
            lambda: all(
                f"cluster_known_nodes:{len(started)}" in _cluster_info(n.port) for n in started
            ),
            10,
            "every cluster node knows the others",
        )
        for master, replica in zip(cluster.masters, cluster.replicas, strict=False):
            master_id = ask(master.port, "CLUSTER", "MYID").decode()
            wait_until(
                lambda r=replica, m=master_id: bool(ask(r.port, "CLUSTER", "REPLICATE", m)),
                10,
                f"node {replica.port} replicates {master.port}",
            )
        for replica in cluster.replicas:
            wait_until(
                lambda r=replica: ask(r.port, "INFO", "replication")["master_link_status"] == "up",
                10,
                f"replica {replica.port} in sync",
            )
        # Every node must know the replicas as such: any of them may be the one to
        # count a failover's votes.
        wait_until(
            lambda: all(
                cluster.state_ok(n) and _replicas_known(n.port) == len(cluster.replicas)
                for n in started
            ),
            15,
            "the cluster is ok, replicas included, on every node",
        )
        return cluster
    except BaseException:
        for node in started:
            node.close()
        raise


@dataclass
class OwnSentinels:
    """A primary, its replica, and Sentinels watching them under `service`."""

    primary: OwnRedis
    replica: OwnRedis
    sentinels: list[OwnRedis]
    service: str

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def primary_port(self) -> int:
        """The port of the primary, as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            if sentinel.stopped:
                continue
            try:
                _, port = ask(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except redis.RedisError:
                continue
            return int(port)
        raise AssertionError("no Sentinel answers")

    def close(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.close()


def _sentinel_view(port: int, service: str) -> tuple[int, int]:
    """How many other Sentinels and how many replicas the Sentinel on `port` knows."""
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        state = client.sentinel_master(service)
    finally:
        client.close()
    return int(state["num-other-sentinels"]), int(state["num-slaves"])


def start_sentinels(
    workdir: Path, service: str, *, count: int = 3, down_after_ms: int = 1000
) -> OwnSentinels:
    """A primary with one replica, and `count` Sentinels (a quorum of a majority) that
    fail it over `down_after_ms` after it stops answering. The Sentinels are told of
    each other and of the replica up front, rather than finding them out over a few
    seconds. The caller closes it; on a failure here everything started is stopped."""
    started: list[OwnRedis] = []
    try:
        # Each server is listed before it starts: stopped even if it never answers.
        primary = OwnRedis(workdir, extra_args=NO_SYNC_DELAY)
        started.append(primary)
        primary.start()
        follow = ("--replicaof", LOOPBACK, str(primary.port))
        replica = OwnRedis(workdir, extra_args=(*follow, *NO_SYNC_DELAY))
        started.append(replica)
        replica.start()
        wait_until(
            lambda: ask(replica.port, "INFO", "replication")["master_link_status"] == "up",
            10,
            "the replica in sync",
        )
        ports = [free_port() for _ in range(count)]
        ids = [uuid.uuid4().hex + uuid.uuid4().hex[:8] for _ in range(count)]
        sentinels = []
        for port, own_id in zip(ports, ids, strict=True):
            config = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its file
            lines = [
                f"sentinel myid {own_id}",
                f"sentinel monitor {service} {LOOPBACK} {primary.port} {count // 2 + 1}",
                f"sentinel down-after-milliseconds {service} {down_after_ms}",
                f"sentinel failover-timeout {service} {max(10 * down_after_ms, 5000)}",
                f"sentinel known-replica {service} {LOOPBACK} {replica.port}",
            ]
            lines += [
                f"sentinel known-sentinel {service} {LOOPBACK} {other} {other_id}"
                for other, other_id in zip(ports, ids, strict=True)
                if other != port
            ]
            config.write_text("\n".join(lines) + "\n")
            sentinel = OwnRedis(workdir, port=port, config_file=config, extra_args=("--sentinel",))
            started.append(sentinel)
            sentinel.start()
            sentinels.append(sentinel)
        group = OwnSentinels(primary, replica, sentinels, service)
        wait_until(
            lambda: all(_sentinel_view(s.port, service) == (count - 1, 1) for s in sentinels),
            10,
            "every Sentinel knows the others and the replica",
        )
        return group
    except BaseException:
        for server in reversed(started):
            server.close()
        raise


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
