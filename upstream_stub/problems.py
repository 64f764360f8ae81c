"""RFC 9457 problem details: the only shape an error of the stub ever takes.

The stub stands in for a real service behind the gateway, so its errors must look
like a well-made service's: `application/problem+json` with type, title, status,
detail, instance and a snake_case code, never an HTML page. Handlers raise Problem;
Werkzeug's own errors (404, 405, 413, ...) and unexpected exceptions are rendered
here too, so no code path can fall back to Flask's HTML pages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger("upstream_stub")

# RFC 9110 sections, so every problem `type` points at a real document.
_RFC9110_SECTION = {
    400: "15.5.1",
    401: "15.5.2",
    403: "15.5.4",
    404: "15.5.5",
    405: "15.5.6",
    406: "15.5.7",
    409: "15.5.10",
    412: "15.5.13",
    413: "15.5.14",
    415: "15.5.16",
    422: "15.5.21",
    500: "15.6.1",
}
# RFC 9110 renamed these; Python's http module still has the RFC 7231 phrases.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    500: "internal_error",
}


def status_title(status: int) -> str:
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_type(status: int) -> str:
    section = _RFC9110_SECTION.get(status)
    if section is None:
        return "about:blank"
    return f"https://www.rfc-editor.org/rfc/rfc9110#section-{section}"


def status_code_name(status: int) -> str:
    if status in _CODES:
        return _CODES[status]
    return status_title(status).lower().replace(" ", "_").replace("-", "_").replace("'", "")


class Problem(Exception):
    """An error answered as problem+json; raise it from any handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or status_code_name(status)
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The one place a problem+json response is made (needs a request context)."""
    body: dict[str, Any] = {
        **extra,
        "type": problem_type(status),
        "title": status_title(status),
        "status": status,
        "detail": detail,
        "instance": request.path,
        "code": code or status_code_name(status),
    }
    request_id = request.headers.get("X-Request-ID")
    if request_id:
        body["request_id"] = request_id
    response = Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type=PROBLEM_JSON,
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers["Cache-Control"] = "no-store"
    return response


def _from_problem(error: Problem) -> Response:
    return problem_response(
        error.status, error.detail, code=error.code, headers=error.headers, **error.extra
    )


def _from_http_exception(error: HTTPException) -> Response | HTTPException:
    status = error.code or 500
    if status < 400:
        # Routing redirects are HTTPExceptions too; they are not errors.
        return error
    headers: dict[str, str] = {}
    for name, value in error.get_headers():
        if name in ("Allow", "Retry-After", "WWW-Authenticate"):
            headers[name] = value
    detail = error.description or status_title(status)
    if status == 404:
        detail = f"Nothing is served at {request.path}."
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.path}."
    elif status >= 500:
        detail = "The service failed to handle the request."
    return problem_response(status, detail, headers=headers)


def _from_exception(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return problem_response(500, "The service failed to handle the request.")


def register_problem_handlers(app: Flask) -> None:
    """Route every error of `app` through problem_response."""
    app.register_error_handler(Problem, _from_problem)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _from_exception)
