"""Path templates and the request-path safety check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, Rule

from gateway.paths import (
    NoMatch,
    PathMatcher,
    PathTemplate,
    Segment,
    TemplateError,
    unsafe_path_reason,
)

# --- PathTemplate.parse -----------------------------------------------------------------


def test_root_template_has_no_segments() -> None:
    template = PathTemplate.parse("/")
    assert template.segments == ()
    assert template.werkzeug_rule == "/"
    assert template.expand({}) == "/"


def test_literal_segments_and_parameters_are_parsed() -> None:
    template = PathTemplate.parse("/api/v1/users/{user_id}/files/{rest:path}")
    assert template.segments == (
        Segment("api"),
        Segment("v1"),
        Segment("users"),
        Segment("user_id", "segment"),
        Segment("files"),
        Segment("rest", "path"),
    )
    assert template.params == {"user_id": "segment", "rest": "path"}


@pytest.mark.parametrize(
    "text",
    [
        "/healthz",
        "/api/v1/users",
        "/a-b/c_d/e.f/g~h",
        "/v1:batch",
        "/users/{id}",
        "/users/{_id2}",
        "/files/{rest:path}",
        "/{anything:path}",
        "/a/{b}/c/{d}",
        "/items/@me",
    ],
)
def test_parse_accepts(text: str) -> None:
    assert PathTemplate.parse(text).text == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "must start with '/'"),
        ("users", "must start with '/'"),
        ("//users", "empty segment"),
        ("/users/", "empty segment"),
        ("/a//b", "empty segment"),
        ("/users/{id", "is not a parameter"),
        ("/users/id}", "is not a parameter"),
        ("/users/{}", "is not a parameter"),
        ("/users/{1id}", "is not a parameter"),
        ("/users/{user-id}", "is not a parameter"),
        ("/users/x{id}", "is not a parameter"),
        ("/users/{id}.json", "is not a parameter"),
        ("/users/{id:int}", "unknown parameter type 'int'"),
        ("/users/{id:PATH}", "unknown parameter type 'PATH'"),
        ("/files/{rest:path}/meta", "must be the last segment"),
        ("/a/{x}/b/{x}", "repeats parameter 'x'"),
        ("/a/./b", "is not a plain path segment"),
        ("/a/../b", "is not a plain path segment"),
        ("/a b", "is not a plain path segment"),
        ("/a%20b", "is not a plain path segment"),
        ("/a;v=1", "is not a plain path segment"),
        ("/a?b", "is not a plain path segment"),
        ("/a#b", "is not a plain path segment"),
        ("/caf\u00e9", "is not a plain path segment"),
        ("/a\\b", "is not a plain path segment"),
    ],
)
def test_parse_refuses(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        PathTemplate.parse(text)
    assert fragment in str(caught.value)
    assert repr(text) in str(caught.value)


def test_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


# --- werkzeug_rule, shape, example --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("/users", "/users"),
        ("/users/{id}", "/users/<id>"),
        ("/files/{rest:path}", "/files/<path:rest>"),
        ("/a/{x}/b/{y:path}", "/a/<x>/b/<path:y>"),
    ],
)
def test_werkzeug_rule(text: str, rule: str) -> None:
    assert PathTemplate.parse(text).werkzeug_rule == rule


def test_shape_erases_parameter_names() -> None:
    assert PathTemplate.parse("/users/{id}").shape == "/users/{}"
    assert PathTemplate.parse("/users/{user_id}").shape == "/users/{}"
    assert PathTemplate.parse("/files/{rest:path}").shape == "/files/{*}"
    assert PathTemplate.parse("/files/{a}").shape != PathTemplate.parse("/files/{a:path}").shape
    assert PathTemplate.parse("/").shape == "/"


def test_example_is_a_path_the_template_matches() -> None:
    for text in ("/users/{id}", "/files/{rest:path}", "/a/b", "/a/{x}/b/{y}"):
        template = PathTemplate.parse(text)
        assert template.regex.fullmatch(template.example())


def test_regex_keeps_parameters_encoded() -> None:
    match = PathTemplate.parse("/users/{id}/files/{rest:path}").regex.fullmatch(
        "/users/caf%C3%A9/files/a/b%20c"
    )
    assert match is not None
    assert match.groupdict() == {"id": "caf%C3%A9", "rest": "a/b%20c"}


def test_regex_segment_parameter_does_not_cross_a_slash() -> None:
    assert PathTemplate.parse("/users/{id}").regex.fullmatch("/users/1/2") is None


# --- expand ---------------------------------------------------------------------------------


def test_expand_substitutes_parameters() -> None:
    template = PathTemplate.parse("/users/{user_id}/orders/{order_id}")
    assert template.expand({"user_id": "42", "order_id": "7"}) == "/users/42/orders/7"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a b", "a%20b"),
        ("a/b", "a%2Fb"),
        ("a?b", "a%3Fb"),
        ("a#b", "a%23b"),
        ("100%", "100%25"),
        ("caf\u00e9", "caf%C3%A9"),
        ("\u65e5\u672c", "%E6%97%A5%E6%9C%AC"),
        ("a;b", "a%3Bb"),
        ("a\\b", "a%5Cb"),
        ("...", "..."),
        ("a.b-c_d~e", "a.b-c_d~e"),
    ],
)
def test_expand_re_encodes_a_segment_parameter(value: str, encoded: str) -> None:
    assert PathTemplate.parse("/users/{id}").expand({"id": value}) == f"/users/{encoded}"


def test_expand_keeps_slashes_of_a_path_parameter_and_encodes_each_part() -> None:
    template = PathTemplate.parse("/files/{rest:path}")
    assert template.expand({"rest": "a b/c?d/caf\u00e9"}) == "/files/a%20b/c%3Fd/caf%C3%A9"


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_expand_refuses_dot_and_empty_segment_values(value: str) -> None:
    with pytest.raises(ValueError):
        PathTemplate.parse("/users/{id}").expand({"id": value})


@pytest.mark.parametrize(
    "value",
    ["a/../b", "../etc", "a/./b", "a//b", "a//", "/a", "..", "a/..", "a/."],
)
def test_expand_refuses_dot_and_empty_segments_in_a_path_parameter(value: str) -> None:
    with pytest.raises(ValueError):
        PathTemplate.parse("/files/{rest:path}").expand({"rest": value})


def test_expand_keeps_a_trailing_slash_of_a_path_parameter() -> None:
    assert PathTemplate.parse("/files/{rest:path}").expand({"rest": "a/b/"}) == "/files/a/b/"


# --- unsafe_path_reason -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/v1/users",
        "/api/v1/users/",
        "/api/v1/users/42",
        "/api/v1/users/caf%C3%A9",
        "/api/v1/users/a%20b",
        "/api/v1/files/a.b/c..d/...",
        "/api/v1/users/100%25",
        "/api/v1/users/a%3Fb",
        "/api/v1/users/%E6%97%A5",
        "/api/v1/users/~me:x@y!$&'()*+,=",
    ],
)
def test_normal_paths_are_accepted(path: str) -> None:
    assert unsafe_path_reason(path) is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/../admin", "'.' or '..' segments"),
        ("/api/..", "'.' or '..' segments"),
        ("/api/./users", "'.' or '..' segments"),
        ("/api/%2e%2e/admin", "'.' or '..' segments"),
        ("/api/%2E%2E/admin", "'.' or '..' segments"),
        ("/api/.%2e/admin", "'.' or '..' segments"),
        ("/api/%2e./admin", "'.' or '..' segments"),
        ("/api/%2e/admin", "'.' or '..' segments"),
        ("/api/a%2Fb", "encoded '/' or a backslash"),
        ("/api/a%2fb", "encoded '/' or a backslash"),
        ("/api/..%2Fadmin", "encoded '/' or a backslash"),
        ("/api/a%5Cb", "encoded '/' or a backslash"),
        ("/api/a%5cb", "encoded '/' or a backslash"),
        ("/api/a\\b", "encoded '/' or a backslash"),
        ("/api/..\\admin", "encoded '/' or a backslash"),
        ("/api/a%00b", "control characters"),
        ("/api/a%0Ab", "control characters"),
        ("/api/a%0db", "control characters"),
        ("/api/a%7Fb", "control characters"),
        ("/api/a\x00b", "control characters"),
        ("/api/a\tb", "control characters"),
        ("/api/users;jsessionid=1", "';' path parameters"),
        ("/api/..;/admin", "';' path parameters"),
        ("//api/users", "empty segment"),
        ("/api//users", "empty segment"),
        ("/api/%252e%252e/admin", "double-encoded"),
        ("/api/%252F", "double-encoded"),
        ("/api/%255c", "double-encoded"),
        ("/api/%2500", "double-encoded"),
        ("/api/%253B", "double-encoded"),
        ("/api/%zz", "malformed percent-escape"),
        ("/api/%2", "malformed percent-escape"),
        ("/api/a%", "malformed percent-escape"),
        ("/api/%ff", "not valid UTF-8"),
        ("/api/%C3", "not valid UTF-8"),
        ("/api/%c0%ae%c0%ae/admin", "not valid UTF-8"),
        ("api/users", "must start with '/'"),
        ("", "must start with '/'"),
    ],
)
def test_path_tricks_are_refused(path: str, reason: str) -> None:
    found = unsafe_path_reason(path)
    assert found is not None
    assert reason in found


# --- PathMatcher: werkzeug's routing, without its URL builders ----------------------------


def werkzeug_outcome(
    entries: list[tuple[str, list[str] | None]], path: str, method: str
) -> tuple[object, ...]:
    rules = [
        Rule(PathTemplate.parse(text).werkzeug_rule, endpoint=index, methods=methods)
        for index, (text, methods) in enumerate(entries)
    ]
    url_map = Map(rules, strict_slashes=False, merge_slashes=False, redirect_defaults=False)
    try:
        endpoint, params = url_map.bind("gateway.invalid").match(path, method)
    except WerkzeugMethodNotAllowed as exc:
        return ("405", frozenset(exc.valid_methods or ()))
    except WerkzeugNotFound:
        return ("404",)
    return (endpoint, dict(params))


def matcher_outcome(
    entries: list[tuple[str, list[str] | None]], path: str, method: str
) -> tuple[object, ...]:
    matcher: PathMatcher[int] = PathMatcher()
    for index, (text, methods) in enumerate(entries):
        matcher.add(PathTemplate.parse(text), index, methods)
    try:
        endpoint, params = matcher.match(path, method)
    except NoMatch as exc:
        return ("405", exc.allowed) if exc.allowed else ("404",)
    return (endpoint, params)


_LITERALS = ["a", "b", "me"]
_template_segment = st.sampled_from([*_LITERALS, "{p}", "{q}", "{r:path}"])


@st.composite
def _templates(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_template_segment, max_size=4))
    names = iter(["x0", "x1", "x2", "x3"])
    out: list[str] = []
    for part in parts:
        if part == "{r:path}":
            out.append(f"{{{next(names)}:path}}")
            break
        out.append(f"{{{next(names)}}}" if part.startswith("{") else part)
    return "/" + "/".join(out)


_entries = st.lists(
    st.tuples(
        _templates(),
        st.one_of(
            st.none(),
            st.lists(st.sampled_from(["GET", "HEAD", "POST", "DELETE"]), min_size=1, max_size=2),
        ),
    ),
    min_size=1,
    max_size=8,
)
_paths = st.lists(st.sampled_from([*_LITERALS, "", "x", "a b", "x\ny", "\n"]), max_size=6).map(
    lambda parts: "/".join(parts)
) | st.lists(st.sampled_from([*_LITERALS, "", "x"]), max_size=5).map(
    lambda parts: "/" + "/".join(parts)
)


@given(entries=_entries, path=_paths, method=st.sampled_from(["GET", "HEAD", "POST", "get", ""]))
@settings(max_examples=1000, deadline=None)
def test_matcher_agrees_with_werkzeug(
    entries: list[tuple[str, list[str] | None]], path: str, method: str
) -> None:
    assert matcher_outcome(entries, path, method) == werkzeug_outcome(entries, path, method)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/", "GET"),
        ("", "GET"),
        ("//", "GET"),
        ("/users/", "GET"),
        ("/users/42/", "HEAD"),
        ("/users/me", "PATCH"),
        ("/users/42", "PATCH"),
        ("/files/a/b/", "GET"),
        ("/files//b", "GET"),
        ("/files/\na", "GET"),
        ("/files/a\nb", "GET"),
        ("/files/x/meta", "GET"),
        ("/files/x/meta/", "POST"),
        ("///users", "POST"),
    ],
)
def test_matcher_agrees_with_werkzeug_on_known_corners(path: str, method: str) -> None:
    entries: list[tuple[str, list[str] | None]] = [
        ("/", ["GET"]),
        ("/users/{id}", ["GET"]),
        ("/users", ["GET"]),
        ("/users", ["POST"]),
        ("/users/me", ["GET", "PATCH"]),
        ("/files/{rest:path}", ["GET", "PUT"]),
        ("/files/{name}/meta", ["GET"]),
        ("/{any:path}", None),
    ]
    for table in (entries, entries[1:], entries[:-1]):
        assert matcher_outcome(table, path, method) == werkzeug_outcome(table, path, method)


def test_matcher_returns_parameters_by_name() -> None:
    matcher: PathMatcher[str] = PathMatcher()
    matcher.add(PathTemplate.parse("/users/{user_id}/files/{rest:path}"), "files", ["GET"])
    assert matcher.match("/users/7/files/a/b c", "GET") == (
        "files",
        {"user_id": "7", "rest": "a/b c"},
    )
