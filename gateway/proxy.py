"""Forwarding: the terminal step of every route. One module owns the upstream exchange.

One long-lived keep-alive connection pool per upstream and worker, no proxies from the
environment, no redirect following. Request bodies are streamed (chunked ones read
first under the body limit, so nothing is half-sent), responses are streamed back byte
for byte (compressed bodies untouched), and a total deadline bounds the whole exchange
(see deadline.py).

The pool is httpcore's, the HTTP engine under httpx, used directly: the gateway relays
requests it has already parsed and checked, so httpx.Client's request building, URL
merging, cookie jar and response wrapping were pure cost, about half the CPU of each
upstream call (docs/perf/README.md). httpx still supplies the TLS context, so
certificate checks are the same as an httpx client's.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol

import httpcore
import httpx
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request, Response

from gateway.breaker import BreakerOpen, CircuitBreaker, State
from gateway.config.model import Config, Upstream
from gateway.context import RequestContext
from gateway.deadline import deadline_at, deadline_pool
from gateway.forward.headers import (
    ERROR_BODY_FIELDS,
    REQUEST_OWN,
    RESPONSE_DROP,
    TRACEPARENT,
    connection_named,
    header,
    header_values,
)
from gateway.forward.relay import AFTER_CONNECT, Relay, RelayedResponse
from gateway.problems import (
    MAX_UPSTREAM_PROBLEM_BYTES,
    GatewayError,
    InvalidPath,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
    render,
    upstream_problem,
)
from gateway.request_body import read_body
from gateway.rewrite import LinkRewriter

log = logging.getLogger("gateway.proxy")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Successful answer bodies this small are read whole before the client is answered.
_READ_ALL_BELOW = 64 * 1024


class _UpstreamFailed(Exception):
    """An upstream call that failed: `kind` for metrics, `error` for the client."""

    def __init__(self, kind: str, error: GatewayError) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error


def _ssl_context(upstream: Upstream) -> ssl.SSLContext:
    if upstream.ca_bundle:
        return ssl.create_default_context(cafile=upstream.ca_bundle)
    return httpx.create_ssl_context(trust_env=False)


@dataclass(frozen=True, slots=True)
class _Origin:
    """One upstream's address, parsed once: what every request to it reuses."""

    scheme: bytes
    host: bytes
    port: int | None
    host_header: bytes
    base_path: str  # the url's own path, put before every forwarded path
    timeouts: dict[str, float]


def _origin(upstream: Upstream) -> _Origin:
    url = httpx.URL(upstream.url)
    after_scheme = upstream.url.split("://", 1)[1]
    slash = after_scheme.find("/")
    return _Origin(
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


def _pool(upstream: Upstream) -> httpcore.ConnectionPool:
    return deadline_pool(
        ssl_context=_ssl_context(upstream),
        max_connections=upstream.max_connections,
        max_keepalive_connections=upstream.max_connections,
        keepalive_expiry=5.0,
        retries=0,  # retries are ours: only where they cannot duplicate a request
    )


def _target(path_and_query: str) -> bytes:
    """The request target as bytes; anything outside printable ASCII escaped, as a
    client library would (the paths are re-encoded already: this is belt and braces)."""
    if path_and_query.isascii() and path_and_query.isprintable() and " " not in path_and_query:
        return path_and_query.encode("ascii")
    return _printable_ascii(path_and_query.encode("utf-8")).encode("ascii")


def _printable_ascii(data: bytes) -> str:
    """Bytes outside printable ASCII percent-escaped, the rest as they are."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in data)


def _query(request: Request) -> str:
    raw: str = request.environ.get("QUERY_STRING", "")
    if not raw:
        return ""
    # WSGI hands over the bytes as latin-1; anything outside printable ASCII is
    # escaped so the upstream gets the same bytes, legally encoded.
    return "?" + _printable_ascii(raw.encode("latin-1", "replace"))


class Transport(Protocol):
    """What the forwarder sends requests through, one per upstream: httpcore's
    connection pool, or whatever a test hands in (httpx's transport seam)."""

    def handle_request(self, request: httpcore.Request) -> httpcore.Response: ...

    def close(self) -> None: ...


class Forwarder:
    def __init__(
        self,
        config: Config,
        on_breaker_change: Callable[[str, State], None] | None = None,
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self.config = config
        self.pools: dict[str, Transport] = {
            name: (transports[name] if transports and name in transports else _pool(u))
            for name, u in config.upstreams.items()
        }
        self.origins = {name: _origin(u) for name, u in config.upstreams.items()}
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
        assert ctx.route is not None
        try:
            template = ctx.upstream_template or ctx.route.upstream_template
            path = template.expand(ctx.params)
        except ValueError as exc:
            raise InvalidPath(f"The path cannot be forwarded: {exc}.") from None
        base = self.origins[ctx.route.upstream.name].base_path
        return _target(base + path + _query(ctx.request))

    def upstream_url(self, ctx: RequestContext) -> str:
        """The whole upstream URL of a request, for people (`gateway explain`)."""
        assert ctx.route is not None
        origin = self.origins[ctx.route.upstream.name]
        where = f"{origin.scheme.decode()}://{origin.host_header.decode()}"
        return where + self.upstream_target(ctx).decode("ascii")

    def request_headers(self, ctx: RequestContext) -> list[tuple[str, str]]:
        request = ctx.request
        drop = self.request_drop | connection_named(request.headers.getlist("Connection"))
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
        if TRACEPARENT.match(traceparent):
            headers.append(("traceparent", traceparent))
        headers += list(ctx.upstream_headers.items())
        return headers

    def forward(self, ctx: RequestContext) -> Response:
        route = ctx.route
        assert route is not None
        upstream = route.upstream
        origin = self.origins[upstream.name]
        target = self.upstream_target(ctx)
        method = ctx.request.method
        breaker = self.breakers[upstream.name]
        refusal = breaker.refusing()
        if refusal is not None:  # answered before the body is read: nothing to waste
            self._breaker_open(ctx, refusal)
        if ctx.body is None:
            # Read whole before the upstream is called: a slow client is answered 408
            # and never spends the upstream's deadline or counts against its breaker.
            settings = self.config.gateway
            ctx.body = read_body(
                ctx.request,
                max_bytes=settings.max_body_bytes,
                memory_bytes=settings.body_memory_bytes,
                timeout=settings.request_body_timeout,
            )
        body = ctx.body
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
            self._breaker_open(ctx, exc)
        deadline = time.monotonic() + upstream.timeout + upstream.connect_timeout
        attempts = 1 + (upstream.retries if method in _IDEMPOTENT else 0)
        started = time.perf_counter()
        try:
            try:
                response = self._send(
                    self.pools[upstream.name], request, deadline, attempts, upstream
                )
            finally:
                body.close()  # sent (or given up on): a spooled upload's file goes
            small_body = self._small_body(method, response, deadline, upstream)
        except _UpstreamFailed as failure:
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
        return self._client_response(ctx, response, small_body, deadline)

    @staticmethod
    def _breaker_open(ctx: RequestContext, exc: BreakerOpen) -> NoReturn:
        assert ctx.route is not None
        ctx.upstream_error = "breaker_open"
        raise ServiceUnavailable(
            f"The {ctx.route.upstream.name} service is failing; calls to it are paused.",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None

    def _send(
        self,
        pool: Transport,
        request: httpcore.Request,
        deadline: float,
        attempts: int,
        upstream: Upstream,
    ) -> httpcore.Response:
        for attempt in range(1, attempts + 1):
            try:
                with deadline_at(deadline):
                    return pool.handle_request(request)
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
                    raise _UpstreamFailed(
                        "timeout",
                        UpstreamTimeout(
                            f"The {upstream.name} service did not accept a connection within "
                            f"{upstream.connect_timeout:g} seconds."
                        ),
                    ) from None
                raise _UpstreamFailed(
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

    def _failed_after_connect(self, exc: Exception, upstream: Upstream) -> _UpstreamFailed:
        if isinstance(exc, httpcore.TimeoutException):
            return _UpstreamFailed(
                "timeout",
                UpstreamTimeout(
                    f"The {upstream.name} service did not answer within its deadline "
                    f"({upstream.connect_timeout + upstream.timeout:g} seconds).",
                ),
            )
        log.warning("upstream %s failed: %s: %s", upstream.name, type(exc).__name__, exc)
        kind = "bad_response" if isinstance(exc, httpcore.ProtocolError) else "reset"
        return _UpstreamFailed(kind, self._unavailable(upstream, "failed to answer"))

    def _small_body(
        self, method: str, response: httpcore.Response, deadline: float, upstream: Upstream
    ) -> bytes | None:
        """A small successful body, read whole before the client is answered: the
        connection goes back to the pool at once, the client gets one write, and a
        failure while reading is still a clean 502/504. Answers without a body (HEAD,
        1xx, 204, 304) are finished here too: the server never iterates their body, so
        a relay would never hand the connection back. Large or unsized bodies: None
        (they are relayed as they arrive)."""
        status = response.status
        # Error and redirect answers are finished by _client_response itself.
        bodiless = (method == "HEAD" and status < 300) or status < 200 or status in (204, 304)
        if not bodiless:
            if not 200 <= status < 300:
                return None
            declared = header(response.headers, b"content-length")
            if declared is None or not declared.isdigit() or int(declared) > _READ_ALL_BELOW:
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

    def _response_headers(
        self, ctx: RequestContext, upstream_response: httpcore.Response, *, error: bool
    ) -> Headers:
        assert ctx.route is not None
        raw = upstream_response.headers
        drop = RESPONSE_DROP | connection_named(header_values(raw, b"connection"))
        if error:
            drop |= ERROR_BODY_FIELDS
        elif header(raw, b"transfer-encoding") is not None:
            # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and the body
            # was read by its chunks. Relayed with the upstream's length, a client would
            # read a body of the wrong size: the next response spliced into this one.
            drop |= {"content-length"}
        headers = Headers()
        for raw_name, raw_value in raw:
            name = raw_name.decode("latin-1")
            lowered = name.lower()
            if lowered in drop or lowered.startswith("proxy-"):
                continue
            value = raw_value.decode("latin-1")
            if lowered == "location":
                value = self.rewriter.rewrite(
                    value,
                    upstream=ctx.route.upstream.name,
                    route_index=ctx.route.index,
                    public_base=ctx.public_base,
                    current=ctx.upstream_template,
                )
            elif lowered == "link":
                value = self.rewriter.rewrite_link_header(
                    value,
                    upstream=ctx.route.upstream.name,
                    route_index=ctx.route.index,
                    public_base=ctx.public_base,
                    current=ctx.upstream_template,
                )
            headers.add(name, value)
        return headers

    def _client_response(
        self,
        ctx: RequestContext,
        upstream_response: httpcore.Response,
        body: bytes | None,
        deadline: float,
    ) -> Response:
        status = upstream_response.status
        if status >= 400:
            return self._error_response(ctx, upstream_response, deadline)
        if 300 <= status < 400 and status != 304:
            # A redirect's body is a page naming the Location it points at, i.e. the
            # upstream's own address: the client gets the rewritten header only.
            upstream_response.close()
            headers = self._response_headers(ctx, upstream_response, error=True)
            headers["Content-Length"] = "0"
            return RelayedResponse(b"", status=status, headers=headers)
        headers = self._response_headers(ctx, upstream_response, error=False)
        if body is not None:
            response = RelayedResponse(body, status=status)
            # The upstream's own framing: a HEAD answer keeps the Content-Length of the
            # body it describes (werkzeug would set that of the empty body).
            response.headers = headers
            return response
        relay = Relay(upstream_response, deadline, ctx.route.upstream.name if ctx.route else "")
        return RelayedResponse(relay, status=status, headers=headers, direct_passthrough=True)

    def _error_response(
        self, ctx: RequestContext, upstream_response: httpcore.Response, deadline: float
    ) -> Response:
        status = upstream_response.status
        body = b""
        content_type = header(upstream_response.headers, b"content-type") or ""
        try:
            if status < 500 and "json" in content_type.lower():
                with deadline_at(deadline):
                    for chunk in upstream_response.iter_stream():
                        body += chunk
                        if len(body) > MAX_UPSTREAM_PROBLEM_BYTES:
                            break
        except AFTER_CONNECT:
            body = b""
        finally:
            upstream_response.close()
        if status >= 500:
            headers = Headers()
            retry_after = header(upstream_response.headers, b"retry-after")
            if retry_after is not None:
                headers["Retry-After"] = retry_after
        else:
            headers = self._response_headers(ctx, upstream_response, error=True)
        problem = upstream_problem(
            status, content_type, body, instance=ctx.path, request_id=ctx.request_id
        )
        return render(problem, status, headers)
