#!/usr/bin/env python3
"""What one keep-alive GET to an upstream costs with each Python HTTP client.

Starts the users stub, then times N sequential GETs of one user (about 250 bytes of
JSON) on one keep-alive connection with: httpx.Client.get; httpx's build_request +
send(stream=True) as the gateway used to forward; httpcore's ConnectionPool as the
gateway forwards now (with its deadline backend); urllib3's HTTPConnectionPool; and
the standard library's http.client. Prints wall time and CPU time (of this process
only: the stub's share is excluded) per request, the best of 3 runs.

    .venv/bin/python loadtests/micro/http_clients.py          # 3,000 requests per client
"""

from __future__ import annotations

import http.client
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpcore
import httpx
import urllib3

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import bench  # noqa: E402  (servers and ports)

from gateway.deadline import deadline_at, deadline_pool  # noqa: E402

HEADERS = [("Accept", "application/json"), ("X-Request-ID", "micro"), ("X-Forwarded-For", "::1")]


def measure(name: str, call: Callable[[], object], n: int) -> None:
    for _ in range(200):
        call()
    best: tuple[float, float] | None = None
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            call()
        result = ((time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6)
        best = result if best is None or result[1] < best[1] else best
    assert best is not None
    print(f"{name:<34}{best[0]:9.0f}{best[1]:9.0f}", flush=True)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with tempfile.TemporaryDirectory(prefix="gateway-clients-") as tmp:
        port = bench.free_port()
        stub = bench.users_stub(port, Path(tmp) / "stub.log")
        stub.start(Path(tmp), {**bench.os.environ})
        try:
            user = bench.first_user_id(port)
            path = f"/users/{user}"
            url = f"http://{bench.LOOPBACK}:{port}{path}"
            print(f"{n} sequential keep-alive GETs of {path} per client, best of 3")
            print(f"{'client':<34}{'wall us':>9}{'CPU us':>9}")

            client = httpx.Client(base_url=f"http://{bench.LOOPBACK}:{port}", trust_env=False)
            measure("httpx Client.get", lambda: client.get(path, headers=HEADERS).content, n)

            def httpx_stream() -> None:
                request = client.build_request("GET", url, headers=HEADERS)
                with deadline_at(time.monotonic() + 10):
                    response = client.send(request, stream=True)
                    b"".join(response.iter_raw())
                    response.close()

            measure("httpx build_request + send(stream)", httpx_stream, n)

            pool = deadline_pool(retries=0)
            raw = [(b"Host", f"{bench.LOOPBACK}:{port}".encode())]
            raw += [(k.encode(), v.encode()) for k, v in HEADERS]
            target = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=path)

            def httpcore_pool() -> None:
                request = httpcore.Request(b"GET", target, headers=raw)
                with deadline_at(time.monotonic() + 10):
                    response = pool.handle_request(request)
                    b"".join(response.iter_stream())
                    response.close()

            measure("httpcore ConnectionPool (gateway)", httpcore_pool, n)

            u3 = urllib3.HTTPConnectionPool(bench.LOOPBACK, port, maxsize=4, retries=False)

            def urllib3_pool() -> None:
                response = u3.urlopen(
                    "GET", path, headers=dict(HEADERS), preload_content=False, redirect=False
                )
                b"".join(response.stream(65536))
                response.release_conn()

            measure("urllib3 HTTPConnectionPool", urllib3_pool, n)

            conn = http.client.HTTPConnection(bench.LOOPBACK, port)

            def stdlib() -> None:
                conn.request("GET", path, headers=dict(HEADERS))
                conn.getresponse().read()

            measure("http.client", stdlib, n)
        finally:
            stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
