#!/usr/bin/env python3
"""Which gunicorn worker setup serves the gateway best: the gateway's event-loop worker
(gevent, the default) against its threaded worker (gthread) at several sizes.

Every setup runs the bench's every-policy gateway (`all`: JWT RS256, API keys, roles,
CORS, a Redis limit, header versions) in front of the same users stub, started the way
the container starts it (`gunicorn -c gunicorn.conf.py "gateway:create_app()"`, sized
by GATEWAY_WORKERS / GATEWAY_THREADS / GATEWAY_WORKER_CLASS). The setups take turns,
in an order rotated per round, under wrk's closed loop; then each gets sequential
requests at concurrency 1.

    .venv/bin/python loadtests/micro/serving_choice.py
    .venv/bin/python loadtests/micro/serving_choice.py --setups gthread:2x8,gevent:2x100

A setup is CLASS:WORKERSxTHREADS; for gevent the second number is worker_connections.
Besides requests/s and latency, each setup's CPU time per request is reported: the
user and system time its workers spent during the wrk rounds, divided by the requests
they answered. Needs wrk and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bench  # noqa: E402  (configurations, servers, wrk and the c1 client)

ROOT = HERE.parent.parent
DEFAULT_SETUPS = "gevent:2x1000,gthread:2x8,gthread:2x4"
WORKER_CLASSES = {
    "gevent": "gateway.workers.GatewayWorker",
    "gthread": "gateway.workers.GatewayThreadWorker",
    "gunicorn-gevent": "gevent",  # gunicorn's own, for comparison
}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (/proc/PID/stat)."""
    ticks = bench.os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def start_setup(
    kind: str,
    workers: int,
    size: int,
    config: dict[str, Any],
    work: Path,
    env: dict[str, str],
    index: int,
) -> bench.Server:
    """One gateway for a setup, started as the container starts it
    (`gunicorn -c gunicorn.conf.py`), sized by the GATEWAY_* variables."""
    config_file = work / f"gateway-{index}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = bench.free_port()
    server_env = {
        **env,
        "GATEWAY_CONFIG": str(config_file),
        "GATEWAY_BIND": f"{bench.LOOPBACK}:{port}",
        "GATEWAY_WORKERS": str(workers),
        "GATEWAY_THREADS": str(size),
        "GATEWAY_WORKER_CLASS": WORKER_CLASSES[kind],
    }
    argv = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py")]
    if kind != "gthread":
        argv += ["--worker-connections", str(size)]
    argv.append("gateway:create_app()")
    name = f"{kind}:{workers}x{size}"
    server = bench.Server(name, argv, port, work / f"gateway-{index}.log", workers)
    return server.start(work, server_env)


def parse_setup(text: str) -> tuple[str, int, int]:
    kind, _, size = text.partition(":")
    workers, _, threads = size.partition("x")
    if kind not in WORKER_CLASSES or not workers.isdigit() or not threads.isdigit():
        raise SystemExit(f"serving_choice: {text!r} is not CLASS:WORKERSxTHREADS")
    return kind, int(workers), int(threads)


def main() -> int:
    p = argparse.ArgumentParser(prog="serving_choice", description=__doc__.split("\n\n")[0])
    p.add_argument("--setups", default=DEFAULT_SETUPS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--latency-requests", type=int, default=500)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    setups = [parse_setup(s) for s in args.setups.split(",")]
    wrk = shutil.which("wrk")
    if wrk is None:
        print("serving_choice: needs wrk (apt-get install wrk)")
        return 2
    if problem := bench.redis_problem(args.redis_url):
        print(f"serving_choice: needs Redis: {problem}")
        return 2
    env = {k: v for k, v in bench.os.environ.items() if not k.startswith(("GATEWAY_", "PROM"))}
    env["PYTHONUNBUFFERED"] = "1"
    tag = f"serving-{int(time.time())}"
    servers: list[bench.Server] = []
    with tempfile.TemporaryDirectory(prefix="gateway-serving-") as tmp:
        work = Path(tmp)
        try:
            key, key_file = bench.make_key(work)
            headers = bench.request_headers(bench.mint_token(key), "gateway-serving-choice")
            stub_port = bench.free_port()
            servers.append(bench.users_stub(stub_port, work / "stub.log").start(work, env))
            user_id = bench.first_user_id(stub_port)
            path = f"/api/v1/users/{user_id}"
            gateways: list[tuple[str, bench.Server]] = []
            for kind, workers, threads in setups:
                name = f"{kind}:{workers}x{threads}"
                config = bench.gateway_config(
                    "all",
                    10,
                    f"http://{bench.LOOPBACK}:{stub_port}",
                    key_file,
                    args.redis_url,
                    "moving-window",
                    f"bench-{tag}-{len(gateways)}",
                )
                server = start_setup(kind, workers, threads, config, work, env, len(gateways))
                servers.append(server)
                port = server.port
                status, _, body = bench.http_get(port, path, headers)
                if status != 200:
                    print(f"serving_choice: {name} answered {status}: {body}")
                    return 1
                gateways.append((name, server))
                print(f"started {name} in {server.startup_s:.2f} s", flush=True)
            for _, server in gateways:  # warm-up
                bench.wrk_load(wrk, work, server.port, path, headers, args.connections, 1, 50)
            rounds: dict[str, list[bench.RunResult]] = {name: [] for name, _ in gateways}
            cpu: dict[str, float] = {name: 0.0 for name, _ in gateways}
            for r in range(args.rounds):
                shift = r % len(gateways)
                for name, server in gateways[shift:] + gateways[:shift]:
                    before = cpu_seconds(server.worker_pids)
                    result = bench.wrk_load(
                        wrk, work, server.port, path, headers, args.connections, args.duration, 50
                    )
                    cpu[name] += cpu_seconds(server.worker_pids) - before
                    rounds[name].append(result)
                    print(
                        f"  round {r + 1} {name:<16} {result.rps:7.0f} req/s  "
                        f"p50 {result.p50_ms:6.2f}  p99 {result.p99_ms:7.2f}  "
                        f"errors {result.errors}",
                        flush=True,
                    )
            c1: dict[str, list[float]] = {name: [] for name, _ in gateways}
            for name, server in gateways:
                conn = bench.Connection(
                    server.port, bench.build_request(path, server.port, headers)
                )
                try:
                    for i in range(args.latency_requests + 20):
                        status, seconds = conn.get()
                        if i >= 20:
                            c1[name].append(seconds * 1000)
                finally:
                    conn.close()
            print(
                f"\n'all' gateway, {args.rounds} x {args.duration:g} s at {args.connections} "
                f"connections (medians); c1: {args.latency_requests} sequential requests"
            )
            print(
                f"{'setup':<18}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>9}{'c1 p50':>8}{'c1 p99':>8}"
                f"{'CPU us/req':>11}"
            )
            for name, _ in gateways:
                lat = sorted(c1[name])
                answered = sum(x.requests for x in rounds[name])
                print(
                    f"{name:<18}{statistics.median(x.rps for x in rounds[name]):8.0f}"
                    f"{statistics.median(x.p50_ms for x in rounds[name]):8.2f}"
                    f"{statistics.median(x.p99_ms for x in rounds[name]):9.2f}"
                    f"{bench.percentile(lat, 0.5):8.3f}{bench.percentile(lat, 0.99):8.3f}"
                    f"{cpu[name] / max(answered, 1) * 1e6:11.0f}"
                )
        finally:
            for server in reversed(servers):
                server.stop()
            bench.delete_counters(args.redis_url, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
