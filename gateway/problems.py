"""Every error a client can see, and the one renderer that turns it into RFC 9457.

The tree::

    GatewayError                      status, code, title, detail, headers, extra
    ├── BadRequest            400     bad_request / invalid_path / unsupported_version
    ├── Unauthorized          401     unauthorized (+ WWW-Authenticate, RFC 6750 §3)
    ├── Forbidden             403     forbidden
    ├── NotFound              404     not_found
    ├── MethodNotAllowed      405     method_not_allowed (+ Allow, RFC 9110 §15.5.6)
    ├── PayloadTooLarge       413     payload_too_large
    ├── RateLimited           429     rate_limited (+ Retry-After)
    ├── InternalError         500     internal_error (details only in the log)
    ├── UpstreamUnavailable   502     upstream_unavailable
    ├── ServiceUnavailable    503     service_unavailable (+ Retry-After)
    └── UpstreamTimeout       504     upstream_timeout

Upstream error responses are rendered here too (`upstream_problem`): a problem+json
from an upstream keeps its members; any other body is replaced; a 5xx never carries
anything the upstream wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

PROBLEM_JSON = "application/problem+json"
MAX_UPSTREAM_PROBLEM_BYTES = 64 * 1024

# RFC 9110 section per status: a real document for each problem `type`, the same
# convention ASP.NET Core uses for its own problem details.
_RFC9110_SECTION = {
    400: "15.5.1",
    401: "15.5.2",
    402: "15.5.3",
    403: "15.5.4",
    404: "15.5.5",
    405: "15.5.6",
    406: "15.5.7",
    407: "15.5.8",
    408: "15.5.9",
    409: "15.5.10",
    410: "15.5.11",
    411: "15.5.12",
    412: "15.5.13",
    413: "15.5.14",
    414: "15.5.15",
    415: "15.5.16",
    416: "15.5.17",
    417: "15.5.18",
    421: "15.5.20",
    422: "15.5.21",
    426: "15.5.22",
    500: "15.6.1",
    501: "15.6.2",
    502: "15.6.3",
    503: "15.6.4",
    504: "15.6.5",
    505: "15.6.6",
}
# Codes for statuses the gateway does not raise itself but may pass on.
_STATUS_CODES = {
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    412: "precondition_failed",
    415: "unsupported_media_type",
    422: "unprocessable_content",
    428: "precondition_required",
    500: "upstream_error",
    501: "not_implemented",
}


# RFC 9110 renamed these; Python's http module still has the RFC 7231 phrases.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def problem_type(status: int) -> str:
    section = _RFC9110_SECTION.get(status)
    if section is None:
        return "about:blank"
    return f"https://www.rfc-editor.org/rfc/rfc9110#section-{section}"


def status_title(status: int) -> str:
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def status_code_name(status: int) -> str:
    """A snake_case `code` for any status (for errors the gateway passes on)."""
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    for cls in GatewayError.__subclasses__():
        if cls.status == status:
            return cls.code
    return status_title(status).lower().replace(" ", "_").replace("-", "_").replace("'", "")


class GatewayError(Exception):
    """An error answered to the client as problem+json. Raise it from any step."""

    status = 500
    code = "internal_error"
    title = "Internal Server Error"

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


class BadRequest(GatewayError):
    status, code, title = 400, "bad_request", "Bad Request"


class InvalidPath(BadRequest):
    code = "invalid_path"


class InvalidHost(BadRequest):
    """RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host
    field, and to any request with more than one or with an invalid value."""


class UnsupportedVersion(BadRequest):
    code = "unsupported_version"


class Unauthorized(GatewayError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(GatewayError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(GatewayError):
    status, code, title = 404, "not_found", "Not Found"


class MethodNotAllowed(GatewayError):
    status, code, title = 405, "method_not_allowed", "Method Not Allowed"

    def __init__(self, detail: str, *, allowed: list[str]) -> None:
        super().__init__(detail, headers={"Allow": ", ".join(allowed)})


class RequestTimeout(GatewayError):
    """The client did not send its whole request in time (RFC 9110 §15.5.9)."""

    status, code, title = 408, "request_timeout", "Request Timeout"


class PayloadTooLarge(GatewayError):
    status, code, title = 413, "payload_too_large", "Content Too Large"


class HeaderFieldsTooLarge(GatewayError):
    """RFC 6585 §5: the request's header fields are too large, in total."""

    status, code, title = 431, "request_header_fields_too_large", "Request Header Fields Too Large"


class RateLimited(GatewayError):
    status, code, title = 429, "rate_limited", "Too Many Requests"


class InternalError(GatewayError):
    status, code, title = 500, "internal_error", "Internal Server Error"


class UpstreamUnavailable(GatewayError):
    status, code, title = 502, "upstream_unavailable", "Bad Gateway"


class ServiceUnavailable(GatewayError):
    status, code, title = 503, "service_unavailable", "Service Unavailable"


class UpstreamTimeout(GatewayError):
    status, code, title = 504, "upstream_timeout", "Gateway Timeout"


class NotImplementedByGateway(GatewayError):
    """A request feature the gateway does not support (RFC 9110 §15.6.2): a transfer
    coding other than chunked, a protocol upgrade."""

    status, code, title = 501, "not_implemented", "Not Implemented"


def problem_json(body: Mapping[str, Any]) -> bytes:
    """A problem's bytes, the same for the app's answers and the server's own."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def render(body: Mapping[str, Any], status: int, headers: Headers | None = None) -> Response:
    """The one place a problem+json response is made."""
    payload = problem_json(body)
    response = Response(payload, status=status, headers=headers, content_type=PROBLEM_JSON)
    response.headers["Cache-Control"] = "no-store"
    return response


# The trace of the request being answered, when tracing is on: set by Gateway.handle
# around the request (per thread or greenlet), so every problem body names it.
CURRENT_TRACE_ID: ContextVar[str | None] = ContextVar("current_trace_id", default=None)


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    instance: str,
    request_id: str,
    type_: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        **extra,
        "type": type_ or problem_type(status),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "request_id": request_id,
    }
    trace_id = CURRENT_TRACE_ID.get()
    if trace_id is not None:
        body["trace_id"] = trace_id  # ours, in place of any an upstream's problem had
    return body


def error_response(error: GatewayError, *, instance: str, request_id: str) -> Response:
    body = problem_body(
        error.status,
        error.code,
        error.title,
        error.detail,
        instance=instance,
        request_id=request_id,
        **error.extra,
    )
    return render(body, error.status, Headers(list(error.headers.items())))


def http_exception_response(exc: HTTPException, *, instance: str, request_id: str) -> Response:
    """Werkzeug's and Flask's own errors, never as their HTML pages."""
    status = exc.code or 500
    headers = Headers()
    if exc.response is not None:  # e.g. the Allow header of a 405
        for name in ("Allow", "Retry-After", "WWW-Authenticate"):
            if name in exc.response.headers:
                headers[name] = exc.response.headers[name]
    detail = exc.description or status_title(status)
    code = status_code_name(status)
    if status >= 500:
        detail = "The gateway failed to handle the request."
        code = InternalError.code if status == 500 else code
    body = problem_body(
        status,
        code,
        status_title(status),
        detail,
        instance=instance,
        request_id=request_id,
    )
    return render(body, status, headers)


def upstream_problem(
    status: int, content_type: str, body: bytes, *, instance: str, request_id: str
) -> dict[str, Any]:
    """The problem body a client gets for an upstream error response.

    Kept: the members of an upstream problem+json (4xx only), with `status`,
    `instance`, `code` and `request_id` made to agree with what the client sees.
    Replaced: every other body, and every 5xx body (it may hold stack traces or
    internal host names).
    """
    upstream: dict[str, Any] = {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if status < 500 and media_type == PROBLEM_JSON and len(body) <= MAX_UPSTREAM_PROBLEM_BYTES:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict):
            upstream = parsed
    if upstream:
        code = upstream.get("code")
        if not isinstance(code, str) or not code:
            code = status_code_name(status)
        title = upstream.get("title") if isinstance(upstream.get("title"), str) else None
        detail = upstream.get("detail") if isinstance(upstream.get("detail"), str) else None
        type_ = upstream.get("type") if isinstance(upstream.get("type"), str) else None
        if type_:
            type_ = safe_problem_type(type_)
        return problem_body(
            status,
            code,
            title or status_title(status),
            detail or status_title(status),
            instance=instance,
            request_id=request_id,
            type_=type_,
            **{k: v for k, v in upstream.items() if k not in _MANAGED},
        )
    if status >= 500:
        detail = "The upstream service failed to handle the request."
    else:
        detail = f"The upstream service answered {status} {status_title(status)}."
    return problem_body(
        status,
        status_code_name(status),
        status_title(status),
        detail,
        instance=instance,
        request_id=request_id,
    )


_MANAGED = {"type", "title", "status", "detail", "instance", "code", "request_id"}
# RFC 3986 §2: every character a URI reference may hold. Anything else (whitespace,
# controls, "\\", quotes, non-ASCII) is refused before parsing: browsers, like
# urlsplit, drop some of them, so " javascript:" and "java\tscript:" would run.
_URI_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*")


def safe_problem_type(value: str) -> str:
    """An upstream's problem `type` if a browser that follows it stays on the web:
    an absolute http(s) URI with a host and no userinfo, or a relative reference with
    no scheme and no authority; else "about:blank" (RFC 9457 §3.1.1: the type is a
    URI reference, and about:blank says nothing more than the status)."""
    if not _URI_CHARS.fullmatch(value):
        return "about:blank"
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number in range raises ValueError
    except ValueError:
        return "about:blank"
    if parts.scheme:
        if parts.scheme.lower() in ("http", "https") and parts.hostname and "@" not in parts.netloc:
            return value
        return "about:blank"
    # "//host/x" (and "///host/x", which browsers read alike for http) is a
    # network-path reference (RFC 3986 §4.2): relative, yet it names another host.
    if value.startswith("//"):
        return "about:blank"
    return value
