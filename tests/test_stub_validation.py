"""Reading JSON bodies and collecting field errors for a 422."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from upstream_stub.problems import Problem
from upstream_stub.validation import (
    Errors,
    email,
    integer,
    json_object,
    reject_unknown,
    text,
)

app = Flask("validation_under_test")


def body_of(data: bytes | str, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    with app.test_request_context("/", method="POST", data=data, headers=headers):
        return json_object()


def problem_of(data: bytes | str, content_type: str | None = "application/json") -> Problem:
    with pytest.raises(Problem) as caught:
        body_of(data, content_type)
    return caught.value


def test_a_json_object_is_read() -> None:
    assert body_of('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("content_type", [None, "application/json", "application/merge-patch+json"])
def test_json_content_types_and_none_are_accepted(content_type: str | None) -> None:
    assert body_of('{"a": 1}', content_type) == {"a": 1}


def test_a_form_post_is_415() -> None:
    problem = problem_of("a=1", "application/x-www-form-urlencoded")
    assert problem.status == 415
    assert problem.code == "unsupported_media_type"


@pytest.mark.parametrize(
    "data", ["", "{", "[1, 2]", '"text"', "null", b"\xff\xfe", "NaN", "[1e999]"]
)
def test_unreadable_or_non_object_bodies_are_422_with_a_body_error(data: bytes | str) -> None:
    problem = problem_of(data)
    assert problem.status == 422
    assert problem.extra["errors"] == [{"field": "body", "message": "must be a JSON object"}]


def test_deep_nesting_is_a_422_not_a_crash() -> None:
    assert problem_of("[" * 100_000).status == 422


def test_errors_collect_and_raise_all_at_once() -> None:
    errors = Errors()
    errors.raise_any()  # nothing collected: no problem
    body = {"a": 5, "b": "", "unknown": 1}
    reject_unknown(body, ("a", "b", "c"), errors)
    text(body, "a", errors)
    text(body, "b", errors)
    text(body, "c", errors)
    with pytest.raises(Problem) as caught:
        errors.raise_any()
    assert caught.value.status == 422
    assert caught.value.code == "validation_failed"
    assert caught.value.extra["errors"] == [
        {"field": "unknown", "message": "unknown field"},
        {"field": "a", "message": "must be a string"},
        {"field": "b", "message": "must not be blank"},
        {"field": "c", "message": "is required"},
    ]


def test_text_limits_length_and_optional_fields_may_be_absent() -> None:
    errors = Errors()
    assert text({"x": "abcd"}, "x", errors, max_chars=3) is None
    assert text({}, "y", errors, required=False) is None
    assert text({"z": "ok"}, "z", errors) == "ok"
    assert [e.field for e in errors.items] == ["x"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("no-at-sign", None),
        ("a@b", None),
        ("a b@c.de", None),
    ],
)
def test_email_is_checked_and_lower_cased(value: str, expected: str | None) -> None:
    errors = Errors()
    assert email({"email": value}, "email", errors) == expected
    assert bool(errors.items) is (expected is None)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), (10, True), (0, False), (11, False), (True, False), (1.0, False), ("1", False)],
)
def test_integer_is_a_real_int_in_range(value: Any, ok: bool) -> None:
    errors = Errors()
    result = integer(value, "n", errors, minimum=1, maximum=10)
    assert (result == value) is ok
    assert bool(errors.items) is not ok
