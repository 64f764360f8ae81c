"""A total deadline for one upstream exchange, enforced on every socket operation.

httpx's timeouts apply per operation: an upstream that drips one byte just inside the
read timeout can hold a worker forever. This network backend clamps each connect,
read and write to what is left of the current request's deadline, so the whole
exchange, headers and body, ends by the deadline whatever the upstream does.
"""

from __future__ import annotations

import select
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

_deadline: ContextVar[float | None] = ContextVar("upstream_deadline", default=None)


@contextmanager
def deadline_at(when: float) -> Iterator[None]:
    """Run a block with every upstream socket operation ending by `when` (monotonic)."""
    token = _deadline.set(when)
    try:
        yield
    finally:
        try:
            _deadline.reset(token)
        except ValueError:  # a response body finished in another context
            _deadline.set(None)


def _clamp(timeout: float | None, exc: type[Exception]) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise exc("the request deadline has passed")
    return remaining if timeout is None else min(timeout, remaining)


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(
            ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
        )
        return DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked by the pool before it reuses a connection
            sock = self._stream.get_extra_info("socket")
            if sock is not None:
                return _readable_now(sock)
        return self._stream.get_extra_info(info)


def _original_poll() -> Any:
    """select.poll as the system has it. Under the event-loop worker gevent replaces
    select.poll with a cooperative one, which parks the request to ask the hub even
    for a zero timeout: about a tenth of a worker's CPU went to httpcore's check
    that an idle pooled connection is still open (docs/perf/README.md)."""
    try:
        from gevent import monkey  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - gevent comes with the gateway
        return select.poll
    return monkey.get_original("select", "poll")


_poll = _original_poll()


def _readable_now(sock: Any) -> bool:
    """httpcore's is_socket_readable, without a wait: readable means the upstream
    closed the idle connection (or sent something it should not have)."""
    fd = sock.fileno()
    if fd == -1:
        return True
    poller = _poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        self._backend = backend or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host,
            port,
            _clamp(timeout, httpcore.ConnectTimeout),
            local_address,
            socket_options,
        )
        return DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options
        )
        return DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_pool(**options: Any) -> httpcore.ConnectionPool:
    """A connection pool whose sockets obey `deadline_at` (options: ConnectionPool's)."""
    return httpcore.ConnectionPool(network_backend=DeadlineBackend(), **options)


def deadline_transport(**options: Any) -> httpx.HTTPTransport:
    """An httpx transport whose sockets obey `deadline_at` (options: HTTPTransport's)."""
    transport = httpx.HTTPTransport(**options)
    # httpx has no public seam for the network backend; the deadline needs it.
    transport._pool._network_backend = DeadlineBackend(transport._pool._network_backend)
    return transport
