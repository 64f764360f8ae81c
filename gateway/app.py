"""create_app: the one place that wires config, routes, policies and forwarding."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from gateway.breaker import State
from gateway.cache.responses import ResponseCache
from gateway.cache.store import make_store
from gateway.clientinfo import client_info, host_warning, in_networks, networks, require_host
from gateway.composer import Composer
from gateway.config import Config, load_config, resolve_config_path
from gateway.context import RequestContext
from gateway.cors import Cors, PreflightAnswer, is_preflight
from gateway.credentials.apikeys import ApiKeyRing
from gateway.credentials.jwt import JwtVerifier
from gateway.endpoints import Credentials, Terminals, build_endpoints
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics, method_label, status_label
from gateway.observability import log_access, request_id_for, setup_logging
from gateway.openapi import openapi_document
from gateway.paths import unsafe_path_reason
from gateway.policies.auth import FailureGuard
from gateway.policies.chain import Terminal
from gateway.problems import (
    CURRENT_TRACE_ID,
    Forbidden,
    GatewayError,
    InternalError,
    InvalidPath,
    MethodNotAllowed,
    error_response,
    http_exception_response,
)
from gateway.proxy import Forwarder
from gateway.ratelimit import Counters
from gateway.reload import accepted, config_digest
from gateway.request_body import check_framing
from gateway.request_head import check_head
from gateway.routing import RouteTable
from gateway.tracing import make_tracing, trace_id_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("gateway")

BuiltinHandler = Callable[["Gateway", RequestContext], Response]


def raw_request_path(environ: dict[str, object]) -> str:
    """The path as the client sent it, before any decoding (gunicorn: RAW_URI).

    The gateway routes on this, never on SCRIPT_NAME/PATH_INFO, which a server may
    have shortened on a client's say-so.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw:
        if not raw.startswith("/"):  # absolute-form request target
            raw = urlsplit(raw).path or "/"
        return raw.split("?", 1)[0].split("#", 1)[0]
    path = environ.get("PATH_INFO", "/")
    # WSGI strings are latin-1 decoded bytes: re-encode those bytes, not their UTF-8.
    data = path.encode("latin-1", "replace") if isinstance(path, str) else b"/"
    return quote(data, safe="/%;:@&=+$,!~*'()")


def decoded_path(raw_path: str) -> str:
    return unquote(raw_path, encoding="utf-8", errors="replace")


class Gateway:
    """Per-process state built once from a Config; `handle` serves one request."""

    def __init__(self, config: Config, digest: str | None = None) -> None:
        self.config = config
        self.digest = digest  # sha256 of the config's files; None when built in code
        self.metrics = Metrics()
        if digest is not None:
            self.metrics.config_info.labels(digest[:12]).set(1)
        # Built in the worker (create_app runs after gunicorn's fork): its own exporter.
        self.tracing = make_tracing(config.tracing, on_dropped=self.metrics.spans_dropped.inc)
        self.forwarder = Forwarder(
            config, on_breaker_change=self._breaker_changed, tracing=self.tracing
        )
        self.metrics_allow = networks(config.gateway.metrics_allow)
        self.cors = Cors(config.cors)
        self.verifier = JwtVerifier(config.auth.jwt) if config.auth.jwt else None
        self.keyring = ApiKeyRing(config.auth.api_keys) if config.auth.api_keys else None
        self.counters = Counters(config.rate_limits)
        auth_failures = config.rate_limits.auth_failures
        self.guard = FailureGuard(auth_failures, self.counters) if auth_failures else None
        credentials = Credentials(self.verifier, self.keyring, self.guard)
        self.composer = Composer(
            self.forwarder, self.forwarder.rewriter, config.gateway.compose_concurrency
        )
        self.cache = (
            ResponseCache(
                config.cache,
                make_store(config.cache, on_evict=self._cache_evicted),
                cached_path=self._cached_path,
                on_invalidated=self._cache_invalidated,
                dropped=self.forwarder.request_drop,
            )
            if any(route.cache for route in config.routes)
            else None
        )
        terminals = Terminals(
            forward=self.forwarder.forward, compose=self.composer.compose, cache=self.cache
        )
        self.table = RouteTable(
            build_endpoints(config, self.cors, credentials, self.counters, terminals)
        )
        self.builtins: dict[str, BuiltinHandler] = {
            "/healthz": Gateway._healthz,
            "/readyz": Gateway._readyz,
            "/metrics": Gateway._metrics,
        }
        if config.gateway.openapi_path:
            self.builtins[config.gateway.openapi_path] = Gateway._openapi
        self._openapi_document: tuple[bytes, str] | None = None  # built on first request

    def context(self, req: Request, request_id: str) -> RequestContext:
        client = client_info(req, self.config.gateway.trusted_proxies)
        public_base = self.config.gateway.public_url or f"{client.proto}://{client.host}"
        raw_path = raw_request_path(req.environ)
        return RequestContext(
            request=req,
            raw_path=raw_path,
            path=decoded_path(raw_path),
            request_id=request_id,
            client=client,
            public_base=public_base,
            started=time.perf_counter(),
        )

    def handle(self, req: Request) -> Response:
        ctx = self.context(req, request_id_for(req))
        trace_token = None
        if self.tracing is not None:
            ctx.trace_span = self.tracing.server_span(
                req.method, ctx.path, req.headers, ctx.client.ip
            )
            ctx.trace_id = trace_id_of(ctx.trace_span)
            trace_token = CURRENT_TRACE_ID.set(ctx.trace_id)
        try:
            return self._handle(ctx)
        finally:
            if trace_token is not None:
                CURRENT_TRACE_ID.reset(trace_token)

    def _handle(self, ctx: RequestContext) -> Response:
        try:
            response = self.dispatch(ctx)
        except GatewayError as error:
            response = error_response(error, instance=ctx.path, request_id=ctx.request_id)
        except HTTPException as exc:
            response = http_exception_response(exc, instance=ctx.path, request_id=ctx.request_id)
        except Exception:
            log.exception("unhandled error, request_id=%s", ctx.request_id)
            response = error_response(
                InternalError("The gateway failed to handle the request."),
                instance=ctx.path,
                request_id=ctx.request_id,
            )
        if ctx.body is not None:
            ctx.body.close()  # a spooled upload's file goes, whatever the answer was
        if not isinstance(response, PreflightAnswer):
            # The one place CORS meets an answer: successes, every error, built-ins.
            self._cors_for(ctx).decorate(ctx, response)
        response.headers["X-Request-ID"] = ctx.request_id
        if ctx.trace_span is not None:
            _end_server_span(ctx, response)
        self._log(ctx, response)
        return response

    def close(self) -> None:
        if self.cache is not None:
            self.cache.store.close()
        if self.tracing is not None:
            self.tracing.close()
        self.composer.close()
        self.forwarder.close()
        if self.verifier is not None:
            self.verifier.close()

    def dispatch(self, ctx: RequestContext, terminal: Terminal | None = None) -> Response:
        """Every step a request meets, in order, up to the route's terminal step
        (forwarding or composing), or `terminal` in its place (`gateway explain`).
        Raises GatewayError for a request refused before a route's chain; the chain
        renders its own errors."""
        req = ctx.request
        require_host(ctx.client)  # RFC 9112 §3.2: 400 for a missing or invalid Host
        reason = unsafe_path_reason(ctx.raw_path)
        if reason:
            raise InvalidPath(f"The request path is refused: {reason}.")
        check_head(req, self.config.gateway.max_header_bytes)
        check_framing(req)
        if is_preflight(req.headers, req.method):
            return self._preflight(ctx)
        builtin = self.builtins.get(ctx.path)
        if builtin is not None:
            if req.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(
                    f"{req.method} is not allowed on {ctx.path}.", allowed=["GET", "HEAD"]
                )
            return builtin(self, ctx)
        match = self.table.match(req.method, ctx.path)
        ctx.route, ctx.params = match.endpoint.spec, match.params
        return match.endpoint.chain.run(ctx, terminal or match.endpoint.terminal)

    def _cors_for(self, ctx: RequestContext) -> Cors:
        """The CORS rules of the matched route (endpoints are in configuration order),
        else the top-level ones."""
        if ctx.route is None:
            return self.cors
        return self.table.endpoints[ctx.route.index].cors

    def _preflight(self, ctx: RequestContext) -> Response:
        """CORS preflights are the gateway's to answer: no credentials, never forwarded."""
        requested = ctx.request.headers.get("Access-Control-Request-Method", "").upper()
        try:
            match = self.table.match(requested, ctx.path)
        except MethodNotAllowed:
            return self.cors.preflight(ctx, route_methods=())
        ctx.route = match.endpoint.spec
        return match.endpoint.cors.preflight(ctx, route_methods=ctx.route.config.methods)

    def _cached_path(self, path: str) -> bool:
        """Whether a GET of `path` goes to a route that keeps answers."""
        try:
            match = self.table.match("GET", path)
        except GatewayError:
            return False
        return match.endpoint.spec.config.cache is not None

    def _cache_evicted(self, reason: str) -> None:
        self.metrics.cache_evictions.labels(reason).inc()

    def _cache_invalidated(self, count: int) -> None:
        self.metrics.cache_evictions.labels("invalidated").inc(count)

    def _healthz(self, ctx: RequestContext) -> Response:
        return _json({"status": "ok"})

    def _readyz(self, ctx: RequestContext) -> Response:
        """Ready when the config is loaded, the rate-limit storage answers (with
        on_storage_error: allow, an outage degrades but does not unready) and no
        upstream breaker of this worker is open."""
        storage_ok = self.counters.reachable()
        deny = self.config.rate_limits.on_storage_error == "deny"
        cache_ok = self.cache is None or self.cache.store.reachable()
        cache_deny = self.config.cache.on_storage_error == "deny"
        breakers = {name: b.state for name, b in sorted(self.forwarder.breakers.items())}
        # An open breaker unreadies; half-open does not: traffic must come back for the
        # probe that can close it (a pod out of rotation would otherwise never recover).
        ready = (
            (storage_ok or not deny)
            and (cache_ok or not cache_deny)
            and "open" not in breakers.values()
        )
        checks = {
            "config": "loaded",
            "config_sha256": self.digest[:12] if self.digest else None,
            "routes": len(self.table.endpoints),
            "rate_limit_storage": "ok"
            if storage_ok
            else ("unreachable: requests get 503" if deny else "unreachable: limits not applied"),
            "upstream_breakers": breakers,
        }
        if self.cache is not None:
            checks["cache_storage"] = (
                "ok"
                if cache_ok
                else "unreachable: cached routes get 503"
                if cache_deny
                else "unreachable: answers not kept"
            )
        status: dict[str, object] = {"status": "ready" if ready else "not_ready"}
        # Upstream names and breaker states are a map of the backend: only the
        # operators' networks (metrics_allow) are shown them.
        body = {**status, "checks": checks} if self._operator(ctx) else status
        return _json(body, 200 if ready else 503)

    def _metrics(self, ctx: RequestContext) -> Response:
        """Prometheus text for clients on `gateway.metrics_allow` networks only."""
        if not self._operator(ctx):
            raise Forbidden("Metrics are not served to this address.")
        return Response(self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    def _openapi(self, ctx: RequestContext) -> Response:
        """The OpenAPI document of the public routes (gateway.openapi_path): public, and
        the same until the configuration changes, so clients and caches may keep it
        and ask again with If-None-Match."""
        if self._openapi_document is None:
            body = json.dumps(openapi_document(self.config), indent=2).encode()
            self._openapi_document = (body, hashlib.sha256(body).hexdigest()[:32])
        body, tag = self._openapi_document
        fresh = ctx.request.if_none_match.contains(tag)
        response = Response(
            None if fresh else body, status=304 if fresh else 200, content_type="application/json"
        )
        response.set_etag(tag)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    def _operator(self, ctx: RequestContext) -> bool:
        """Whether the client is on a `gateway.metrics_allow` network."""
        return in_networks(ctx.client.ip, self.metrics_allow)

    def _breaker_changed(self, upstream: str, state: State) -> None:
        self.metrics.breaker_open.labels(upstream).set(0 if state == "closed" else 1)

    def _observe(self, ctx: RequestContext, response: Response, seconds: float) -> None:
        m = self.metrics
        route = (
            ctx.route.config.name
            if ctx.route
            else ctx.path.lstrip("/")
            if ctx.path in self.builtins
            else "unmatched"
        )
        m.requests.labels(
            route, method_label(ctx.request.method), status_label(response.status_code)
        ).inc()
        m.request_seconds.labels(route).observe(seconds)
        upstream = ctx.route.upstream if ctx.route else None
        if upstream is not None and ctx.upstream_ms is not None:
            m.upstream_seconds.labels(upstream.name).observe(ctx.upstream_ms / 1000)
        if upstream is not None and ctx.upstream_error is not None:
            m.upstream_errors.labels(upstream.name, ctx.upstream_error).inc()
        for part in ctx.parts:
            if part.upstream_ms is not None:
                m.upstream_seconds.labels(part.upstream).observe(part.upstream_ms / 1000)
            if part.error is not None:
                m.upstream_errors.labels(part.upstream, part.error).inc()
        if response.status_code == 429:
            m.rate_limited.labels(route).inc()
        if ctx.auth_failure is not None:
            m.auth_failures.labels(ctx.auth_failure).inc()
        if ctx.rate_limit_storage_failed:
            m.storage_errors.inc()
        if ctx.cache_result is not None:
            m.cache_lookups.labels(route, ctx.cache_result).inc()
        if ctx.cache_stored:
            m.cache_stores.labels(route).inc()
        if ctx.cache_storage_failed:
            m.cache_storage_errors.inc()

    def _log(self, ctx: RequestContext, response: Response) -> None:
        seconds = time.perf_counter() - ctx.started
        if ctx.path != "/metrics":
            self._observe(ctx, response, seconds)
        body = ctx.body
        log_access(
            request_id=ctx.request_id,
            method=ctx.request.method,
            path=ctx.path.encode("unicode_escape").decode("ascii"),
            route=ctx.route.config.name if ctx.route else None,
            status=response.status_code,
            duration_ms=round(seconds * 1000, 3),
            upstream=ctx.route.upstream.name if ctx.route and ctx.route.upstream else None,
            upstream_ms=None if ctx.upstream_ms is None else round(ctx.upstream_ms, 3),
            upstream_error=ctx.upstream_error,
            cache=ctx.cache_result,
            trace_id=ctx.trace_id,
            parts=[
                {
                    "name": p.name,
                    "upstream": p.upstream,
                    "status": p.status,
                    "upstream_ms": None if p.upstream_ms is None else round(p.upstream_ms, 3),
                    "error": p.error,
                }
                for p in ctx.parts
            ]
            or None,
            client=ctx.identity.rate_limit_key if ctx.identity else f"ip:{ctx.client.ip}",
            auth_method=ctx.identity.method if ctx.identity else None,
            auth_failure=ctx.auth_failure,
            bytes_in=body.size if body is not None else ctx.request.content_length or 0,
            # A streamed answer's size is its Content-Length; None when it is chunked.
            bytes_out=response.content_length,
        )


def _end_server_span(ctx: RequestContext, response: Response) -> None:
    """The request's span, named by its route, with what its policies decided."""
    span = ctx.trace_span
    assert span is not None
    if not span.is_recording():  # not sampled: nothing of it is kept
        span.end()
        return
    status = response.status_code
    span.set_attribute("http.response.status_code", status)
    if ctx.route is not None:
        route = ctx.route.config
        span.update_name(f"{ctx.request.method} {route.path}")
        span.set_attribute("http.route", route.path)
        span.set_attribute("gateway.route", route.name)
    # Which kind of client it was, never who: no subject, key id or credential.
    span.set_attribute("gateway.client.kind", ctx.identity.method if ctx.identity else "anonymous")
    if ctx.identity is not None:
        span.add_event("authenticated", {"gateway.auth.method": ctx.identity.method})
    if ctx.auth_failure is not None:
        span.add_event("refused", {"gateway.auth.failure": ctx.auth_failure})
    verdict = ctx.rate_limit_verdict
    if verdict is not None:
        span.add_event("rate_limit", {"gateway.rate_limit.allowed": verdict.allowed})
    if ctx.cache_result is not None:
        span.add_event("cache", {"gateway.cache.result": ctx.cache_result})
    if status >= 500:
        from opentelemetry.trace import StatusCode

        span.set_status(StatusCode.ERROR)
    span.end()


def _json(body: dict[str, object], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class GatewayFlask(Flask):
    """A Flask app whose every request goes straight to Gateway.handle.

    The gateway has no Flask routes, templates, sessions or request hooks, so Flask's
    per-request machinery (pushing a request context, matching its own URL map,
    finalizing the response) was pure cost: about a sixth of a worker's CPU under load
    (docs/perf/README.md). Flask remains the application object: configuration, the
    test client, and the WSGI entry point that servers load.
    """

    gateway: Gateway

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self.gateway.handle(Request(environ))
        except Exception:  # Gateway.handle answers every error; this is the last guard
            log.exception("unhandled error outside the gateway")
            response = _outside_error(environ)
        return response(environ, start_response)


def _outside_error(environ: WSGIEnvironment) -> Response:
    """The 500 problem Gateway.handle gives, for a failure before it could."""
    request_id = request_id_for(Request(environ))
    response = error_response(
        InternalError("The gateway failed to handle the request."),
        instance=decoded_path(raw_request_path(environ)),
        request_id=request_id,
    )
    response.headers["X-Request-ID"] = request_id
    return response


def create_app(config: Config | str | None = None) -> Flask:
    """The WSGI app for a Config, a config file path, or (None) what the gunicorn
    master accepted (gateway/reload.py), else the usual lookup."""
    digest = None
    if not isinstance(config, Config):
        kept = accepted() if config is None else None
        if kept is not None:
            config, digest = kept.config, kept.digest
        else:
            config = load_config(resolve_config_path(config))
            digest = config_digest(config)
    setup_logging()
    warning = host_warning(config.gateway)
    if warning is not None:  # every way of serving builds the app: each worker says it once
        log.warning(warning)
    app = GatewayFlask("gateway", static_folder=None)
    app.gateway = Gateway(config, digest)
    return app
