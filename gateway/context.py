"""What a request carries between the steps that serve it.

Each step (routing, the policies, forwarding) reads what earlier ones left here and
adds its own: the matched route, the identity, headers for the upstream, the body
once read. One object per request, never shared, never global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request

from gateway.clientinfo import ClientInfo
from gateway.credentials.identity import Identity
from gateway.paths import PathTemplate
from gateway.request_body import BufferedBody
from gateway.routing import RouteSpec

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from gateway.ratelimit import Verdict


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """How one part of a composed request went, for the access log and metrics."""

    name: str
    upstream: str
    status: int  # what the client is told of the part: the upstream's 2xx/4xx or ours
    upstream_ms: float | None  # None: no answer came (refused, cut, never sent)
    error: str | None = None  # refused, reset, timeout, bad_response, breaker_open


@dataclass(slots=True)
class RequestContext:
    request: Request
    raw_path: str  # as the client sent it, percent-encoded
    path: str  # raw_path decoded: what routes match
    request_id: str
    client: ClientInfo
    public_base: str  # scheme://host[/prefix] the client reaches the gateway at
    started: float  # time.perf_counter() at arrival
    route: RouteSpec | None = None  # the matched route, once routing has run
    params: dict[str, str] = field(default_factory=dict)
    # headers a policy wants the upstream to receive (identity, version...)
    upstream_headers: dict[str, str] = field(default_factory=dict)
    upstream_ms: float | None = None
    # the request body, read whole before forwarding (a chunked one by the body limit,
    # before any other check, since only reading it tells its size)
    body: BufferedBody | None = None
    identity: Identity | None = None  # set by the auth policy
    auth_failure: str | None = None  # why auth or roles refused (for logs and metrics)
    version: str | None = None  # chosen by header versioning
    upstream_template: PathTemplate | None = None  # the chosen version's upstream path
    rate_limit_verdict: Verdict | None = None
    rate_limit_storage_failed: bool = False
    upstream_error: str | None = None  # refused, reset, timeout, bad_response, breaker_open
    parts: tuple[PartOutcome, ...] = ()  # a composed request's parts, in route order
    # Set by the response cache: the validators to send in place of the client's own
    # conditional fields (an empty tuple: none), and how large a body to read whole.
    upstream_conditional: tuple[tuple[str, str], ...] | None = None
    whole_body_bytes: int | None = None
    cache_result: str | None = None  # hit, miss, stale, bypass, error
    cache_stored: bool = False
    cache_storage_failed: bool = False
    trace_span: Span | None = None  # the request's server span, when tracing is on
    trace_id: str | None = None  # its trace id, 32 hex digits
