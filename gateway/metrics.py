"""Prometheus metrics, correct across gunicorn workers.

Under gunicorn the worker processes write their samples to files in
PROMETHEUS_MULTIPROC_DIR (prepared by the gunicorn hooks in serving.py, which also
mark dead workers), and /metrics merges them, so every worker's counts are seen and
none twice. In a single process (tests, `flask run`) the app's own registry serves.
prometheus_client is imported here only, on first use: it chooses its storage mode
from the environment at import time.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus
from typing import Any

log = logging.getLogger("gateway.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The gateway's metrics; one instance per app."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = prom.Counter(
            "gateway_requests",
            "Requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = prom.Histogram(
            "gateway_request_duration_seconds",
            "Whole-request latency, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = prom.Histogram(
            "gateway_upstream_duration_seconds",
            "Latency of the upstream call until its response headers, by upstream.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = prom.Counter(
            "gateway_rate_limited",
            "Requests refused with 429, by route.",
            ["route"],
            registry=r,
        )
        self.auth_failures = prom.Counter(
            "gateway_auth_failures",
            "Refused authentications and authorisations, by reason.",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = prom.Counter(
            "gateway_upstream_errors",
            "Failed upstream calls, by upstream and kind (refused, reset, timeout, "
            "bad_response, breaker_open).",
            ["upstream", "kind"],
            registry=r,
        )
        self.breaker_open = prom.Gauge(
            "gateway_upstream_breaker_open",
            "Workers whose circuit breaker for the upstream is open (or half-open).",
            ["upstream"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.storage_errors = prom.Counter(
            "gateway_ratelimit_storage_errors",
            "Rate-limit storage calls that failed or timed out.",
            registry=r,
        )
        self.cache_lookups = prom.Counter(
            "gateway_cache_lookups",
            "Requests to cached routes, by route and result: hit, miss, stale (checked "
            "with the upstream), bypass (not cacheable), error (storage failed).",
            ["route", "result"],
            registry=r,
        )
        self.cache_stores = prom.Counter(
            "gateway_cache_stores",
            "Answers kept (or kept again after a 304), by route.",
            ["route"],
            registry=r,
        )
        self.cache_evictions = prom.Counter(
            "gateway_cache_evictions",
            "Kept answers dropped before they expired, by reason: size (the memory "
            "budget) or invalidated (an unsafe method to their path).",
            ["reason"],
            registry=r,
        )
        self.cache_storage_errors = prom.Counter(
            "gateway_cache_storage_errors",
            "Cache storage calls that failed or timed out.",
            registry=r,
        )
        self.spans_dropped = prom.Counter(
            "gateway_trace_spans_dropped",
            "Finished spans dropped because the export queue was full (a collector too "
            "slow or down).",
            registry=r,
        )
        self.config_info = prom.Gauge(
            "gateway_config_info",
            "The configuration in service, by the first 12 hex digits of its sha256.",
            ["sha256"],
            registry=r,
            # Old and new workers overlap during a reload; a dead worker's table goes.
            multiprocess_mode="livemax",
        )

    def render(self) -> bytes:
        """The exposition text: every live and dead worker's samples when multiprocess."""
        prom = self._prom
        directory = multiprocess_dir()
        if not directory:
            result: bytes = prom.generate_latest(self.registry)
            return result
        from prometheus_client import multiprocess

        for attempt in range(3):
            try:
                registry = prom.CollectorRegistry()
                multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
                data: bytes = prom.generate_latest(registry)
                return data
            except Exception as exc:
                # A worker starting up may not have finished writing its sample file:
                # read again a moment later rather than fail the scrape.
                log.warning("reading the metrics files failed (%s); attempt %d", exc, attempt + 1)
                time.sleep(0.05)
        raise RuntimeError("the metrics files could not be read")


_config_reloads: Any = None


def count_config_reload(result: str) -> None:
    """In the gunicorn master: one reload, `applied` or `rejected`. Its samples go to
    PROMETHEUS_MULTIPROC_DIR like a worker's, so every worker's /metrics shows them."""
    global _config_reloads
    if _config_reloads is None:
        import prometheus_client as prom

        _config_reloads = prom.Counter(
            "gateway_config_reloads",
            "Configuration reloads (SIGHUP), by result: applied or rejected.",
            ["result"],
            registry=None,
        )
    _config_reloads.labels(result).inc()


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit hook: fold a dead worker's live gauges away."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# RFC 9110 §9 and PATCH (RFC 5789): every other method a client makes up is one label,
# or each made-up method would be a new series in every worker's files, without bound.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_KNOWN_STATUSES = frozenset(status.value for status in HTTPStatus)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def status_label(status: int) -> str:
    """The status, or its class (`5xx`) for one no RFC registers: an upstream may send
    any three digits, and each would be a series."""
    return str(status) if status in _KNOWN_STATUSES else f"{status // 100}xx"


def label(value: Any) -> str:
    return "-" if value is None else str(value)
