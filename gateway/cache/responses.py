"""The response cache: the terminal step of a route with `cache`, around the forward
(or compose) step it would otherwise run.

It runs after the route's policies, so a kept answer is only ever given to a caller
who was authenticated, authorised and counted against the rate limits like any other,
and the policies' response hooks, CORS and the request id apply to it as to a
forwarded one. What it keeps is the answer as the client gets it (links already
rewritten), less `Age` and its own `Cache-Status` (RFC 9211), added at each use.

A request key is the route, the public base and path and query, the chosen version,
the scope's part of the identity and the values of the route's `vary` fields; the
upstream's own `Vary` picks a variant under it. Concurrent misses for one key in a
worker make one upstream call: the first goes, the others wait for its answer (up to
the upstream's deadline) and are served from what it kept. A kept answer past its
freshness that has an ETag or Last-Modified is checked with the upstream (a 304 keeps
it) instead of fetched again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.datastructures import Headers
from werkzeug.http import parse_date, parse_etags, unquote_etag
from werkzeug.wrappers import Response

from gateway.cache.control import Wants, seconds, verdict, wants
from gateway.cache.store import Entry, StorageFailed, Store
from gateway.config.model import CacheSettings, Route
from gateway.context import RequestContext
from gateway.forward.relay import RelayedResponse
from gateway.headers import PARTIAL_HEADER
from gateway.observability import StorageFailures
from gateway.policies.chain import Terminal
from gateway.problems import ServiceUnavailable

log = logging.getLogger("gateway.cache")

CACHE_NAME = "gateway"  # how this cache names itself in Cache-Status
# RFC 9110 §15.4.5: what a 304 carries of the answer it stands for.
NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "etag", "expires", "vary", "last-modified"}
)
# What a 304 from the upstream may update in a kept answer (RFC 9111 §4.3.4; the
# framing and content fields stay those of the kept body).
REFRESHED_FIELDS = frozenset({"cache-control", "etag", "expires", "last-modified", "link"})
NOT_KEPT_FIELDS = frozenset({"age", "cache-status"})
WARN_EVERY_SECONDS = 10.0


@dataclass(slots=True)
class _Flight:
    """One upstream call for a key, that other requests for the key wait for."""

    done: threading.Event


class Flights:
    """The keys being fetched in this worker, each by its first request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def join(self, key: str) -> tuple[_Flight, bool]:
        """The key's flight, and whether this request leads it (makes the call)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight(threading.Event())
            return flight, True

    def land(self, key: str, flight: _Flight) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()

    def __len__(self) -> int:
        return len(self._flights)


def _digest(*parts: str) -> str:
    joined = "\x00".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(joined).hexdigest()[:40]


def _field_value(ctx: RequestContext, name: str) -> str:
    return ",".join(v.strip() for v in ctx.request.headers.getlist(name))


# Fields whose value is new with every request: an answer that varies on one of them
# can never be used again.
PER_REQUEST_FIELDS = frozenset({"x-request-id", "traceparent"})


def sent_value(ctx: RequestContext, name: str, dropped: frozenset[str]) -> str:
    """The value of a request field as the upstream receives it, for `Vary`: what the
    gateway sets itself (identity, X-Forwarded-*) in place of the client's copy, ""
    for what it never forwards (`dropped`), else the client's."""
    lowered = name.lower()
    for field, value in ctx.upstream_headers.items():
        if field.lower() == lowered:
            return value
    if lowered == "x-forwarded-for":
        return ctx.client.forwarded_for
    if lowered == "x-forwarded-proto":
        return ctx.client.proto
    if lowered == "x-forwarded-host":
        return ctx.client.host
    if lowered in dropped or lowered.startswith("proxy-"):
        return ""
    return _field_value(ctx, name)


class ResponseCache:
    """Every cached route's terminal step, and the invalidation of unsafe methods."""

    def __init__(
        self,
        settings: CacheSettings,
        store: Store,
        cached_path: Callable[[str], bool],
        on_invalidated: Callable[[int], None] | None = None,
        dropped: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        # Request fields the forwarder never sends upstream (lower case).
        self.dropped = dropped
        self.store = store
        self.flights = Flights()
        self._cached_path = cached_path
        self._on_invalidated = on_invalidated
        self.failures = StorageFailures(
            log, "cache storage", settings.on_storage_error, WARN_EVERY_SECONDS
        )

    def terminal(self, route: Route, inner: Terminal, wait_seconds: float) -> Terminal:
        return CachedRoute(self, route, inner, wait_seconds).serve

    def invalidating(self, inner: Terminal) -> Terminal:
        """`inner`, then, for an answer that is not an error, the path's kept answers
        dropped (RFC 9111 §4.4): the next read sees what the write changed."""

        def run(ctx: RequestContext) -> Response:
            response = inner(ctx)
            if response.status_code < 400 and self._cached_path(ctx.path):
                self.invalidate(ctx)
            return response

        return run

    def invalidate(self, ctx: RequestContext) -> None:
        try:
            dropped = self.store.invalidate(ctx.path)
        except StorageFailed as exc:
            # The write is done upstream; its answer stands. Kept answers of the path
            # stay until they expire (at most the route's ttl).
            self.storage_failed(ctx, exc)
            return
        if dropped and self._on_invalidated is not None:
            self._on_invalidated(dropped)

    def storage_failed(self, ctx: RequestContext, exc: Exception) -> None:
        ctx.cache_storage_failed = True
        self.failures.failed(exc)


class CachedRoute:
    """One route's cache: its key, its policy and its terminal step."""

    def __init__(
        self, cache: ResponseCache, route: Route, inner: Terminal, wait_seconds: float
    ) -> None:
        assert route.cache is not None
        self.cache = cache
        self.route = route
        self.policy = route.cache
        self.inner = inner
        self.wait_seconds = wait_seconds

    # -- keys ----------------------------------------------------------------------

    def key(self, ctx: RequestContext) -> str | None:
        """The request's key, or None when the scope has no part for this caller."""
        scope = self.policy.scope
        if scope == "public":
            who = ""
        elif ctx.identity is None:
            return None
        elif scope == "tenant":
            if not ctx.identity.tenant_id:
                return None  # callers without a tenant would all share one copy
            who = "tenant:" + ctx.identity.tenant_id
        else:
            # Everything the upstream is told of the caller: two callers it could
            # answer differently never share a copy.
            who = repr(sorted(ctx.upstream_headers.items()))
        query = ctx.request.query_string.decode("latin-1")
        dropped = self.cache.dropped
        varied = [f"{name}={sent_value(ctx, name, dropped)}" for name in self.policy.vary]
        # The host and scheme the client asked for go upstream as X-Forwarded-Host and
        # -Proto even when links are built on gateway.public_url: an answer made for
        # one must not be kept for another (a client's Host poisoning everyone's copy).
        return _digest(
            self.route.name,
            ctx.public_base,
            ctx.client.proto,
            ctx.client.host,
            ctx.path,
            query,
            ctx.version or "",
            who,
            *varied,
        )

    def variant_of(self, ctx: RequestContext, key: str) -> Callable[[tuple[str, ...]], str]:
        dropped = self.cache.dropped

        def variant(names: tuple[str, ...]) -> str:
            if not names:
                return key
            return _digest(key, *(f"{name}={sent_value(ctx, name, dropped)}" for name in names))

        return variant

    # -- serving -------------------------------------------------------------------

    def serve(self, ctx: RequestContext) -> Response:
        request = ctx.request
        if "Range" in request.headers:  # a part of an answer is never kept nor made
            return self._pass(ctx, "bypass", "fwd=bypass; detail=range")
        key = self.key(ctx)
        if key is None:
            return self._pass(ctx, "bypass", "fwd=bypass; detail=no-tenant")
        want = wants(request.headers.getlist("Cache-Control"), request.headers.getlist("Pragma"))
        variant_of = self.variant_of(ctx, key)
        try:
            entry, generation = self.cache.store.lookup(ctx.path, key, variant_of)
        except StorageFailed as exc:
            return self._storage_failed(ctx, exc)
        now = time.time()
        if entry is not None and self._usable(entry, want, now):
            ctx.cache_result = "hit"
            return self._answer(ctx, entry, now, f"hit; ttl={int(entry.fresh_until - now)}")
        if request.method == "HEAD" and entry is None:
            # Nothing to describe: asked upstream as it is, and the bodiless answer
            # is not kept.
            return self._pass(ctx, "miss", "fwd=uri-miss")
        flight, leader = self.cache.flights.join(key)
        try:
            if not leader:
                arrived = now
                flight.done.wait(self.wait_seconds)
                try:
                    again = self.cache.store.get(ctx.path, key, variant_of)
                except StorageFailed:
                    again = None
                now = time.time()
                # What this request would take from the cache, and for one that asked
                # for a checked answer, only one kept (or checked) since it came.
                if (
                    again is not None
                    and self._usable(again, dataclasses.replace(want, revalidate=False), now)
                    and (not want.revalidate or again.stored_at >= arrived)
                ):
                    ctx.cache_result = "hit"
                    return self._answer(ctx, again, now, "fwd=uri-miss; collapsed")
            return self._fetch(ctx, key, variant_of, entry, want, generation)
        finally:
            if leader:
                self.cache.flights.land(key, flight)

    @staticmethod
    def _usable(entry: Entry, want: Wants, now: float) -> bool:
        if want.revalidate or now >= entry.fresh_until:
            return False
        return want.max_age is None or entry.current_age(now) <= want.max_age

    def _pass(self, ctx: RequestContext, result: str, status: str) -> Response:
        """The inner step's answer, untouched but for Cache-Status."""
        ctx.cache_result = result
        response = self.inner(ctx)
        _add_status(response.headers, status)
        return response

    def _storage_failed(self, ctx: RequestContext, exc: StorageFailed) -> Response:
        self.cache.storage_failed(ctx, exc)
        ctx.cache_result = "error"
        if self.cache.settings.on_storage_error == "deny":
            raise ServiceUnavailable(
                "Cached answers cannot be read right now.", headers={"Retry-After": "5"}
            )
        response = self.inner(ctx)
        _add_status(response.headers, "fwd=miss; detail=storage-error")
        return response

    def _fetch(
        self,
        ctx: RequestContext,
        key: str,
        variant_of: Callable[[tuple[str, ...]], str],
        entry: Entry | None,
        want: Wants,
        generation: int,
    ) -> Response:
        """Asks the upstream: with the kept answer's validators when there is one,
        else without the client's own conditions (a whole answer can be kept; the
        client's conditions are then answered from it)."""
        validators: list[tuple[str, str]] = []
        if entry is not None:
            etag = entry.header("ETag")
            modified = entry.header("Last-Modified")
            if etag:
                validators.append(("If-None-Match", etag))
            if modified:
                validators.append(("If-Modified-Since", modified))
        ctx.upstream_conditional = tuple(validators)
        ctx.whole_body_bytes = self.cache.settings.max_entry_bytes
        response = self.inner(ctx)
        now = time.time()
        forwarded = "fwd=request" if want.revalidate else "fwd=stale" if entry else "fwd=uri-miss"
        ctx.cache_result = "stale" if entry is not None else "miss"
        if response.status_code == 304 and entry is not None:
            if _other_representation(entry, response):
                # RFC 9111 §4.3.4: a 304 for another strong ETag than the kept one does
                # not describe it. Asked again, without conditions.
                response.close()
                ctx.upstream_conditional = ()
                response = self.inner(ctx)
                now = time.time()
            else:
                refreshed, storable = self._refreshed(entry, response, now)
                stored = storable and self._keep(
                    ctx, key, variant_of(refreshed.vary), refreshed, want, generation
                )
                status = f"{forwarded}; fwd-status=304" + ("; stored" if stored else "")
                # Served with the 304's fields even when they forbid keeping it.
                return self._answer(ctx, refreshed, now, status)
        fresh, reason = self._entry(ctx, response, now, variant_of)
        if fresh is None or want.no_store:
            detail = "no-store" if fresh is not None else reason
            _add_status(
                response.headers,
                f"{forwarded}; fwd-status={response.status_code}"
                + (f"; detail={detail}" if detail else ""),
            )
            return response
        stored = self._keep(ctx, key, variant_of(fresh.vary), fresh, want, generation)
        status = f"{forwarded}; fwd-status={response.status_code}" + ("; stored" if stored else "")
        return self._answer(ctx, fresh, now, status)

    def _entry(
        self,
        ctx: RequestContext,
        response: Response,
        now: float,
        variant_of: Callable[[tuple[str, ...]], str],
    ) -> tuple[Entry | None, str]:
        """The answer as an Entry to keep, or None and why not."""
        if ctx.request.method != "GET":
            return None, "method"
        if response.direct_passthrough or not response.is_sequence:
            return None, "too-large"  # relayed as it arrives: never held whole
        if PARTIAL_HEADER in response.headers:
            return None, "partial"  # a part failed: the next request may do better
        headers = response.headers
        has_validator = "ETag" in headers or "Last-Modified" in headers
        # A composed answer's Cache-Control is the gateway's own word to the caches
        # after it (`private`: it was made for this caller); here the route's scope
        # says who may share it.
        cache_control = [] if self.route.compose else headers.getlist("Cache-Control")
        judged = verdict(
            response.status_code,
            cache_control,
            headers.getlist("Vary"),
            scope=self.policy.scope,
            ttl=self.policy.ttl,
            has_validator=has_validator,
            sets_cookie="Set-Cookie" in headers,
        )
        if not judged.storable:
            return None, judged.reason
        vary = tuple(
            dict.fromkeys(
                name.strip().lower()
                for value in headers.getlist("Vary")
                for name in value.split(",")
                if name.strip()
            )
        )
        if PER_REQUEST_FIELDS.intersection(vary):
            return None, "vary-request"  # no later request has the same value
        body = response.get_data()
        if len(body) > self.cache.settings.max_entry_bytes:
            return None, "too-large"
        upstream_age = seconds(headers.get("Age")) or 0
        kept = tuple((n, v) for n, v in headers.items() if n.lower() not in NOT_KEPT_FIELDS)
        return (
            Entry(
                status=response.status_code,
                headers=kept,
                body=body,
                stored_at=now,
                fresh_until=now + judged.lifetime - upstream_age,
                age=upstream_age,
                vary=vary,
            ),
            "",
        )

    def _refreshed(self, entry: Entry, response: Response, now: float) -> tuple[Entry, bool]:
        """The kept answer with the upstream's 304 fields, and whether it may be kept
        again (the 304 may say no-store now)."""
        updates = [(n, v) for n, v in response.headers.items() if n.lower() in REFRESHED_FIELDS]
        refreshed = entry.refreshed(updates, now, 0)
        judged = verdict(
            200,
            [v for n, v in refreshed.headers if n.lower() == "cache-control"],
            [v for n, v in refreshed.headers if n.lower() == "vary"],
            scope=self.policy.scope,
            ttl=self.policy.ttl,
            has_validator=True,
            sets_cookie=False,
        )
        if not judged.storable:
            return refreshed, False
        return dataclasses.replace(refreshed, fresh_until=now + judged.lifetime), True

    def _keep(
        self,
        ctx: RequestContext,
        key: str,
        variant: str,
        entry: Entry,
        want: Wants,
        generation: int,
    ) -> bool:
        if want.no_store:
            return False
        validated = entry.header("ETag") or entry.header("Last-Modified")
        # A kept answer outlives its freshness by the route's ttl when it can be
        # checked with the upstream then (one 304 instead of the whole body).
        keep = max(0.0, entry.fresh_until - entry.stored_at)
        keep += self.policy.ttl if validated else 0
        if keep <= 0:
            return False
        try:
            stored = self.cache.store.put(ctx.path, key, variant, entry, keep, generation)
        except StorageFailed as exc:
            self.cache.storage_failed(ctx, exc)
            return False
        ctx.cache_stored = stored
        return stored

    def _answer(self, ctx: RequestContext, entry: Entry, now: float, status: str) -> Response:
        """A kept answer for this request: 304 when the client's own conditions say
        it has it (RFC 9110 §13.2.2), else the whole answer."""
        headers = Headers(list(entry.headers))
        headers["Age"] = str(entry.current_age(now))
        _add_status(headers, status)
        if not _modified(ctx, entry):
            kept = [
                (n, v)
                for n, v in headers.items()
                if n.lower() in NOT_MODIFIED_FIELDS or n.lower() in ("age", "cache-status")
            ]
            return RelayedResponse(None, status=304, headers=kept)
        response = RelayedResponse(entry.body, status=entry.status)
        response.headers = headers  # the kept framing, a HEAD's Content-Length too
        return response


def _other_representation(entry: Entry, response: Response) -> bool:
    """Whether a 304's strong ETag names another representation than the kept one."""
    given, kept = response.headers.get("ETag"), entry.header("ETag")
    if not given or not kept or given.startswith("W/") or kept.startswith("W/"):
        return False
    return given != kept


def _modified(ctx: RequestContext, entry: Entry) -> bool:
    """RFC 9110 §13.2.2 for a read: If-None-Match decides when given (weak
    comparison, `*` matches), else If-Modified-Since against Last-Modified."""
    request = ctx.request
    if "If-None-Match" in request.headers:
        etag = entry.header("ETag")
        if etag is None:
            return True
        tags = parse_etags(request.headers["If-None-Match"])
        return not tags.contains_weak(unquote_etag(etag)[0] or "")
    since = parse_date(request.headers.get("If-Modified-Since"))
    modified = parse_date(entry.header("Last-Modified"))
    if since is None or modified is None:
        return True
    return modified > since


def _add_status(headers: Headers, status: str) -> None:
    """This cache's member appended to Cache-Status: the list runs from the origin's
    side to the client's (RFC 9211 §2)."""
    member = f"{CACHE_NAME}; {status}"
    existing = headers.get("Cache-Status")
    headers["Cache-Status"] = f"{existing}, {member}" if existing else member
