"""Path tricks: each is a 400 invalid_path problem, never a redirect, never forwarded.

Requests go out on raw sockets so the request target reaches the gateway exactly as
written (client libraries would normalise `..`, `//` and escapes away).
"""

from __future__ import annotations

import pytest

from .support import Gateway, assert_problem
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

TRICKS = {
    # dot segments, plain and encoded
    "dotdot_plain": b"/api/ok/../admin",
    "dotdot_plain_at_end": b"/api/ok/x/..",
    "dot_plain": b"/api/ok/./admin",
    "dotdot_encoded": b"/api/ok/%2e%2e/admin",
    "dotdot_encoded_upper": b"/api/ok/%2E%2E/admin",
    "dotdot_half_encoded": b"/api/ok/.%2e/admin",
    "dotdot_other_half_encoded": b"/api/ok/%2e./admin",
    "dot_encoded": b"/api/ok/%2e/admin",
    "dotdot_as_segment_parameter": b"/items/..",
    "dotdot_encoded_as_segment_parameter": b"/items/%2e%2e",
    "dotdot_inside_path_parameter": b"/files/a/../../../admin",
    "dotdot_absolute_form_target": b"http://127.0.0.1/api/ok/%2e%2e/admin",
    # encoded separators and backslashes
    "encoded_slash": b"/api/ok%2Fadmin",
    "encoded_slash_lower": b"/items/a%2fb",
    "encoded_slash_dotdot": b"/files/a%2F..%2F..%2Fadmin",
    "encoded_backslash": b"/api/ok/a%5Cb",
    "encoded_backslash_dotdot": b"/api/ok/..%5cadmin",
    "raw_backslash": b"/api/ok/a\\b",
    "raw_backslash_dotdot": b"/api/ok/..\\..\\admin",
    # NUL and other control characters, percent-encoded
    "encoded_nul": b"/api/ok/a%00b",
    "encoded_nul_in_segment_parameter": b"/items/a%00",
    "encoded_soh": b"/api/ok/a%01b",
    "encoded_tab": b"/api/ok/a%09b",
    "encoded_lf": b"/api/ok/a%0ab",
    "encoded_crlf_header_injection": b"/api/ok/a%0d%0aX-Injected:%20yes",
    "encoded_unit_separator": b"/api/ok/a%1fb",
    "encoded_del": b"/api/ok/a%7fb",
    # path parameters
    "path_parameter_dotdot": b"/api/a/..;/b",
    "path_parameter_dotdot_deeper": b"/api/ok/..;/..;/admin",
    "path_parameter_session": b"/api/ok;jsessionid=1/x",
    "path_parameter_on_segment_parameter": b"/items/1;x=y",
    # empty segments
    "empty_segment_inside": b"/api//ok",
    "empty_segment_later": b"/api/ok//x",
    "empty_segment_leading": b"//api/ok",
    # double (and deeper) encoding
    "double_encoded_dotdot": b"/api/ok/%252e%252e/admin",
    "double_encoded_dot_upper": b"/api/ok/%252E/admin",
    "double_encoded_slash": b"/api/ok/a%252Fb",
    "double_encoded_backslash": b"/api/ok/a%255cb",
    "double_encoded_nul": b"/api/ok/a%2500b",
    "double_encoded_semicolon": b"/api/ok/a%253Bb",
    "triple_encoded_dotdot": b"/api/ok/%25252e%25252e/admin",
    "double_encoded_percent": b"/api/ok/a%2525b",
    "double_encoded_dotdot_every_byte_escaped": b"/api/ok/%25%32%65%25%32%65/admin",
    # escapes that do not decode to one well-formed path
    "malformed_escape": b"/api/ok/%zz",
    "truncated_escape": b"/api/ok/a%2",
    "iis_unicode_escape": b"/api/ok/%u002e%u002e/admin",
    "overlong_utf8_dot": b"/api/ok/%c0%ae%c0%ae/admin",
    "invalid_utf8": b"/api/ok/%ff",
}


def _assert_refused(
    gateway: Gateway,
    upstream: MisbehavingUpstream,
    target: bytes,
    token: str,
    code: str = "invalid_path",
) -> None:
    before = upstream.count()
    reply = gateway.get(target + f"?t={token}".encode(), timeout=5)
    assert not 300 <= reply.status < 400, reply.describe()
    assert reply.header("Location") is None, reply.describe()
    assert_problem(reply, 400, code, None)
    assert upstream.received(token) == []
    assert upstream.count() == before


@pytest.mark.parametrize("target", list(TRICKS.values()), ids=list(TRICKS))
def test_path_trick_is_400_invalid_path_and_never_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, target: bytes
) -> None:
    _assert_refused(gateway, upstream, target, token)


@pytest.mark.parametrize("method", ["POST", "DELETE", "HEAD"])
def test_path_trick_is_refused_for_every_method(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, method: str
) -> None:
    before = upstream.count()
    reply = gateway.request(method, f"/api/ok/%2e%2e/admin?t={token}", body=b"{}", timeout=5)
    assert reply.status == 400, reply.describe()
    if method != "HEAD":
        assert_problem(reply, 400, "invalid_path", None)
    assert upstream.received(token) == []
    assert upstream.count() == before


RAW_CONTROL = {
    "raw_nul": b"/api/ok/a\x00b",
    "raw_soh": b"/api/ok/a\x01b",
    "raw_tab": b"/api/ok/a\tb",
    "raw_del": b"/api/ok/a\x7fb",
}


@pytest.mark.parametrize("target", list(RAW_CONTROL.values()), ids=list(RAW_CONTROL))
def test_raw_control_character_in_request_target_is_400_problem_and_never_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, target: bytes
) -> None:
    # Not even a valid request line, refused by the HTTP server before routing (so the
    # code is bad_request, not invalid_path): still an error the client sees, so still
    # a problem+json with a request id.
    _assert_refused(gateway, upstream, target, token, code="bad_request")


SAFE = {
    "dots_inside_a_name": "/api/ok/file.v1..tar",
    "dot_prefixed_segment": "/api/ok/.well-known/x",
    "trailing_dots_in_name": "/api/ok/x..",
    "encoded_semicolon_stays_encoded": "/api/ok/a%3Bb",
}


@pytest.mark.parametrize("path", list(SAFE.values()), ids=list(SAFE))
def test_dots_and_escapes_that_are_plain_names_are_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, path: str
) -> None:
    reply = gateway.get(f"{path}?t={token}")
    assert reply.status == 200, reply.describe()
    assert upstream.only(token).path == "/up" + path.removeprefix("/api")


@pytest.mark.parametrize(
    ("target", "script_name", "expected"),
    [
        ("/api/items/abc", "/api", "/up/items/abc"),
        ("/api/ok/x", "/api/ok", "/up/ok/x"),
        ("/api/ok/x", "/elsewhere", "/up/ok/x"),
    ],
    ids=["prefix_of_another_route", "prefix_of_the_same_route", "not_a_prefix"],
)
def test_client_script_name_header_never_changes_routing(
    gateway: Gateway,
    upstream: MisbehavingUpstream,
    token: str,
    target: str,
    script_name: str,
    expected: str,
) -> None:
    # The route is chosen from the request target alone: no header may cut a prefix
    # off it (path confusion between the checked path and the routed one).
    reply = gateway.get(f"{target}?t={token}", [("SCRIPT_NAME", script_name)])
    assert reply.status == 200, reply.describe()
    received = upstream.only(token)
    assert received.path == expected
    assert "script-name" not in received.header_names
    assert "script_name" not in received.header_names


def test_a_lone_encoded_percent_is_a_literal_percent(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/items/100%25?t={token}")
    assert reply.status == 200, reply.describe()
    assert upstream.only(token).path == "/up/ok/item/100%25"


def test_a_trailing_slash_on_a_path_parameter_is_forwarded_as_sent(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    """On `{name:path}` the slash belongs to the parameter (a folder, say): kept. On
    `{name}` and literal routes one trailing slash is tolerated and dropped."""
    reply = gateway.get(f"/files/a/b/?t={token}")
    assert reply.status == 200, reply.describe()
    assert upstream.only(token).path == "/up/ok/files/a/b/"
    reply = gateway.get(f"/items/42/?t={token}-item")
    assert reply.status == 200, reply.describe()
    assert upstream.only(f"{token}-item").path == "/up/ok/item/42"
