"""`gateway serve` warns when memory:// counters are split across several workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from .redis_support import limited_config, route, start_limited_gateway, unique
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

WARNING = "warning: rate limits are kept in memory://"


@pytest.mark.parametrize(("workers", "warned"), [(2, True), (1, False)])
def test_memory_storage_with_several_workers_is_warned_about(
    tmp_path: Path, upstream: MisbehavingUpstream, workers: int, warned: bool
) -> None:
    name = unique("mem")
    config = limited_config(
        upstream.url,
        [route(name, rate_limit=["5/minute"])],
        rate_limits={"storage": "memory://", "default": []},
    )
    gateway = start_limited_gateway(tmp_path, config, workers=workers, threads=2)
    try:
        assert gateway.get(f"/{name}/x").status == 200
    finally:
        gateway.server.stop()
    log = gateway.server.log()
    assert (WARNING in log) is warned, log[-3000:]
    if warned:
        line = next(line for line in log.splitlines() if WARNING in line)
        assert f"there are {workers} workers" in line
        assert "redis://" in line
