"""A rate-limit Redis that dies (SIGKILL) or freezes (SIGSTOP) mid-run.

Each test runs its own redis-server. While it is gone, on_storage_error decides:
`allow` lets every request through, `deny` answers 503 service_unavailable with
Retry-After. Either way each answer comes quickly (storage_timeout_ms is 50), nothing
is a 500, no gateway worker is replaced, and /readyz says the storage is unreachable.
Once Redis is back on the same port, limiting resumes by itself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis_support import OwnRedis, limited_config, route, start_limited_gateway, unique
from .support import Gateway, Reply, assert_problem, http_request, pid_alive
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

BUDGET = 3
QUICK = 1.0  # seconds: generous next to a 50 ms storage timeout
API_KEY_RAW = "storage-failure-test-key"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.close()


def start(
    tmp_path: Path, upstream_url: str, redis_url: str, mode: str
) -> tuple[Gateway, str, str, str, str]:
    main, fresh, keyed, busy = unique("main"), unique("fresh"), unique("keyed"), unique("busy")
    config = limited_config(
        upstream_url,
        [
            route(main, rate_limit=[f"{BUDGET}/minute"]),
            route(fresh, rate_limit=[f"{BUDGET}/minute"]),
            route(keyed, auth=["api_key"], rate_limit=[f"{BUDGET}/minute"]),
            route(busy, rate_limit=["100000/minute"]),
        ],
        rate_limits={
            "storage": redis_url,
            "on_storage_error": mode,
            "storage_timeout_ms": 50,
            "default": [],
            "auth_failures": ["3/minute"],
        },
        auth={
            "api_keys": {
                "header": "X-API-Key",
                "keys": [
                    {
                        "id": "ops",
                        "sha256": hashlib.sha256(API_KEY_RAW.encode()).hexdigest(),
                        "roles": [],
                    }
                ],
            }
        },
    )
    gateway = start_limited_gateway(tmp_path, config, workers=2, threads=4)
    return gateway, main, fresh, keyed, busy


def quick_get(gateway: Gateway, path: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    reply = gateway.get(path, headers or [], timeout=10)
    assert reply.elapsed < QUICK, f"{path} took {reply.elapsed:.3f} s: {reply.describe()}"
    assert reply.status != 500, reply.describe()
    return reply


def concurrent_gets(gateway: Gateway, path: str, count: int) -> list[Reply]:
    replies: list[Reply | None] = [None] * count
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        barrier.wait(timeout=10)
        replies[index] = http_request(gateway.port, "GET", f"{path}?c={index}", timeout=10)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert all(r is not None for r in replies), "a concurrent request got no answer"
    return [r for r in replies if r is not None]


class Traffic:
    """Sequential requests on a thread of their own, running across the failure."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway = gateway
        self.path = path
        self.replies: list[Reply] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for index in range(5000):  # bounded however long the test takes
            if self.stop.is_set():
                return
            try:
                reply = http_request(self.gateway.port, "GET", f"{self.path}?b={index}", timeout=10)
            except Exception as exc:
                self.errors.append(exc)
            else:
                self.replies.append(reply)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def assert_outage_answer(reply: Reply, mode: str, path: str) -> None:
    assert reply.elapsed < QUICK, f"took {reply.elapsed:.3f} s: {reply.describe()}"
    if mode == "allow":
        assert reply.status == 200, reply.describe()
        assert reply.header("X-Upstream-Echo") == "1", reply.describe()
    else:
        assert_problem(reply, 503, "service_unavailable", path)
        retry_after = reply.header("Retry-After") or ""
        assert retry_after.isdigit() and int(retry_after) >= 1, reply.describe()


def wait_until_ready(gateway: Gateway, timeout: float = 5.0) -> None:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        reply = gateway.get("/readyz")
        if reply.status == 200 and reply.json()["checks"]["rate_limit_storage"] == "ok":
            return
        time.sleep(0.05)
    raise AssertionError(f"/readyz did not report the storage back: {reply.describe()}")


@pytest.mark.parametrize("mode", ["allow", "deny"])
@pytest.mark.parametrize("failure", ["kill", "freeze"])
def test_storage_outage_then_recovery(
    tmp_path: Path,
    upstream: MisbehavingUpstream,
    own_redis: OwnRedis,
    failure: str,
    mode: str,
) -> None:
    gateway, main, fresh, keyed, busy = start(tmp_path, upstream.url, own_redis.url, mode)
    try:
        path = f"/{main}/x"
        for expected in ("2", "1"):
            reply = quick_get(gateway, path)
            assert reply.status == 200 and reply.header("X-RateLimit-Remaining") == expected
        workers_before = sorted(gateway.server.workers())
        assert len(workers_before) == 2
        reached_before = len(upstream.received(f"/up/ok/{main}/"))

        with Traffic(gateway, f"/{busy}/x") as traffic:
            ends = time.monotonic() + 5
            while len(traffic.replies) < 10 and time.monotonic() < ends:
                time.sleep(0.01)
            counted_before = len(traffic.replies)
            if failure == "kill":
                own_redis.kill()
            else:
                own_redis.freeze()

            # Well past the budget: with `allow` the limit is simply not applied.
            outage = [quick_get(gateway, path) for _ in range(4 * BUDGET)]
            outage += concurrent_gets(gateway, path, 8)
            for reply in outage:
                assert_outage_answer(reply, mode, path)
            slowest = max(r.elapsed for r in outage)
            print(f"{failure}/{mode}: slowest answer {slowest:.3f} s")
            expected_reached = reached_before + (4 * BUDGET + 8 if mode == "allow" else 0)
            assert len(upstream.received(f"/up/ok/{main}/")) == expected_reached

            # The brute-force guard meets the same outage on an authenticated route.
            keyed_reply = quick_get(gateway, f"/{keyed}/x", [("X-API-Key", API_KEY_RAW)])
            assert_outage_answer(keyed_reply, mode, f"/{keyed}/x")

        # The traffic that ran into the failure: answered, quickly, never a 500.
        assert not traffic.errors, traffic.errors[:3]
        assert counted_before >= 10 and len(traffic.replies) > counted_before + 5
        for reply in traffic.replies[:counted_before]:
            assert reply.status == 200, reply.describe()
        for reply in traffic.replies[counted_before:]:
            assert reply.elapsed < QUICK, f"took {reply.elapsed:.3f} s: {reply.describe()}"
            assert reply.status in (200, 503 if mode == "deny" else 200), reply.describe()

        ready = quick_get(gateway, "/readyz")
        storage = ready.json()["checks"]["rate_limit_storage"]
        assert storage.startswith("unreachable"), ready.describe()
        if mode == "allow":
            assert ready.status == 200 and ready.json()["status"] == "ready", ready.describe()
        else:
            assert ready.status == 503 and ready.json()["status"] == "not_ready", ready.describe()

        workers_after = sorted(gateway.server.workers())
        assert workers_after == workers_before, "a gateway worker was replaced"
        assert all(pid_alive(pid) for pid in workers_after)

        if failure == "kill":
            own_redis.start()  # the same port, empty
        else:
            own_redis.thaw()
        wait_until_ready(gateway)

        # A bucket untouched by the outage counts exactly again.
        fresh_path = f"/{fresh}/x"
        statuses = [quick_get(gateway, fresh_path).status for _ in range(BUDGET)]
        assert statuses == [200] * BUDGET
        assert_problem(quick_get(gateway, fresh_path), 429, "rate_limited", fresh_path)
        # The interrupted bucket is limited again within its budget.
        replies = [quick_get(gateway, path) for _ in range(BUDGET + 1)]
        refused = [r for r in replies if r.status == 429]
        assert refused, [r.describe() for r in replies]
        first = replies.index(refused[0])
        print(f"{failure}/{mode}: {first} passed after the recovery before a 429")
        assert all(r.status == 200 for r in replies[:first]), [r.describe() for r in replies]
        assert_problem(refused[0], 429, "rate_limited", path)
        assert sorted(gateway.server.workers()) == workers_before
        assert "Traceback" not in gateway.server.log(), gateway.server.log()[-4000:]
    finally:
        gateway.server.stop()
