"""gunicorn workers for the gateway: how a connection's bytes become requests.

The default worker is gunicorn's gevent worker with the gateway's own connection
loop. gunicorn's threaded worker hands a connection to a thread at its first byte and
the thread then waits on the client, so a few dozen connections dripping their
request held every thread and every other client, /healthz included, timed out. On
the event loop a waiting connection costs a greenlet, not a thread, and each phase of
a request has a deadline of its own:

- between requests on a kept-alive connection: `keepalive` seconds of silence, then
  the connection is closed without an answer (nothing was asked);
- the request head: `gateway.request_head_timeout` seconds from its first byte, then
  408 problem+json and the connection is closed;
- the request body: `gateway.request_body_timeout` for the whole body, enforced by
  the gateway's body reader (gateway/request_body.py), again 408;
- each write of the answer: `gateway.response_send_timeout` seconds, then the
  connection is dropped (a client that stops reading must not hold an upstream
  connection forever).

docs/perf/README.md has the measurements behind the choice. The threaded worker stays
available as `gateway.workers.GatewayThreadWorker` (GATEWAY_WORKER_CLASS) for
deployments behind a proxy that buffers whole requests.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from http import HTTPStatus
from typing import Any

import gevent  # type: ignore[import-untyped]
from gevent.pool import Pool  # type: ignore[import-untyped]
from gevent.server import StreamServer  # type: ignore[import-untyped]
from gevent.socket import wait_read  # type: ignore[import-untyped]
from gunicorn import http as gunicorn_http  # type: ignore[import-untyped]
from gunicorn import util as gunicorn_util
from gunicorn.http.body import LengthReader  # type: ignore[import-untyped]
from gunicorn.sock import ssl_context  # type: ignore[import-untyped]
from gunicorn.workers.ggevent import GeventWorker  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from gateway.config.model import GatewaySettings
from gateway.problems import (
    PROBLEM_JSON,
    problem_body,
    problem_json,
    status_code_name,
    status_title,
)
from gateway.request_body import CLOSE_CONNECTION, TIME_LIMIT

log = logging.getLogger("gateway.edge")


class RequestHeadTimeout(Exception):
    """A request head begun but not finished within gateway.request_head_timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request head did not arrive within {seconds:g} seconds.")
        self.seconds = seconds


def write_problem_error(sock: Any, status: int, reason: str, message: str) -> None:
    """An answer the server writes itself (a request it could not parse, or one too
    slow to arrive), as problem+json like every other error of the gateway."""
    request_id = uuid.uuid4().hex
    title = status_title(status) if status in HTTPStatus._value2member_map_ else reason
    body = problem_json(
        problem_body(
            status,
            status_code_name(status),
            title,
            message or reason,
            instance=getattr(_current_target, "path", "") or "",
            request_id=request_id,
        )
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "Cache-Control: no-store\r\n\r\n"
    ).encode("latin-1")
    gunicorn_util.write_nonblock(sock, head + body)


_current_target = threading.local()


class _ProblemErrors:
    """gunicorn's own error answers as problem+json, with the request path when known;
    the app wrapped in _EdgeApp."""

    log: Any
    wsgi: Any
    edge: GatewaySettings

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, RequestHeadTimeout):
            log.info("closed a connection whose request head was too slow: %s", exc)
            _current_target.path = ""
            try:
                write_problem_error(client, 408, "Request Timeout", str(exc))
            except OSError:
                pass  # the client is gone: nothing to tell it
            return
        # The problem's `instance` is the request path when gunicorn got that far.
        path = getattr(req, "path", None) or getattr(getattr(exc, "req", None), "path", None)
        _current_target.path = path if isinstance(path, str) else ""
        try:
            super().handle_error(req, client, addr, exc)  # type: ignore[misc]
        finally:
            _current_target.path = ""

    def init_process(self) -> None:
        # gunicorn writes its error pages through this one function; in a gateway
        # worker process every error a client sees must be problem+json.
        gunicorn_util.write_error = write_problem_error
        super().init_process()  # type: ignore[misc]

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        self.edge = _edge_settings(self.wsgi)
        self.wsgi = _EdgeApp(self.wsgi, self.time_limit)

    # A limit on the total time of a block, or None where the worker has none (a
    # thread blocked in recv() cannot be interrupted: only each read is bounded).
    time_limit: Callable[[float], AbstractContextManager[None]] | None = None


class _EdgeApp:
    """The app as the gateway's workers call it.

    It hands the app the worker's total-time limit (`gateway.time_limit`), and closes
    the connection after an answer the app marked `gateway.close_connection` (a body
    too slow or malformed: where the next request would start is unknown). gunicorn
    then says `Connection: close` in that answer, as RFC 9110 §15.5.9 asks of a 408.
    """

    def __init__(
        self, app: Any, time_limit: Callable[[float], AbstractContextManager[None]] | None
    ) -> None:
        self.app = app
        self.time_limit = time_limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.time_limit is not None:
            environ[TIME_LIMIT] = self.time_limit
        result = self.app(environ, start_response)
        if environ.get(CLOSE_CONNECTION):
            server_response = getattr(start_response, "__self__", None)
            if server_response is not None and hasattr(server_response, "force_close"):
                server_response.force_close()
        return result


def _edge_settings(wsgi: Any) -> GatewaySettings:
    """The gateway section of the app's config (defaults for any other WSGI app)."""
    gateway = getattr(wsgi, "gateway", None)
    config = getattr(gateway, "config", None)
    settings = getattr(config, "gateway", None)
    return settings if isinstance(settings, GatewaySettings) else GatewaySettings()


class GatewayWorker(_ProblemErrors, GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with deadlines on every phase of reading a request."""

    @staticmethod
    def time_limit(seconds: float) -> AbstractContextManager[None]:
        """TimeoutError in the greenlet if the block outlasts `seconds`, however many
        reads it makes (each read's own socket timeout starts afresh)."""
        limit: AbstractContextManager[None] = gevent.Timeout(
            seconds, TimeoutError(f"more than {seconds:g} s")
        )
        return limit

    def run(self) -> None:
        """gunicorn's gevent serving loop, noticing a stop within a tenth of a second
        (gunicorn's looks once a second, and a worker told to stop kept accepting
        connections meanwhile)."""
        servers = []
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for listener in self.sockets:
            listener.setblocking(1)
            server = StreamServer(
                listener,
                handle=functools.partial(self.handle, listener),
                spawn=Pool(self.worker_connections),
                **ssl_args,
            )
            if self.cfg.workers > 1:
                server.max_accept = 1
            server.start()
            servers.append(server)
        last_notified = 0.0
        while self.alive:
            if time.monotonic() - last_notified >= 1.0:
                self.notify()
                last_notified = time.monotonic()
            gevent.sleep(0.1)
        for server in servers:
            server.close()  # stop accepting; requests in flight go on
        ends = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < ends:
            if all(server.pool.free_count() == server.pool.size for server in servers):
                return
            self.notify()
            gevent.sleep(0.1)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        for server in servers:
            server.stop(timeout=1)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """gunicorn's async connection loop for HTTP/1.1, each request under deadlines.

        The same loop as gunicorn's AsyncWorker.handle (whose HTTP/2 paths the gateway
        does not enable), with the wait for a request and the reading of its head
        bounded apart."""
        client.setblocking(1)
        req = None
        try:
            parser = gunicorn_http.get_parser(self.cfg, client, addr)
            listener_name = listener.getsockname()
            idle = self.edge.request_head_timeout
            proxy_protocol_info: dict[str, Any] = {}
            while True:
                req = None
                req = self._next_request(parser, client, idle)
                if req is None:
                    break
                # The PROXY protocol header comes once per connection; every request
                # on it has the same client (gunicorn's own loop does the same).
                if req.proxy_protocol_info:
                    proxy_protocol_info = req.proxy_protocol_info
                else:
                    req.proxy_protocol_info = proxy_protocol_info
                client.settimeout(self.edge.response_send_timeout)
                self.handle_request(listener_name, req, client, addr)
                if not self.cfg.keepalive:
                    break
                idle = self.cfg.keepalive
        except (StopIteration, gunicorn_http.errors.NoMoreData) as exc:
            self.log.debug("Closing connection. %s", exc)
        except TimeoutError:
            # A write the client did not take in time, or a read past its deadline:
            # the connection is dropped; the request's own log line says the rest.
            self.log.debug("Closing a connection that stopped reading or sending.")
        except ssl.SSLError as exc:
            if exc.args[0] == ssl.SSL_ERROR_EOF:
                self.log.debug("ssl connection closed")
            else:
                self.handle_error(req, client, addr, exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:
            self.handle_error(req, client, addr, exc)
        finally:
            _lingering_close(client)

    def _next_request(self, parser: Any, client: Any, idle: float) -> Any:
        """The next request on the connection, or None to close it quietly.

        Silence for `idle` seconds closes without an answer (no request was begun);
        a head begun but not finished within request_head_timeout is a
        RequestHeadTimeout (408)."""
        head_timeout = self.edge.request_head_timeout
        if _body_left(parser):
            skipped = False
            # finish_body bounds each read, not their sum: a client dripping the
            # rest of an unread body would hold the connection without the total.
            with gevent.Timeout(head_timeout, False):
                skipped = parser.finish_body(deadline=time.monotonic() + head_timeout)
            if not skipped:
                return None  # the last body could not be skipped: its end is unknown
        if not _buffered(parser, client) and not _arrives(client, idle):
            return None
        client.settimeout(head_timeout)
        with gevent.Timeout(head_timeout, RequestHeadTimeout(head_timeout)):
            return next(parser)


LINGER_SECONDS = 1.0


def _lingering_close(client: Any) -> None:
    """Close as nginx's lingering close does: stop sending, then read and drop what
    the client still sends, for a second at most, before closing.

    Closed with bytes unread (a body refused with 408 or 413 while the client was
    still uploading), a socket answers with a reset, and the client's system may drop
    the answer it had already received before the client reads it."""
    try:
        client.shutdown(socket.SHUT_WR)
        ends = time.monotonic() + LINGER_SECONDS
        while (left := ends - time.monotonic()) > 0:
            client.settimeout(min(left, 0.25))
            if not client.recv(65536):
                break
    except OSError:
        pass  # timed out, reset or gone: close it all the same
    finally:
        gunicorn_util.close(client)


def _body_left(parser: Any) -> bool:
    """Whether the last request may have left body bytes unread (the app answered
    without reading them all). The common case, a body read to its end or none at
    all, skips gunicorn's bounded drain and the socket timeouts it sets."""
    mesg = parser.mesg
    if mesg is None:
        return False
    body: Any = getattr(mesg, "body", None)
    reader = getattr(body, "reader", None)
    if isinstance(reader, LengthReader) and reader.length == 0:
        return bool(body.buf.getbuffer().nbytes)
    return True


def _arrives(client: Any, idle: float) -> bool:
    """Whether a byte arrives (or the peer closes) within `idle` seconds. A peek
    through the socket itself: no bytes are taken from the parser, and gevent waits
    on the socket's own watcher rather than a new one per request."""
    if getattr(client, "pending", None) is not None:  # TLS: no MSG_PEEK on SSLSocket
        try:
            wait_read(client.fileno(), timeout=idle)
        except TimeoutError:
            return False
        return True
    client.settimeout(idle)
    try:
        client.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return False
    return True


def _buffered(parser: Any, client: Any) -> bool:
    """Bytes of the next request already read: pipelined behind the last one, or held
    by TLS (the socket would not look readable for them)."""
    if parser.unreader.buf.getbuffer().nbytes:
        return True
    pending = getattr(client, "pending", None)
    return bool(pending()) if pending is not None else False


class GatewayThreadWorker(_ProblemErrors, ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker with problem+json errors: for a deployment whose
    front proxy buffers whole requests, so no slow client reaches a thread."""
