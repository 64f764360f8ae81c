"""`make bench` in a tiny mode: the driver runs end to end and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "loadtests" / "bench.py"
REDIS_URL = "redis://127.0.0.1:6379/0"
TARGETS = ["direct", "passthrough", "none", "jwt", "jwt+redis", "all", "all@100"]


def _redis_problem() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{REDIS_URL} does not answer PING ({exc})"
    return None


@pytest.mark.integration
def test_quick_bench_writes_one_result_with_every_target(tmp_path: Path) -> None:
    problem = _redis_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required under CI=true: {problem}", pytrace=False)
        pytest.skip(f"Redis not available: {problem}")
    argv = [sys.executable, str(BENCH), "--quick", "--duration", "1", "--warmup", "0.2"]
    argv += ["--latency-requests", "30", "--routes", "10,100", "--out", str(tmp_path)]
    argv += ["--redis-url", REDIS_URL]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr

    written = list(tmp_path.glob("bench-*.json"))
    assert len(written) == 1, written
    result = json.loads(written[0].read_text())
    assert result["settings"]["quick"] is True
    assert result["settings"]["routes"] == [10, 100]
    assert result["machine"]["load_generator"]
    assert [t["name"] for t in result["targets"]] == TARGETS

    for target in result["targets"]:
        throughput, c1 = target["throughput"], target["latency_c1"]
        assert throughput["rps"] > 0, target
        assert 0 < throughput["p50_ms"] <= throughput["p99_ms"], target
        assert throughput["errors"] == 0, target
        assert len(throughput["rounds"]) == 1, target
        assert c1["requests"] == 30, target
        assert 0 < c1["p50_ms"] <= c1["p99_ms"], target
        assert target["ratio_vs_direct"] > 0, target
        assert target["ratio_vs_passthrough"] > 0, target
        assert target["checks"]["status"] == 200, target
        # Counted from the gateway's /metrics; a busy machine may make a few Redis calls
        # miss their deadline, so only the count's presence is checked.
        storage_errors = target["ratelimit_storage_errors"]
        assert (storage_errors is None) == (target["kind"] != "gateway"), target
    by_name = {t["name"]: t for t in result["targets"]}
    assert by_name["direct"]["ratio_vs_direct"] == 1.0
    assert by_name["all"]["checks"] == {
        "status": 200,
        "rate_limit_headers": True,
        "cors": True,
        "deprecation": True,
    }
    for name in ("none", "all@100", "passthrough"):
        memory = by_name[name]["memory"]
        assert memory["workers"] == 2 and memory["max_rss_mib"] > 0, memory
        assert by_name[name]["startup_s"] > 0
    assert by_name["all@100"]["routes"] == 100

    goals = {g["name"]: g for g in result["goals"]}
    assert set(goals) == {
        "all_rps_vs_passthrough",
        "all_added_p50_ms_c1",
        "routes_rps_spread",
        "rss_per_worker_mib",
        "startup_s_largest_table",
    }
    for goal in goals.values():
        assert isinstance(goal["met"], bool) and goal["value"] is not None, goal

    # The table is printed with every target and every goal.
    for name in TARGETS:
        assert f"\n{name} " in done.stdout, done.stdout
    for goal in goals.values():
        assert goal["text"] in done.stdout, done.stdout
