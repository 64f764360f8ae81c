"""The shape every policy has, and the per-request state they share.

Like a Kong plugin: a fixed ORDER, an access step that may end the request by
returning (or raising) a response, and a response step run in reverse order.
Whatever a later step needs (the identity, headers for the upstream) is left on
the RequestContext, never in globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from werkzeug.wrappers import Request, Response

from gateway.clientinfo import ClientInfo
from gateway.credentials.identity import Identity
from gateway.paths import PathTemplate
from gateway.request_body import BufferedBody

if TYPE_CHECKING:
    from gateway.ratelimit import Verdict
    from gateway.routing import CompiledRoute


@dataclass(slots=True)
class RequestContext:
    request: Request
    raw_path: str  # as the client sent it, percent-encoded
    path: str  # raw_path decoded: what routes match
    request_id: str
    client: ClientInfo
    public_base: str  # scheme://host[/prefix] the client reaches the gateway at
    started: float  # time.perf_counter() at arrival
    route: CompiledRoute | None = None
    params: dict[str, str] = field(default_factory=dict)
    # headers a policy wants the upstream to receive (identity, version...)
    upstream_headers: dict[str, str] = field(default_factory=dict)
    upstream_ms: float | None = None
    # the request body, read whole before forwarding (a chunked one by the body limit,
    # before any other check, since only reading it tells its size)
    body: BufferedBody | None = None
    identity: Identity | None = None  # set by the auth policy
    auth_failure: str | None = None  # why auth or roles refused (for logs and metrics)
    cors_applied: bool = False
    version: str | None = None  # chosen by header versioning
    upstream_template: PathTemplate | None = None  # the chosen version's upstream path
    rate_limit_verdict: Verdict | None = None
    rate_limit_storage_failed: bool = False
    upstream_error: str | None = None  # refused, reset, timeout, bad_response, breaker_open


class Policy(Protocol):
    ORDER: ClassVar[int]

    def on_request(self, ctx: RequestContext) -> Response | None:
        """Inspect the request; return a Response (or raise GatewayError) to end it."""

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        """Adjust the response on its way out (runs in reverse ORDER)."""
