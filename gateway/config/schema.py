"""The JSON Schema of routes.yaml (version 1): the one description of its shape.

The loader validates against it and `gateway schema` publishes it, so editors that
speak JSON Schema (VS Code's YAML extension, JetBrains) autocomplete and check the
same rules the gateway enforces. Rules a schema cannot express (an upstream that
exists, a limit that parses, routes that collide) live in `checks.py`.

SCHEMA is the entry file's; INCLUDED_SCHEMA that of a file its `include` names
(upstreams and routes only; published as docs/routes-include.schema.json).
"""

from __future__ import annotations

from typing import Any

from gateway.config.model import PRIVATE_NETWORKS

SCHEMA_ID = "urn:gateway:routes-yaml:v1"

_ALGORITHMS = [
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "ES256",
    "ES384",
    "EdDSA",
]
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_RATE_LIMIT = {
    "type": "string",
    "description": "N per period, e.g. `100/minute`, `5/second`, `1000/hour`, `10/2 minutes`.",
}
_RATE_LIMITS = {"type": "array", "items": _RATE_LIMIT}
_POSITIVE_NUMBER = {"type": "number", "exclusiveMinimum": 0}


def _object(
    properties: dict[str, Any], *, required: list[str] | None = None, description: str = ""
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    if description:
        schema["description"] = description
    return schema


def _strings(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", **extra}, "description": description}


GATEWAY = _object(
    {
        "public_url": {
            "type": "string",
            "description": "Base URL clients use (scheme://host[:port]); empty: taken from "
            "each request. Upstream Link and Location headers are rewritten onto it.",
        },
        "trusted_proxies": {
            "type": "integer",
            "minimum": 0,
            "description": "How many proxy hops in front of the gateway append to "
            "X-Forwarded-For and are believed. 0: the socket peer is the client.",
        },
        "metrics_allow": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Client networks (CIDR) that may read /metrics and the details "
            f"of /readyz (default [{', '.join(PRIVATE_NETWORKS)}]: loopback and private).",
        },
        "max_body_bytes": {
            "type": "integer",
            "minimum": 0,
            "description": "Largest request body accepted, chunked uploads included; "
            "larger is 413 before anything reaches an upstream.",
        },
        "request_head_timeout": {
            **_POSITIVE_NUMBER,
            "description": "Seconds a client has to send a whole request head once it "
            "has begun (also the wait for a first request on a new connection); slower "
            "is 408.",
        },
        "request_body_timeout": {
            **_POSITIVE_NUMBER,
            "description": "Seconds a client has to send a whole request body; slower is "
            "408, and nothing is forwarded.",
        },
        "response_send_timeout": {
            **_POSITIVE_NUMBER,
            "description": "Seconds one write of an answer may wait for a client that "
            "does not read; then the connection is dropped.",
        },
        "max_header_bytes": {
            "type": "integer",
            "minimum": 1024,
            "description": "Largest total size of a request's header fields (names and "
            "values); larger is 431.",
        },
        "body_memory_bytes": {
            "type": "integer",
            "minimum": 0,
            "description": "Request bodies up to this size are buffered in memory; larger "
            "ones in a temporary file until the upload is complete (default 65536).",
        },
        "openapi_path": {
            "type": "string",
            "pattern": "^(/[A-Za-z0-9._~-]+)+$",
            "description": "Serve the OpenAPI 3.1 document of the public routes at this path "
            "(GET, HEAD; public, cacheable), e.g. /openapi.json; when absent, it is not "
            "served.",
        },
        "compose_concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "description": "Upstream calls of composed routes in flight at once per "
            "worker, all requests together; more wait, within their route's timeout "
            "(default 64).",
        },
    },
    description="Settings of the gateway process itself.",
)

CORS = _object(
    {
        "allow_origins": _strings(
            "Exact origins (scheme://host[:port]) allowed to call from a browser, or `*` "
            "(not with allow_credentials).",
        ),
        "allow_credentials": {"type": "boolean"},
        "allow_methods": _strings("Methods a preflight may approve.", enum=_METHODS),
        "allow_headers": _strings("Request headers a preflight may approve."),
        "expose_headers": _strings("Response headers a browser script may read."),
        "max_age": {
            "type": "integer",
            "minimum": 0,
            "description": "Seconds a browser may cache a preflight answer.",
        },
        "allow_private_network": {
            "type": "boolean",
            "description": "Answer Private Network Access preflights with "
            "Access-Control-Allow-Private-Network: true (default false: never sent).",
        },
    },
    description="Cross-origin resource sharing for browser clients.",
)

JWT = _object(
    {
        "issuer": {"type": "string", "minLength": 1, "description": "Exact `iss` claim required."},
        "audience": {
            "type": "string",
            "minLength": 1,
            "description": "`aud` claim that must be present.",
        },
        "algorithms": {
            "type": "array",
            "minItems": 1,
            "items": {"enum": _ALGORITHMS},
            "description": "Algorithms accepted; a token's own `alg` is only ever checked "
            "against this list.",
        },
        "jwks_url": {"type": "string", "description": "Where to fetch the signing keys."},
        "public_key_file": {"type": "string", "description": "A PEM public key file."},
        "secret": {
            "type": "string",
            "description": "Shared secret for HS* algorithms, at least 32 bytes.",
        },
        "leeway": {
            "type": "integer",
            "minimum": 0,
            "description": "Seconds of clock skew allowed for exp, nbf and iat.",
        },
        "roles_claim": {
            "type": "string",
            "minLength": 1,
            "description": "Dotted path of the claim holding the roles.",
        },
        "jwks_cache_seconds": {
            "type": "integer",
            "minimum": 1,
            "description": "How long fetched signing keys are used before they are fetched "
            "again (default 300).",
        },
        "jwks_cooldown_seconds": {
            "type": "number",
            "minimum": 0,
            "description": "Least time between two fetches of the key set, also when a "
            "token names an unknown kid (default 30).",
        },
        "jwks_timeout": {
            **_POSITIVE_NUMBER,
            "description": "Seconds one fetch of the key set may take (default 2).",
        },
        "verified_token_cache": {
            "type": "integer",
            "minimum": 0,
            "description": "How many verified tokens each worker remembers, until their "
            "exp at the latest, to skip repeated signature checks (default 10000; 0: off).",
        },
    },
    required=["issuer", "audience", "algorithms"],
    description="JSON Web Token validation; exactly one of jwks_url, public_key_file, secret.",
)

API_KEYS = _object(
    {
        "header": {
            "type": "string",
            "minLength": 1,
            "description": "Request header carrying the key.",
        },
        "keys": {
            "type": "array",
            "items": _object(
                {
                    "id": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Consumer id, sent upstream as X-Consumer-Id.",
                    },
                    "sha256": {
                        "type": "string",
                        "pattern": "^[0-9a-fA-F]{64}$",
                        "description": "Hex SHA-256 digest of the key.",
                    },
                    "roles": _strings("Roles the key grants."),
                },
                required=["id", "sha256"],
            ),
        },
    },
    description="Static API keys, stored only as SHA-256 digests.",
)

RATE_LIMITS = _object(
    {
        "storage": {
            "type": "string",
            "description": "memory:// (per process), or a shared Redis: redis://host:port/db, "
            "rediss://, redis+unix://, redis+cluster://, redis+sentinel://.",
        },
        "strategy": {"enum": ["moving-window", "fixed-window", "sliding-window-counter"]},
        "on_storage_error": {
            "enum": ["allow", "deny"],
            "description": "allow: let traffic pass; deny: answer 503.",
        },
        "default": {
            **_RATE_LIMITS,
            "description": "Limits per client on every route without its own.",
        },
        "storage_timeout_ms": {
            "type": "integer",
            "minimum": 1,
            "maximum": 5000,
            "description": "Socket timeout of each storage call, so a stalled Redis cannot "
            "stall requests (default 50).",
        },
        "auth_failures": {
            **_RATE_LIMITS,
            "description": "Failed authentications allowed per client address; over it, "
            "429 before credentials are even checked (default [10/minute]; [] turns the "
            "guard off).",
        },
    },
    description="Rate limiting.",
)

UPSTREAM = _object(
    {
        "url": {"type": "string", "description": "http(s)://host[:port][/base path]"},
        "connect_timeout": {**_POSITIVE_NUMBER, "description": "Seconds to connect."},
        "timeout": {
            **_POSITIVE_NUMBER,
            "description": "Seconds the upstream has to answer, response body included. "
            "The whole exchange ends by connect_timeout + timeout, however slowly the "
            "bytes arrive.",
        },
        "retries": {
            "type": "integer",
            "minimum": 0,
            "maximum": 5,
            "description": "Retries of GET, HEAD, OPTIONS, PUT, DELETE after a "
            "failure to connect; never POST or PATCH.",
        },
        "max_connections": {
            "type": "integer",
            "minimum": 1,
            "description": "Connection pool size per gateway worker.",
        },
        "breaker": _object(
            {
                "failures": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Failures in a row that open the breaker (default 0: "
                    "no breaker).",
                },
                "open_seconds": {
                    **_POSITIVE_NUMBER,
                    "description": "How long it stays open before one probe (default 10).",
                },
                "on_5xx": {
                    "type": "boolean",
                    "description": "Count upstream 5xx answers as failures too (default "
                    "false: only connection failures and timeouts).",
                },
            },
            description="Circuit breaker for this upstream, per gateway worker.",
        ),
        "ca_bundle": {
            "type": "string",
            "description": "PEM file of CAs to trust for an https upstream.",
        },
    },
    required=["url"],
)

_DATE = {
    "type": "string",
    "description": "A date (2027-06-30) or an ISO 8601 date-time with offset "
    "(2027-06-30T00:00:00Z).",
}
DEPRECATION = _object(
    {
        "since": {
            **_DATE,
            "description": "When this version was deprecated: sent as the "
            "Deprecation header (RFC 9745).",
        },
        "sunset": {
            **_DATE,
            "description": "When it stops answering: sent as the Sunset header (RFC 8594).",
        },
        "successor": {
            "type": "string",
            "description": "Public path (may use the route's parameters) or URL of the "
            'version to move to: sent as Link: <...>; rel="successor-version".',
        },
    },
    required=["since"],
    description="Marks an API version as deprecated.",
)
VERSION_NAME = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,32}$"}
VERSIONS = _object(
    {
        "header": {
            "type": "string",
            "minLength": 1,
            "description": "Request header naming the version (default Accept-Version).",
        },
        "default": {**VERSION_NAME, "description": "Version used when the header is absent."},
        "options": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,32}$"},
            "additionalProperties": _object(
                {
                    "upstream_path": {
                        "type": "string",
                        "description": "Path template at the upstream for this version.",
                    },
                    "deprecation": DEPRECATION,
                },
                required=["upstream_path"],
            ),
            "description": "Each version by name, with its upstream path.",
        },
    },
    required=["default", "options"],
    description="Choose the upstream path by a request header (instead of upstream_path).",
)

PART_NAME = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
COMPOSE_PART = _object(
    {
        "upstream": {"type": "string", "description": "A key of `upstreams`."},
        "path": {
            "type": "string",
            "description": "Path and query at the upstream, with placeholders: {param} "
            "of the route's path, {identity.sub}, {identity.tenant_id}, "
            "{identity.consumer_id}, {query.NAME} or {query.NAME:-default}; each value "
            "is percent-encoded for where it stands.",
        },
        "required": {
            "type": "boolean",
            "description": "Whether the whole answer fails when this part fails (default "
            "true); an optional part that fails is null, and named in _problems and "
            "Gateway-Partial.",
        },
        "fields": _strings(
            "Top-level members of the part's JSON object to keep; absent: all.",
            minLength=1,
        ),
    },
    required=["upstream", "path"],
)
COMPOSE = _object(
    {
        "timeout": {
            **_POSITIVE_NUMBER,
            "description": "Seconds for the whole answer; the parts run concurrently and "
            "one still running then is cut (default 5).",
        },
        "max_part_bytes": {
            "type": "integer",
            "minimum": 1,
            "description": "Largest body of one part; larger is that part's failure "
            "(default 1048576).",
        },
        "parts": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 16,
            "propertyNames": {"pattern": PART_NAME},
            "additionalProperties": COMPOSE_PART,
            "description": "Each part by the member name it takes in the answer.",
        },
    },
    required=["parts"],
    description="Answer with one JSON object merged from several upstream calls "
    "(instead of `upstream`); GET and HEAD only.",
)

HEADER_NAME = {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"}
ROUTE_CACHE = _object(
    {
        "ttl": {
            "type": "integer",
            "minimum": 1,
            "maximum": 86400,
            "description": "Seconds an answer is kept at most; the upstream's "
            "Cache-Control (max-age, s-maxage, no-store, no-cache, private) may shorten "
            "it or forbid keeping it.",
        },
        "scope": {
            "enum": ["public", "tenant", "identity"],
            "description": "Who shares a kept answer: public (every caller), tenant "
            "(callers of one tenant_id), identity (one caller: the same identity headers "
            "upstream). Default: identity, public on a public route.",
        },
        "vary": {
            "type": "array",
            "items": HEADER_NAME,
            "description": "Request header fields whose values each get their own copy "
            "(the upstream's Vary is honoured too), e.g. [Accept-Version].",
        },
    },
    required=["ttl"],
    description="Keep this route's successful answers and serve them again (GET and "
    "HEAD routes only); unsafe methods to the same path drop them.",
)

ROUTE = _object(
    {
        "name": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.-]+$",
            "description": "Unique name, shown in logs, metrics and `gateway routes`.",
        },
        "path": {
            "type": "string",
            "description": "Public path template: /literal/{name}/{rest:path}",
        },
        "methods": {"type": "array", "minItems": 1, "items": {"enum": _METHODS}},
        "upstream": {
            "type": "string",
            "description": "A key of `upstreams` (or `compose` instead).",
        },
        "upstream_path": {
            "type": "string",
            "description": "Path template at the upstream; may use the "
            "parameters of `path`. Default: the same as `path`.",
        },
        "auth": {
            "oneOf": [
                {"const": "public"},
                {"type": "array", "minItems": 1, "items": {"enum": ["jwt", "api_key"]}},
            ],
            "description": "`public`, or the methods of which any one suffices.",
        },
        "roles": _strings("Roles of which any one suffices; absent: any authenticated caller."),
        "rate_limit": {
            **_RATE_LIMITS,
            "description": "Limits of this route (instead of "
            "the default); an empty list: not limited.",
        },
        "rate_limit_key": {"enum": ["identity", "ip"]},
        "rate_limit_bucket": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.-]+$",
            "description": "Routes naming the same bucket share their counters (default: "
            "each route counts alone).",
        },
        "cors": {
            **CORS,
            "description": "CORS settings of this route: the keys given replace the "
            "top-level `cors` ones.",
        },
        "deprecation": {
            **DEPRECATION,
            "description": "This route is a deprecated API version (URL versioning).",
        },
        "versions": VERSIONS,
        "compose": COMPOSE,
        "cache": ROUTE_CACHE,
    },
    required=["name", "path", "methods", "auth"],
)

CACHE = _object(
    {
        "storage": {
            "type": "string",
            "description": "memory:// (each worker its own, within max_bytes), or a Redis "
            "shared by every worker and instance: redis://host:port/db, rediss://, "
            "redis+unix://, redis+cluster://, redis+sentinel://.",
        },
        "max_bytes": {
            "type": "integer",
            "minimum": 1024,
            "description": "memory://: bytes of answers one worker keeps; the least "
            "recently used go first (default 67108864).",
        },
        "max_entry_bytes": {
            "type": "integer",
            "minimum": 1,
            "maximum": 16777216,
            "description": "Largest answer body kept; larger ones are passed on, not kept "
            "(default 1048576).",
        },
        "storage_timeout_ms": {
            "type": "integer",
            "minimum": 1,
            "maximum": 5000,
            "description": "Socket timeout of each Redis call (default 50).",
        },
        "on_storage_error": {
            "enum": ["allow", "deny"],
            "description": "When Redis fails, allow: forward uncached; deny: answer 503.",
        },
    },
    description="Where the answers of routes with `cache` are kept.",
)

TRACING = _object(
    {
        "otlp_endpoint": {
            "type": "string",
            "description": "OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces; "
            "empty: off, unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
            "OTEL_EXPORTER_OTLP_ENDPOINT is set.",
        },
        "service_name": {
            "type": "string",
            "description": "service.name of the spans (default: OTEL_SERVICE_NAME, else gateway).",
        },
        "sample_ratio": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Share of the traces the gateway starts that are recorded "
            "(default 1); a trusted caller's sampling choice stands.",
        },
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Headers sent with every export, e.g. an API key of the "
            "tracing backend.",
        },
        "trusted_networks": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Client networks (CIDR) whose traceparent is continued; any "
            f"other client starts a new trace (default [{', '.join(PRIVATE_NETWORKS)}]).",
        },
    },
    description="OpenTelemetry traces of each request and upstream call (off by default).",
)

UPSTREAMS = {
    "type": "object",
    "additionalProperties": UPSTREAM,
    "propertyNames": {"pattern": "^[A-Za-z0-9_.-]+$"},
    "minProperties": 1,
    "description": "Named upstream services.",
}
ROUTES = {"type": "array", "items": ROUTE, "description": "The routes."}
INCLUDE = {
    "type": "array",
    "items": {"type": "string", "minLength": 1},
    "description": "Files whose `upstreams` and `routes` join this file's: paths or "
    "glob patterns (`*`, `?`, `[...]`, `**`), relative to this file's folder. A "
    "pattern without glob characters must name a file.",
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Gateway routes.yaml",
    **_object(
        {
            "version": {"const": 1, "description": "Schema version; 1."},
            "gateway": GATEWAY,
            "cors": CORS,
            "auth": _object(
                {"jwt": JWT, "api_keys": API_KEYS}, description="How callers authenticate."
            ),
            "rate_limits": RATE_LIMITS,
            "cache": CACHE,
            "tracing": TRACING,
            "upstreams": UPSTREAMS,
            "routes": ROUTES,
            "include": INCLUDE,
        },
        required=["version"],
    ),
    # With `include`, the upstreams and routes may all be in the included files.
    "if": {"required": ["include"]},
    "else": {"required": ["upstreams", "routes"]},
}

INCLUDED_SCHEMA_ID = "urn:gateway:routes-yaml-included:v1"

# A file named by the entry file's `include`: upstreams and routes only.
INCLUDED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": INCLUDED_SCHEMA_ID,
    "title": "Gateway routes.yaml: a file named by `include`",
    **_object(
        {
            "version": {"const": 1, "description": "Schema version; 1 (optional here)."},
            "upstreams": UPSTREAMS,
            "routes": ROUTES,
        },
    ),
}
