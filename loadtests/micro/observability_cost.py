#!/usr/bin/env python3
"""Per-call cost of the access-log line and of the metrics updates, in one process.

Metrics in multiprocess mode (as under gunicorn); the access log written to a file
through the gateway's own stderr handler.
"""

import os
import sys
import tempfile
import time

WORK = tempfile.mkdtemp(prefix="gateway-observability-cost-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = WORK
sys.stderr = open(os.path.join(WORK, "stderr.log"), "w")  # the access log goes here
CONFIG = os.path.join(WORK, "routes.yaml")
with open(CONFIG, "w") as handle:
    handle.write(
        "version: 1\n"
        "upstreams:\n  fast: {url: 'http://127.0.0.1:18901', retries: 0}\n"
        "routes:\n"
        "  - {name: fast.get, path: '/fast/{rest:path}', methods: [GET], upstream: fast,\n"
        "     upstream_path: '/{rest:path}', auth: public}\n"
    )

import httpx  # noqa: E402
import respx  # noqa: E402

from gateway.app import Gateway, create_app  # noqa: E402
from gateway.observability import log_access  # noqa: E402

app = create_app(CONFIG)
client = app.test_client()
N = 20000


def per_call(fn, n=N):
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


fields = dict(
    request_id="93caf48f39a043eb82b0928029e6d14d",
    method="GET",
    path="/fast/item/1",
    route="fast.get",
    status=200,
    duration_ms=1.234,
    upstream="fast",
    upstream_ms=0.9,
    upstream_error=None,
    client="ip:127.0.0.1",
    auth_method=None,
    auth_failure=None,
    bytes_in=0,
    bytes_out=11,
)
log_us = per_call(lambda: log_access(**fields))

with respx.mock() as mock:
    mock.route().mock(return_value=httpx.Response(200, json={"ok": True}))
    captured = {}
    original = Gateway._observe

    def capture(self, ctx, response, seconds):
        captured["args"] = (self, ctx, response, seconds)
        original(self, ctx, response, seconds)

    Gateway._observe = capture
    client.get("/fast/item/1")
    Gateway._observe = original
    args = captured["args"]
    observe_us = per_call(lambda: original(*args))
    whole_us = per_call(lambda: client.get("/fast/item/1"), 3000)

print(
    f"log_access: {log_us:.1f} us/call; _observe (multiprocess): {observe_us:.1f} us/call; "
    f"whole in-process request (respx upstream): {whole_us:.1f} us"
)
