"""/metrics under gunicorn with several workers: every request counted once.

Each worker writes its samples to PROMETHEUS_MULTIPROC_DIR and /metrics (answered by
whichever worker accepts the scrape) merges them. A worker that dies keeps its
counts: they are neither lost nor counted again once gunicorn replaces it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from .support import (
    LOOPBACK,
    ServerProcess,
    StartGateway,
    assert_problem,
    gateway_config,
    gateway_serve_argv,
    http_request,
    pid_alive,
    start_server,
    subprocess_env,
    write_config,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

ROUTE = "items.get"
WORKERS = 4
N = 200
MORE = 60

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(port: int) -> Samples:
    reply = http_request(port, "GET", "/metrics", timeout=10)
    assert reply.status == 200, reply.describe()
    assert reply.media_type == "text/plain"
    return parse(reply.body.decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def route_requests(samples: Samples) -> float:
    return total(samples, "gateway_requests_total", route=ROUTE)


def send(port: int, count: int, token: str, start: int = 0) -> None:
    """`count` requests, each on a fresh connection, eight at a time."""

    def one(index: int) -> int:
        return http_request(port, "GET", f"/items/{token}-{index}", timeout=15).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(start, start + count)))
    assert statuses == [200] * count


def per_worker(directory: Path) -> dict[int, float]:
    """Requests on the route recorded by each worker, from its own counter file."""
    counts: dict[int, float] = {}
    for path in sorted(directory.glob("counter_*.db")):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)]):
            for s in metric.samples:
                if s.name == "gateway_requests_total" and s.labels.get("route") == ROUTE:
                    counts[pid] = counts.get(pid, 0) + s.value
    return counts


@pytest.fixture
def multiworker(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int
) -> Iterator[tuple[ServerProcess, Path]]:
    metrics_dir = tmp_path / "metrics"
    config = gateway_config(upstream.url, f"http://{LOOPBACK}:{closed_port}")
    path = write_config(tmp_path / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, WORKERS, 4),
        workdir=tmp_path,
        name="gateway-4w",
        env=subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        workers=WORKERS,
    )
    try:
        yield server, metrics_dir
    finally:
        server.stop()


def wait_until_booted(server: ServerProcess, directory: Path, timeout: float = 15.0) -> None:
    """Every worker has built its app (its metrics files exist), so all of them accept."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        expected = {f"counter_{pid}.db" for pid in server.workers()}
        if len(expected) == WORKERS and expected <= {p.name for p in directory.iterdir()}:
            return
        time.sleep(0.05)
    raise AssertionError(f"workers not booted: {server.workers()}\n{server.log()}")


def wait_for_replacement(server: ServerProcess, killed: int, timeout: float = 20.0) -> list[int]:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        workers = server.workers()
        if killed not in workers and len(workers) == WORKERS:
            server.remember_workers()
            return workers
        time.sleep(0.05)
    raise AssertionError(f"worker {killed} was not replaced: {server.workers()}\n{server.log()}")


def test_counts_across_four_workers_survive_a_killed_worker_exactly(
    multiworker: tuple[ServerProcess, Path], token: str
) -> None:
    server, metrics_dir = multiworker
    port = server.port
    wait_until_booted(server, metrics_dir)
    assert route_requests(scrape(port)) == 0

    send(port, N, token)
    samples = scrape(port)
    assert route_requests(samples) == N
    assert total(samples, "gateway_requests_total", route=ROUTE, status="200", method="GET") == N
    assert total(samples, "gateway_request_duration_seconds_count", route=ROUTE) == N
    assert total(samples, "gateway_request_duration_seconds_bucket", route=ROUTE, le="+Inf") == N
    assert total(samples, "gateway_upstream_duration_seconds_count", upstream="backend") == N

    served = per_worker(metrics_dir)
    assert sum(served.values()) == N
    busy = {pid: count for pid, count in served.items() if count > 0}
    assert len(busy) >= 2, f"one worker served everything: {served}"
    assert set(busy) <= set(server.workers())

    # The busiest worker dies without a chance to clean up.
    victim = max(busy, key=lambda pid: busy[pid])
    os.kill(victim, signal.SIGKILL)
    replacements = wait_for_replacement(server, victim)
    assert not pid_alive(victim)

    samples = scrape(port)
    assert route_requests(samples) == N  # not lost
    assert total(samples, "gateway_request_duration_seconds_count", route=ROUTE) == N

    send(port, MORE, token, start=N)
    samples = scrape(port)
    assert route_requests(samples) == N + MORE  # nor counted twice
    assert total(samples, "gateway_request_duration_seconds_count", route=ROUTE) == N + MORE
    assert total(samples, "gateway_upstream_duration_seconds_count", upstream="backend") == N + MORE
    served_after = per_worker(metrics_dir)
    assert served_after[victim] == busy[victim]  # the dead worker's file is kept as it was
    assert sum(served_after.values()) == N + MORE
    assert set(served_after) - {victim} <= set(replacements) | set(busy)

    # Scrapes answered by different workers agree.
    totals = {route_requests(scrape(port)) for _ in range(8)}
    assert totals == {N + MORE}


def test_metrics_from_an_address_outside_metrics_allow_is_a_403_problem(
    start_gateway: StartGateway, token: str
) -> None:
    gateway = start_gateway(workers=1, metrics_allow=["10.0.0.0/8"])
    reply = gateway.get("/metrics")
    body = assert_problem(reply, 403, "forbidden", "/metrics")
    assert b"gateway_requests" not in reply.body
    assert "10.0.0.0" not in body["detail"]
    # The gateway itself still serves.
    assert gateway.get(f"/items/{token}").status == 200
