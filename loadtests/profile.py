#!/usr/bin/env python3
"""`make profile`: a flame graph of one gateway worker under load, every policy on.

Starts the users stub and the gateway with the bench's `all` configuration (JWT RS256,
API keys, roles, CORS, a Redis rate limit, header versions; see bench.py), puts wrk's
closed loop on the bench route, and samples the single gateway worker with py-spy
while the load runs. Writes an SVG flame graph (and py-spy's raw collapsed stacks)
under docs/perf/ by default.

    .venv/bin/python loadtests/profile.py                      # 20 s, 8 connections
    .venv/bin/python loadtests/profile.py --variant none --out /tmp/none.svg

Needs wrk and py-spy (the `load` extra installs py-spy) and Redis for the variants
with a rate limit. py-spy reads another process's memory: as root, or where
ptrace is allowed (kernel.yama.ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (the bench's configurations, servers and wrk runner)

ROOT = Path(__file__).resolve().parent.parent


_SVG_TITLE = re.compile(r'(<text id="title"[^>]*>)[^<]*(</text>)')


def retitle(svg: Path, title: str) -> None:
    """py-spy titles the graph with its own command line, process id and output path:
    details of the machine it ran on. The graph is titled with what was profiled."""
    text = svg.read_text(encoding="utf-8")
    svg.write_text(_SVG_TITLE.sub(lambda m: m[1] + html.escape(title) + m[2], text, 1), "utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="all", choices=bench.POLICY_VARIANTS)
    p.add_argument("--routes", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20.0, help="sampling time (default 20)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--threads", type=int, default=8, help="threads of the one worker")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: where the CPU goes, not the waits",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "perf" / "flame-all.svg")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk, py_spy = shutil.which("wrk"), shutil.which("py-spy", path=str(Path(sys.executable).parent))
    py_spy = py_spy or shutil.which("py-spy")
    if not wrk or not py_spy:
        print("profile: needs wrk (apt-get install wrk) and py-spy (pip install py-spy)")
        return 2
    if args.variant in ("jwt+redis", "all") and (problem := bench.redis_problem(args.redis_url)):
        print(f"profile: the {args.variant} variant needs Redis: {problem}")
        return 2
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in bench.os.environ.items() if not k.startswith(("GATEWAY_", "PROM"))}
    servers: list[bench.Server] = []
    tag = f"profile-{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="gateway-profile-") as tmp:
        work = Path(tmp)
        try:
            key, key_file = bench.make_key(work)
            headers = bench.request_headers(bench.mint_token(key), "gateway-profile")
            stub_port = bench.free_port()
            servers.append(bench.users_stub(stub_port, work / "stub.log").start(work, env))
            user_id = bench.first_user_id(stub_port)
            config = bench.gateway_config(
                args.variant,
                args.routes,
                f"http://{bench.LOOPBACK}:{stub_port}",
                key_file,
                args.redis_url,
                "moving-window",
                f"bench-{tag}-{args.variant}",
            )
            config_file = work / "gateway.yaml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            port = bench.free_port()
            gateway = bench.Server(
                "gateway",
                [str(bin_dir / "gateway"), "serve", "-c", str(config_file), "--host"]
                + [bench.LOOPBACK, "--port", str(port), "--workers", "1"]
                + ["--threads", str(args.threads)],
                port,
                work / "gateway.log",
                1,
            )
            servers.append(gateway.start(work, env))
            path = f"/api/v1/users/{user_id}"
            status, _, body = bench.http_get(port, path, headers)
            if status != 200:
                print(f"profile: the gateway answered {status}: {body}")
                return 1
            bench.wrk_load(wrk, work, port, path, headers, args.connections, 2, 0)  # warm up
            [worker] = gateway.worker_pids
            args.out.parent.mkdir(parents=True, exist_ok=True)
            collapsed = args.out.with_suffix(".txt")
            record = [py_spy, "record", "--pid", str(worker), "--rate", str(args.rate)]
            record += ["--duration", str(round(args.seconds)), "--nonblocking"]
            record += ["--gil"] if args.gil else []
            spy_svg = subprocess.Popen(
                [*record, "--format", "flamegraph", "--output", str(args.out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            spy_raw = subprocess.Popen(
                [*record, "--format", "raw", "--output", str(collapsed)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            time.sleep(0.5)
            result = bench.wrk_load(
                wrk, work, port, path, headers, args.connections, args.seconds + 1, 0
            )
            spy_svg.wait(timeout=args.seconds + 60)
            spy_raw.wait(timeout=args.seconds + 60)
            print(
                f"profile: {args.variant}, {args.routes} routes, 1 worker x {args.threads} "
                f"threads, {args.connections} connections: {result.rps:.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                f"{result.errors} errors"
            )
            retitle(
                args.out,
                f"gateway worker, {args.variant} policies, {args.routes} routes, "
                f"{args.threads} threads, {args.connections} connections"
                + (", GIL holder only" if args.gil else ""),
            )
            print(f"profile: wrote {args.out} and {collapsed}")
        finally:
            for server in reversed(servers):
                server.stop()
            if args.variant in ("jwt+redis", "all"):
                bench.delete_counters(args.redis_url, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
