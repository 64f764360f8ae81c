"""gunicorn.conf.py as the container runs it: plain gunicorn from the repository root,
sized by GATEWAY_* variables, with the gateway's worker class and metrics across
workers set up by its hooks."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .abuse import probe_under_drip
from .support import (
    LOOPBACK,
    Reply,
    ServerProcess,
    assert_problem,
    free_port,
    gateway_config,
    http_request,
    pid_alive,
    port_accepts,
    subprocess_env,
    venv_script,
    write_config,
)
from .upstream import SLOW_SECONDS, MisbehavingUpstream

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WORKERS = 2


def start_gunicorn(workdir: Path, config: Path, temp: Path, **extra: str) -> ServerProcess:
    last: Exception | None = None
    for attempt in range(3):
        port = free_port()
        env = subprocess_env(
            GATEWAY_CONFIG=str(config),
            GATEWAY_BIND=f"{LOOPBACK}:{port}",
            GATEWAY_WORKERS=str(WORKERS),
            GATEWAY_THREADS="4",
            TMPDIR=str(temp),
            **extra,
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        server = ServerProcess(
            argv=[venv_script("gunicorn"), "-c", "gunicorn.conf.py", "gateway:create_app()"],
            port=port,
            log_path=workdir / f"gunicorn-{attempt}.log",
            env=env,
            cwd=REPO,
            workers_expected=WORKERS,
        )
        try:
            return server.start()
        except RuntimeError as exc:
            last = exc
            if "Address already in use" not in server.log():
                raise
    raise RuntimeError("no free port") from last


@pytest.fixture
def container(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int
) -> Iterator[tuple[ServerProcess, Path]]:
    config = write_config(
        tmp_path / "routes.yaml",
        gateway_config(upstream.url, f"http://{LOOPBACK}:{closed_port}"),
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_gunicorn(tmp_path, config, temp)
    try:
        yield server, temp
    finally:
        server.stop()


def route_total(text: str, route: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_requests_total" and s.labels.get("route") == route
    )


def test_gunicorn_conf_serves_with_metrics_the_gateway_worker_and_a_clean_stop(
    container: tuple[ServerProcess, Path], upstream: MisbehavingUpstream, token: str
) -> None:
    server, temp = container
    workers = server.workers()
    assert len(workers) == WORKERS

    reply = http_request(server.port, "GET", f"/items/{token}")
    assert reply.status == 200, reply.describe() + server.log()
    assert upstream.only(token).target == f"/up/ok/item/{token}"

    # Metrics across workers: the hooks made a multiprocess folder under TMPDIR.
    [metrics_dir] = temp.glob("gateway-metrics-*")
    count = 40

    def one(index: int) -> int:
        return http_request(server.port, "GET", f"/items/{token}-{index}").status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(one, range(count))) == {200}
    # Every worker writes its samples there (a worker still booting does so shortly).
    expected = {f"counter_{pid}.db" for pid in workers}
    ends = time.monotonic() + 15
    while not expected <= {p.name for p in metrics_dir.iterdir()} and time.monotonic() < ends:
        time.sleep(0.05)
    assert expected <= {p.name for p in metrics_dir.iterdir()}, sorted(metrics_dir.iterdir())
    for _ in range(4):  # whichever worker answers the scrape sees every worker's counts
        scrape = http_request(server.port, "GET", "/metrics")
        assert scrape.status == 200, scrape.describe()
        assert scrape.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        assert route_total(scrape.body.decode(), "items.get") == count + 1

    # The worker class is the gateway's: gunicorn's own refusals are problem+json.
    malformed = http_request(server.port, "GET", "/x y z")
    assert_problem(malformed, 400, "bad_request", None)
    assert malformed.header("Connection") == "close"

    # SIGTERM: a clean stop, workers gone, the metrics folder removed.
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    returncode = server.process.wait(timeout=30)
    assert returncode == 0, server.log()[-3000:]
    assert time.monotonic() - started < 10
    assert not any(pid_alive(pid) for pid in workers)
    assert not port_accepts(server.port)
    assert not metrics_dir.exists()


def test_gateway_graceful_timeout_bounds_the_wait_for_requests_in_flight(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    config = write_config(
        tmp_path / "routes.yaml",
        gateway_config(upstream.url, f"http://{LOOPBACK}:{closed_port}"),
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_gunicorn(tmp_path, config, temp, GATEWAY_GRACEFUL_TIMEOUT="1")
    try:
        [metrics_dir] = temp.glob("gateway-metrics-*")
        outcome: list[Reply | Exception] = []

        def slow() -> None:
            try:  # /bulk has a 30 s upstream timeout; /up/slow answers after SLOW_SECONDS
                outcome.append(http_request(server.port, "GET", f"/bulk/slow/{token}", timeout=20))
            except Exception as exc:  # the connection may be cut before any answer
                outcome.append(exc)

        in_flight = threading.Thread(target=slow)
        in_flight.start()
        ends = time.monotonic() + 5
        while not upstream.received(token) and time.monotonic() < ends:
            time.sleep(0.02)
        assert upstream.received(token)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        returncode = server.process.wait(timeout=30)
        waited = time.monotonic() - started
        in_flight.join(timeout=20)
    finally:
        server.stop()
    assert returncode == 0, server.log()[-3000:]
    # Stopped after about GATEWAY_GRACEFUL_TIMEOUT, before the upstream answered.
    assert 0.8 <= waited < SLOW_SECONDS - 0.5, waited
    [result] = outcome
    assert not (isinstance(result, Reply) and result.status == 200 and result.complete)
    assert not metrics_dir.exists()


def test_every_request_of_a_proxy_protocol_connection_keeps_its_client_address(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    """PROXY protocol v1 names the client once per connection; the second request on
    that connection must not fall back to the load balancer's address."""
    config = write_config(
        tmp_path / "routes.yaml",
        gateway_config(upstream.url, f"http://{LOOPBACK}:{closed_port}"),
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_gunicorn(
        tmp_path,
        config,
        temp,
        GUNICORN_CMD_ARGS="--proxy-protocol v1 --proxy-allow-from 127.0.0.1",
    )
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=10) as sock:
            sock.sendall(
                b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n"
                + f"GET /api/ok/{token}-1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            time.sleep(0.5)
            sock.sendall(
                f"GET /api/ok/{token}-2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while piece := sock.recv(65536):
                data += piece
        assert data.count(b"HTTP/1.1 200") == 2, data
        for n in (1, 2):
            received = upstream.only(f"{token}-{n}")
            assert received.header_values("X-Forwarded-For") == ["203.0.113.9"], received.headers
    finally:
        server.stop()


def test_plain_gunicorn_with_the_conf_file_is_not_starved_by_dripping_clients(
    container: tuple[ServerProcess, Path], token: str
) -> None:
    """The container's way of serving gets the gateway's event-loop worker too: 80
    connections dripping their requests do not slow a well-behaved client."""
    server, _ = container
    assert "Using worker: gateway.workers.GatewayWorker" in server.log()
    attack = probe_under_drip(server.port, token, seconds=4.0)
    assert attack.head_connections >= 40 and attack.body_connections >= 40
    assert len(attack.probe.results) >= 20, attack.probe.results
    assert attack.probe.failures(slower_than=1.0) == [], attack.probe.results
