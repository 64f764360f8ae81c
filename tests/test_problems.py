"""The error tree and its one renderer: RFC 9457 problem+json."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from werkzeug.exceptions import InternalServerError as WerkzeugInternalServerError
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound

from gateway.problems import (
    MAX_UPSTREAM_PROBLEM_BYTES,
    PROBLEM_JSON,
    BadRequest,
    Forbidden,
    GatewayError,
    HeaderFieldsTooLarge,
    InternalError,
    InvalidHost,
    InvalidPath,
    MethodNotAllowed,
    NotFound,
    NotImplementedByGateway,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedVersion,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_response,
    http_exception_response,
    problem_type,
    safe_problem_type,
    status_code_name,
    upstream_problem,
)

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
REQUIRED = {"type", "title", "status", "detail", "instance", "code", "request_id"}


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(all_subclasses(sub))
    return found


def make(cls: type[GatewayError], detail: str = "Something happened.") -> GatewayError:
    if cls is MethodNotAllowed:
        return MethodNotAllowed(detail, allowed=["GET", "HEAD"])
    return cls(detail)


EXPECTED = {
    BadRequest: (400, "bad_request"),
    InvalidHost: (400, "bad_request"),
    InvalidPath: (400, "invalid_path"),
    UnsupportedVersion: (400, "unsupported_version"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    MethodNotAllowed: (405, "method_not_allowed"),
    RequestTimeout: (408, "request_timeout"),
    PayloadTooLarge: (413, "payload_too_large"),
    HeaderFieldsTooLarge: (431, "request_header_fields_too_large"),
    RateLimited: (429, "rate_limited"),
    InternalError: (500, "internal_error"),
    UpstreamUnavailable: (502, "upstream_unavailable"),
    ServiceUnavailable: (503, "service_unavailable"),
    UpstreamTimeout: (504, "upstream_timeout"),
    NotImplementedByGateway: (501, "not_implemented"),
}


def test_the_table_covers_every_gateway_error() -> None:
    assert set(all_subclasses(GatewayError)) == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_every_gateway_error_renders_as_problem_json(cls: type[GatewayError]) -> None:
    status, code = EXPECTED[cls]
    response = error_response(make(cls), instance="/api/v1/users/42", request_id="req-1")
    assert response.status_code == status
    assert response.mimetype == PROBLEM_JSON
    assert response.headers["Content-Type"] == PROBLEM_JSON
    body = json.loads(response.get_data())
    assert REQUIRED <= set(body)
    assert body["status"] == status
    assert body["code"] == code
    assert SNAKE.match(body["code"])
    assert body["title"] == cls.title and body["title"]
    assert body["type"] == problem_type(status)
    assert body["type"] == "about:blank" or body["type"].startswith(
        "https://www.rfc-editor.org/rfc/rfc9110#section-15."
    )
    assert body["detail"] == "Something happened."
    assert body["instance"] == "/api/v1/users/42"
    assert body["request_id"] == "req-1"


def test_problem_responses_are_not_cached() -> None:
    response = error_response(NotFound("x"), instance="/", request_id="r")
    assert response.headers["Cache-Control"] == "no-store"


def test_method_not_allowed_carries_allow() -> None:
    error = MethodNotAllowed("DELETE is not allowed.", allowed=["GET", "HEAD", "POST"])
    response = error_response(error, instance="/users", request_id="r")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST"


def test_headers_and_extra_members_of_an_error_are_rendered() -> None:
    error = RateLimited("Slow down.", headers={"Retry-After": "7"}, limit="5/minute")
    response = error_response(error, instance="/login", request_id="r")
    assert response.headers["Retry-After"] == "7"
    body = json.loads(response.get_data())
    assert body["limit"] == "5/minute"


def test_unicode_in_detail_is_kept_as_valid_json() -> None:
    error = NotFound("No route matches /caf\u00e9.")
    response = error_response(error, instance="/caf\u00e9", request_id="r")
    assert json.loads(response.get_data())["instance"] == "/caf\u00e9"


def test_werkzeug_not_found_becomes_problem_json() -> None:
    response = http_exception_response(WerkzeugNotFound(), instance="/x", request_id="r")
    assert response.status_code == 404
    assert response.mimetype == PROBLEM_JSON
    body = json.loads(response.get_data())
    assert body["code"] == "not_found"
    assert REQUIRED <= set(body)


def test_werkzeug_method_not_allowed_keeps_its_allow_header() -> None:
    exc = WerkzeugMethodNotAllowed(valid_methods=["GET", "POST"])
    exc.response = exc.get_response()
    response = http_exception_response(exc, instance="/x", request_id="r")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_werkzeug_server_error_hides_its_description() -> None:
    exc = WerkzeugInternalServerError("db.internal:5432 exploded")
    response = http_exception_response(exc, instance="/x", request_id="r")
    assert response.status_code == 500
    assert b"db.internal" not in response.get_data()
    # The gateway's own failure, not an upstream's.
    assert json.loads(response.get_data())["code"] == "internal_error"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "unauthorized"),
        (404, "not_found"),
        (409, "conflict"),
        (410, "gone"),
        (418, "im_a_teapot"),
        (422, "unprocessable_content"),
        (429, "rate_limited"),
        (500, "upstream_error"),
        (502, "upstream_unavailable"),
        (503, "service_unavailable"),
        (504, "upstream_timeout"),
    ],
)
def test_status_code_name_is_snake_case(status: int, code: str) -> None:
    assert status_code_name(status) == code


def test_unknown_status_has_about_blank_type() -> None:
    assert problem_type(499) == "about:blank"
    assert problem_type(404) == "https://www.rfc-editor.org/rfc/rfc9110#section-15.5.5"


# --- upstream_problem ---------------------------------------------------------------------


def upstream(
    status: int, content_type: str, body: bytes | dict[str, Any] | list[Any]
) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return upstream_problem(status, content_type, raw, instance="/api/v1/users", request_id="rid")


def test_upstream_problem_json_keeps_its_members() -> None:
    body = upstream(
        422,
        "application/problem+json",
        {
            "type": "https://errors.example.com/validation",
            "title": "Validation failed",
            "status": 422,
            "detail": "email is not valid",
            "code": "validation_failed",
            "errors": [{"field": "email", "message": "not an email"}],
        },
    )
    assert body == {
        "type": "https://errors.example.com/validation",
        "title": "Validation failed",
        "status": 422,
        "detail": "email is not valid",
        "instance": "/api/v1/users",
        "code": "validation_failed",
        "request_id": "rid",
        "errors": [{"field": "email", "message": "not an email"}],
    }


def test_upstream_problem_status_instance_and_request_id_are_overridden() -> None:
    body = upstream(
        409,
        "application/problem+json; charset=utf-8",
        {"status": 400, "instance": "/internal/users/7", "request_id": "theirs", "title": "Dup"},
    )
    assert body["status"] == 409
    assert body["instance"] == "/api/v1/users"
    assert body["request_id"] == "rid"
    assert body["title"] == "Dup"


def test_upstream_problem_without_a_code_gets_one_from_the_status() -> None:
    body = upstream(409, "application/problem+json", {"title": "Conflict", "detail": "taken"})
    assert body["code"] == "conflict"
    assert body["detail"] == "taken"
    assert REQUIRED <= set(body)


def test_upstream_problem_with_non_string_members_gets_defaults() -> None:
    body = upstream(404, "application/problem+json", {"title": 5, "detail": None, "code": 3})
    assert body["title"] == "Not Found"
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["code"] == "not_found"


UNSAFE_TYPES = [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "\tjavascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "java\rscript:alert(1)",
    "\x00javascript:alert(1)",
    "javascript\x00:alert(1)",
    "\u00a0javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/problems/x",
    "///evil.example/problems/x",
    "/\\evil.example/problems/x",
    "\\\\evil.example\\x",
    "https://user:pass@evil.example/x",
    "https://good.example@evil.example/x",
    "https:evil.example/x",
    "http:///evil.example",
    "https://good.example:99999/x",
    "https://[::1/x",
    "https://\u0435xample.com/x",
    "urn:problem:x",
]


@pytest.mark.parametrize("type_", UNSAFE_TYPES)
def test_an_upstream_problem_type_that_could_leave_the_web_becomes_about_blank(
    type_: str,
) -> None:
    body = upstream(
        400, PROBLEM_JSON, {"type": type_, "title": "Bad", "detail": "no", "x-extra": 1}
    )
    assert body["type"] == "about:blank"
    # The refused value is gone, not moved to another member.
    assert type_ not in json.dumps(body, ensure_ascii=False)
    assert type_ not in json.dumps(body)
    assert body["title"] == "Bad" and body["detail"] == "no" and body["x-extra"] == 1


@pytest.mark.parametrize(
    "type_",
    [
        "https://errors.example.com/validation",
        "HTTP://errors.example.com:8443/p?q=1#frag",
        "https://[2001:db8::1]/problems/x",
        "/problems/out-of-credit",
        "problems/out-of-credit",
        "out-of-credit",
        "#out-of-credit",
        "javascript%3Aalert(1)",
    ],
)
def test_an_http_or_relative_problem_type_is_kept_but_not_with_a_tab_in_it(type_: str) -> None:
    assert upstream(400, PROBLEM_JSON, {"type": type_})["type"] == type_
    assert safe_problem_type(type_) == type_
    # Browsers drop a tab inside a URL, so the same type with one is no longer known safe.
    tabbed = type_[:1] + "\t" + type_[1:]
    assert upstream(400, PROBLEM_JSON, {"type": tabbed})["type"] == "about:blank"


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("text/html", b"<html><h1>404 Not Found</h1><p>nginx at 10.0.0.7</p></html>"),
        ("text/plain", b"not found on users-7f9c.internal"),
        ("application/json", b'{"error": "not found", "host": "users.internal"}'),
        ("", b"raw bytes"),
        ("application/problem+json", b"{not json"),
        ("application/problem+json", b'["a", "list"]'),
        ("application/problem+json", b'"a string"'),
        ("application/problem+json", b"{}"),
        ("application/problem+json", b"\xff\xfe"),
    ],
)
def test_other_upstream_error_bodies_are_replaced(content_type: str, raw: bytes) -> None:
    body = upstream(404, content_type, raw)
    assert body == {
        "type": problem_type(404),
        "title": "Not Found",
        "status": 404,
        "detail": "The upstream service answered 404 Not Found.",
        "instance": "/api/v1/users",
        "code": "not_found",
        "request_id": "rid",
    }


def test_oversized_upstream_problem_json_is_replaced() -> None:
    members = {"title": "Big", "padding": "x" * MAX_UPSTREAM_PROBLEM_BYTES}
    body = upstream(400, "application/problem+json", members)
    assert "padding" not in body
    assert body["title"] == "Bad Request"


def test_upstream_problem_json_at_the_size_limit_is_kept() -> None:
    skeleton = json.dumps({"title": "Edge", "padding": ""}).encode()
    members = {"title": "Edge", "padding": "x" * (MAX_UPSTREAM_PROBLEM_BYTES - len(skeleton))}
    raw = json.dumps(members).encode()
    assert len(raw) == MAX_UPSTREAM_PROBLEM_BYTES
    assert upstream(400, "application/problem+json", raw)["title"] == "Edge"


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 599])
@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        (
            "application/problem+json",
            b'{"title": "DB down", "detail": "Traceback: psycopg at db-1.internal:5432",'
            b' "code": "db_down", "host": "db-1.internal"}',
        ),
        ("text/html", b"<pre>Traceback (most recent call last): db-1.internal</pre>"),
        ("application/json", b'{"stack": "at db-1.internal"}'),
    ],
)
def test_a_5xx_never_carries_upstream_text(status: int, content_type: str, raw: bytes) -> None:
    body = upstream(status, content_type, raw)
    text = json.dumps(body)
    for leaked in ("db-1.internal", "Traceback", "DB down", "db_down", "psycopg", "stack"):
        assert leaked not in text
    assert body["status"] == status
    assert body["detail"] == "The upstream service failed to handle the request."
    assert REQUIRED <= set(body)
    assert SNAKE.match(body["code"])
