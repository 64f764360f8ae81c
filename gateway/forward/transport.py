"""What requests to an upstream travel through: its connection pool and its address.

One long-lived keep-alive connection pool per upstream and worker, no proxies from the
environment, no redirect following, no retries of its own.

The pool is httpcore's, the HTTP engine under httpx, used directly: the gateway relays
requests it has already parsed and checked, so httpx.Client's request building, URL
merging, cookie jar and response wrapping were pure cost, about half the CPU of each
upstream call (docs/perf/README.md). httpx still supplies the TLS context, so
certificate checks are the same as an httpx client's.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Protocol

import httpcore
import httpx

from gateway.config.model import Upstream
from gateway.deadline import deadline_pool


class Transport(Protocol):
    """What the forwarder sends requests through, one per upstream: httpcore's
    connection pool, or whatever a test hands in (httpx's transport seam)."""

    def handle_request(self, request: httpcore.Request) -> httpcore.Response: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Origin:
    """One upstream's address, parsed once: what every request to it reuses."""

    scheme: bytes
    host: bytes
    port: int | None
    host_header: bytes
    base_path: str  # the url's own path, put before every forwarded path
    timeouts: dict[str, float]


def parse_origin(upstream: Upstream) -> Origin:
    url = httpx.URL(upstream.url)
    after_scheme = upstream.url.split("://", 1)[1]
    slash = after_scheme.find("/")
    return Origin(
        scheme=url.raw_scheme,
        host=url.raw_host,
        port=url.port,
        host_header=url.netloc,
        base_path=after_scheme[slash:] if slash >= 0 else "",
        timeouts={
            "connect": upstream.connect_timeout,
            "read": upstream.timeout,
            "write": upstream.timeout,
            "pool": upstream.connect_timeout,
        },
    )


def connection_pool(upstream: Upstream) -> httpcore.ConnectionPool:
    return deadline_pool(
        ssl_context=_ssl_context(upstream),
        max_connections=upstream.max_connections,
        max_keepalive_connections=upstream.max_connections,
        keepalive_expiry=5.0,
        retries=0,  # retries are ours: only where they cannot duplicate a request
    )


def _ssl_context(upstream: Upstream) -> ssl.SSLContext:
    if upstream.ca_bundle:
        return ssl.create_default_context(cafile=upstream.ca_bundle)
    return httpx.create_ssl_context(trust_env=False)
