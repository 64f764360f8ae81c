"""routes.yaml text -> plain data: positions, ${ENV} references and safe YAML only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, ConfigProblem, source
from gateway.config.source import Document, Position, parse

FILE = "routes.yaml"


def data(text: str, env: dict[str, str] | None = None) -> object:
    return parse(text, FILE, env or {}).data


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """What reading the text reports: a ConfigError for unreadable YAML, else the
    problems the Document carries on to the later checks."""
    try:
        document = parse(text, FILE, env or {})
    except ConfigError as error:
        return [str(p) for p in error.problems]
    assert document.problems, "expected reading problems"
    return [str(p) for p in sorted(document.problems)]


# --- plain YAML and positions -------------------------------------------------------


def test_plain_yaml_becomes_plain_data() -> None:
    text = "version: 1\nlist: [a, 2, 1.5, true, null]\nmap:\n  key: value\n"
    assert data(text) == {
        "version": 1,
        "list": ["a", 2, 1.5, True, None],
        "map": {"key": "value"},
    }


def test_every_value_and_key_keeps_its_line_and_column() -> None:
    text = "version: 1\nupstreams:\n  users:\n    url: http://u\nroutes:\n  - name: a\n"
    doc = parse(text, FILE, {})
    assert doc.positions[("version",)] == Position(1, 10)
    assert doc.key_positions[("upstreams",)] == Position(2, 1)
    assert doc.key_positions[("upstreams", "users", "url")] == Position(4, 5)
    assert doc.positions[("upstreams", "users", "url")] == Position(4, 10)
    assert doc.positions[("routes", 0)] == Position(6, 5)
    assert doc.positions[("routes", 0, "name")] == Position(6, 11)


def test_where_falls_back_to_the_nearest_recorded_parent() -> None:
    doc = parse("upstreams:\n  users:\n    url: http://u\n", FILE, {})
    assert doc.where(("upstreams", "users", "timeout")) == Position(3, 5)
    assert doc.where(("nothing", "here")) == Position(1, 1)


def test_where_with_key_prefers_the_key_position() -> None:
    doc = parse("routes:\n  - name: a\n    roles: [x]\n", FILE, {})
    assert doc.where(("routes", 0, "roles"), key=True) == Position(3, 5)
    assert doc.where(("routes", 0, "roles")) == Position(3, 12)


def test_problem_is_pinned_to_file_line_and_column() -> None:
    doc = Document(FILE, {}, {("a",): Position(4, 7)}, {})
    problem = doc.problem(("a",), "bad")
    assert problem == ConfigProblem(FILE, 4, 7, "bad")
    assert str(problem) == "routes.yaml:4:7: bad"


def test_a_byte_order_mark_is_accepted() -> None:
    assert data("\ufeffversion: 1\n") == {"version": 1}


def test_non_string_scalar_keys_become_strings() -> None:
    assert data("1: x\ntrue: y\n") == {"1": "x", "true": "y"}


def test_an_unquoted_date_is_plain_yaml_not_a_refused_tag() -> None:
    # A date written plainly (a Sunset date, a version label) is ordinary YAML: it must
    # load as text, not be refused as if the author had written a `!!` tag.
    assert data("sunset: 2026-12-31\n") == {"sunset": "2026-12-31"}


# --- malformed YAML -----------------------------------------------------------------


def test_empty_file_is_a_problem() -> None:
    assert problems("") == ["routes.yaml:1:1: the file is empty"]
    assert problems("# only a comment\n") == ["routes.yaml:1:1: the file is empty"]


def test_unclosed_flow_sequence_is_reported_where_the_parser_stopped() -> None:
    assert problems("version: 1\nroutes: [a, b\n") == [
        "routes.yaml:3:1: malformed YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_bad_indentation_points_at_the_misplaced_key() -> None:
    text = "version: 1\nupstreams:\n  users:\n    url: http://u\n   timeout: 3\n"
    (line,) = problems(text)
    assert line.startswith("routes.yaml:5:4: malformed YAML: ")


def test_tab_indentation_is_malformed_yaml() -> None:
    (line,) = problems("a:\tb\n")
    assert line.startswith("routes.yaml:1:3: malformed YAML: ")
    assert "'\\t'" in line


def test_a_second_document_is_malformed_yaml() -> None:
    (line,) = problems("---\na: 1\n---\nb: 2\n")
    assert line.startswith("routes.yaml:3:1: malformed YAML: ")


def test_malformed_yaml_is_a_config_error_not_a_traceback() -> None:
    with pytest.raises(ConfigError):
        parse("a: [\n  - b: {\n", FILE, {})


# --- duplicate keys, merge keys, complex keys ----------------------------------------


def test_duplicate_top_level_key_points_at_the_second_and_names_the_first() -> None:
    assert problems("version: 1\nversion: 2\n") == [
        "routes.yaml:2:1: duplicate key 'version' (first at line 1)"
    ]


def test_duplicate_nested_key_is_reported() -> None:
    text = "upstreams:\n  users:\n    url: http://a\n    timeout: 1\n    url: http://b\n"
    assert problems(text) == ["routes.yaml:5:5: duplicate key 'url' (first at line 3)"]


def test_every_duplicate_key_is_reported_together() -> None:
    text = "a: 1\nb: 2\na: 3\nb: 4\n"
    assert problems(text) == [
        "routes.yaml:3:1: duplicate key 'a' (first at line 1)",
        "routes.yaml:4:1: duplicate key 'b' (first at line 2)",
    ]


def test_merge_keys_are_refused() -> None:
    text = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n"
    assert problems(text) == [
        "routes.yaml:3:3: merge keys (<<) are not supported; write the keys out"
    ]


def test_complex_mapping_keys_are_refused() -> None:
    assert problems("? [a, b]\n: 1\n") == ["routes.yaml:1:3: mapping keys must be plain strings"]


def test_aliases_of_plain_values_are_expanded() -> None:
    assert data("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_a_recursive_alias_is_a_config_error_not_a_crash() -> None:
    (line,) = problems("a: &loop [*loop]\n")
    assert line.startswith("routes.yaml:1:")
    assert "alias" in line


def test_an_alias_bomb_is_a_config_error_not_a_hang() -> None:
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for name, prev in zip("bcdef", "abcde", strict=True):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    (line,) = problems("\n".join(rows) + "\n")
    assert "expands to more than" in line


def indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def test_an_alias_bomb_after_a_large_honest_part_is_refused_too() -> None:
    # The room aliases get grows with what the file writes out, ten values per value.
    honest = "".join(f"- {{name: r{i}, path: /r/{i}}}\n" for i in range(20_000))
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for name, prev in zip("bcdefg", "abcdef", strict=True):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = "".join(f"  {row}\n" for row in rows)
    (line,) = problems(f"routes:\n{indent(honest)}bomb:\n{bomb}")
    # 60,019 values written out (20,000 items of three, the bomb's own 19): ten each.
    assert "expands to more than 600190 values through aliases" in line
    assert "alias bomb" in line


def test_a_large_file_that_shares_blocks_through_aliases_loads() -> None:
    # More than 100,000 values written out, and more again reached through aliases:
    # what a 10,000-route table whose routes share their policies looks like.
    text = "shared: &shared {roles: [admin, member], limits: [10/second, 100/minute]}\n"
    text += "routes:\n" + "".join(
        f"  - {{name: r{i}, path: /r/{i}, methods: [GET], policies: *shared}}\n"
        for i in range(25_000)
    )
    document = parse(text, FILE, {})
    assert not document.problems
    routes = document.data["routes"]
    assert len(routes) == 25_000
    assert routes[-1]["policies"] == {
        "roles": ["admin", "member"],
        "limits": ["10/second", "100/minute"],
    }
    # A value reached through an alias points at where it is written.
    assert document.positions[("routes", 24_999, "policies", "roles", 1)] == Position(1, 33)


# --- libyaml and PyYAML's own parser read alike ----------------------------------------

_FRAGMENTS = [
    "a",
    "b: ",
    "c:\n",
    "  d: e\n",
    "- ",
    "- f\n",
    "  - g\n",
    "[h, i]",
    "{j: k}",
    "&x ",
    "*x",
    "&y ",
    "*y",
    "<<: ",
    "'q'",
    '"d\\n"',
    "|\n  t\n",
    ">-\n  f\n",
    "# c\n",
    "---\n",
    "...\n",
    "1",
    "2.5",
    "true",
    "null",
    "~",
    "0x1F",
    "2026-01-01",
    "${X}",
    "${Y:-3}",
    "$${Z}",
    "\u00e9",
    "\u65e5",
    "\r\n",
    "\n",
    "  ",
    ": ",
    ",",
    "%YAML 1.1\n",
    "/api/{id}",
    "http://h:8080/p",
    '"',
    "'",
]


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML is built without libyaml")
@given(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=16).map("".join))
@settings(max_examples=600, deadline=None)
def test_libyaml_and_pyyaml_read_a_text_alike(text: str) -> None:
    text += "\n"

    def outcome() -> object:
        try:
            document = parse(text, FILE, {"X": "x"})
        except ConfigError as error:
            return [str(p) for p in error.problems]
        return (
            repr(document.data),
            document.positions,
            document.key_positions,
            [str(p) for p in document.problems],
        )

    with_libyaml = outcome()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "_LIBYAML_LOADER", None)
        assert outcome() == with_libyaml


# --- tags: only the YAML core types are ever built -----------------------------------


def test_python_object_apply_tag_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = f'version: 1\nx: !!python/object/apply:os.system ["touch {marker}"]\n'
    assert problems(text) == [
        "routes.yaml:2:4: tag 'tag:yaml.org,2002:python/object/apply:os.system' "
        "is not allowed (plain YAML only)"
    ]
    assert not marker.exists()


def test_python_object_mapping_tag_is_refused() -> None:
    assert problems("x: !!python/object:builtins.dict {a: 1}\n") == [
        "routes.yaml:1:4: tag 'tag:yaml.org,2002:python/object:builtins.dict' "
        "is not allowed (plain YAML only)"
    ]


def test_python_name_scalar_tag_is_refused() -> None:
    assert problems("x: !!python/name:os.system\n") == [
        "routes.yaml:1:4: tag 'tag:yaml.org,2002:python/name:os.system' "
        "is not allowed (plain YAML only)"
    ]


def test_local_and_set_tags_are_refused() -> None:
    assert problems("a: !Ref thing\nb: !!set {x, y}\n") == [
        "routes.yaml:1:4: tag '!Ref' is not allowed (plain YAML only)",
        "routes.yaml:2:4: tag 'tag:yaml.org,2002:set' is not allowed (plain YAML only)",
    ]


def test_explicit_core_tags_are_allowed() -> None:
    assert data("a: !!str 10\nb: !!int '7'\n") == {"a": "10", "b": 7}


# --- ${ENV} references ---------------------------------------------------------------


def test_reference_is_replaced_from_the_environment() -> None:
    assert data("url: ${USERS_URL}\n", {"USERS_URL": "http://users:8081"}) == {
        "url": "http://users:8081"
    }


def test_unset_reference_without_default_names_the_variable_at_its_value() -> None:
    text = "version: 1\nupstreams:\n  users:\n    url: ${USERS_URL}\n"
    assert problems(text) == [
        "routes.yaml:4:10: environment variable USERS_URL is not set and has no default"
    ]


def test_every_unset_variable_is_reported() -> None:
    text = "a: ${FIRST}/${SECOND}\nb: ${THIRD}\n"
    assert problems(text) == [
        "routes.yaml:1:4: environment variable FIRST is not set and has no default",
        "routes.yaml:1:4: environment variable SECOND is not set and has no default",
        "routes.yaml:2:4: environment variable THIRD is not set and has no default",
    ]


def test_default_is_used_when_the_variable_is_unset() -> None:
    assert data("url: ${USERS_URL:-http://127.0.0.1:8081}\n") == {"url": "http://127.0.0.1:8081"}


def test_environment_wins_over_the_default() -> None:
    env = {"USERS_URL": "http://users:9000"}
    assert data("url: ${USERS_URL:-http://127.0.0.1:8081}\n", env) == {"url": "http://users:9000"}


def test_default_applies_when_the_variable_is_set_but_empty() -> None:
    # `:-` means "unset or empty", as in POSIX sh and Compose files: an empty
    # USERS_URL= line must not blank out the default.
    env = {"USERS_URL": ""}
    assert data("url: ${USERS_URL:-http://127.0.0.1:8081}\n", env) == {
        "url": "http://127.0.0.1:8081"
    }


def test_empty_default_gives_an_empty_string_not_null() -> None:
    assert data("public_url: ${PUBLIC_URL:-}\n") == {"public_url": ""}


def test_reference_inside_a_longer_string() -> None:
    text = "jwks: ${USERS_URL:-http://u}/.well-known/jwks.json\n"
    assert data(text) == {"jwks": "http://u/.well-known/jwks.json"}


def test_plain_scalar_that_is_one_reference_takes_the_type_of_its_value() -> None:
    text = "retries: ${RETRIES:-3}\ntimeout: ${T:-1.5}\nflag: ${F:-true}\n"
    assert data(text) == {"retries": 3, "timeout": 1.5, "flag": True}
    assert data("retries: ${RETRIES}\n", {"RETRIES": "2"}) == {"retries": 2}


def test_quoted_reference_stays_a_string() -> None:
    text = "a: '${N:-3}'\nb: \"${N:-3}\"\n"
    assert data(text) == {"a": "3", "b": "3"}


def test_reference_with_surrounding_text_stays_a_string() -> None:
    assert data("a: ${N:-3} apples\n") == {"a": "3 apples"}


def test_double_dollar_escapes_a_literal_reference() -> None:
    assert data("a: $${HOME}\nb: 'x $${NOT_A_VAR:-y}'\n", {"HOME": "/root"}) == {
        "a": "${HOME}",
        "b": "x ${NOT_A_VAR:-y}",
    }


def test_a_variable_value_is_not_expanded_again() -> None:
    assert data("a: ${A}\n", {"A": "${B}"}) == {"a": "${B}"}


def test_unclosed_reference_is_a_problem() -> None:
    assert problems("a: ${UNCLOSED\n") == [
        "routes.yaml:1:4: malformed ${...} reference; write ${NAME} or ${NAME:-default}"
    ]


def test_a_lone_dollar_is_plain_text() -> None:
    assert data("a: costs $5\nb: $HOME\n") == {"a": "costs $5", "b": "$HOME"}


def test_references_in_keys_are_not_expanded() -> None:
    assert data("${KEY}: 1\n", {"KEY": "x"}) == {"${KEY}": 1}


# --- values PyYAML's constructors cannot take ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("retries: 0x_\n", "routes.yaml:1:10: '0x_' is not a valid int"),
        ("retries: !!int one\n", "routes.yaml:1:10: 'one' is not a valid int"),
        ("open: !!bool maybe\n", "routes.yaml:1:7: 'maybe' is not a valid bool"),
        ("a: !!int x\nb: ]\n", "routes.yaml:2:4: malformed YAML: expected the node content"),
        ('name: "\\U00110000"\n', "routes.yaml:1:1: malformed YAML:"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "routes.yaml:1:1: malformed YAML: the document"),
    ],
    ids=["hex", "int-tag", "bool-tag", "then-syntax", "escape", "deep"],
)
def test_values_that_cannot_be_built_are_problems_not_tracebacks(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_a_reference_that_looks_like_a_number_but_is_none_stays_text() -> None:
    assert data("retries: ${R}\n", {"R": "0x_"}) == {"retries": "0x_"}


def test_directives_read_alike_with_and_without_libyaml() -> None:
    # libyaml accepts a comment glued to %YAML; PyYAML's parser does not. Either way
    # the file must read the same, so texts with directives take PyYAML's parser.
    plain = "%YAML 1.1#c\n---\nversion: 1\n"
    with_tab = plain + "#\tcomment\n"
    assert problems(plain) == problems(with_tab)
