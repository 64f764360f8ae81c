"""Forwarding: the terminal step of every route. The Forwarder owns the exchange.

What is sent (the target, the headers, the body: chunked ones read first under the
body limit, so nothing is half-sent), the call with its retries where they cannot
duplicate a request, the circuit breaker, and a total deadline over the whole exchange
(see deadline.py). Small successful bodies are read here; the rest of the answer is
shaped in forward/response.py, and goes through the pool of forward/transport.py.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpcore
from werkzeug.wrappers import Response

from gateway.breaker import BreakerOpen, CircuitBreaker, State
from gateway.config.model import Config, Upstream
from gateway.context import RequestContext
from gateway.deadline import deadline_at
from gateway.forward.headers import (
    CONDITIONAL,
    PART_DROP,
    PART_OWN,
    REQUEST_OWN,
    TRACEPARENT,
    connection_named,
    header,
)
from gateway.forward.relay import AFTER_CONNECT
from gateway.forward.response import client_response
from gateway.forward.target import client_query, request_target
from gateway.forward.transport import Transport, connection_pool, parse_origin
from gateway.problems import (
    GatewayError,
    InvalidPath,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.request_body import BufferedBody, read_body
from gateway.rewrite import LinkRewriter

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.tracing import Tracing

log = logging.getLogger("gateway.proxy")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Successful answer bodies this small are read whole before the client is answered.
_READ_ALL_BELOW = 64 * 1024


class UpstreamFailed(Exception):
    """An upstream call that failed: `kind` for metrics (refused, reset, timeout,
    bad_response, breaker_open), `error` for the client."""

    def __init__(self, kind: str, error: GatewayError) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error


@dataclass(frozen=True, slots=True)
class Fetched:
    """An upstream's whole answer to a part's GET."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes  # empty when oversized
    oversized: bool  # the body was over the part's max_part_bytes


def _forwarded_upstream(ctx: RequestContext) -> Upstream:
    """The upstream of the request's route, which forwards (a composed one does not)."""
    assert ctx.route is not None and ctx.route.upstream is not None
    return ctx.route.upstream


def _breaker_open(upstream: Upstream, exc: BreakerOpen) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The {upstream.name} service is failing; calls to it are paused.",
        headers={"Retry-After": str(exc.retry_after)},
    )


class Forwarder:
    def __init__(
        self,
        config: Config,
        on_breaker_change: Callable[[str, State], None] | None = None,
        transports: Mapping[str, Transport] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing
        self.pools: dict[str, Transport] = {
            name: (transports[name] if transports and name in transports else connection_pool(u))
            for name, u in config.upstreams.items()
        }
        self.origins = {name: parse_origin(u) for name, u in config.upstreams.items()}
        self.breakers = {
            name: CircuitBreaker(
                u.breaker_failures,
                u.breaker_open_seconds,
                on_change=(
                    None
                    if on_breaker_change is None
                    else functools.partial(on_breaker_change, name)
                ),
            )
            for name, u in config.upstreams.items()
        }
        self.rewriter = LinkRewriter(dict(config.upstreams), config.routes)
        # The API key is a credential for the gateway alone: never sent upstream.
        api_key_header = config.auth.api_keys.header if config.auth.api_keys else "X-API-Key"
        self.request_drop = REQUEST_OWN | {api_key_header.lower()}

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    def upstream_target(self, ctx: RequestContext) -> bytes:
        """The path and query sent upstream: the route's template filled in, after the
        upstream url's own path."""
        upstream = _forwarded_upstream(ctx)
        template = ctx.upstream_template or ctx.route.upstream_template if ctx.route else None
        assert template is not None
        try:
            path = template.expand(ctx.params)
        except ValueError as exc:
            raise InvalidPath(f"The path cannot be forwarded: {exc}.") from None
        return self.part_target(upstream, path + client_query(ctx.request))

    def part_target(self, upstream: Upstream, path_and_query: str) -> bytes:
        """A path and query at `upstream`, after the upstream url's own path."""
        return request_target(self.origins[upstream.name].base_path + path_and_query)

    def upstream_url(self, ctx: RequestContext) -> str:
        """The whole upstream URL of a request, for people (`gateway explain`)."""
        return self.url_of(_forwarded_upstream(ctx), self.upstream_target(ctx))

    def url_of(self, upstream: Upstream, target: bytes) -> str:
        """An upstream URL, for people (`gateway explain`, never a client)."""
        origin = self.origins[upstream.name]
        where = f"{origin.scheme.decode()}://{origin.host_header.decode()}"
        return where + target.decode("ascii")

    def request_headers(self, ctx: RequestContext) -> list[tuple[str, str]]:
        request = ctx.request
        drop = self.request_drop | connection_named(request.headers.getlist("Connection"))
        if ctx.upstream_conditional is not None:
            drop |= CONDITIONAL
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if (lowered := name.lower()) not in drop and not lowered.startswith("proxy-")
        ]
        headers += [
            ("X-Forwarded-For", ctx.client.forwarded_for),
            ("X-Forwarded-Proto", ctx.client.proto),
            ("X-Forwarded-Host", ctx.client.host),
            ("X-Request-ID", ctx.request_id),
        ]
        traceparent = request.headers.get("traceparent", "").strip()
        if self.tracing is None and TRACEPARENT.match(traceparent):
            # With tracing on, each attempt sends its own span's traceparent instead.
            headers.append(("traceparent", traceparent))
        headers += list(ctx.upstream_headers.items())
        if ctx.upstream_conditional:
            headers += list(ctx.upstream_conditional)
        return headers

    def request_body(self, ctx: RequestContext) -> BufferedBody:
        """The client's body, read whole before any upstream is called: a slow client
        is answered 408 and never spends an upstream's deadline or counts against its
        breaker, and no unread bytes are left on the connection."""
        if ctx.body is None:
            settings = self.config.gateway
            ctx.body = read_body(
                ctx.request,
                max_bytes=settings.max_body_bytes,
                memory_bytes=settings.body_memory_bytes,
                timeout=settings.request_body_timeout,
            )
        return ctx.body

    def part_headers(self, ctx: RequestContext) -> list[tuple[str, str]]:
        """What a composed part is sent: what a forwarded request would carry, less
        what is about the composed answer's representation (PART_DROP)."""
        headers = [(n, v) for n, v in self.request_headers(ctx) if n.lower() not in PART_DROP]
        return headers + list(PART_OWN)

    def fetch(
        self,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[str, str]],
        deadline: float,
        max_bytes: int,
        parent: Span | None = None,
    ) -> Fetched:
        """One GET for a composed part, its body read whole by `deadline` (the route's;
        the upstream's own is shorter when it is), under the upstream's retries and
        breaker. Raises UpstreamFailed; ServiceUnavailable when its pool is full."""
        breaker = self.breakers[upstream.name]
        refusal = breaker.refusing()
        if refusal is not None:
            raise UpstreamFailed("breaker_open", _breaker_open(upstream, refusal))
        origin = self.origins[upstream.name]
        raw_headers = [(b"Host", origin.host_header)]
        raw_headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        request = httpcore.Request(
            b"GET",
            httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port, target=target),
            headers=raw_headers,
            extensions={"timeout": origin.timeouts},
        )
        try:
            breaker.before_call()
        except BreakerOpen as exc:
            raise UpstreamFailed("breaker_open", _breaker_open(upstream, exc)) from None
        own_deadline = time.monotonic() + upstream.timeout + upstream.connect_timeout
        cut_short = deadline < own_deadline
        deadline = min(deadline, own_deadline)
        try:
            response = self._send(
                self.pools[upstream.name],
                request,
                deadline,
                1 + upstream.retries,
                upstream,
                parent,
            )
            body, oversized = self._whole_body(response, deadline, upstream, max_bytes)
        except UpstreamFailed as failure:
            if failure.kind == "timeout" and cut_short:
                # The route's deadline, shorter than the upstream's, is not the
                # upstream's failure: it must not open the breaker for other routes.
                breaker.abandoned()
            else:
                breaker.failed()
            raise
        except BaseException:
            breaker.abandoned()
            raise
        if response.status >= 500 and upstream.breaker_on_5xx:
            breaker.failed()
        else:
            breaker.succeeded()
        return Fetched(response.status, response.headers, body, oversized)

    def _whole_body(
        self, response: httpcore.Response, deadline: float, upstream: Upstream, max_bytes: int
    ) -> tuple[bytes, bool]:
        """The body, or as much as `max_bytes` allows and True when there is more."""
        try:
            declared = header(response.headers, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                return b"", True
            body = bytearray()
            with deadline_at(deadline):
                for chunk in response.iter_stream():
                    body += chunk
                    if len(body) > max_bytes:
                        return b"", True
            return bytes(body), False
        except AFTER_CONNECT as exc:
            raise self._failed_after_connect(exc, upstream) from None
        finally:
            response.close()

    def forward(self, ctx: RequestContext) -> Response:
        upstream = _forwarded_upstream(ctx)
        origin = self.origins[upstream.name]
        target = self.upstream_target(ctx)
        method = ctx.request.method
        breaker = self.breakers[upstream.name]
        refusal = breaker.refusing()
        if refusal is not None:  # answered before the body is read: nothing to waste
            ctx.upstream_error = "breaker_open"
            raise _breaker_open(upstream, refusal)
        body = self.request_body(ctx)
        headers = self.request_headers(ctx)
        if body.size or method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(body.size)))
        # Header values come from the WSGI environ (latin-1 by PEP 3333) or were checked
        # to be ASCII: latin-1 gives the upstream the bytes the client sent.
        raw_headers = [(b"Host", origin.host_header)]
        raw_headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        request = httpcore.Request(
            method.encode("ascii"),
            httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port, target=target),
            headers=raw_headers,
            content=body.content,
            extensions={"timeout": origin.timeouts},
        )
        try:
            breaker.before_call()
        except BreakerOpen as exc:
            ctx.upstream_error = "breaker_open"
            raise _breaker_open(upstream, exc) from None
        deadline = time.monotonic() + upstream.timeout + upstream.connect_timeout
        attempts = 1 + (upstream.retries if method in _IDEMPOTENT else 0)
        started = time.perf_counter()
        try:
            try:
                response = self._send(
                    self.pools[upstream.name], request, deadline, attempts, upstream, ctx.trace_span
                )
            finally:
                body.close()  # sent (or given up on): a spooled upload's file goes
            whole_below = max(_READ_ALL_BELOW, ctx.whole_body_bytes or 0)
            small_body = self._small_body(method, response, deadline, upstream, whole_below)
        except UpstreamFailed as failure:
            ctx.upstream_ms = (time.perf_counter() - started) * 1000
            ctx.upstream_error = failure.kind
            breaker.failed()
            raise failure.error from None
        except BaseException:
            breaker.abandoned()  # the client's fault or our pool's, not the upstream's
            raise
        ctx.upstream_ms = (time.perf_counter() - started) * 1000
        if response.status >= 500 and upstream.breaker_on_5xx:
            breaker.failed()
        else:
            breaker.succeeded()
        return client_response(ctx, response, small_body, deadline, rewriter=self.rewriter)

    def _send(
        self,
        pool: Transport,
        request: httpcore.Request,
        deadline: float,
        attempts: int,
        upstream: Upstream,
        parent: Span | None = None,
    ) -> httpcore.Response:
        for attempt in range(1, attempts + 1):
            try:
                with deadline_at(deadline):
                    if self.tracing is None:
                        return pool.handle_request(request)
                    return self._traced(pool, request, upstream, attempt, parent)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                # Nothing reached the upstream: safe to try again for idempotent methods.
                pause = random.uniform(0.01, 0.05 * 2**attempt)
                if attempt < attempts and time.monotonic() + pause < deadline:
                    log.info(
                        "retrying %s %s after connect failure: %s",
                        request.method.decode(),
                        upstream.name,
                        exc,
                    )
                    time.sleep(pause)
                    continue
                if isinstance(exc, httpcore.ConnectTimeout):
                    raise UpstreamFailed(
                        "timeout",
                        UpstreamTimeout(
                            f"The {upstream.name} service did not accept a connection within "
                            f"{upstream.connect_timeout:g} seconds."
                        ),
                    ) from None
                raise UpstreamFailed(
                    "refused", self._unavailable(upstream, "refused the connection")
                ) from None
            except httpcore.PoolTimeout:
                raise ServiceUnavailable(
                    f"All connections to the {upstream.name} service are busy.",
                    headers={"Retry-After": "1"},
                ) from None
            except AFTER_CONNECT as exc:
                raise self._failed_after_connect(exc, upstream) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _traced(
        self,
        pool: Transport,
        request: httpcore.Request,
        upstream: Upstream,
        attempt: int,
        parent: Span | None,
    ) -> httpcore.Response:
        """One attempt in a client span of its own, the upstream told its traceparent."""
        assert self.tracing is not None
        method = request.method.decode("ascii")
        with self.tracing.client_span(parent, upstream.name, method, attempt) as (span, header):
            request.headers = [(n, v) for n, v in request.headers if n.lower() != b"traceparent"]
            if header is not None:
                request.headers.append((b"traceparent", header.encode("ascii")))
            try:
                response = pool.handle_request(request)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise
            span.set_attribute("http.response.status_code", response.status)
            return response

    def _failed_after_connect(self, exc: Exception, upstream: Upstream) -> UpstreamFailed:
        if isinstance(exc, httpcore.TimeoutException):
            return UpstreamFailed(
                "timeout",
                UpstreamTimeout(
                    f"The {upstream.name} service did not answer within its deadline "
                    f"({upstream.connect_timeout + upstream.timeout:g} seconds).",
                ),
            )
        log.warning("upstream %s failed: %s: %s", upstream.name, type(exc).__name__, exc)
        kind = "bad_response" if isinstance(exc, httpcore.ProtocolError) else "reset"
        return UpstreamFailed(kind, self._unavailable(upstream, "failed to answer"))

    def _small_body(
        self,
        method: str,
        response: httpcore.Response,
        deadline: float,
        upstream: Upstream,
        whole_below: int,
    ) -> bytes | None:
        """A small successful body, read whole before the client is answered: the
        connection goes back to the pool at once, the client gets one write, and a
        failure while reading is still a clean 502/504. Answers without a body (HEAD,
        1xx, 204, 304) are finished here too: the server never iterates their body, so
        a relay would never hand the connection back. Large or unsized bodies: None
        (they are relayed as they arrive)."""
        status = response.status
        # Error and redirect answers are finished by client_response itself.
        bodiless = (method == "HEAD" and status < 300) or status < 200 or status in (204, 304)
        if not bodiless:
            if not 200 <= status < 300:
                return None
            declared = header(response.headers, b"content-length")
            if declared is None or not declared.isdigit() or int(declared) > whole_below:
                return None
            if header(response.headers, b"transfer-encoding") is not None:
                return None  # framed by its chunks: the length is not the body's
        try:
            with deadline_at(deadline):
                return b"".join(response.iter_stream())
        except AFTER_CONNECT as exc:
            raise self._failed_after_connect(exc, upstream) from None
        finally:
            response.close()

    @staticmethod
    def _unavailable(upstream: Upstream, what: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"The {upstream.name} service {what}.")
