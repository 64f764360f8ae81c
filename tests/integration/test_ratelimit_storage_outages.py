"""What a limited request pays while a Redis Cluster or a Sentinel-watched Redis is out.

Each test starts its own servers on free loopback ports (a three-master cluster, or a
primary, its replica and three Sentinels) and two gateways in front of them with
`storage_timeout_ms` 150, one with `on_storage_error: allow` and one with `deny`. It
takes a node away (SIGKILL, or SIGSTOP for one that stops answering) and sends
limited requests through the outage. Each must be answered within BOUND, unlimited
with `allow`, 503 with `deny`. redis-py's own retries, pauses and topology refreshes
used to hold each one for seconds: 3 to 5 on a cluster (or a 500 once no node
answered), 5 behind a Sentinel that stopped answering. Once a replica has taken over
(or the nodes answer again), counting resumes by itself: a fresh route gets exactly
its budget, then 429.

The servers fail over quickly (a cluster node timeout, or Sentinel's down-after, of
one second), so an outage lasts a few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from .redis_support import (
    OwnCluster,
    ask,
    limit_key,
    limited_config,
    name_in_slots,
    role,
    route,
    start_limited_gateway,
    start_redis_cluster,
    start_sentinels,
    unique,
    wait_until,
)
from .support import LOOPBACK, Gateway, Reply, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

TIMEOUT_MS = 150
# A failing storage costs a check at most twice storage_timeout_ms, and the routes
# here are public (one check a request, no brute-force guard). The rest is room for a
# loaded machine, still far below the seconds the storage client's retries took.
BOUND = 2 * TIMEOUT_MS / 1000 + 0.5
BUDGET = 3
LIMIT = f"{BUDGET}/minute"
MODES = ("allow", "deny")


class Limited:
    """A gateway in one `on_storage_error` mode with two routes: `main`, which meets
    the outage, and `fresh`, untouched until counting is checked after it."""

    def __init__(self, gateway: Gateway, mode: str, main: str, fresh: str) -> None:
        self.gateway, self.mode, self.main, self.fresh = gateway, mode, main, fresh

    def get(self, name: str) -> Reply:
        reply = self.gateway.get(f"/{name}/x", timeout=10)
        assert reply.status != 500, reply.describe()
        return reply

    def assert_outage_answer(self, reply: Reply) -> None:
        """Unlimited (no rate-limit headers) with allow, 503 with deny."""
        if self.mode == "allow":
            assert reply.status == 200, reply.describe()
            assert reply.header("X-RateLimit-Limit") is None, reply.describe()
        else:
            assert_problem(reply, 503, "service_unavailable", f"/{self.main}/x")

    def assert_counts_exactly(self) -> None:
        """The fresh route: its budget passes, counted down, then 429."""
        replies = [self.get(self.fresh) for _ in range(BUDGET + 1)]
        statuses = [r.status for r in replies]
        assert statuses == [200] * BUDGET + [429], [r.describe() for r in replies]
        remaining = [r.header("X-RateLimit-Remaining") for r in replies[:BUDGET]]
        assert remaining == [str(n) for n in reversed(range(BUDGET))], remaining
        assert_problem(replies[-1], 429, "rate_limited", f"/{self.fresh}/x")

    def assert_no_traceback(self) -> None:
        log = self.gateway.server.log()
        assert "Traceback" not in log, log[-4000:]


def start_gateways(
    tmp_path: Path, upstream: MisbehavingUpstream, storage: str, names: Callable[[], str]
) -> list[Limited]:
    """One gateway per mode, started side by side, each in a folder of its own;
    `names` gives route names, so that no two routes count under the same key."""
    started: dict[str, Limited] = {}
    errors: list[BaseException] = []

    def start(mode: str) -> None:
        main, fresh = names(), names()
        config = limited_config(
            upstream.url,
            [route(main, rate_limit=[LIMIT]), route(fresh, rate_limit=[LIMIT])],
            rate_limits={
                "storage": storage,
                "on_storage_error": mode,
                "storage_timeout_ms": TIMEOUT_MS,
                "default": [],
                "auth_failures": [],
            },
        )
        workdir = tmp_path / f"gateway-{mode}"
        workdir.mkdir()
        try:
            gateway = start_limited_gateway(workdir, config, workers=1, threads=4)
        except BaseException as exc:  # raised below, once both are done
            errors.append(exc)
        else:
            started[mode] = Limited(gateway, mode, main, fresh)

    threads = [threading.Thread(target=start, args=(mode,)) for mode in MODES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors or len(started) != len(MODES):
        stop(list(started.values()))
        raise errors[0] if errors else RuntimeError("a gateway did not start in time")
    return [started[mode] for mode in MODES]


def stop(gateways: list[Limited]) -> None:
    for limited in gateways:
        limited.gateway.server.stop()


def use_part_of_the_budget(gateways: list[Limited]) -> None:
    for limited in gateways:
        for remaining in range(BUDGET - 1, 0, -1):
            reply = limited.get(limited.main)
            assert reply.status == 200, reply.describe()
            assert reply.header("X-RateLimit-Remaining") == str(remaining), reply.describe()


def through_the_outage(
    gateways: list[Limited], over: Callable[[], bool], *, rounds: int, seconds: float
) -> list[tuple[Limited, Reply]]:
    """Requests to each gateway's main route in turn, `rounds` rounds at least and
    then until `over()` holds (at most `seconds`): each answered within BOUND."""
    replies: list[tuple[Limited, Reply]] = []
    ends = time.monotonic() + seconds
    sent = 0
    while sent < rounds or not over():
        assert time.monotonic() < ends, f"the outage did not end within {seconds} s"
        for limited in gateways:
            reply = limited.get(limited.main)
            assert reply.elapsed < BOUND, (
                f"{limited.mode}: {reply.elapsed:.3f} s during the outage: {reply.describe()}"
            )
            replies.append((limited, reply))
        sent += 1
    slowest = max(reply.elapsed for _, reply in replies)
    print(f"{len(replies)} requests during the outage, the slowest took {slowest:.3f} s")
    return replies


def outage_then_recovery(
    gateways: list[Limited], failed_over: Callable[[], bool], what: str, lost_at: float
) -> None:
    """The first three rounds of the outage each answer within the bound; once the
    storage has failed over, every gateway counts exactly again, with no traceback."""
    replies = through_the_outage(gateways, failed_over, rounds=3, seconds=20)
    print(f"{what} {time.monotonic() - lost_at:.2f} s after")
    for limited, reply in replies[: 3 * len(gateways)]:
        limited.assert_outage_answer(reply)
    for limited in gateways:
        wait_until_counted(limited, seconds=5)
        limited.assert_counts_exactly()
        limited.assert_no_traceback()


def wait_until_counted(limited: Limited, seconds: float) -> None:
    """Polls the main route until the gateway counts it again (rate-limit headers,
    on a 200 or a 429); every answer meanwhile within BOUND."""
    started = time.monotonic()
    while True:
        reply = limited.get(limited.main)
        assert reply.elapsed < BOUND, f"{reply.elapsed:.3f} s: {reply.describe()}"
        if reply.header("X-RateLimit-Limit") is not None:
            break
        limited.assert_outage_answer(reply)
        assert time.monotonic() - started < seconds, f"{limited.mode}: not counted again"
        time.sleep(0.05)
    print(f"{limited.mode}: counted again {time.monotonic() - started:.2f} s after it was over")


# -- Redis Cluster ----------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[OwnCluster]:
    servers = start_redis_cluster(tmp_path)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def masters_only(tmp_path: Path) -> Iterator[OwnCluster]:
    servers = start_redis_cluster(tmp_path, replicas=False)
    try:
        yield servers
    finally:
        servers.close()


@pytest.mark.parametrize("loss", ["kill", "freeze"])
def test_a_lost_cluster_master_costs_a_request_no_more_than_the_timeout(
    tmp_path: Path, upstream: MisbehavingUpstream, cluster: OwnCluster, loss: str
) -> None:
    """Every route counts on masters[0], which dies or stops answering until its
    replica takes its slots over."""
    master, replica = cluster.masters[0], cluster.replicas[0]
    gateways = start_gateways(
        tmp_path, upstream, cluster.url, lambda: name_in_slots(cluster.slots(0), LIMIT)
    )
    try:
        use_part_of_the_budget(gateways)
        lost_at = time.monotonic()
        if loss == "kill":
            master.kill()
        else:
            master.freeze()

        def failed_over() -> bool:
            return role(replica.port) == "master" and cluster.state_ok(replica)

        # Three rounds take well under the node timeout, the earliest a failover starts.
        outage_then_recovery(gateways, failed_over, f"{loss}: the replica took over", lost_at)
    finally:
        stop(gateways)


def test_a_whole_cluster_that_stops_answering_costs_a_request_no_more_than_the_timeout(
    tmp_path: Path, upstream: MisbehavingUpstream, masters_only: OwnCluster
) -> None:
    gateways = start_gateways(tmp_path, upstream, masters_only.url, lambda: unique("all"))
    try:
        use_part_of_the_budget(gateways)
        for node in masters_only.nodes():
            node.freeze()
        for limited, reply in through_the_outage(gateways, lambda: True, rounds=6, seconds=20):
            limited.assert_outage_answer(reply)
        for limited in gateways:
            ready = limited.gateway.get("/readyz", timeout=10)
            assert ready.elapsed < BOUND, ready.describe()
            assert ready.json()["checks"]["rate_limit_storage"].startswith("unreachable")
            assert ready.status == (200 if limited.mode == "allow" else 503), ready.describe()

        for node in masters_only.nodes():
            node.thaw()
        wait_until(
            lambda: all(masters_only.state_ok(node) for node in masters_only.nodes()),
            10,
            "the cluster answers again",
        )
        for limited in gateways:
            wait_until_counted(limited, seconds=5)
            limited.assert_counts_exactly()
            limited.assert_no_traceback()
    finally:
        stop(gateways)


def test_a_slot_moving_to_another_master_keeps_its_count(
    tmp_path: Path, upstream: MisbehavingUpstream, masters_only: OwnCluster
) -> None:
    """Resharding moves a counter's slot from masters[0] to masters[1] between two
    requests that count in it: the first after the key has moved meets ASK, the next
    MOVED. Each is answered quickly, and the count carries over."""
    gateways = start_gateways(
        tmp_path, upstream, masters_only.url, lambda: name_in_slots(masters_only.slots(0), LIMIT)
    )
    try:
        limited = gateways[0]
        key = limit_key(limited.main, LIMIT)
        slot = key_slot(key.encode())
        source, target = masters_only.masters[0], masters_only.masters[1]
        source_id = ask(source.port, "CLUSTER", "MYID").decode()
        target_id = ask(target.port, "CLUSTER", "MYID").decode()

        def next_reply() -> Reply:
            reply = limited.get(limited.main)
            assert reply.elapsed < BOUND, f"{reply.elapsed:.3f} s: {reply.describe()}"
            return reply

        assert next_reply().header("X-RateLimit-Remaining") == "2"
        ask(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        ask(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        assert next_reply().header("X-RateLimit-Remaining") == "1"  # still on the source
        ask(source.port, "MIGRATE", LOOPBACK, target.port, key, 0, 5000)
        assert next_reply().header("X-RateLimit-Remaining") == "0"  # ASK, to the target
        for node in masters_only.masters:
            ask(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        refused = next_reply()  # MOVED, to the target, which has the count
        assert_problem(refused, 429, "rate_limited", f"/{limited.main}/x")
        assert ask(target.port, "EXISTS", key) == 1
        assert ask(source.port, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        limited.assert_no_traceback()
    finally:
        stop(gateways)


# -- Sentinel ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["kill", "freeze-with-a-sentinel"])
def test_a_lost_sentinel_primary_costs_a_request_no_more_than_the_timeout(
    tmp_path: Path, upstream: MisbehavingUpstream, loss: str
) -> None:
    """The primary dies, or stops answering along with the Sentinel the gateways ask
    first (the first of the URI); the other two Sentinels fail it over."""
    group = start_sentinels(tmp_path, unique("svc"))
    gateways: list[Limited] = []
    try:
        gateways = start_gateways(tmp_path, upstream, group.url, lambda: unique("sentinel"))
        use_part_of_the_budget(gateways)
        lost_at = time.monotonic()
        if loss == "kill":
            group.primary.kill()
        else:
            group.sentinels[0].freeze()
            group.primary.freeze()

        def failed_over() -> bool:
            return group.primary_port() == group.replica.port and role(group.replica.port) == (
                "master"
            )

        # Three rounds take well under Sentinel's down-after, before any failover.
        outage_then_recovery(gateways, failed_over, f"{loss}: Sentinel named the replica", lost_at)
    finally:
        stop(gateways)
        group.close()
