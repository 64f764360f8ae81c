#!/usr/bin/env python3
"""CPU per request of the gateway's span work alone, in one process: the server span,
one upstream attempt's client span (or, unsampled, its traceparent) and the end, at
sample_ratio 0.01 and 1.0, spans exported to memory. What a traced request adds
before gunicorn, the policies or the upstream come in.

    .venv/bin/python loadtests/micro/tracing_cost.py
"""

import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config.model import TracingSettings
from gateway.tracing import Tracing

N = 20_000


def per_request(ratio: float) -> float:
    tracing = Tracing(TracingSettings(sample_ratio=ratio), exporter=InMemorySpanExporter())
    headers: dict[str, str] = {}
    started = time.process_time()
    for _ in range(N):
        span = tracing.server_span("GET", "/api/v1/users/1", headers, "127.0.0.1")
        with tracing.client_span(span, "users", "GET", 1):
            pass
        span.end()
    spent = (time.process_time() - started) / N * 1e6
    tracing.close()
    return spent


for ratio in (0.01, 1.0):
    best = min(per_request(ratio) for _ in range(3))
    print(f"sample_ratio {ratio}: {best:.1f} us of CPU per request (best of 3 x {N})")
