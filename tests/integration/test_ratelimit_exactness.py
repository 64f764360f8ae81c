"""Limits hold exactly across gunicorn workers sharing one Redis, for every strategy.

Sixty requests arrive at once at four workers of one gateway; the limit is 20. Each
check is one atomic Redis call, so exactly 20 pass and reach the upstream, and 40 are
429 rate_limited. (limits starts a fixed window at its first hit, so a burst of a
second cannot straddle two windows.)
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from .redis_support import (
    SHARED_REDIS_URL,
    limited_config,
    route,
    shared_redis,  # noqa: F401 - the fixture, used through usefixtures
    start_limited_gateway,
    unique,
)
from .support import Reply, assert_problem, http_request
from .upstream import MisbehavingUpstream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_redis")]

LIMIT = 20
CLIENTS = 60
WORKERS = 4


def burst(port: int, target: str, count: int) -> list[Reply | BaseException]:
    """`count` requests, each on its own connection, released together by a barrier."""
    barrier = threading.Barrier(count)
    results: list[Reply | BaseException] = [RuntimeError("no answer")] * count

    def one(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = http_request(port, "GET", f"{target}?n={index}", timeout=15)
        except BaseException as exc:  # reported below, with the others
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
def test_exactly_the_limit_passes_across_four_workers(
    tmp_path: Path, upstream: MisbehavingUpstream, strategy: str
) -> None:
    name = unique("exact")
    config = limited_config(
        upstream.url,
        [route(name, rate_limit=[f"{LIMIT}/minute"])],
        rate_limits={"storage": SHARED_REDIS_URL, "strategy": strategy, "default": []},
    )
    gateway = start_limited_gateway(tmp_path, config, workers=WORKERS, threads=8)
    try:
        assert len(gateway.server.workers()) == WORKERS
        results = burst(gateway.port, f"/{name}/burst", CLIENTS)
    finally:
        gateway.server.stop()

    failures = [r for r in results if not isinstance(r, Reply)]
    assert not failures, failures[:3]
    replies = [r for r in results if isinstance(r, Reply)]
    statuses = Counter(r.status for r in replies)
    admitted = sum(n for status, n in statuses.items() if 200 <= status < 300)
    reached = len(upstream.received(f"/up/ok/{name}/burst"))
    print(f"{strategy}: admitted {admitted} of {CLIENTS}, upstream saw {reached}")
    assert admitted == LIMIT, f"{strategy}: {statuses}"
    assert statuses[429] == CLIENTS - LIMIT, f"{strategy}: {statuses}"
    assert reached == LIMIT, f"{strategy}: the upstream saw {reached}"
    for reply in replies:
        if reply.status == 429:
            assert_problem(reply, 429, "rate_limited", f"/{name}/burst")
            retry_after = reply.header("Retry-After") or ""
            assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, reply.describe()
        else:
            assert reply.header("X-Upstream-Echo") == "1", reply.describe()
