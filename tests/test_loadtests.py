"""Smoke test of `make loadtest`: a short run of loadtests/run_loadtest.py.

The driver starts the reference stack on free loopback ports, runs Locust for 10 s with
5 users, and must leave its CSV files and HTML report, print a summary table, and see
no unexpected failures. Locust is the `load` extra, which every make target installs;
where it is missing (a venv made by hand) this test is skipped with that reason, and
fails under CI=true.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "loadtests" / "run_loadtest.py"
NO_LOCUST = (
    "Locust is not installed: it is the `load` extra, which make install (and every make "
    "target) installs, or .venv/bin/pip install -e '.[load]'"
)

pytestmark = pytest.mark.integration


def summary_table(output: str) -> dict[str, list[str]]:
    """The rows of the printed summary, by name: [method, requests, failures, ...]."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method  name"))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        if set(line.replace(" ", "")) == {"-"}:
            continue
        method = line[:6].strip()
        cells = line[6:].split()
        name, numbers = " ".join(cells[:-6]), cells[-6:]
        rows[name] = [method, *numbers]
    return rows


def test_short_load_run(tmp_path: Path) -> None:
    if importlib.util.find_spec("locust") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(NO_LOCUST)
        print(f"skipped: {NO_LOCUST}")
        pytest.skip(NO_LOCUST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADTEST_")}
    run = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            "--users",
            "5",
            "--spawn-rate",
            "5",
            "--time",
            "10s",
            "--free-ports",
            "--results",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "rate limits in " in output and "stopped the gateway and both stubs" in output

    [results] = list(tmp_path.iterdir())
    for name in ("run.txt", "locust_stats.csv", "locust_final_stats.csv", "report.html"):
        assert (results / name).stat().st_size > 0, name
    assert (results / "logs" / "gateway.log").exists()

    rows = summary_table(run.stdout)
    method, requests, failures, *_ = rows["Aggregated"]
    assert int(requests) > 0 and int(failures) == 0, output
    assert {"users.list", "orders.v2.list", "auth.login", "me.dashboard"} <= rows.keys(), output
    with open(results / "locust_final_stats.csv", newline="") as handle:
        stats = {row["Name"]: row for row in csv.DictReader(handle)}
    assert stats["Aggregated"]["Request Count"] == requests
    assert stats["Aggregated"]["Failure Count"] == "0"
