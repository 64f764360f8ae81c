"""The validated configuration: frozen, slotted dataclasses and nothing else.

`load.py` builds these from routes.yaml; everything that serves requests reads them.
No I/O happens here, so the model can be built by hand in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

AuthMethod = Literal["jwt", "api_key"]
RateLimitKey = Literal["identity", "ip"]
RateLimitStrategy = Literal["moving-window", "fixed-window", "sliding-window-counter"]
StorageErrorMode = Literal["allow", "deny"]
CacheScope = Literal["public", "tenant", "identity"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value was written, so any later complaint can point at it."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


PRIVATE_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    public_url: str = ""
    trusted_proxies: int = 0
    max_body_bytes: int = 1_048_576
    metrics_allow: tuple[str, ...] = PRIVATE_NETWORKS
    # The edge's own deadlines and caps (docs/security.md): a client too slow to send
    # its request gets 408 and is never counted against an upstream.
    request_head_timeout: float = 10.0
    request_body_timeout: float = 60.0
    response_send_timeout: float = 60.0
    max_header_bytes: int = 65_536
    body_memory_bytes: int = 65_536
    # Composed routes' part calls in flight at once per worker, all requests together.
    compose_concurrency: int = 64
    openapi_path: str = ""  # where the gateway serves its OpenAPI document; "": nowhere


@dataclass(frozen=True, slots=True)
class CorsSettings:
    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600
    allow_private_network: bool = False


@dataclass(frozen=True, slots=True)
class JwtSettings:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    jwks_url: str | None = None
    public_key_file: str | None = None
    secret: str | None = None
    leeway: int = 30
    roles_claim: str = "role"
    jwks_cache_seconds: int = 300
    jwks_cooldown_seconds: float = 30.0
    jwks_timeout: float = 2.0
    verified_token_cache: int = 10_000


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    sha256: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiKeySettings:
    header: str = "X-API-Key"
    keys: tuple[ApiKey, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt: JwtSettings | None = None
    api_keys: ApiKeySettings | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One parsed limit such as `100/minute`: `amount` requests per `seconds`."""

    text: str
    amount: int
    seconds: int


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    storage: str = "memory://"
    strategy: RateLimitStrategy = "moving-window"
    on_storage_error: StorageErrorMode = "allow"
    default: tuple[RateLimit, ...] = ()
    storage_timeout_ms: int = 50
    # The brute-force guard: refused credentials per client address (rate_limits docs).
    auth_failures: tuple[RateLimit, ...] = (RateLimit("10/minute", 10, 60),)


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str
    connect_timeout: float = 1.0
    timeout: float = 10.0
    retries: int = 1
    max_connections: int = 100
    ca_bundle: str | None = None
    breaker_failures: int = 0  # 0: no breaker
    breaker_open_seconds: float = 10.0
    breaker_on_5xx: bool = False


@dataclass(frozen=True, slots=True)
class Deprecation:
    since: datetime
    sunset: datetime | None = None
    successor: str | None = None  # a public path template or an absolute URL


@dataclass(frozen=True, slots=True)
class VersionOption:
    name: str
    upstream_path: str
    deprecation: Deprecation | None = None


@dataclass(frozen=True, slots=True)
class Versions:
    default: str
    options: tuple[VersionOption, ...]
    header: str = "Accept-Version"


@dataclass(frozen=True, slots=True)
class ComposePart:
    """One upstream call of a composed route; its JSON becomes the member `name`."""

    name: str
    upstream: str
    path: str  # a path and query with placeholders (gateway/placeholders.py)
    required: bool = True
    fields: tuple[str, ...] | None = None  # None: every top-level member is kept


@dataclass(frozen=True, slots=True)
class Compose:
    parts: tuple[ComposePart, ...]
    timeout: float = 5.0  # seconds for the whole answer; the parts run concurrently
    max_part_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class RouteCache:
    """A route's answers kept for `ttl` seconds at most, per `scope`, by `vary`."""

    ttl: int
    scope: CacheScope  # public: one copy for all; tenant: per tenant; identity: per caller
    vary: tuple[str, ...] = ()  # request fields whose values each get their own copy


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Where cached answers are kept (the routes' `cache` say which are)."""

    storage: str = "memory://"  # memory:// (per worker) or a Redis shared by all
    max_bytes: int = 67_108_864  # the memory store's budget per worker
    max_entry_bytes: int = 1_048_576  # larger answers are passed on, not kept
    storage_timeout_ms: int = 50
    on_storage_error: StorageErrorMode = "allow"  # allow: forward uncached; deny: 503


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry traces, sent over OTLP/HTTP (gateway/tracing.py)."""

    # "": off, unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
    # is set (the SDK reads what is not given here from the OTEL_* variables).
    otlp_endpoint: str = ""
    service_name: str = ""  # "": OTEL_SERVICE_NAME, else "gateway"
    sample_ratio: float = 1.0  # of the traces this gateway starts; a parent's choice stands
    headers: tuple[tuple[str, str], ...] = ()  # sent with every export (an API key, say)
    # Clients whose `traceparent` is continued; any other starts a new trace.
    trusted_networks: tuple[str, ...] = PRIVATE_NETWORKS


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    methods: tuple[str, ...]
    upstream: str | None  # None: a composed route (`compose`)
    upstream_path: str  # "" for a composed route
    auth: tuple[AuthMethod, ...] = ()  # empty: public
    roles: tuple[str, ...] = ()
    rate_limit: tuple[RateLimit, ...] | None = None  # None: the default limits apply
    rate_limit_key: RateLimitKey = "identity"
    rate_limit_bucket: str | None = None  # None: the route's name
    cors: CorsSettings | None = None  # None: the top-level cors settings
    deprecation: Deprecation | None = None  # a deprecated URL version
    versions: Versions | None = None  # header versioning: upstream path per version
    compose: Compose | None = None  # several upstream calls merged into one answer
    cache: RouteCache | None = None  # None: answers are never kept
    location: Location | None = field(default=None, compare=False)

    @property
    def is_public(self) -> bool:
        return not self.auth


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    gateway: GatewaySettings
    cors: CorsSettings
    auth: AuthSettings
    rate_limits: RateLimitSettings
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]
    # Every file read: `source` (the entry file) first, then those its `include` named,
    # in the order they were read.
    files: tuple[str, ...] = ()
    cache: CacheSettings = CacheSettings()
    tracing: TracingSettings = TracingSettings()

    def summary(self) -> str:
        text = f"{self.source}: OK, {len(self.routes)} routes to {len(self.upstreams)} upstreams"
        return text + (f" from {len(self.files)} files" if len(self.files) > 1 else "")
