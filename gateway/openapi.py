"""The OpenAPI 3.1 document of the gateway's public surface (`gateway openapi`).

Built from the validated Config alone, for the clients of the gateway: every route's
public path and methods, who may call it, its roles and rate limits, its version
header, the shape of a composed answer, and every problem+json answer the gateway can
give. Nothing about the upstreams crosses into it (no name, URL, host or path): the
document is public. The same Config gives the same document, byte for byte, so the
reference deployment's copy can be checked in (docs/openapi.json) and kept current by
a test. docs/openapi.md describes the document and its `x-` extensions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from gateway.config.model import Config, Deprecation, Route
from gateway.headers import PARTIAL_HEADER
from gateway.paths import PathTemplate
from gateway.placeholders import PartTemplate
from gateway.problems import PROBLEM_JSON
from gateway.version import __version__

OPENAPI_VERSION = "3.1.0"

# Operations in a path item, in the order the OpenAPI specification lists them.
_METHOD_ORDER = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH")
# Methods whose requests carry a body: a generic requestBody, 408 and 413.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Security scheme names, in the order a route's methods are listed.
_SCHEMES = {"jwt": "bearerAuth", "api_key": "apiKeyAuth"}

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

_INFO_DESCRIPTION = (
    "The public routes of the API gateway, generated from its routes.yaml by "
    "`gateway openapi`. Every GET operation also answers HEAD (the same status and "
    "headers, no body); HEAD is listed only where a route names it. Every error is "
    "`application/problem+json` (RFC 9457), described by the one `Problem` schema. "
    "The `x-` extensions (`x-roles`, `x-rate-limit`, `x-deprecation`, "
    "`x-deprecated-versions`, `x-compose`, `x-multi-segment`) are described in the "
    "gateway's docs/openapi.md."
)

# Response header fields the gateway sets, referenced from components.headers.
_HEADERS: dict[str, dict[str, Any]] = {
    "Age": {
        "description": "Seconds since the kept answer was made (RFC 9111 §5.1).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Allow": {
        "description": "The methods the path answers.",
        "schema": {"type": "string"},
    },
    "Cache-Status": {
        "description": "How the gateway's cache handled the request (RFC 9211), e.g. "
        "`gateway; hit; ttl=8` or `gateway; fwd=uri-miss; fwd-status=200; stored`.",
        "schema": {"type": "string"},
    },
    "Deprecation": {
        "description": "The version is deprecated (RFC 9745): `@<Unix seconds>` of when "
        "it was deprecated.",
        "schema": {"type": "string"},
    },
    PARTIAL_HEADER: {
        "description": "Present on a partial answer: the names of the optional parts "
        "that failed, comma-separated (their problems are in `_problems`).",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'For a deprecated version, `<URL>; rel="successor-version"`: the '
        "version to move to.",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'The limit with the fewest requests left: `"<limit>";r=<left>;'
        "t=<seconds until the window frees up>` (draft-ietf-httpapi-ratelimit-headers).",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'That limit: `"<limit>";q=<requests>;w=<window in seconds>`.',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Sunset": {
        "description": "When the deprecated version stops answering (RFC 8594), an HTTP-date.",
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {
        "description": 'The challenge: `Bearer realm="gateway"`, with '
        '`error="invalid_token"` when a bearer token was sent and refused.',
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {
        "description": "The number of requests the limit allows in its window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in the window after this one.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "When the window frees up, as a Unix time in whole seconds.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Request-ID": {
        "description": "The request's id: the client's own `X-Request-ID` when it is 1 "
        "to 128 characters of `A-Z a-z 0-9 . _ -`, else a new one. Problem answers "
        "carry it as `request_id` too.",
        "required": True,
        "schema": {"type": "string"},
    },
}
_RATE_LIMIT_HEADERS = (
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document: every error the gateway answers, "
    "its own and the upstream services' (whose extension members are kept).",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {
            "type": "string",
            "description": "A link to the RFC 9110 section of the status, `about:blank`, "
            "or an upstream service's own type.",
        },
        "title": {"type": "string", "description": "The HTTP status phrase."},
        "status": {"type": "integer", "description": "The HTTP status of the answer."},
        "detail": {"type": "string", "description": "A sentence for a human reader."},
        "instance": {"type": "string", "description": "The request path."},
        "code": {
            "type": "string",
            "description": "A snake_case code, such as `not_found` or `rate_limited`.",
        },
        "request_id": {
            "type": "string",
            "description": "The same value as the `X-Request-ID` response header.",
        },
        "supported": {
            "type": "array",
            "items": {"type": "string"},
            "description": "With `unsupported_version`: the versions the route offers.",
        },
        "max_body_bytes": {
            "type": "integer",
            "description": "With `payload_too_large`: the largest body accepted, in bytes.",
        },
        "parts": {
            "type": "object",
            "additionalProperties": _PROBLEM_REF,
            "description": "When a required part of a composed answer failed: the problem "
            "of each failed part, by part name.",
        },
    },
    "additionalProperties": True,
}

# The problem answers, by components.responses name: (description, header names).
_RESPONSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "BadRequest": (
        "The request cannot be handled as sent: `bad_request` (a malformed body or "
        "`Content-Length`, or a value a composed route's part cannot be sent with) or "
        "`invalid_path` (a refused request path, such as an encoded `/` or a `.` "
        "segment).",
        (),
    ),
    "UnsupportedVersion": (
        "`unsupported_version`: the version header names a version the route does not "
        "offer; the member `supported` lists those it does. Also `bad_request` and "
        "`invalid_path`, as on every route.",
        (),
    ),
    "Unauthorized": (
        "`unauthorized`: credentials the route accepts are missing, invalid or expired "
        "(an API key on a route that does not accept API keys too).",
        ("WWW-Authenticate",),
    ),
    "Forbidden": (
        "`forbidden`: the caller holds none of the route's roles (`x-roles`), or lacks "
        "an identity field a composed route's part needs; or the upstream service "
        "refused the caller.",
        (),
    ),
    "NotFound": (
        "`not_found`: the upstream service has no such resource (for a composed route, "
        "a required part answered 404).",
        (),
    ),
    "MethodNotAllowed": (
        "`method_not_allowed`, answered by the upstream service (for a composed route, "
        "a required part). A method this path has no operation for is answered 405 by "
        "the gateway, with the same `Allow` header.",
        ("Allow",),
    ),
    "RequestTimeout": (
        "`request_timeout`: the request body did not arrive in time.",
        (),
    ),
    "PayloadTooLarge": (
        "`payload_too_large`: the body is over the gateway's limit, named by the member "
        "`max_body_bytes`.",
        (),
    ),
    "RateLimited": (
        "`rate_limited`: over one of the route's limits (`x-rate-limit`; with the "
        "rate-limit headers), or, on a route that is not public, the client's address "
        "sent too many refused credentials (without them).",
        ("Retry-After", *_RATE_LIMIT_HEADERS),
    ),
    "InternalError": (
        "`internal_error` (a fault in the gateway; details only in its log), or "
        "`upstream_error` (the upstream service failed; its body is never passed on).",
        (),
    ),
    "BadGateway": (
        "`upstream_unavailable`: the upstream service refused or reset the connection, "
        "or answered something unusable.",
        (),
    ),
    "ServiceUnavailable": (
        "`service_unavailable`: the upstream service is paused after failures or has "
        "no free connection, the keys to verify access tokens cannot be had, or the "
        "rate limits cannot be checked.",
        ("Retry-After",),
    ),
    "GatewayTimeout": (
        "`upstream_timeout`: the upstream service did not answer in time.",
        (),
    ),
    "UpstreamClientError": (
        "Any other 4xx the upstream service answered (for a composed route, a required "
        "part's), as problem+json: the upstream's members are kept and completed.",
        (),
    ),
    "UpstreamServerError": (
        "Any other 5xx the upstream service answered; its body is never passed on.",
        ("Retry-After",),
    ),
}


@dataclass
class _Refs:
    """The components this document's operations refer to: only those are listed."""

    responses: set[str] = field(default_factory=set)
    headers: set[str] = field(default_factory=set)

    def response(self, name: str) -> dict[str, Any]:
        self.responses.add(name)
        self.headers.update(("X-Request-ID", *_RESPONSES[name][1]))
        return {"$ref": f"#/components/responses/{name}"}

    def header_map(self, names: Iterable[str]) -> dict[str, Any]:
        chosen = sorted({"X-Request-ID", *names}, key=str.lower)
        self.headers.update(chosen)
        return {name: {"$ref": f"#/components/headers/{name}"} for name in chosen}


@dataclass(frozen=True, slots=True)
class _Operation:
    route: Route
    method: str
    template: PathTemplate


def openapi_document(config: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the config's public routes, as a JSON-ready dict.

    Deterministic: paths, tags and components are sorted, everything else follows
    the config, and nothing depends on the time or the environment.
    """
    refs = _Refs()
    # Paths that differ only in their parameters are one path to OpenAPI: group by the
    # segments with the parameters erased.
    groups: dict[tuple[str | None, ...], list[_Operation]] = {}
    for route in config.routes:
        template = PathTemplate.parse(route.path)
        hierarchy = tuple(None if s.param else s.text for s in template.segments)
        for method in route.methods:
            groups.setdefault(hierarchy, []).append(_Operation(route, method, template))

    operation_ids = _operation_ids(config.routes)
    paths: dict[str, dict[str, Any]] = {}
    unlisted: list[dict[str, Any]] = []
    tags: set[str] = set()
    for members in groups.values():
        # {name} routes first (then the file's order): they name the parameters, and
        # when a {name} and a {name:path} route share a method on one OpenAPI path,
        # the {name} one is listed, as the gateway sends one-segment values to it.
        members = sorted(members, key=lambda m: _kinds(m.template))
        names = [s.text for s in members[0].template.segments if s.param]
        key = _openapi_path(members[0].template)
        by_method: dict[str, _Operation] = {}
        for member in members:
            if member.method in by_method:
                unlisted.append(
                    {
                        "operationId": operation_ids[(member.route.name, member.method)],
                        "method": member.method,
                        "path": member.route.path,
                        "reason": f"OpenAPI cannot tell it apart from {member.method} {key}",
                    }
                )
                continue
            by_method[member.method] = member
        item: dict[str, Any] = {}
        for method in _METHOD_ORDER:
            if method in by_method:
                member = by_method[method]
                tag = _tag(member.route)
                tags.add(tag)
                item[method.lower()] = _operation(
                    config, member, names, operation_ids[(member.route.name, method)], tag, refs
                )
        paths[key] = item

    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Gateway", "version": __version__, "description": _INFO_DESCRIPTION},
    }
    if config.gateway.public_url:
        document["servers"] = [{"url": config.gateway.public_url}]
    document["tags"] = [{"name": tag} for tag in sorted(tags)]
    document["paths"] = dict(sorted(paths.items()))
    document["components"] = _components(config, refs)
    if unlisted:
        document["x-unlisted-operations"] = sorted(unlisted, key=lambda u: (u["path"], u["method"]))
    return document


def _openapi_path(template: PathTemplate) -> str:
    return "/" + "/".join("{" + s.text + "}" if s.param else s.text for s in template.segments)


def _kinds(template: PathTemplate) -> tuple[int, ...]:
    """Sorts the route the gateway prefers first: {name} (0) before {name:path} (1)."""
    return tuple(1 if s.param == "path" else 0 for s in template.segments)


def _operation_ids(routes: Iterable[Route]) -> dict[tuple[str, str], str]:
    """The route's name; `name.method` when the route has several methods. Route names
    are unique; should `name.method` be another route's name, `name:method` is used."""
    routes = list(routes)
    names = {route.name for route in routes}
    ids: dict[tuple[str, str], str] = {}
    for route in routes:
        for method in route.methods:
            if len(route.methods) == 1:
                ids[(route.name, method)] = route.name
            else:
                candidate = f"{route.name}.{method.lower()}"
                if candidate in names:
                    candidate = f"{route.name}:{method.lower()}"
                ids[(route.name, method)] = candidate
    return ids


def _tag(route: Route) -> str:
    """The route name's first dotted word: `users.list` and `users.get` go together."""
    return route.name.split(".", 1)[0]


def _operation(
    config: Config,
    op: _Operation,
    names: list[str],
    operation_id: str,
    tag: str,
    refs: _Refs,
) -> dict[str, Any]:
    route, method = op.route, op.method
    limits = route.rate_limit if route.rate_limit is not None else config.rate_limits.default
    guarded = not route.is_public and bool(config.rate_limits.auth_failures)
    options = route.versions.options if route.versions else ()
    deprecated_versions = [o for o in options if o.deprecation is not None]

    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "description": _description(route),
    }
    if route.deprecation:
        operation["deprecated"] = True

    parameters = []
    positions = [s for s in op.template.segments if s.param]
    for name, segment in zip(names, positions, strict=True):
        parameters.append(_path_parameter(name, segment.param == "path"))
    if route.versions:
        versions = route.versions
        header: dict[str, Any] = {
            "name": versions.header,
            "in": "header",
            "required": False,
            "description": f"The API version to answer with; absent or empty: "
            f"{versions.default}. Any other value is answered 400 `unsupported_version`.",
            "schema": {
                "type": "string",
                "enum": sorted(o.name for o in versions.options),
                "default": versions.default,
            },
        }
        if deprecated_versions:
            header["x-deprecated-versions"] = {
                o.name: _deprecation(o.deprecation)
                for o in sorted(deprecated_versions, key=lambda o: o.name)
                if o.deprecation
            }
        parameters.append(header)
    if parameters:
        operation["parameters"] = parameters

    if method in _BODY_METHODS and route.compose is None:
        operation["requestBody"] = {
            "description": "Forwarded to the upstream service as sent (other media types "
            f"too), up to {config.gateway.max_body_bytes} bytes.",
            "required": False,
            "content": {"application/json": {"schema": {}}},
        }

    success_headers: list[str] = []
    if limits:
        success_headers += _RATE_LIMIT_HEADERS
    sunset = (route.deprecation and route.deprecation.sunset) or any(
        o.deprecation and o.deprecation.sunset for o in deprecated_versions
    )
    if route.deprecation or deprecated_versions:
        success_headers += ["Deprecation", "Link", *(["Sunset"] if sunset else [])]
    if route.cache:
        success_headers += ["Age", "Cache-Status"]
    responses: dict[str, Any] = {}
    if route.compose:
        optional = any(not part.required for part in route.compose.parts)
        if optional:
            success_headers.append(PARTIAL_HEADER)
        success: dict[str, Any] = {
            "description": "One JSON object: each part's answer under the part's name"
            + (
                "; on a partial answer, a failed optional part is null and its problem "
                "is in `_problems`."
                if optional
                else "."
            ),
            "headers": refs.header_map(success_headers),
        }
        if method != "HEAD":
            success["content"] = {"application/json": {"schema": _compose_schema(route)}}
        responses["200"] = success
    else:
        success = {
            "description": "The upstream service's answer, passed on as it sent it.",
            "headers": refs.header_map(success_headers),
        }
        if method != "HEAD":
            success["content"] = {"application/json": {"schema": {}}}
        responses["2XX"] = success

    if route.cache:
        responses["304"] = {
            "description": "Not Modified: the request's If-None-Match (or "
            "If-Modified-Since) matches the answer the gateway keeps; no body.",
            "headers": refs.header_map(["Age", "Cache-Status"]),
        }

    errors = {
        "400": "UnsupportedVersion" if route.versions else "BadRequest",
        "404": "NotFound",
        "405": "MethodNotAllowed",
        "4XX": "UpstreamClientError",
        "500": "InternalError",
        "502": "BadGateway",
        "503": "ServiceUnavailable",
        "504": "GatewayTimeout",
    }
    if route.compose is None:
        errors["5XX"] = "UpstreamServerError"
    if not route.is_public:
        errors["401"] = "Unauthorized"
    if route.roles or _needs_identity(route):
        errors["403"] = "Forbidden"
    if method in _BODY_METHODS:
        errors["408"] = "RequestTimeout"
        errors["413"] = "PayloadTooLarge"
    if limits or guarded:
        errors["429"] = "RateLimited"
    for status, name in errors.items():
        responses[status] = refs.response(name)
    operation["responses"] = dict(sorted(responses.items()))

    schemes: list[dict[str, list[str]]] = [
        {_SCHEMES[m]: []} for m in ("jwt", "api_key") if m in route.auth
    ]
    operation["security"] = schemes  # any one suffices; [] for a public route
    operation["x-roles"] = sorted(route.roles)
    operation["x-rate-limit"] = {
        "limits": [limit.text for limit in limits],
        "key": route.rate_limit_key,
    }
    if route.deprecation:
        operation["x-deprecation"] = _deprecation(route.deprecation)
    if route.compose:
        operation["x-compose"] = {
            "timeout": route.compose.timeout,
            "parts": [
                {
                    "name": part.name,
                    "required": part.required,
                    **({"fields": list(part.fields)} if part.fields is not None else {}),
                }
                for part in route.compose.parts
            ],
        }
    return operation


def _description(route: Route) -> str:
    if route.compose:
        parts = ", ".join(
            part.name + ("" if part.required else " (optional)") for part in route.compose.parts
        )
        return (
            f"Composed by the gateway from {len(route.compose.parts)} upstream calls made "
            f"at once: {parts}." + _cache_description(route)
        )
    text = "Forwarded to an upstream service."
    if route.versions:
        text += f" The `{route.versions.header}` header picks the version."
    return text + _cache_description(route)


def _cache_description(route: Route) -> str:
    if route.cache is None:
        return ""
    who = {"public": "for every caller", "tenant": "per tenant", "identity": "per caller"}
    return (
        f" Answers are kept by the gateway {who[route.cache.scope]} for up to "
        f"{route.cache.ttl} s (less when the service says so)."
    )


def _path_parameter(name: str, multi_segment: bool) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    if multi_segment:
        parameter["description"] = (
            "The rest of the path: one or more segments, `/` included. Send its slashes "
            "as they are: an encoded `/` (`%2F`) is refused with 400 `invalid_path`."
        )
        parameter["x-multi-segment"] = True
    else:
        parameter["description"] = (
            "One path segment. It cannot hold `/`, even encoded (`%2F` is refused with "
            "400 `invalid_path`), nor be `.` or `..`."
        )
    return parameter


def _compose_schema(route: Route) -> dict[str, Any]:
    assert route.compose is not None
    properties: dict[str, Any] = {}
    for part in route.compose.parts:
        schema: dict[str, Any]
        if part.fields is not None:
            kept: dict[str, Any] = {name: {} for name in part.fields}
            schema = {
                "type": "object" if part.required else ["object", "null"],
                "properties": kept,
            }
        else:
            schema = {}
        what = "The part's JSON" + (
            f", with only the members {', '.join(part.fields)}" if part.fields is not None else ""
        )
        schema["description"] = what + (
            "." if part.required else "; null when this optional part failed."
        )
        properties[part.name] = schema
    if any(not part.required for part in route.compose.parts):
        properties["_problems"] = {
            "type": "object",
            "description": "Present on a partial answer: the problem of each failed "
            "optional part, by part name.",
            "additionalProperties": _PROBLEM_REF,
        }
    return {
        "type": "object",
        "required": [part.name for part in route.compose.parts],
        "properties": properties,
    }


def _needs_identity(route: Route) -> bool:
    """A composed part that sends a field of the caller's identity: a caller without
    it (a token without `tenant_id`, say) is answered 403."""
    if route.compose is None:
        return False
    params = PathTemplate.parse(route.path).params
    return any(
        slot.source == "identity"
        for part in route.compose.parts
        for slot in PartTemplate.parse(part.path, params).slots
    )


def _date(value: datetime) -> str:
    """`2027-06-30` for midnight UTC (as routes.yaml usually writes it), else ISO 8601."""
    value = value.astimezone(UTC)
    if value.time() == time(0, 0):
        return value.date().isoformat()
    return value.isoformat().replace("+00:00", "Z")


def _deprecation(deprecation: Deprecation | None) -> dict[str, str]:
    assert deprecation is not None
    out = {"since": _date(deprecation.since)}
    if deprecation.sunset is not None:
        out["sunset"] = _date(deprecation.sunset)
    if deprecation.successor is not None:
        out["successor"] = deprecation.successor
    return out


def _components(config: Config, refs: _Refs) -> dict[str, Any]:
    components: dict[str, Any] = {
        "schemas": {"Problem": _PROBLEM_SCHEMA},
        "responses": {
            name: {
                "description": _RESPONSES[name][0],
                "headers": {
                    header: {"$ref": f"#/components/headers/{header}"}
                    for header in sorted({"X-Request-ID", *_RESPONSES[name][1]}, key=str.lower)
                },
                "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
            }
            for name in sorted(refs.responses)
        },
        "headers": {name: _HEADERS[name] for name in sorted(refs.headers, key=str.lower)},
    }
    if "PayloadTooLarge" in refs.responses:
        components["responses"]["PayloadTooLarge"]["description"] += (
            f" The limit is {config.gateway.max_body_bytes} bytes, for every method."
        )
    schemes: dict[str, Any] = {}
    if config.auth.api_keys is not None:
        schemes["apiKeyAuth"] = {
            "type": "apiKey",
            "in": "header",
            "name": config.auth.api_keys.header,
            "description": "An API key issued to a service; never passed on to the "
            "upstream services.",
        }
    if config.auth.jwt is not None:
        schemes["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token: `Authorization: Bearer <token>`. Its roles "
            "are matched against the operation's `x-roles`.",
        }
    if schemes:
        components["securitySchemes"] = schemes
    return components
