"""The request body: framing checked, read whole under a size limit and a deadline.

A body is read from the client completely before the upstream is called, as nginx
does with request buffering on. So an upload is never half-forwarded, a client too
slow to send its body is the client's failure (408), never the upstream's (the
upstream deadline then measures only the upstream), and the body can be sent again
when an idempotent request is retried. Bodies up to `body_memory_bytes` stay in
memory; larger ones go to a temporary file, so memory does not grow with
`max_body_bytes` times the requests in flight.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any

from gunicorn.http.errors import NoMoreData, ParseException  # type: ignore[import-untyped]
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Request

from gateway.problems import (
    BadRequest,
    NotImplementedByGateway,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
)

log = logging.getLogger("gateway.edge")

_CHUNK = 64 * 1024
# What the gateway's gunicorn workers put in the environ (gateway/workers.py):
TIME_LIMIT = "gateway.time_limit"  # seconds -> a context that ends a block at that limit
# ...and what the app sets for them: after this answer, close the connection.
CLOSE_CONNECTION = "gateway.close_connection"


class BufferedBody:
    """A request body read whole: its size, and its bytes as often as they are sent."""

    def __init__(self, size: int, memory: bytes | None, spool: IO[bytes] | None) -> None:
        self.size = size
        self._memory = memory
        self._spool = spool

    @classmethod
    def of(cls, data: bytes) -> BufferedBody:
        return cls(len(data), data, None)

    @property
    def content(self) -> bytes | BufferedBody:
        """What the upstream request sends: the bytes, or this re-iterable body."""
        return self._memory if self._memory is not None else self

    def __iter__(self) -> Iterator[bytes]:
        # Each iteration starts over, so a retried request sends the whole body again.
        if self._memory is not None:
            yield self._memory
            return
        assert self._spool is not None
        self._spool.seek(0)
        while chunk := self._spool.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def check_framing(request: Request) -> None:
    """RFC 9112 §6.1: the only transfer coding accepted is a single `chunked`. A body
    in another coding (`gzip, chunked`) would reach the upstream still encoded with
    nothing saying so, since Transfer-Encoding is not forwarded: 501."""
    coding = request.headers.get("Transfer-Encoding")
    if coding is not None and coding.strip(" \t").lower() != "chunked":
        raise NotImplementedByGateway(
            f"The transfer coding {coding.strip()!r} is not supported; send the body "
            "with Content-Length or Transfer-Encoding: chunked."
        )


def declared_length(request: Request, max_bytes: int) -> int | None:
    """The Content-Length (413 over `max_bytes`), or None for a chunked body."""
    declared = request.headers.get("Content-Length")
    if declared is None:
        return None
    if not declared.isdigit():
        raise BadRequest("Content-Length is not a number.")
    if int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"The request body is {declared} bytes; at most {max_bytes} are accepted.",
            max_body_bytes=max_bytes,
        )
    return int(declared)


def is_chunked(request: Request) -> bool:
    return "Transfer-Encoding" in request.headers


def read_body(
    request: Request, *, max_bytes: int, memory_bytes: int, timeout: float
) -> BufferedBody:
    """The whole body, within `timeout` seconds from now, or a problem: 408 too slow,
    413 too large, 400 malformed or cut short. Nothing of it has been forwarded yet."""
    declared = declared_length(request, max_bytes)
    if declared == 0 or (declared is None and not is_chunked(request)):
        return BufferedBody.of(b"")
    reader = _TimedReader(request, time.monotonic() + timeout, timeout)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=memory_bytes)  # noqa: SIM115
    time_limit: Callable[[float], AbstractContextManager[None]] | None = request.environ.get(
        TIME_LIMIT
    )
    size = 0
    try:
        # Each read is bounded by the time left, but a server's read may loop over
        # several recv() calls, each with that timeout; the worker's limit, where it
        # has one, bounds the whole body.
        with time_limit(timeout) if time_limit is not None else nullcontext():
            while declared is None or size < declared:
                want = _CHUNK if declared is None else min(_CHUNK, declared - size)
                chunk = reader.read(want)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"The request body is over {max_bytes} bytes.", max_body_bytes=max_bytes
                    )
                _spool(spool, chunk)
        if declared is not None and size < declared:
            raise BadRequest("The request body ended before its declared length.")
    except TimeoutError:
        spool.close()
        request.environ[CLOSE_CONNECTION] = True
        raise reader.too_slow() from None
    except BaseException:
        spool.close()
        # The rest of the body, if any, is still on the connection: its end, and so
        # where a next request would start, is unknown.
        request.environ[CLOSE_CONNECTION] = True
        raise
    finally:
        reader.restore()
    if size <= memory_bytes:
        spool.seek(0)
        data = spool.read()
        spool.close()
        return BufferedBody.of(data)
    return BufferedBody(size, None, spool)


class _TimedReader:
    """Reads of the request stream, each bounded by what is left of the deadline.

    Under gunicorn the client socket is in the environ: its timeout is set before
    every read to the time left, so a client that drips one byte at a time cannot
    stretch the body past the deadline."""

    def __init__(self, request: Request, deadline: float, timeout: float) -> None:
        self.stream = request.stream
        self.deadline = deadline
        self.timeout = timeout
        sock = request.environ.get("gunicorn.socket")
        self.sock: Any = sock if hasattr(sock, "settimeout") else None
        self.previous = self.sock.gettimeout() if self.sock is not None else None

    def read(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.too_slow()
        try:
            if self.sock is not None:
                self.sock.settimeout(remaining)
            data: bytes = self.stream.read(size)
            return data
        except TimeoutError:
            raise self.too_slow() from None
        except (NoMoreData, ClientDisconnected, ConnectionError, ssl.SSLError):
            raise BadRequest("The request body ended before it was complete.") from None
        except (ParseException, ValueError) as exc:
            raise BadRequest(f"The chunked request body is malformed: {exc}.") from None

    def restore(self) -> None:
        if self.sock is not None:
            try:
                self.sock.settimeout(self.previous)
            except OSError:
                pass  # the client is gone

    def too_slow(self) -> RequestTimeout:
        return RequestTimeout(f"The request body did not arrive within {self.timeout:g} seconds.")


def _spool(spool: IO[bytes], chunk: bytes) -> None:
    try:
        spool.write(chunk)
    except OSError as exc:  # the temporary folder is full or gone
        log.error("cannot buffer a request body: %s", exc)
        raise ServiceUnavailable(
            "The gateway cannot take request bodies this large right now.",
            headers={"Retry-After": "1"},
        ) from None
