"""Forwarding: the terminal step of every route. One module owns the upstream exchange.

One long-lived httpx.Client per upstream (a keep-alive pool per worker), no proxies
from the environment, no redirect following. Request bodies are streamed (chunked
ones read first under the body limit, so nothing is half-sent), responses are
streamed back byte for byte (compressed bodies untouched), and a total deadline
bounds the whole exchange (see deadline.py).
"""

from __future__ import annotations

import functools
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from werkzeug.datastructures import Headers
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Request, Response

from gateway.breaker import BreakerOpen, CircuitBreaker, State
from gateway.config.model import Config, Upstream
from gateway.deadline import deadline_at, deadline_transport
from gateway.policies.base import RequestContext
from gateway.problems import (
    BadRequest,
    GatewayError,
    InvalidPath,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
    render,
    upstream_problem,
)
from gateway.rewrite import LinkRewriter

log = logging.getLogger("gateway.proxy")

# RFC 9110 §7.6.1: connection-specific fields, never forwarded by an intermediary.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY_HEADERS = frozenset(
    {
        "x-user-id",
        "x-user-roles",
        "x-tenant-id",
        "x-auth-method",
        "x-consumer-id",
    }
)
# Request fields the gateway sets itself, or that only make sense on the client hop.
_REQUEST_OWN = (
    frozenset(
        {
            "host",
            "content-length",
            "expect",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "x-request-id",
            "traceparent",
        }
    )
    | HOP_BY_HOP
    | IDENTITY_HEADERS
)
# Response fields the client must not see from an upstream.
_RESPONSE_DROP = HOP_BY_HOP | {"server", "x-powered-by", "date"}
_ERROR_BODY_FIELDS = frozenset({"content-length", "content-type", "content-encoding"})
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_READ_ALL_BELOW = 64 * 1024  # bodies this small are read whole: cheap, and replayable
_CHUNK = 64 * 1024
_MAX_ERROR_BODY = 64 * 1024


class _UpstreamFailed(Exception):
    """An upstream call that failed: `kind` for metrics, `error` for the client."""

    def __init__(self, kind: str, error: GatewayError) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error


class RelayedResponse(Response):
    """An upstream's response as it was: no Content-Type invented where it sent none."""

    default_mimetype = None


class UpstreamBodyAborted(Exception):
    """The upstream failed after the response started: the client connection is cut so
    a truncated body can never pass for a complete one."""


def _connection_named(values: list[str]) -> set[str]:
    """The field names a Connection header lists (RFC 9110 §7.6.1): hop-by-hop too."""
    return {token.strip().lower() for value in values for token in value.split(",")}


def _ssl_context(upstream: Upstream) -> ssl.SSLContext | bool:
    if upstream.ca_bundle:
        return ssl.create_default_context(cafile=upstream.ca_bundle)
    return True


def _client(upstream: Upstream) -> httpx.Client:
    transport = deadline_transport(
        verify=_ssl_context(upstream),
        limits=httpx.Limits(
            max_connections=upstream.max_connections,
            max_keepalive_connections=upstream.max_connections,
            keepalive_expiry=5.0,
        ),
        retries=0,  # retries are ours: only where they cannot duplicate a request
    )
    client = httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(
            upstream.timeout, connect=upstream.connect_timeout, pool=upstream.connect_timeout
        ),
        follow_redirects=False,
        trust_env=False,
    )
    # httpx adds Accept-Encoding and User-Agent of its own; the upstream must see the
    # client's (or none), or compressed bodies would not pass through untouched.
    for name in ("Accept", "Accept-Encoding", "User-Agent"):
        client.headers.pop(name, None)
    return client


def _query(request: Request) -> str:
    raw: str = request.environ.get("QUERY_STRING", "")
    if not raw:
        return ""
    # WSGI hands over the bytes as latin-1; anything outside printable ASCII is
    # escaped so the upstream gets the same bytes, legally encoded.
    data = raw.encode("latin-1", "replace")
    return "?" + "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in data)


class Forwarder:
    def __init__(
        self,
        config: Config,
        on_breaker_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.config = config
        self.clients = {name: _client(u) for name, u in config.upstreams.items()}
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
        self.request_drop = _REQUEST_OWN | {api_key_header.lower()}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def upstream_url(self, ctx: RequestContext) -> str:
        assert ctx.route is not None
        try:
            template = ctx.upstream_template or ctx.route.upstream_template
            path = template.expand(ctx.params)
        except ValueError as exc:
            raise InvalidPath(f"The path cannot be forwarded: {exc}.") from None
        return ctx.route.upstream.url + path + _query(ctx.request)

    def request_headers(self, ctx: RequestContext) -> list[tuple[str, str]]:
        request = ctx.request
        drop = self.request_drop | _connection_named(request.headers.getlist("Connection"))
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in drop and not name.lower().startswith("proxy-")
        ]
        headers += [
            ("X-Forwarded-For", ctx.client.forwarded_for),
            ("X-Forwarded-Proto", ctx.client.proto),
            ("X-Forwarded-Host", ctx.client.host),
            ("X-Request-ID", ctx.request_id),
        ]
        traceparent = request.headers.get("traceparent", "").strip()
        if _TRACEPARENT.match(traceparent):
            headers.append(("traceparent", traceparent))
        headers += list(ctx.upstream_headers.items())
        return headers

    def _body(self, ctx: RequestContext) -> tuple[bytes | Iterator[bytes], int | None]:
        """The body to send, and whether it can be sent again (its length if bytes)."""
        if ctx.body is not None:  # a chunked upload, already read under the limit
            return ctx.body, len(ctx.body)
        request = ctx.request
        stream = request.stream
        declared = request.headers.get("Content-Length")
        if declared is not None:
            size = int(declared)
            if size <= _READ_ALL_BELOW:
                data = stream.read(size) if size else b""
                if len(data) != size:
                    raise ClientDisconnected()
                return data, size
            return _iter_stream(stream, size), None
        return b"", 0

    def forward(self, ctx: RequestContext) -> Response:
        route = ctx.route
        assert route is not None
        upstream = route.upstream
        url = self.upstream_url(ctx)
        method = ctx.request.method
        try:
            content, replayable = self._body(ctx)
        except ClientDisconnected:
            raise BadRequest("The request body ended before its declared length.") from None
        headers = self.request_headers(ctx)
        if replayable is not None and (content or method in ("POST", "PUT", "PATCH")):
            headers.append(("Content-Length", str(replayable)))
        elif replayable is None:
            headers.append(("Content-Length", ctx.request.headers["Content-Length"]))
        client = self.clients[upstream.name]
        breaker = self.breakers[upstream.name]
        try:
            breaker.before_call()
        except BreakerOpen as exc:
            ctx.upstream_error = "breaker_open"
            raise ServiceUnavailable(
                f"The {upstream.name} service is failing; calls to it are paused.",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        deadline = time.monotonic() + upstream.timeout + upstream.connect_timeout
        attempts = 1 + (upstream.retries if method in _IDEMPOTENT and replayable is not None else 0)
        started = time.perf_counter()
        try:
            response = self._send(
                client, method, url, headers, content, deadline, attempts, upstream
            )
        except _UpstreamFailed as failure:
            ctx.upstream_ms = (time.perf_counter() - started) * 1000
            ctx.upstream_error = failure.kind
            breaker.failed()
            raise failure.error from None
        except BaseException:
            breaker.abandoned()  # the client's fault or our pool's, not the upstream's
            raise
        ctx.upstream_ms = (time.perf_counter() - started) * 1000
        if response.status_code >= 500 and upstream.breaker_on_5xx:
            breaker.failed()
        else:
            breaker.succeeded()
        return self._client_response(ctx, response, deadline)

    def _send(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        content: bytes | Iterator[bytes],
        deadline: float,
        attempts: int,
        upstream: Upstream,
    ) -> httpx.Response:
        for attempt in range(1, attempts + 1):
            request = client.build_request(method, url, headers=headers, content=content)
            try:
                with deadline_at(deadline):
                    return client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the upstream: safe to try again for idempotent methods.
                pause = random.uniform(0.01, 0.05 * 2**attempt)
                if attempt < attempts and time.monotonic() + pause < deadline:
                    log.info("retrying %s %s after connect failure: %s", method, upstream.name, exc)
                    time.sleep(pause)
                    continue
                if isinstance(exc, httpx.ConnectTimeout):
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
            except ClientDisconnected:
                raise BadRequest("The request body ended before its declared length.") from None
            except httpx.PoolTimeout:
                raise ServiceUnavailable(
                    f"All connections to the {upstream.name} service are busy.",
                    headers={"Retry-After": "1"},
                ) from None
            except httpx.TimeoutException:
                raise _UpstreamFailed(
                    "timeout",
                    UpstreamTimeout(
                        f"The {upstream.name} service did not answer within its deadline "
                        f"({upstream.connect_timeout + upstream.timeout:g} seconds).",
                    ),
                ) from None
            except httpx.HTTPError as exc:
                log.warning("upstream %s failed: %s: %s", upstream.name, type(exc).__name__, exc)
                kind = "bad_response" if isinstance(exc, httpx.ProtocolError) else "reset"
                raise _UpstreamFailed(
                    kind, self._unavailable(upstream, "failed to answer")
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _unavailable(upstream: Upstream, what: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"The {upstream.name} service {what}.")

    def _response_headers(
        self, ctx: RequestContext, upstream_response: httpx.Response, *, error: bool
    ) -> Headers:
        assert ctx.route is not None
        drop = _RESPONSE_DROP | _connection_named(upstream_response.headers.get_list("Connection"))
        if error:
            drop |= _ERROR_BODY_FIELDS
        headers = Headers()
        for raw_name, raw_value in upstream_response.headers.raw:
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
        self, ctx: RequestContext, upstream_response: httpx.Response, deadline: float
    ) -> Response:
        status = upstream_response.status_code
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
        body = _relay(upstream_response, deadline, ctx.route.upstream.name if ctx.route else "")
        return RelayedResponse(body, status=status, headers=headers, direct_passthrough=True)

    def _error_response(
        self, ctx: RequestContext, upstream_response: httpx.Response, deadline: float
    ) -> Response:
        status = upstream_response.status_code
        body = b""
        content_type = upstream_response.headers.get("Content-Type", "")
        try:
            if status < 500 and "json" in content_type.lower():
                with deadline_at(deadline):
                    for chunk in upstream_response.iter_bytes():
                        body += chunk
                        if len(body) > _MAX_ERROR_BODY:
                            break
        except httpx.HTTPError:
            body = b""
        finally:
            upstream_response.close()
        if status >= 500:
            headers = Headers()
            if "Retry-After" in upstream_response.headers:
                headers["Retry-After"] = upstream_response.headers["Retry-After"]
        else:
            headers = self._response_headers(ctx, upstream_response, error=True)
        problem = upstream_problem(
            status, content_type, body, instance=ctx.path, request_id=ctx.request_id
        )
        return render(problem, status, headers)


def _iter_stream(stream: Any, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            # The client went away mid-upload: abort the upstream request, which then
            # sees a short body and discards it.
            raise ClientDisconnected()
        remaining -= len(chunk)
        yield chunk


def _relay(
    upstream_response: httpx.Response, deadline: float, upstream_name: str
) -> Iterator[bytes]:
    """Yield the upstream body as it arrives; cut the client off if the upstream fails."""
    try:
        with deadline_at(deadline):
            yield from upstream_response.iter_raw()
    except httpx.HTTPError as exc:
        log.warning(
            "upstream %s body failed after %d bytes: %s: %s",
            upstream_name,
            upstream_response.num_bytes_downloaded,
            type(exc).__name__,
            exc,
        )
        raise UpstreamBodyAborted(str(exc)) from None
    finally:
        upstream_response.close()
