#!/usr/bin/env python3
"""`make loadtest`: run loadtests/locustfile.py against a reference stack started here.

Starts the users stub, the orders stub and the gateway (`gateway serve -c routes.yaml`)
on 127.0.0.1, with rate limits in Redis when one answers at 127.0.0.1:6379 (else in
memory, with a single gateway worker), and with the limits the load users would
otherwise exhaust raised through the environment (routes.yaml itself is untouched;
the login limit stays at its reference value so the abusive client meets it). Then
runs Locust headless for a bounded time, writes its CSV files and HTML report under
loadtests/results/<UTC timestamp>/, prints a summary table, stops everything it
started (by process group) and exits with:

  0  the run passed: unexpected failures at or under the threshold;
  1  unexpected failures over the threshold, no request succeeded, the workload's own
     code raised errors, or the abusive client never met the login limit (no 429);
  2  the stack or Locust could not be run (the message says why);
  130 interrupted.

Settings come from options or LOADTEST_* variables; see loadtests/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
ROUTES = ROOT / "routes.yaml"
RESULTS = ROOT / "loadtests" / "results"
DEFAULT_PORTS = (8080, 8081, 8082)  # gateway, users stub, orders stub: as `make demo`
REDIS = (HOST, 6379)
READY_SECONDS = 30.0
STOP_SECONDS = 15.0
# Locust's own start-up and report writing, on top of the run time, before it is killed.
LOCUST_GRACE_SECONDS = 60.0
EXPECTED = "(expected 429)"
ABUSIVE = "auth.login (wrong password)"
# Environment that would change the reference deployment if it leaked in from outside.
OUTSIDE_SETTINGS = (
    "GATEWAY_CONFIG",
    "GATEWAY_PUBLIC_URL",
    "USERS_URL",
    "ORDERS_URL",
    "RATE_LIMIT_STORAGE",
    "RATE_LIMIT_DEFAULT",
    "RATE_LIMIT_LOGIN",
    "RATE_LIMIT_USERS_GET",
    "STUB_ISSUER",
)


class Interrupted(Exception):
    pass


class Failed(Exception):
    """The run could not happen; the message says why (exit 2)."""


# --- settings -----------------------------------------------------------------------------


def run_seconds(text: str) -> int:
    """Locust's time format: 30, 30s, 5m, 1h30m."""
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a time such as 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise argparse.ArgumentTypeError("the run must last at least 1 s")
    return total


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="run_loadtest.py",
        description="Run the Locust workload against a reference stack started for the run.",
    )
    p.add_argument(
        "-u",
        "--users",
        type=positive_int,
        default=env("LOADTEST_USERS", "20"),
        help="simulated users (LOADTEST_USERS, default 20)",
    )
    p.add_argument(
        "-r",
        "--spawn-rate",
        type=positive_float,
        default=env("LOADTEST_SPAWN", "5"),
        help="users started per second (LOADTEST_SPAWN, default 5)",
    )
    p.add_argument(
        "-t",
        "--time",
        default=env("LOADTEST_TIME", "30s"),
        help="how long Locust runs, e.g. 30s, 5m (LOADTEST_TIME, default 30s)",
    )
    p.add_argument(
        "--max-failure-ratio",
        type=ratio,
        default=env("LOADTEST_MAX_FAILURE_RATIO", "0.01"),
        help="unexpected failures / requests (expected 429s left out) above which the run fails "
        "(LOADTEST_MAX_FAILURE_RATIO, default 0.01)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path(env("LOADTEST_RESULTS", str(RESULTS))),
        help="folder that gets one <UTC timestamp> folder per run "
        "(LOADTEST_RESULTS, default loadtests/results)",
    )
    p.add_argument(
        "--storage",
        default=env("LOADTEST_STORAGE", "auto"),
        help="rate-limit storage: auto (Redis at 127.0.0.1:6379 when it answers, else "
        "memory://), memory://, or a redis:// URL (LOADTEST_STORAGE, default auto)",
    )
    p.add_argument(
        "--raised-limit",
        default=env("LOADTEST_RAISED_LIMIT", "100000/minute"),
        help="the default limit and users.get's limit during the run "
        "(LOADTEST_RAISED_LIMIT, default 100000/minute); login keeps 5/minute per address",
    )
    p.add_argument(
        "--free-ports",
        action="store_true",
        help="always take free ports (default: 8080-8082 when all three are free)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=env("LOADTEST_GATEWAY_WORKERS"),
        help="gateway workers (LOADTEST_GATEWAY_WORKERS; default 2 with Redis, 1 in memory)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=env("LOADTEST_GATEWAY_THREADS", "8"),
        help="threads per gateway worker (LOADTEST_GATEWAY_THREADS, default 8)",
    )
    p.add_argument(
        "--token-ttl",
        type=positive_int,
        default=env("LOADTEST_TOKEN_TTL", "30"),
        help="access-token lifetime in seconds the users stub issues, short so the "
        "frontend users refresh during the run (LOADTEST_TOKEN_TTL, default 30)",
    )
    return p


# --- ports, Redis -------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def choose_ports(always_free: bool) -> tuple[int, int, int]:
    if not always_free and all(port_free(p) for p in DEFAULT_PORTS):
        return DEFAULT_PORTS
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    gateway, users, orders = sorted(ports)
    return gateway, users, orders


def redis_command(db: int, *command: str, timeout: float = 0.5) -> str | None:
    """One Redis command over RESP on 127.0.0.1:6379; its simple or integer reply."""
    payload = b"".join(
        b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        for parts in ([b"SELECT", str(db).encode()], [c.encode() for c in command])
    )
    try:
        with socket.create_connection(REDIS, timeout=timeout) as conn:
            conn.sendall(payload)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = conn.recv(4096)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    selected, answer = reply.split(b"\r\n")[:2]
    if selected != b"+OK" or answer[:1] not in (b"+", b":"):
        return None
    return answer[1:].decode()


def choose_storage(requested: str) -> tuple[str, str]:
    """The storage URI and why it was chosen.

    auto: Redis when it answers PING, in the highest-numbered empty database, so the
    run's counters start at zero and nothing of anyone else's is touched (the keys
    expire by themselves a minute after the run).
    """
    if requested != "auto":
        return requested, "as asked"
    if redis_command(0, "PING") != "PONG":
        return "memory://", f"no Redis answered at {REDIS[0]}:{REDIS[1]}"
    for db in range(15, 0, -1):
        if redis_command(db, "DBSIZE") == "0":
            return f"redis://{REDIS[0]}:{REDIS[1]}/{db}", "Redis answered PING; an empty database"
    return "memory://", "Redis answered, but has no empty database (1-15) for this run"


# --- processes ----------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    argv: list[str]
    log: Path
    url: str = ""
    ready_path: str = "/healthz"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        with open(self.log, "wb") as log:
            # Its own process group: stopping the group reaches gunicorn's workers too.
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise Failed(f"the {self.name} stopped at start-up (see {self.log}):\n{tail}")
            status, _ = http_get(self.url + self.ready_path)
            if status == 200:
                return
            time.sleep(0.2)
        raise Failed(
            f"the {self.name} did not get ready within {READY_SECONDS:g} s; see {self.log}"
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def group_alive(self) -> bool:
        if self.process is None:
            return False
        self.process.poll()  # reap the leader, so a dead one does not count
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, deadline: float) -> None:
        """SIGTERM was sent; wait for the group until `deadline`, then kill what is left."""
        if self.process is None:
            return
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.signal(signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def venv_script(name: str) -> str:
    """A console script next to this interpreter (the .venv's), else from PATH."""
    script = Path(sys.executable).parent / name
    return str(script) if script.exists() else name


@dataclass
class Stack:
    ports: tuple[int, int, int]
    storage: str
    workers: int
    threads: int
    token_ttl: int
    raised_limit: str
    logs: Path
    parts: list[Part] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.ports[0]}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in OUTSIDE_SETTINGS}
        gateway, users, orders = self.ports
        env.update(
            USERS_URL=f"http://{HOST}:{users}",
            ORDERS_URL=f"http://{HOST}:{orders}",
            # Links name the gateway's own address, also on ports other than 8080.
            GATEWAY_PUBLIC_URL=self.url,
            RATE_LIMIT_STORAGE=self.storage,
            # Every load user of one role shares one identity (and all share one
            # address): the per-client limits they would exhaust are raised.
            RATE_LIMIT_DEFAULT=self.raised_limit,
            RATE_LIMIT_USERS_GET=self.raised_limit,
            NO_PROXY="127.0.0.1,localhost",
        )
        return env

    def start(self) -> None:
        gateway, users, orders = self.ports
        stub = venv_script("upstream-stub")
        self.parts = [
            Part(
                "users stub",
                [
                    stub,
                    "--service",
                    "users",
                    "--host",
                    HOST,
                    "--port",
                    str(users),
                    "--issuer",
                    f"http://{HOST}:{users}",
                    "--token-ttl",
                    str(self.token_ttl),
                ],
                self.logs / "users.log",
                f"http://{HOST}:{users}",
            ),
            Part(
                "orders stub",
                [stub, "--service", "orders", "--host", HOST, "--port", str(orders)],
                self.logs / "orders.log",
                f"http://{HOST}:{orders}",
            ),
            Part(
                "gateway",
                [
                    venv_script("gateway"),
                    "serve",
                    "-c",
                    str(ROUTES),
                    "--host",
                    HOST,
                    "--port",
                    str(gateway),
                    "--workers",
                    str(self.workers),
                    "--threads",
                    str(self.threads),
                ],
                self.logs / "gateway.log",
                self.url,
                ready_path="/readyz",
            ),
        ]
        env = self.env()
        for part in self.parts:
            part.start(env)
            part.wait_ready()
            print(f"loadtest: {part.name} ready at {part.url}", flush=True)
        # With on_storage_error: allow the gateway is ready without its storage; a load
        # run that meant to count in Redis must not quietly run unlimited.
        _, body = http_get(self.url + "/readyz")
        try:
            storage = json.loads(body)["checks"]["rate_limit_storage"]
        except (ValueError, KeyError, TypeError):
            storage = "unknown"
        if storage != "ok":
            raise Failed(f"the gateway reports its rate-limit storage {self.storage} {storage!r}")

    def metrics(self, path: Path) -> None:
        status, body = http_get(self.url + "/metrics", timeout=5)
        if status == 200:
            path.write_bytes(body)

    def stop(self) -> None:
        started = [p for p in reversed(self.parts) if p.process is not None]
        for part in started:
            part.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for part in started:
            part.stop(deadline)
        if started:
            print("loadtest: stopped the gateway and both stubs.", flush=True)


def run_locust(args: argparse.Namespace, host: str, out: Path, seconds: int) -> int:
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        f"{args.spawn_rate:g}",
        "--run-time",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--only-summary",
    ]
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}
    with open(out / "locust.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        return process.wait(timeout=seconds + LOCUST_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        print(
            f"loadtest: Locust overran {seconds} s + {LOCUST_GRACE_SECONDS:g} s; stopping it",
            file=sys.stderr,
        )
        return -1
    finally:
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # Locust writes its reports on SIGTERM
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- summary ------------------------------------------------------------------------------


@dataclass
class Row:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: str
    p95: str
    p99: str


@dataclass
class Summary:
    rows: list[Row]
    total: Row
    expected_429: int
    failure_kinds: list[tuple[int, str, str, str]]  # occurrences, method, name, error
    exceptions: list[tuple[int, str]]  # errors raised in the workload's own code

    @property
    def abusive_attempts(self) -> int:
        return sum(r.requests for r in self.rows if r.name == ABUSIVE)

    @property
    def failure_ratio(self) -> float:
        """Unexpected failures per request, the expected 429s left out of the count (the
        abusive client's hammering would otherwise dilute the ratio)."""
        judged = self.total.requests - self.expected_429
        return self.total.failures / judged if judged > 0 else 1.0


def read_summary(out: Path) -> Summary:
    """Locust's statistics per request name and Aggregated, and its failures.

    From locust_final_stats.csv and locust_final_failures.csv (written by the locustfile
    once the run is over), else from locust_stats.csv and locust_failures.csv, which
    Locust refreshes once a second and so may miss the last second.
    """
    final = (out / "locust_final_stats.csv").exists()
    stats = out / ("locust_final_stats.csv" if final else "locust_stats.csv")
    if not stats.exists():
        raise Failed(f"Locust wrote no {stats.name}; see {out / 'locust.log'}")
    rows: list[Row] = []
    total: Row | None = None
    with open(stats, newline="") as handle:
        for line in csv.DictReader(handle):
            row = Row(
                method=line["Type"],
                name=line["Name"],
                requests=int(line["Request Count"]),
                failures=int(line["Failure Count"]),
                rps=float(line["Requests/s"]),
                p50=line["50%"],
                p95=line["95%"],
                p99=line["99%"],
            )
            if row.name == "Aggregated":
                total = row
            else:
                rows.append(row)
    if total is None:
        raise Failed(f"{stats} has no Aggregated row")
    kinds: list[tuple[int, str, str, str]] = []
    failures = out / ("locust_final_failures.csv" if final else "locust_failures.csv")
    if failures.exists():
        with open(failures, newline="") as handle:
            for line in csv.DictReader(handle):
                kinds.append(
                    (int(line["Occurrences"]), line["Method"], line["Name"], line["Error"])
                )
    kinds.sort(reverse=True)
    raised: list[tuple[int, str]] = []
    exceptions = out / "locust_exceptions.csv"
    if exceptions.exists():
        with open(exceptions, newline="") as handle:
            raised = [(int(line["Count"]), line["Message"]) for line in csv.DictReader(handle)]
    expected = sum(r.requests for r in rows if r.name.endswith(EXPECTED))
    return Summary(rows, total, expected, kinds, sorted(raised, reverse=True))


def locust_warnings(log: Path, most: int = 10) -> list[str]:
    """Locust's warnings and errors (such as its own CPU running short), one line each."""
    if not log.exists():
        return []
    found = [
        line.split("/WARNING/", 1)[-1].split("/ERROR/", 1)[-1].strip()
        for line in log.read_text(errors="replace").splitlines()
        if "/WARNING/" in line or "/ERROR/" in line or line.startswith("Traceback")
    ]
    return list(dict.fromkeys(found))[:most]


def gateway_5xx(log: Path, most: int = 10) -> list[str]:
    """The gateway's 5xx answers in its access log, counted by status, route and reason."""
    if not log.exists():
        return []
    counts: dict[tuple[int, str, str], int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            status = int(entry["status"])
        except (ValueError, KeyError, TypeError):
            continue
        if status >= 500:
            why = entry.get("auth_failure") or entry.get("upstream_error") or "-"
            key = (status, str(entry.get("route")), str(why))
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:most]
    return [f"{n} x {status} on {route} ({why})" for (status, route, why), n in ranked]


def table(summary: Summary) -> str:
    header = ("method", "name", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms")
    lines = [
        (r.method, r.name, str(r.requests), str(r.failures), f"{r.rps:.1f}", r.p50, r.p95, r.p99)
        for r in [*summary.rows, summary.total]
    ]
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [fmt(header), rule, *(fmt(cells) for cells in lines[:-1]), rule, fmt(lines[-1])]
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------------


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def results_folder(root: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = root / stamp
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = root / f"{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        seconds = run_seconds(args.time)
    except argparse.ArgumentTypeError as exc:
        print(f"loadtest: --time: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    out = results_folder(args.results.resolve())
    logs = out / "logs"
    logs.mkdir()
    storage, why = choose_storage(args.storage)
    in_memory = storage.startswith("memory://")
    workers = args.workers or (1 if in_memory else 2)
    stack = Stack(
        ports=choose_ports(args.free_ports),
        storage=storage,
        workers=workers,
        threads=args.threads,
        token_ttl=args.token_ttl,
        raised_limit=args.raised_limit,
        logs=logs,
    )
    banner = (
        f"loadtest: rate limits in {storage} ({why}); gateway {workers} worker(s) x "
        f"{args.threads} threads\n"
        f"loadtest: limits for this run: default and users.get {args.raised_limit} "
        "(raised by environment), auth.login 5/minute per address (as in routes.yaml)\n"
        f"loadtest: {args.users} users, {args.spawn_rate:g} spawned/s, {seconds} s; "
        f"results in {out}"
    )
    print(banner, flush=True)
    (out / "run.txt").write_text(banner + "\n")
    code = 0
    try:
        with signals_as_interrupt():
            try:
                stack.start()
                print(f"loadtest: running Locust against {stack.url} for {seconds} s", flush=True)
                locust_code = run_locust(args, stack.url, out, seconds)
                stack.metrics(out / "metrics.txt")
            finally:
                stack.stop()
    except Interrupted as exc:
        print(f"loadtest: interrupted ({exc}); everything started is stopped", file=sys.stderr)
        return 130
    except Failed as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    try:
        summary = read_summary(out)
    except Failed as exc:
        print(f"loadtest: {exc} (Locust exit {locust_code})", file=sys.stderr)
        return 2
    for line in locust_warnings(out / "locust.log"):
        print(f"loadtest: Locust said: {line}")
    print()
    print(table(summary))
    print()
    for occurrences, method, name, error in summary.failure_kinds[:10]:
        print(f"loadtest: failure x{occurrences}: {method} {name}: {error}")
    for count, message in summary.exceptions[:5]:
        print(f"loadtest: the workload raised x{count}: {message}")
    for line in gateway_5xx(logs / "gateway.log"):
        print(f"loadtest: gateway access log: {line}")
    limit = args.max_failure_ratio
    total = summary.total
    print(
        f"loadtest: {total.requests} requests, {summary.expected_429} of them expected 429s "
        f"(counted as successes); {total.failures} unexpected failures, "
        f"{summary.failure_ratio:.2%} of the other {total.requests - summary.expected_429} "
        f"requests (threshold {limit:.2%})"
    )
    if total.requests == 0 or total.requests == total.failures:
        print("loadtest: FAILED: no request succeeded", file=sys.stderr)
        code = 1
    elif summary.exceptions:
        print("loadtest: FAILED: the workload's own code raised errors", file=sys.stderr)
        code = 1
    elif summary.abusive_attempts and not summary.expected_429:
        print("loadtest: FAILED: the abusive client never met the login limit", file=sys.stderr)
        code = 1
    elif summary.failure_ratio > limit:
        print("loadtest: FAILED: unexpected failures over the threshold", file=sys.stderr)
        code = 1
    elif locust_code == -1:
        print("loadtest: FAILED: Locust did not finish in time", file=sys.stderr)
        code = 1
    else:
        print("loadtest: passed")
    print(
        f"loadtest: CSV, report.html, metrics.txt and logs in {out} "
        f"({time.monotonic() - started:.0f} s in all)"
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
