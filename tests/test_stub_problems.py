"""The stub's errors: RFC 9457 problem+json, never an HTML page."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from werkzeug.exceptions import BadRequest, HTTPException, NotFound

from upstream_stub.problems import (
    PROBLEM_JSON,
    Problem,
    problem_type,
    register_problem_handlers,
    status_code_name,
    status_title,
)

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
REQUIRED = {"type", "title", "status", "detail", "instance", "code"}


@pytest.fixture
def app() -> Flask:
    app = Flask("problems_under_test")
    register_problem_handlers(app)

    @app.get("/raise/problem")
    def raise_problem() -> str:
        raise Problem(409, "Taken.", code="duplicate_email", headers={"X-Extra": "1"}, field="e")

    @app.get("/raise/werkzeug")
    def raise_werkzeug() -> str:
        raise BadRequest("werkzeug says no")

    @app.get("/raise/crash")
    def raise_crash() -> str:
        raise RuntimeError("secret internal detail at db.internal:5432")

    return app


def test_problem_is_rendered_with_every_member(app: Flask) -> None:
    response = app.test_client().get("/raise/problem", headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 409
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert REQUIRED <= body.keys()
    assert body["status"] == 409
    assert body["code"] == "duplicate_email"
    assert body["instance"] == "/raise/problem"
    assert body["detail"] == "Taken."
    assert body["field"] == "e"
    assert body["request_id"] == "abc-1"
    assert response.headers["X-Extra"] == "1"
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_path_is_a_404_problem(app: Flask) -> None:
    response = app.test_client().get("/nowhere")
    body = response.get_json(force=True)
    assert response.status_code == 404
    assert response.mimetype == PROBLEM_JSON
    assert body["code"] == "not_found"
    assert body["instance"] == "/nowhere"
    assert b"<html" not in response.data.lower()


def test_wrong_method_is_a_405_problem_with_allow(app: Flask) -> None:
    response = app.test_client().delete("/raise/problem")
    assert response.status_code == 405
    assert response.mimetype == PROBLEM_JSON
    assert response.get_json(force=True)["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_werkzeug_errors_become_problems(app: Flask) -> None:
    response = app.test_client().get("/raise/werkzeug")
    body = response.get_json(force=True)
    assert response.status_code == 400
    assert body["code"] == "bad_request"
    assert body["detail"] == "werkzeug says no"


def test_a_crash_is_a_500_problem_without_internals(app: Flask) -> None:
    response = app.test_client().get("/raise/crash")
    body = response.get_json(force=True)
    assert response.status_code == 500
    assert response.mimetype == PROBLEM_JSON
    assert body["code"] == "internal_error"
    assert "db.internal" not in response.get_data(as_text=True)


def test_redirects_are_not_turned_into_problems() -> None:
    app = Flask("redirects")
    register_problem_handlers(app)

    @app.get("/folder/")
    def folder() -> str:
        return "ok"

    response = app.test_client().get("/folder")
    assert response.status_code == 308


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 413, 415, 422, 500, 418, 429])
def test_every_status_has_a_title_type_and_snake_case_code(status: int) -> None:
    assert status_title(status)
    assert problem_type(status).startswith(("https://", "about:blank"))
    assert SNAKE.match(status_code_name(status))


def test_titles_use_rfc_9110_names() -> None:
    assert status_title(422) == "Unprocessable Content"
    assert status_title(413) == "Content Too Large"
    assert status_title(999) == "Error"


def test_werkzeug_not_found_detail_names_the_path(app: Flask) -> None:
    with app.test_request_context("/a/b"):
        from upstream_stub.problems import _from_http_exception

        response = _from_http_exception(NotFound())
        assert not isinstance(response, HTTPException)
        assert response.get_json(force=True)["detail"] == "Nothing is served at /a/b."
