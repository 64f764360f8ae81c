#!/usr/bin/env python3
"""What dripping clients do to everyone else, for each gunicorn worker class.

Each setup (the same as serving_choice.py's) is started the way the container starts
it, in front of the users stub. Then N connections drip their requests (half send a
request head one header line every --interval seconds, half a declared 70 kB body one
byte at a time, each reconnecting when the gateway closes on it) while a well-behaved
client asks for /healthz and a proxied user every 0.1 s. Reported per setup: the
probe's answers, failures (no answer within 5 s, or not 200) and latency.

    .venv/bin/python loadtests/micro/slow_clients.py
    .venv/bin/python loadtests/micro/slow_clients.py --drippers 200 --seconds 20
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
from serving_choice import parse_setup, start_setup  # noqa: E402


def drip(port: int, stop: threading.Event, interval: float, body: bool) -> None:
    head = f"GET /healthz HTTP/1.1\r\nHost: {bench.LOOPBACK}\r\n".encode()
    if body:
        head = (
            f"POST /api/v1/users HTTP/1.1\r\nHost: {bench.LOOPBACK}\r\n"
            "Content-Length: 70000\r\n\r\n"
        ).encode()
    while not stop.is_set():
        try:
            sock = socket.create_connection((bench.LOOPBACK, port), timeout=2)
        except OSError:
            stop.wait(0.05)
            continue
        with sock:
            try:
                sock.sendall(head)
                for i in range(100_000):
                    if stop.wait(interval):
                        return
                    sock.sendall(b"x" if body else f"X-Drip-{i}: y\r\n".encode())
            except OSError:
                continue  # closed on us: connect again


def main() -> int:
    p = argparse.ArgumentParser(prog="slow_clients", description=__doc__.split("\n\n")[0])
    p.add_argument("--setups", default="gevent:2x1000,gthread:2x8")
    p.add_argument("--drippers", type=int, default=80)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    env = {k: v for k, v in bench.os.environ.items() if not k.startswith(("GATEWAY_", "PROM"))}
    servers: list[bench.Server] = []
    with tempfile.TemporaryDirectory(prefix="gateway-slow-") as tmp:
        work = Path(tmp)
        try:
            key, key_file = bench.make_key(work)
            headers = bench.request_headers(bench.mint_token(key), "gateway-slow-clients")
            stub_port = bench.free_port()
            servers.append(bench.users_stub(stub_port, work / "stub.log").start(work, env))
            path = f"/api/v1/users/{bench.first_user_id(stub_port)}"
            print(
                f"{args.drippers} dripping connections (one piece every {args.interval:g} s), "
                f"{args.seconds:g} s per setup; the probe asks /healthz and {path}"
            )
            print(
                f"{'setup':<18}{'answers':>8}{'failed':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
            )
            for index, (kind, workers, size) in enumerate(
                parse_setup(s) for s in args.setups.split(",")
            ):
                config = bench.gateway_config(
                    "jwt", 10, f"http://{bench.LOOPBACK}:{stub_port}", key_file, "", "", ""
                )
                server = start_setup(kind, workers, size, config, work, env, index)
                servers.append(server)
                port, name = server.port, server.name
                stop = threading.Event()
                threads = [
                    threading.Thread(
                        target=drip, args=(port, stop, args.interval, i % 2 == 1), daemon=True
                    )
                    for i in range(args.drippers)
                ]
                for thread in threads:
                    thread.start()
                time.sleep(1.0)  # the drippers connect
                latencies: list[float] = []
                failed = 0
                ends = time.monotonic() + args.seconds
                while time.monotonic() < ends:
                    for target, extra in (("/healthz", {}), (path, headers)):
                        started = time.monotonic()
                        try:
                            status, _, _ = bench.http_get(port, target, extra)
                        except OSError:
                            status = 0
                        took = (time.monotonic() - started) * 1000
                        if status != 200 or took > 5000:
                            failed += 1
                        else:
                            latencies.append(took)
                    time.sleep(0.1)
                stop.set()
                for thread in threads:
                    thread.join(timeout=5)
                server.stop()
                lat = sorted(latencies) or [0.0]
                print(
                    f"{name:<18}{len(latencies) + failed:8d}{failed:8d}"
                    f"{bench.percentile(lat, 0.5):8.1f}{bench.percentile(lat, 0.99):8.1f}"
                    f"{lat[-1]:8.1f}",
                    flush=True,
                )
        finally:
            for server in reversed(servers):
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
