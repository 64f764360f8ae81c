"""A 100 MiB response streams through a gateway worker without being held in memory."""

from __future__ import annotations

import hashlib
import threading

import pytest

from .support import Gateway, memory_kib
from .upstream import HUGE_SIZE, MisbehavingUpstream

pytestmark = pytest.mark.integration

MAX_GROWTH_KIB = 50 * 1024


def _expected_digest() -> str:
    block = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    for _ in range(HUGE_SIZE // len(block)):
        digest.update(block)
    return digest.hexdigest()


def test_huge_response_streams_through_completely_in_bounded_worker_memory(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    workers = gateway.server.workers()
    assert workers, "no gunicorn workers found"
    for attempt in range(2 * len(workers)):  # warm every worker's upstream pool
        assert gateway.get(f"/bulk/ok/warm?t={token}-{attempt}").status == 200
    before = {pid: memory_kib(pid) for pid in workers}
    peak_rss = {pid: before[pid]["VmRSS"] for pid in workers}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for pid in workers:
                try:
                    peak_rss[pid] = max(peak_rss[pid], memory_kib(pid)["VmRSS"])
                except OSError:
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    digest = hashlib.sha256()
    try:
        reply = gateway.get(
            f"/bulk/huge?t={token}", timeout=60, keep_body=False, on_body=digest.update
        )
    finally:
        done.set()
        sampler.join(timeout=5)
    after = {pid: memory_kib(pid) for pid in workers}

    assert reply.status == 200, reply.describe()
    assert reply.header("Content-Length") == str(HUGE_SIZE)
    assert reply.complete, reply.error
    assert reply.body_length == HUGE_SIZE
    assert digest.hexdigest() == _expected_digest()
    assert len(upstream.received(f"/up/huge?t={token}")) == 1
    for pid in workers:
        peak_growth = after[pid]["VmHWM"] - before[pid]["VmHWM"]
        sampled_growth = peak_rss[pid] - before[pid]["VmRSS"]
        assert peak_growth < MAX_GROWTH_KIB, (pid, before[pid], after[pid])
        assert sampled_growth < MAX_GROWTH_KIB, (pid, before[pid], peak_rss[pid])
