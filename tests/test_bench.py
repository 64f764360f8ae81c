"""`make bench` in a tiny mode: the driver runs end to end and writes its JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from gateway.config.load import load_config_text
from gateway.config.model import RouteCache

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "loadtests" / "bench.py"
sys.path.insert(0, str(BENCH.parent))
import bench  # noqa: E402  (loadtests/bench.py: a script, not a package)

REDIS_URL = "redis://127.0.0.1:6379/0"
TARGETS = ["direct", "passthrough", "none", "jwt", "jwt+redis", "all", "compose", "cached"]
TARGETS += ["all@100", "static-direct", "static-passthrough", "static-all", "static-cached"]
TARGETS += ["static-all-threaded", "static-all-traced", "static-all-traced-1pct"]
STATIC_UPSTREAM = ROOT / "loadtests" / "static_upstream.py"
PARTS = ["users_a", "users_b", "users_c"]


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


def _compose_config(routes: int, tmp_path: Path) -> dict[str, object]:
    url = "http://127.0.0.1:9"
    return bench.gateway_config("compose", routes, url, tmp_path / "k.pem", REDIS_URL, "", "")


def test_compose_variant_is_none_with_three_parts_one_upstream_each(tmp_path: Path) -> None:
    none = bench.gateway_config("none", 10, "http://127.0.0.1:9", tmp_path / "k.pem", "", "", "")
    config = load_config_text(yaml.safe_dump(_compose_config(10, tmp_path)), "bench.yaml")
    assert sorted(config.upstreams) == PARTS
    route = next(r for r in config.routes if r.name == "bench.users.get")
    assert route.path == "/api/v1/users/{user_id}" and route.upstream is None
    assert route.auth == () and route.rate_limit is None  # public, as `none`
    assert route.compose is not None
    assert [(p.name, p.upstream, p.path, p.required) for p in route.compose.parts] == [
        (name, name, "/users/{user_id}", True) for name in PARTS
    ]
    assert len(config.routes) == 10
    # Same policies as `none`: nothing else at the top level.
    assert set(_compose_config(10, tmp_path)) == set(none)


def test_compose_is_a_default_variant_and_not_the_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_VARIANTS", raising=False)
    monkeypatch.delenv("BENCH_SWEEP_VARIANT", raising=False)
    args = bench.parse_args([])
    assert args.variants == ["none", "jwt", "jwt+redis", "all", "compose", "cached"]
    assert args.sweep_variant == "all"
    assert bench.parse_args(["--variants", "compose"]).variants == ["compose"]


def test_compose_problem_refuses_partial_or_incomplete_answers() -> None:
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json"
    whole = json.dumps({name: {"id": "usr_1"} for name in PARTS})
    assert bench.compose_problem(head, whole) is None
    partial = json.dumps({"users_a": {}, "users_b": None, "users_c": {}, "_problems": {}})
    problem = bench.compose_problem(head + "\r\nGateway-Partial: users_b", partial)
    assert problem is not None and "partial" in problem and "users_b" in problem
    problem = bench.compose_problem(head, json.dumps({"users_a": {}, "users_b": {}}))
    assert problem is not None and "expected exactly" in problem
    assert bench.compose_problem(head, "not json") == "the body is not JSON"


class _Composed(BaseHTTPRequestHandler):
    """Answers like a composed route whose users_b part failed (were it optional)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"users_a": {}, "users_b": None, "users_c": {}, "_problems": {}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Gateway-Partial", "users_b")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def partial_server() -> Iterator[int]:
    yield from _serve(_Composed)


def test_check_stops_the_bench_on_a_partial_composed_answer(
    partial_server: int, tmp_path: Path
) -> None:
    server = bench.Server("gateway compose", [], partial_server, tmp_path / "log", 2)
    target = bench.Target("compose", "gateway", "compose", 10, server, "/api/v1/users/u1")
    with pytest.raises(bench.BenchError, match="partial answer \\(Gateway-Partial: users_b\\)"):
        bench.Bench(bench.parse_args([]), tmp_path).check(target, attempts=1)
    assert target.checks == {}


def test_compose_figures_and_line() -> None:
    figures = bench.compose_figures(3.1004, 0.3734)
    assert figures == {
        "parts": 3,
        "c1_p50_ms": 3.1,
        "direct_c1_p50_ms": 0.373,
        "three_direct_in_sequence_ms": 1.119,
        "ratio_vs_three_direct": 2.77,
    }
    assert bench.compose_line("compose", figures) == (
        "compose: p50 3.10 ms at concurrency 1 for 3 parts, against 3 direct calls in "
        "sequence 1.12 ms (2.77x)"
    )


def test_cpu_seconds_reads_this_process_busy_work() -> None:
    pid = os.getpid()
    before = bench.cpu_seconds(pid)
    times_before = os.times()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # 0.3 s of CPU in this process
        sum(range(1000))
    after = bench.cpu_seconds(pid)
    spent = (os.times().user + os.times().system) - (times_before.user + times_before.system)
    assert before is not None and after is not None
    # Clock ticks (1/100 s, usually): within a few ticks of what os.times() says.
    assert after - before == pytest.approx(spent, abs=0.05)
    assert after - before >= 0.25
    assert bench.cpu_seconds(2**22 + 12345) is None  # no such process


def test_server_cpu_counts_the_master_and_its_workers(tmp_path: Path) -> None:
    """A master that only waits, and a worker that burns 0.3 s of CPU then sleeps."""
    busy = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass\n"
    code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {busy!r} + "
    code += "'time.sleep(30)'])\ntime.sleep(30)\n"
    server = bench.Server("busy", [sys.executable, "-c", code], 0, tmp_path / "log", 0)
    server.process = subprocess.Popen(server.argv)
    workers: list[int] = []
    try:
        for _ in range(100):
            if workers := bench.children_of(server.process.pid):
                break
            time.sleep(0.02)
        assert len(workers) == 1
        worker = workers[0]
        for _ in range(100):  # until the worker has burnt its 0.3 s
            if (bench.cpu_seconds(worker) or 0.0) >= 0.29:
                break
            time.sleep(0.05)
        total, seen = server.cpu()
        master = bench.cpu_seconds(server.process.pid)
        assert seen == [worker] and master is not None
        assert total - master == pytest.approx(bench.cpu_seconds(worker), abs=0.02)
        assert total - master >= 0.29
    finally:
        for pid in workers:
            os.kill(pid, 9)
        server.process.kill()
        server.process.wait()


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes, bytes]:
    while (parsed := bench.parse_response(buf)) is None:
        data = sock.recv(65536)
        assert data, "closed before a whole response"
        buf += data
    status, end, _ = parsed
    head, _, body = bytes(buf[:end]).partition(b"\r\n\r\n")
    del buf[:end]
    return status, head, body


@pytest.fixture
def static_port() -> Iterator[int]:
    port = bench.free_port()
    argv = [sys.executable, str(STATIC_UPSTREAM), "--port", str(port)]
    process = subprocess.Popen(argv)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


def test_static_upstream_answers_get_and_head_on_one_keep_alive_connection(
    static_port: int,
) -> None:
    body = bench.static_body()
    assert json.loads(body)["id"] and 150 <= len(body) <= 300  # a user's size
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", static_port), timeout=5) as sock:
        for path, method in (("/users/u1", "GET"), ("/healthz", "HEAD"), ("/x?y=1", "GET")):
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if method == "HEAD":  # no body: read the head alone
                while b"\r\n\r\n" not in buf:
                    buf += sock.recv(65536)
                head, _, rest = bytes(buf).partition(b"\r\n\r\n")
                buf[:] = rest
                assert head.startswith(b"HTTP/1.1 200 OK"), head
                assert f"Content-Length: {len(body)}".encode() in head
                continue
            status, head, got = _read_response(sock, buf)
            assert status == 200 and got == body
            assert b"Content-Type: application/json" in head and b"Connection: close" not in head
        assert buf == b""
        # A body sent with a request is read and dropped; other methods get 405.
        sock.sendall(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        status, head, _ = _read_response(sock, buf)
        assert status == 405 and b"Allow: GET, HEAD" in head
        # Connection: close is honoured: the answer says so and the server closes.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, head, got = _read_response(sock, buf)
        assert status == 200 and got == body and b"Connection: close" in head
        assert sock.recv(65536) == b""


def test_static_upstream_http10_closes_and_refuses_huge_heads(static_port: int) -> None:
    with socket.create_connection(("127.0.0.1", static_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        buf = bytearray()
        status, head, _ = _read_response(sock, buf)
        assert status == 200 and b"Connection: close" in head
        assert sock.recv(65536) == b""
    with socket.create_connection(("127.0.0.1", static_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        status, _, _ = _read_response(sock, bytearray())
        assert status == 431


def test_nginx_config_serves_the_static_body(tmp_path: Path) -> None:
    config = bench.nginx_config(8099, tmp_path)
    assert "listen 127.0.0.1:8099;" in config and "daemon off;" in config
    assert f"return 200 '{bench.static_body().decode()}';" in config
    assert f"pid {tmp_path / 'nginx.pid'};" in config


def _variant_config(variant: str, tmp_path: Path) -> dict[str, object]:
    _, key_file = bench.make_key(tmp_path)
    url = "http://127.0.0.1:9"
    return bench.gateway_config(variant, 10, url, key_file, REDIS_URL, "moving-window", "b")


def test_cached_variant_is_all_with_a_cache_on_the_benched_route(tmp_path: Path) -> None:
    everything, cached = _variant_config("all", tmp_path), _variant_config("cached", tmp_path)
    assert cached["cache"] == {"storage": "memory://"}
    assert "cache" not in everything
    assert {k: v for k, v in cached.items() if k not in ("cache", "routes")} == {
        k: v for k, v in everything.items() if k != "routes"
    }
    routes = cached["routes"]
    assert isinstance(routes, list)
    [bench_route] = [r for r in routes if "cache" in r]
    assert bench_route["cache"] == {"ttl": 60, "scope": "identity"}
    assert [{k: v for k, v in r.items() if k != "cache"} for r in routes] == everything["routes"]
    config = load_config_text(yaml.safe_dump(cached), "bench.yaml")
    reference = load_config_text(yaml.safe_dump(everything), "bench.yaml")
    assert config.cache.storage == "memory://"
    route = next(r for r in config.routes if r.name == "bench.users.get")
    assert route.cache == RouteCache(ttl=60, scope="identity")
    # Every policy of `all`, the same route otherwise; the fillers keep no answers.
    same = next(r for r in reference.routes if r.name == "bench.users.get")
    assert dataclasses.replace(route, cache=None) == same
    assert route.auth == ("jwt", "api_key") and route.roles and route.rate_limit
    assert route.versions is not None and config.cors.allow_origins == ("http://localhost:3000",)
    assert [r.name for r in config.routes if r.cache is not None] == ["bench.users.get"]
    assert len(config.routes) == 10


def test_cached_is_a_redis_variant_and_every_policy_one() -> None:
    assert "cached" in bench.POLICY_VARIANTS and "cached" in bench.REDIS_VARIANTS
    assert bench.EVERY_POLICY == ("all", "cached")
    assert bench.parse_args(["--variants", "all,cached"]).variants == ["all", "cached"]


def test_cache_problem_accepts_a_hit_only() -> None:
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json"
    assert bench.cache_problem(head + "\r\nCache-Status: gateway; hit; ttl=59") is None
    assert bench.cache_problem(head + "\r\ncache-status:gateway;hit") is None
    miss = bench.cache_problem(head + "\r\nCache-Status: gateway; fwd=uri-miss; stored")
    assert miss == "not a cache hit (Cache-Status: gateway; fwd=uri-miss; stored)"
    stale = bench.cache_problem(head + "\r\nCache-Status: gateway; fwd=stale; fwd-status=304")
    assert stale is not None and "not a cache hit" in stale
    # A collapsed miss is served what another request fetched: not a hit either.
    collapsed = bench.cache_problem(head + "\r\nCache-Status: gateway; fwd=uri-miss; collapsed")
    assert collapsed is not None
    assert bench.cache_problem(head + "\r\nCache-Status: other; hit") is not None
    assert bench.cache_problem(head + "\r\nCache-Status: gateway; hitless") is not None
    problem = bench.cache_problem(head)
    assert problem is not None and problem.startswith("no Cache-Status")


def test_metrics_cache_lookups_reads_the_benched_route_by_result() -> None:
    text = "\n".join(
        [
            "# HELP gateway_cache_lookups_total Requests to cached routes",
            "# TYPE gateway_cache_lookups_total counter",
            'gateway_cache_lookups_total{result="hit",route="bench.users.get"} 1234.0',
            'gateway_cache_lookups_total{route="bench.users.get",result="miss"} 2.0',
            'gateway_cache_lookups_total{result="hit",route="f1"} 99.0',
            'gateway_cache_lookups_created{result="hit",route="bench.users.get"} 1.7e9',
            "gateway_ratelimit_storage_errors_total 0.0",
        ]
    )
    assert bench.metrics_cache_lookups(text, "bench.users.get") == {"hit": 1234, "miss": 2}
    assert bench.metrics_cache_lookups(text, "nothing") == {}


def test_cache_round_problem_refuses_runs_of_misses() -> None:
    assert bench.cache_round_problem({"hit": 3000}, 3000) is None
    # The in-flight requests at the end of a run are answered but not counted by the
    # load generator; an entry expiring during the run costs one miss per worker.
    assert bench.cache_round_problem({"hit": 3016, "miss": 2}, 3000) is None
    assert bench.cache_round_problem({"hit": 2980, "stale": 2}, 3000) is None
    problem = bench.cache_round_problem({"hit": 1, "miss": 2999}, 3000)
    assert (
        problem == "1 cache hits among 3000 lookups for 3000 requests (the others: {'miss': 2999})"
    )
    assert bench.cache_round_problem({"hit": 2900, "miss": 100}, 3000) is not None
    # No lookups at all (a route without a cache): no hits for the requests.
    problem = bench.cache_round_problem({}, 3000)
    assert problem == "0 cache hits among 0 lookups for 3000 requests"
    assert bench.cache_round_problem({"hit": 0, "miss": 0}, 0) is None


class _Cached(BaseHTTPRequestHandler):
    """Answers as the gateway's `cached` route would, policies' headers and all: a
    miss first on each connection, then hits, unless `hits` is off (always a miss)."""

    protocol_version = "HTTP/1.1"
    hits = True

    def setup(self) -> None:
        super().setup()
        self.answered = 0

    def do_GET(self) -> None:
        body = b'{"id": "usr_1"}'
        hit = self.hits and self.answered > 0
        self.answered += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-RateLimit-Limit", "1000000")
        self.send_header("Access-Control-Allow-Origin", "http://localhost:3000")
        self.send_header("Deprecation", "@1767225600")
        status = "gateway; hit; ttl=59" if hit else "gateway; fwd=uri-miss; stored"
        self.send_header("Cache-Status", status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Missing(_Cached):
    hits = False


@pytest.fixture
def cached_server() -> Iterator[int]:
    yield from _serve(_Cached)


@pytest.fixture
def missing_server() -> Iterator[int]:
    yield from _serve(_Missing)


def _cached_target(port: int, tmp_path: Path) -> bench.Target:
    server = bench.Server("gateway static-cached", [], port, tmp_path / "log", 2)
    path = "/api/v1/users/u1"
    return bench.Target("static-cached", "gateway", "cached", 10, server, path, upstream="static")


def test_check_takes_the_second_answer_of_one_connection_for_a_hit(
    cached_server: int, tmp_path: Path
) -> None:
    target = _cached_target(cached_server, tmp_path)
    answers = bench.http_gets(cached_server, target.path, {}, 2)
    assert [bench.cache_problem(head) is None for _, head, _ in answers] == [False, True]
    bench.Bench(bench.parse_args([]), tmp_path).check(target, attempts=1)
    assert target.checks == {
        "status": 200,
        "rate_limit_headers": True,
        "cors": True,
        "deprecation": True,
        "cache_hit": True,
    }


def test_check_stops_the_bench_when_the_cached_target_misses(
    missing_server: int, tmp_path: Path
) -> None:
    target = _cached_target(missing_server, tmp_path)
    with pytest.raises(bench.BenchError, match="not a cache hit .*fwd=uri-miss.*meaningless"):
        bench.Bench(bench.parse_args([]), tmp_path).check(target, attempts=1)
    assert target.checks == {}


def test_a_measured_run_of_misses_stops_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's lookups are read around the run; the CPU reading in between."""
    b = bench.Bench(bench.parse_args([]), tmp_path)
    target = _cached_target(0, tmp_path)
    counts = iter([{"hit": 500, "miss": 2}, {"hit": 3510, "miss": 2}])
    monkeypatch.setattr(b, "cache_lookups", lambda t: next(counts))
    monkeypatch.setattr(target.server, "cpu", lambda: (1.0, [11, 12]))
    monkeypatch.setattr(b, "load", lambda t, seconds: bench.RunResult(3000, 1.0, 1.0, 2.0, 0))
    result = b.measured_load(target, 1.0)
    assert result.cache_lookups == {"hit": 3010} and result.cpu_s == 0.0

    counts = iter([{"hit": 3510, "miss": 2}, {"hit": 3520, "miss": 2992}])
    with pytest.raises(bench.BenchError, match="static-cached: 10 cache hits among 3000"):
        b.measured_load(target, 1.0)
    # Other targets: no /metrics reading, no counts.
    other = bench.Target("static-all", "gateway", "all", 10, target.server, "/")
    assert b.measured_load(other, 1.0).cache_lookups is None


def _run(cpu_us: float, requests: int = 1000) -> bench.RunResult:
    return bench.RunResult(requests, 1.0, 1.0, 2.0, 0, cpu_s=cpu_us * requests / 1e6)


def test_cache_goal_is_the_median_of_the_per_round_cpu_ratios(tmp_path: Path) -> None:
    b = bench.Bench(bench.parse_args([]), tmp_path)
    server = bench.Server("x", [], 0, tmp_path / "log", 2)
    cached = bench.Target("static-cached", "gateway", "cached", 10, server, "/", upstream="static")
    forwarded = bench.Target("static-all", "gateway", "all", 10, server, "/", upstream="static")
    # Per round: 0.25, 0.2, 0.5 -> 0.25; the ratio of the medians (300/1000) differs.
    cached.rounds = [_run(300), _run(200), _run(1000)]
    forwarded.rounds = [_run(1200), _run(1000), _run(2000)]
    b.targets = [forwarded, cached]
    figures = bench.cache_hit_figures(cached, forwarded)
    assert figures == {
        "cached": "static-cached",
        "forwarded": "static-all",
        "cached_cpu_us_per_request": 300.0,
        "forwarded_cpu_us_per_request": 1200.0,
        "ratio": 0.25,
    }
    goals = b.goals([])
    assert [g["name"] for g in goals] == ["cache_hit_cpu_vs_forwarded"]
    goal = goals[0]
    assert goal["value"] == 0.25 and goal["limit"] == 0.333 and goal["met"] is True
    assert goal["cached_cpu_us_per_request"] == 300.0
    assert goal["forwarded_cpu_us_per_request"] == 1200.0
    assert goal["text"] == (
        "static-cached: a cache hit costs 0.250x the CPU per request of a forwarded one "
        "(static-all; µs: 300 against 1200; goal <= 0.333x)"
    )
    # Over a third: not met.
    cached.rounds = [_run(500), _run(400), _run(900)]
    goal = b.goals([])[0]
    assert goal["value"] == 0.417 and goal["met"] is False
    # Without the forwarded counterpart (no `all` variant), no goal.
    b.targets = [cached]
    assert b.goals([]) == []
    # No CPU reading in any round: no figures.
    cached.rounds = [bench.RunResult(10, 1.0, 1.0, 1.0, 0)]
    forwarded.rounds = [_run(1000)]
    assert bench.cache_hit_figures(cached, forwarded) is None


def test_cache_lookups_are_summed_over_the_rounds_of_cached_targets_only() -> None:
    rounds = [_run(100), _run(100)]
    assert bench.cache_lookups_sum(rounds) is None
    rounds[0].cache_lookups = {"hit": 1000}
    rounds[1].cache_lookups = {"hit": 990, "miss": 2}
    assert bench.cache_lookups_sum(rounds) == {"hit": 1990, "miss": 2}


def test_cpu_goal_line() -> None:
    assert bench.cpu_line("static-all", 1.2104, 1480.4, 1220.0) == (
        "static-all: 1.21x the passthrough's CPU per request (µs: 1480 against 1220; goal <= 1.0x)"
    )


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
        assert target["throughput"]["cpu_us_per_request"] > 0, target
        assert target["ratio_cpu_vs_passthrough"] > 0, target
        assert all(r["cpu_us_per_request"] > 0 for r in throughput["rounds"]), target
        assert target["upstream"] == ("static" if target["name"].startswith("static-") else "users")
        assert target["checks"]["status"] == 200, target
        # Counted from the gateway's /metrics; a busy machine may make a few Redis calls
        # miss their deadline, so only the count's presence is checked.
        storage_errors = target["ratelimit_storage_errors"]
        assert (storage_errors is None) == (target["kind"] != "gateway"), target
    by_name = {t["name"]: t for t in result["targets"]}
    assert by_name["direct"]["ratio_vs_direct"] == 1.0
    # The static-* targets' ratios are against static-direct and static-passthrough.
    assert by_name["static-direct"]["ratio_vs_direct"] == 1.0
    assert by_name["static-passthrough"]["ratio_vs_passthrough"] == 1.0
    assert by_name["static-passthrough"]["ratio_cpu_vs_passthrough"] == 1.0
    assert by_name["passthrough"]["ratio_cpu_vs_passthrough"] == 1.0
    assert by_name["static-all"]["checks"] == by_name["all"]["checks"]
    assert by_name["static-cached"]["checks"] == by_name["cached"]["checks"]
    assert result["machine"]["static_server"]
    assert by_name["all"]["checks"] == {
        "status": 200,
        "rate_limit_headers": True,
        "cors": True,
        "deprecation": True,
    }
    assert by_name["compose"]["checks"] == {
        "status": 200,
        "whole_answer": True,
        "parts": True,
    }
    assert by_name["cached"]["checks"] == {
        "status": 200,
        "rate_limit_headers": True,
        "cors": True,
        "deprecation": True,
        "cache_hit": True,
    }
    # The cached targets' measured requests were cache hits, by the gateway's count.
    for name in TARGETS:
        lookups = by_name[name]["cache_lookups"]
        if name not in ("cached", "static-cached"):
            assert lookups is None, name
            continue
        rounds = by_name[name]["throughput"]["rounds"]
        assert lookups == rounds[0]["cache_lookups"], name
        assert lookups["hit"] >= 0.99 * rounds[0]["requests"] > 0, name
        assert sum(lookups.values()) - lookups["hit"] <= 0.01 * sum(lookups.values()), name
    for name in ("none", "compose", "all@100", "passthrough"):
        memory = by_name[name]["memory"]
        assert memory["workers"] == 2 and memory["max_rss_mib"] > 0, memory
        assert by_name[name]["startup_s"] > 0
    assert by_name["all@100"]["routes"] == 100
    assert by_name["compose"]["routes"] == 10 and by_name["compose"]["variant"] == "compose"

    # The composed target: its c1 p50 against three direct calls one after the other.
    assert [t["name"] for t in result["targets"] if "compose" in t] == ["compose"]
    compose = by_name["compose"]["compose"]
    assert set(compose) == {
        "parts",
        "c1_p50_ms",
        "direct_c1_p50_ms",
        "three_direct_in_sequence_ms",
        "ratio_vs_three_direct",
    }, compose
    assert compose["parts"] == 3
    assert compose["c1_p50_ms"] == by_name["compose"]["latency_c1"]["p50_ms"]
    assert compose["direct_c1_p50_ms"] == by_name["direct"]["latency_c1"]["p50_ms"] > 0
    assert compose["three_direct_in_sequence_ms"] == pytest.approx(
        3 * compose["direct_c1_p50_ms"], abs=0.0015
    )
    assert compose["ratio_vs_three_direct"] == pytest.approx(
        compose["c1_p50_ms"] / compose["three_direct_in_sequence_ms"], abs=0.0015
    )
    assert compose["ratio_vs_three_direct"] > 0

    goals = {g["name"]: g for g in result["goals"]}
    assert set(goals) == {
        "all_added_p50_vs_passthrough_c1",
        "routes_rps_spread",
        "slow_client_resistance_cost",
        "tracing_cpu_cost_1pct",
        "rss_per_worker_mib",
        "startup_s_largest_table",
        "all_cpu_vs_passthrough",
        "cache_hit_cpu_vs_forwarded",
    }
    for goal in goals.values():
        assert isinstance(goal["met"], bool) and goal["value"] is not None, goal
    cpu_goal = goals["all_cpu_vs_passthrough"]
    assert cpu_goal["limit"] == 1.0 and cpu_goal["moonshot"] == 0.77
    assert cpu_goal["moonshot_met"] == (cpu_goal["value"] <= 0.77)
    added_goal = goals["all_added_p50_vs_passthrough_c1"]
    assert added_goal["value"] == by_name["static-all"]["latency_c1"]["added_p50_ms"]
    assert added_goal["limit"] == by_name["static-passthrough"]["latency_c1"]["added_p50_ms"]
    assert added_goal["met"] == (added_goal["value"] <= added_goal["limit"])
    # Goal 4: the event-loop worker against the threaded one, same policies and rounds.
    threaded = by_name["static-all-threaded"]
    assert threaded["variant"] == "all" and threaded["checks"] == by_name["static-all"]["checks"]
    slow = goals["slow_client_resistance_cost"]
    evented_cpu = by_name["static-all"]["throughput"]["cpu_us_per_request"]
    threaded_cpu = threaded["throughput"]["cpu_us_per_request"]
    assert slow["value"] == pytest.approx(evented_cpu / threaded_cpu - 1, abs=0.002)
    assert slow["limit"] == 0.05
    # Tracing's cost: the same policies, spans sent to the bench's own sink.
    traced = goals["tracing_cpu_cost_1pct"]
    untraced_cpu = by_name["static-all"]["throughput"]["cpu_us_per_request"]
    sampled_cpu = by_name["static-all-traced-1pct"]["throughput"]["cpu_us_per_request"]
    assert traced["value"] == pytest.approx(sampled_cpu / untraced_cpu - 1, abs=0.002)
    assert traced["limit"] == 0.05 and traced["every_request"] is not None
    assert cpu_goal["value"] == by_name["static-all"]["ratio_cpu_vs_passthrough"]
    assert cpu_goal["text"].startswith("static-all: ") and "CPU per request" in cpu_goal["text"]
    assert "CPU µs/req" in done.stdout
    hit_goal = goals["cache_hit_cpu_vs_forwarded"]
    assert hit_goal["limit"] == 0.333
    assert (hit_goal["cached"], hit_goal["forwarded"]) == ("static-cached", "static-all")
    cached_cpu = by_name["static-cached"]["throughput"]["cpu_us_per_request"]
    forwarded_cpu = by_name["static-all"]["throughput"]["cpu_us_per_request"]
    assert hit_goal["cached_cpu_us_per_request"] == cached_cpu
    assert hit_goal["forwarded_cpu_us_per_request"] == forwarded_cpu
    # One round: the ratio of that round's figures.
    assert hit_goal["value"] == pytest.approx(cached_cpu / forwarded_cpu, rel=0.01)
    assert hit_goal["text"].startswith("static-cached: a cache hit costs ")

    # The table is printed with every target and every goal.
    for name in TARGETS:
        assert f"\n{name} " in done.stdout, done.stdout
    for goal in goals.values():
        assert goal["text"] in done.stdout, done.stdout
    # The compose figure: one line after the goals, not a goal of its own.
    line = (
        f"compose: p50 {compose['c1_p50_ms']:.2f} ms at concurrency 1 for 3 parts, against "
        f"3 direct calls in sequence {compose['three_direct_in_sequence_ms']:.2f} ms "
        f"({compose['ratio_vs_three_direct']:.2f}x)"
    )
    assert line in done.stdout, done.stdout
    after_goals = done.stdout.split(list(goals.values())[-1]["text"], 1)[1]
    assert line in after_goals, done.stdout
