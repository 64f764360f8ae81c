"""Part paths of composed routes: parsed once, filled per request, never able to add a
segment, a query member or a host."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from gateway.placeholders import (
    MissingValue,
    PartTemplate,
    PlaceholderValues,
    Slot,
    TemplateProblem,
)


def values(
    params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    **identity: str | None,
) -> PlaceholderValues:
    fields = {"sub": None, "tenant_id": None, "consumer_id": None, **identity}
    return PlaceholderValues(params or {}, fields, (query or {}).get)


def test_each_kind_of_placeholder_is_parsed_with_its_position() -> None:
    template = PartTemplate.parse(
        "/tenants/{identity.tenant_id}/users/{user_id}?limit={query.limit:-5}&flag&q={query.q}",
        ["user_id"],
    )
    assert template.slots == (
        Slot("identity", "tenant_id"),
        Slot("param", "user_id"),
        Slot("query", "limit", "5"),
        Slot("query", "q"),
    )
    assert [name for name, _ in template.query] == ["limit", "flag", "q"]


def test_values_are_filled_and_defaults_apply() -> None:
    template = PartTemplate.parse("/users/{identity.sub}/orders?limit={query.limit:-5}", [])
    assert template.expand(values(sub="u1")) == "/users/u1/orders?limit=5"
    assert template.expand(values(query={"limit": "20"}, sub="u1")) == "/users/u1/orders?limit=20"


@pytest.mark.parametrize(
    "hostile",
    [
        "a/b",
        "../admin",
        "x?admin=1",
        "x#frag",
        "a&b=c",
        "%2F",
        "@evil.example",
        "//evil.example/x",
        "x y",
        "é/ü",
    ],
)
def test_a_value_stays_inside_its_segment_and_its_query_value(hostile: str) -> None:
    template = PartTemplate.parse(
        "/users/{user_id}/orders?owner={query.owner}&fixed=1", ["user_id"]
    )
    filled = template.expand(values({"user_id": hostile}, {"owner": hostile}))
    parts = urlsplit(filled)
    assert not parts.netloc and not parts.fragment
    segments = parts.path.split("/")
    assert segments[:2] == ["", "users"] and segments[3:] == ["orders"]
    assert unquote(segments[2]) == hostile
    assert parse_qsl(parts.query) == [("owner", hostile), ("fixed", "1")]


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_an_empty_or_dot_value_is_refused_in_the_path(value: str) -> None:
    template = PartTemplate.parse("/users/{user_id}", ["user_id"])
    with pytest.raises(MissingValue, match="empty or dot"):
        template.expand(values({"user_id": value}))


def test_a_missing_identity_value_is_refused() -> None:
    template = PartTemplate.parse("/tenants/{identity.tenant_id}", [])
    with pytest.raises(MissingValue) as caught:
        template.expand(values(sub="u1"))
    assert caught.value.slot == Slot("identity", "tenant_id")


def test_a_missing_query_value_leaves_its_member_out_but_is_refused_in_the_path() -> None:
    assert PartTemplate.parse("/orders?a=1&q={query.q}&b=2", []).expand(values()) == (
        "/orders?a=1&b=2"
    )
    with pytest.raises(MissingValue, match="no value"):
        PartTemplate.parse("/orders/{query.id}", []).expand(values())


def test_literal_text_is_sent_as_written() -> None:
    template = PartTemplate.parse("/a%20b/c;v=1?x=%2F&empty=&bare", [])
    assert template.expand(values()) == "/a%20b/c;v=1?x=%2F&empty=&bare"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("users/{identity.sub}", "must start with a single /"),
        ("//evil.example/x", "must start with a single /"),
        ("/a/../b", "empty, . or .. segment"),
        ("/a//b", "empty, . or .. segment"),
        ("/x#top", "fragment"),
        ("/users/{id}", "unknown placeholder {id}"),
        ("/users/{identity.email}", "identity placeholders are"),
        ("/users/{identity.sub:-x}", "identity placeholders are"),
        ("/orders?{query.name}=1", "placeholders may stand in values only"),
        ("/orders?a{query.x}b=1", "placeholders may stand in values only"),
        ("/orders?q={query.a b}", "query parameter name"),
        ("/a b", "must be percent-encoded"),
        ("/users/{user_id", "unclosed brace"),
    ],
)
def test_templates_the_gateway_could_not_send_safely_are_refused(text: str, problem: str) -> None:
    with pytest.raises(TemplateProblem, match=problem.replace("{", r"\{").replace("}", r"\}")):
        PartTemplate.parse(text, ["user_id"])
