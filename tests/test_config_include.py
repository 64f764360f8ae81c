"""One configuration in several files: `include`, and every problem in its own file."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import certifi
import jsonschema
import pytest

from gateway.cli import main
from gateway.config import Config, ConfigError, load_config
from gateway.config.model import Location
from gateway.config.source import Document, Position, parse
from gateway.paths import PathMatcher, PathTemplate

# The entry file: one upstream, one route; `include` on line 2.
ENTRY = """\
version: 1
include: [routes.d/*.yaml]
upstreams:
  users:
    url: http://127.0.0.1:8081
routes:
  - name: users.get
    path: /users/{id}
    methods: [GET]
    upstream: users
    auth: public
"""


def route(name: str, path: str, upstream: str = "users") -> str:
    """One route item of five lines, in a `routes:` list."""
    return (
        f"  - name: {name}\n    path: {path}\n    methods: [GET]\n"
        f"    upstream: {upstream}\n    auth: public\n"
    )


def tree(tmp_path: Path, files: dict[str, str], entry: str = ENTRY) -> str:
    """The entry file as routes.yaml in tmp_path, with `files` beside it; its path."""
    for name, text in {"routes.yaml": entry, **files}.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return str(tmp_path / "routes.yaml")


def problems(path: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {})
    return [str(p) for p in caught.value.problems]


# --- what is read, and in which order -------------------------------------------------


def test_included_routes_follow_the_entry_files_own_in_file_order(tmp_path: Path) -> None:
    entry = tree(
        tmp_path,
        {
            "routes.d/b.yaml": "routes:\n" + route("b.one", "/b/1") + route("b.two", "/b/2"),
            "routes.d/a.yaml": "routes:\n" + route("a.one", "/a/1"),
        },
    )
    config = load_config(entry, {})
    assert [r.name for r in config.routes] == ["users.get", "a.one", "b.one", "b.two"]
    d = str(tmp_path / "routes.d")
    assert config.files == (entry, f"{d}/a.yaml", f"{d}/b.yaml")
    assert config.source == entry


def test_patterns_are_read_in_the_order_given_each_in_sorted_order(tmp_path: Path) -> None:
    entry = ENTRY.replace("[routes.d/*.yaml]", "[zeta/*.yaml, alpha/*.yaml, one.yaml]")
    files = {
        "alpha/2.yaml": "routes:\n" + route("alpha.2", "/alpha/2"),
        "alpha/10.yaml": "routes:\n" + route("alpha.10", "/alpha/10"),
        "zeta/b.yaml": "routes:\n" + route("zeta.b", "/zeta/b"),
        "zeta/a.yaml": "routes:\n" + route("zeta.a", "/zeta/a"),
        "one.yaml": "routes:\n" + route("one", "/one"),
    }
    config = load_config(tree(tmp_path, files, entry), {})
    # Names sort as text: "10.yaml" before "2.yaml".
    assert [r.name for r in config.routes] == [
        "users.get",
        "zeta.a",
        "zeta.b",
        "alpha.10",
        "alpha.2",
        "one",
    ]


def test_a_file_matched_twice_is_read_once_at_its_first_place(tmp_path: Path) -> None:
    entry = ENTRY.replace(
        "[routes.d/*.yaml]", "[routes.d/b.yaml, routes.d/*.yaml, ./routes.d/../routes.d/b.yaml]"
    )
    files = {
        "routes.d/a.yaml": "routes:\n" + route("a", "/a"),
        "routes.d/b.yaml": "routes:\n" + route("b", "/b"),
    }
    config = load_config(tree(tmp_path, files, entry), {})
    assert [r.name for r in config.routes] == ["users.get", "b", "a"]
    assert len(config.files) == 3


def test_the_entry_file_is_never_included_again(tmp_path: Path) -> None:
    entry = ENTRY.replace("[routes.d/*.yaml]", "['*.yaml']")
    files = {"team.yaml": "routes:\n" + route("team", "/team")}
    config = load_config(tree(tmp_path, files, entry), {})
    assert [r.name for r in config.routes] == ["users.get", "team"]
    assert config.files == (str(tmp_path / "routes.yaml"), str(tmp_path / "team.yaml"))


def test_a_glob_that_matches_nothing_is_an_empty_team_folder(tmp_path: Path) -> None:
    config = load_config(tree(tmp_path, {}), {})
    assert [r.name for r in config.routes] == ["users.get"]
    assert config.files == (str(tmp_path / "routes.yaml"),)


def test_globs_take_files_only_and_reach_into_folders_with_two_stars(tmp_path: Path) -> None:
    entry = ENTRY.replace("[routes.d/*.yaml]", "['teams/**/*.yaml', 'teams/*']")
    files = {
        "teams/a.yaml": "routes:\n" + route("a", "/a"),
        "teams/payments/b.yaml": "routes:\n" + route("b", "/b"),
        "teams/.a.yaml.swp": "not: [yaml",  # hidden: * does not match a leading dot
    }
    config = load_config(tree(tmp_path, files, entry), {})
    assert [r.name for r in config.routes] == ["users.get", "a", "b"]


def test_glob_characters_in_the_entry_files_folder_are_not_patterns(tmp_path: Path) -> None:
    folder = tmp_path / "deploy[1]"
    folder.mkdir()
    config = load_config(tree(folder, {"routes.d/a.yaml": "routes:\n" + route("a", "/a")}), {})
    assert [r.name for r in config.routes] == ["users.get", "a"]


def test_a_named_file_that_does_not_exist_is_a_problem_at_its_name(tmp_path: Path) -> None:
    entry = ENTRY.replace("[routes.d/*.yaml]", "[routes.d/*.yaml, teams/users.yaml]")
    path = tree(tmp_path, {"routes.d/a.yaml": "routes:\n" + route("a", "/a", "nope")}, entry)
    # The rules do not run: what the missing file defines would look missing too.
    assert problems(path) == [
        f"{path}:2:28: include: 'teams/users.yaml' does not exist "
        f"({tmp_path}/teams/users.yaml); a name without glob characters must name a file"
    ]


def test_a_named_folder_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "routes.d").mkdir()
    path = tree(tmp_path, {}, ENTRY.replace("[routes.d/*.yaml]", "[routes.d]"))
    assert problems(path) == [
        f"{path}:2:11: include: 'routes.d' is a folder, not a file ({tmp_path}/routes.d); "
        "a name without glob characters must name a file"
    ]


@pytest.mark.parametrize(
    ("include", "message"),
    [
        ("routes.d/*.yaml", "2:1: include: 'routes.d/*.yaml' is not of type 'array'"),
        ("['']", "2:11: include[0]: '' should be non-empty"),
        ("[1]", "2:11: include[0]: 1 is not of type 'string'"),
    ],
)
def test_the_shape_of_include_is_checked(tmp_path: Path, include: str, message: str) -> None:
    path = tree(tmp_path, {}, ENTRY.replace("[routes.d/*.yaml]", include))
    assert problems(path) == [f"{path}:{message}"]


# --- every problem in the file where it is --------------------------------------------


def test_malformed_yaml_in_an_included_file_is_placed_in_that_file(tmp_path: Path) -> None:
    path = tree(
        tmp_path,
        {
            "routes.d/a.yaml": "routes:\n  - name: a\n    path: [/a\n",
            "routes.d/b.yaml": "routes:\n" + route("b", "/b", "unknown"),
        },
        ENTRY.replace("http://127.0.0.1:8081", "${USERS_URL}"),
    )
    found = problems(path)
    # Every file's reading problems (the entry's unset variable too), and no rule's.
    assert found == [
        f"{tmp_path}/routes.d/a.yaml:4:1: malformed YAML: expected ',' or ']', but got "
        "'<stream end>'",
        f"{path}:5:10: environment variable USERS_URL is not set and has no default",
    ]


def test_an_empty_or_unreadable_included_file_is_a_problem_of_that_file(tmp_path: Path) -> None:
    path = tree(tmp_path, {"routes.d/a.yaml": "# nothing yet\n"})
    (tmp_path / "routes.d" / "b.yaml").write_bytes(b"routes: \xff\n")
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:1:1: the file is empty",
        f"{tmp_path}/routes.d/b.yaml:1:1: cannot read the file: 'utf-8' codec can't decode "
        "byte 0xff in position 8: invalid start byte",
    ]


def test_schema_problems_of_an_included_file_count_its_own_routes(tmp_path: Path) -> None:
    team = "routes:\n" + route("a", "/a") + "  - path: /b\n    methods: GET\n    auth: public\n"
    path = tree(tmp_path, {"routes.d/a.yaml": team})
    file = f"{tmp_path}/routes.d/a.yaml"
    # routes[1] is the file's second route (the merged table's third).
    assert problems(path) == [
        f"{file}:7:5: routes[1]: give upstream (forward) or compose (merge parts)",
        f"{file}:7:5: routes[1]: missing required key 'name'",
        f"{file}:8:5: routes[1].methods: 'GET' is not of type 'array'",
    ]


def test_rule_problems_of_an_included_file_are_placed_and_counted_there(tmp_path: Path) -> None:
    team = (
        "routes:\n"
        + route("a", "/a", "user")
        + "  - path: /b\n    methods: [GET]\n    upstream: users\n    auth: public\n"
        + "    cors: {allow_origins: ['*'], allow_credentials: true}\n"
    )
    path = tree(tmp_path, {"routes.d/a.yaml": team})
    file = f"{tmp_path}/routes.d/a.yaml"
    assert problems(path) == [
        f"{file}:5:15: route 'a': upstream 'user' is not defined in upstreams; did you mean "
        "'users'?",
        f"{file}:7:5: routes[1]: missing required key 'name'",
        f"{file}:11:27: routes[1].cors: '*' in allow_origins cannot be combined with "
        "allow_credentials: true (browsers refuse it; list the origins)",
    ]


def test_an_unnamed_routes_rule_problem_uses_its_index_in_its_own_file(tmp_path: Path) -> None:
    team = "routes:\n  - {path: /b, methods: [GET], upstream: nope, auth: public}\n"
    path = tree(tmp_path, {"routes.d/a.yaml": team})
    assert (
        f"{tmp_path}/routes.d/a.yaml:2:42: routes[0]: upstream 'nope' is not defined in "
        "upstreams; defined: users"
    ) in problems(path)


def test_keys_only_the_entry_file_may_hold_are_refused_in_an_included_file(
    tmp_path: Path,
) -> None:
    team = (
        "gateway:\n  trusted_proxies: 1\n"
        "rate_limits: {default: [1/second]}\n"
        "include: [more/*.yaml]\n"
        "rotues: []\n"
        "routes:\n" + route("a", "/a")
    )
    path = tree(tmp_path, {"routes.d/a.yaml": team, "routes.d/more/b.yaml": "routes: []\n"})
    file = f"{tmp_path}/routes.d/a.yaml"
    assert problems(path) == [
        f"{file}:1:1: 'gateway' belongs in the entry file ({path}); an included file holds "
        "only upstreams, routes and version",
        f"{file}:3:1: 'rate_limits' belongs in the entry file ({path}); an included file "
        "holds only upstreams, routes and version",
        f"{file}:4:1: include: an included file cannot include other files; add the "
        f"pattern to the include of {path}",
        f"{file}:5:1: unknown key 'rotues' in the top level; did you mean 'routes'?",
    ]


def test_an_included_file_may_state_version_1_and_no_other(tmp_path: Path) -> None:
    path = tree(tmp_path, {"routes.d/a.yaml": "version: 1\nroutes:\n" + route("a", "/a")})
    assert [r.name for r in load_config(path, {}).routes] == ["users.get", "a"]
    (tmp_path / "routes.d" / "a.yaml").write_text("version: 2\nroutes: {}\n")
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:1:10: version: 2 is not one of: 1",
        f"{tmp_path}/routes.d/a.yaml:2:1: routes: {{}} is not of type 'array'",
    ]


def test_an_included_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = tree(tmp_path, {"routes.d/a.yaml": "- name: a\n"})
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:1:1: the top level: [{{'name': 'a'}}] is not of type 'object'"
    ]


def test_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    path = tree(
        tmp_path,
        {"routes.d/a.yaml": "routes:\n" + route("a", "/a", "nope")},
        ENTRY.replace("    auth: public\n", "    auth: open\n"),
    )
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:5:15: route 'a': upstream 'nope' is not defined in "
        "upstreams; defined: users",
        f"{path}:11:11: routes[0].auth: must be `public` or a list of `jwt` and/or `api_key`",
    ]


# --- names across files ----------------------------------------------------------------


def test_a_route_name_used_in_two_files_names_the_first_files_place(tmp_path: Path) -> None:
    path = tree(tmp_path, {"routes.d/a.yaml": "routes:\n" + route("users.get", "/other")})
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:2:11: route name 'users.get' is used twice (first at {path}:7)"
    ]


def test_a_route_name_used_twice_in_one_included_file_says_line(tmp_path: Path) -> None:
    team = "routes:\n" + route("a", "/a") + route("a", "/b")
    path = tree(tmp_path, {"routes.d/a.yaml": team})
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:7:11: route name 'a' is used twice (first at line 2)"
    ]


def test_an_upstream_defined_in_two_files_names_both_places(tmp_path: Path) -> None:
    team = "upstreams:\n  orders: {url: 'http://o'}\n  users:\n    url: http://elsewhere\n"
    second = "upstreams:\n  orders:\n    url: http://o2\n"
    path = tree(tmp_path, {"routes.d/a.yaml": team, "routes.d/b.yaml": second})
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:3:3: upstream 'users' is defined twice (first at {path}:4)",
        f"{tmp_path}/routes.d/b.yaml:2:3: upstream 'orders' is defined twice (first at "
        f"{tmp_path}/routes.d/a.yaml:2)",
    ]


def test_routes_colliding_across_files_name_the_other_file(tmp_path: Path) -> None:
    path = tree(tmp_path, {"routes.d/a.yaml": "routes:\n" + route("mine", "/users/{key}")})
    # The first route added wins the requests of both: the second is reported.
    assert problems(path) == [
        f"{tmp_path}/routes.d/a.yaml:3:11: route 'mine': GET /users/{{key}} is the same "
        f"method and path as route 'users.get' ({path}:7)",
    ]


# --- references across files ----------------------------------------------------------


def test_routes_use_upstreams_of_the_entry_and_of_other_included_files(tmp_path: Path) -> None:
    orders = "upstreams:\n  orders:\n    url: http://127.0.0.1:8082\nroutes:\n" + route(
        "orders.get", "/orders/{id}", "orders"
    )
    # A team file read before the one that defines the upstream its routes use.
    overview = (
        "routes:\n"
        + route("a.users", "/a/users")
        + route("a.orders", "/a/{id}/orders", "orders")
        + "  - name: a.overview\n    path: /a/{id}\n    methods: [GET]\n    auth: public\n"
        + "    compose:\n      parts:\n"
        + '        user: {upstream: users, path: "/users/{id}"}\n'
        + '        orders: {upstream: orders, path: "/orders?user={id}"}\n'
    )
    path = tree(tmp_path, {"routes.d/a.yaml": overview, "routes.d/b.yaml": orders})
    config = load_config(path, {})
    by_name = {r.name: r for r in config.routes}
    assert by_name["a.users"].upstream == "users"
    assert by_name["a.orders"].upstream == "orders"
    overview_route = by_name["a.overview"]
    assert overview_route.compose is not None
    assert [p.upstream for p in overview_route.compose.parts] == ["users", "orders"]
    assert list(config.upstreams) == ["users", "orders"]
    assert config.upstreams["orders"].url == "http://127.0.0.1:8082"


def test_the_upstreams_may_all_be_in_included_files(tmp_path: Path) -> None:
    entry = "version: 1\ninclude: [routes.d/*.yaml]\n"
    team = "upstreams:\n  users: {url: 'http://u'}\nroutes:\n" + route("a", "/a")
    config = load_config(tree(tmp_path, {"routes.d/a.yaml": team}, entry), {})
    assert [r.name for r in config.routes] == ["a"]
    assert list(config.upstreams) == ["users"]


def test_without_any_upstream_in_any_file_the_entry_file_is_told(tmp_path: Path) -> None:
    entry = "version: 1\ninclude: [routes.d/*.yaml]\n"
    path = tree(tmp_path, {"routes.d/a.yaml": "routes: []\n"}, entry)
    assert problems(path) == [
        f"{path}:1:1: the top level: missing required key 'upstreams' (in this file or a "
        "file its include names)"
    ]


def test_without_include_upstreams_and_routes_are_still_required(tmp_path: Path) -> None:
    path = tree(tmp_path, {}, "version: 1\n")
    assert problems(path) == [
        f"{path}:1:1: the top level: missing required key 'routes'",
        f"{path}:1:1: the top level: missing required key 'upstreams'",
    ]


def test_a_ca_bundle_is_relative_to_the_file_that_defines_the_upstream(tmp_path: Path) -> None:
    (tmp_path / "routes.d" / "certs").mkdir(parents=True)
    shutil.copy(certifi.where(), tmp_path / "routes.d" / "certs" / "ca.pem")
    team = "upstreams:\n  billing:\n    url: https://b.internal\n    ca_bundle: certs/ca.pem\n"
    config = load_config(tree(tmp_path, {"routes.d/billing.yaml": team}), {})
    assert config.upstreams["billing"].ca_bundle == str(tmp_path / "routes.d/certs/ca.pem")
    (tmp_path / "routes.d" / "certs" / "ca.pem").unlink()
    assert problems(str(tmp_path / "routes.yaml")) == [
        f"{tmp_path}/routes.d/billing.yaml:4:16: upstream 'billing' ca_bundle "
        "'certs/ca.pem' does not exist"
    ]


# --- the environment, the guards -------------------------------------------------------


def test_environment_references_are_applied_in_included_files(tmp_path: Path) -> None:
    team = (
        "upstreams:\n  orders:\n    url: ${ORDERS_URL:-http://127.0.0.1:8082}\n"
        "    retries: ${ORDERS_RETRIES:-1}\n    timeout: ${ORDERS_TIMEOUT}\n"
        "routes:\n" + route("orders", "${ORDERS_PATH:-/orders}", "orders")
    )
    path = tree(tmp_path, {"routes.d/orders.yaml": team})
    env = {"ORDERS_RETRIES": "3", "ORDERS_PATH": "/api/orders", "ORDERS_TIMEOUT": "2.5"}
    config = load_config(path, env)
    assert config.upstreams["orders"].url == "http://127.0.0.1:8082"
    assert config.upstreams["orders"].retries == 3
    assert config.routes[-1].path == "/api/orders"
    assert config.upstreams["orders"].timeout == 2.5
    assert (
        f"{tmp_path}/routes.d/orders.yaml:5:14: environment variable ORDERS_TIMEOUT is "
        "not set and has no default"
    ) in problems(path, {"ORDERS_RETRIES": "3"})


def test_the_alias_guard_applies_to_each_included_file(tmp_path: Path) -> None:
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for name, prev in zip("bcdef", "abcde", strict=True):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = tree(tmp_path, {"routes.d/bomb.yaml": "\n".join(rows) + "\n"})
    (line,) = problems(path)
    assert line.startswith(f"{tmp_path}/routes.d/bomb.yaml:")
    assert "expands to more than 100000 values through aliases" in line


def test_anchors_do_not_reach_across_files(tmp_path: Path) -> None:
    entry = ENTRY.replace("    auth: public\n", "    auth: &open public\n")
    team = "routes:\n  - {name: a, path: /a, methods: [GET], upstream: users, auth: *open}\n"
    path = tree(tmp_path, {"routes.d/a.yaml": team}, entry)
    (line,) = problems(path)
    assert line.startswith(f"{tmp_path}/routes.d/a.yaml:2:")
    assert "found undefined alias 'open'" in line


# --- the model ---------------------------------------------------------------------------


def test_each_route_keeps_the_location_in_its_own_file(tmp_path: Path) -> None:
    team = "# the a team\nroutes:\n" + route("a.one", "/a/1") + route("a.two", "/a/2")
    path = tree(tmp_path, {"routes.d/a.yaml": team})
    config = load_config(path, {})
    assert [r.location for r in config.routes] == [
        Location(path, 7, 5),
        Location(f"{tmp_path}/routes.d/a.yaml", 3, 5),
        Location(f"{tmp_path}/routes.d/a.yaml", 8, 5),
    ]


def test_one_file_lists_itself_as_the_only_file(tmp_path: Path) -> None:
    path = tree(tmp_path, {}, ENTRY.replace("include: [routes.d/*.yaml]\n", ""))
    config = load_config(path, {})
    assert config.files == (path,)
    assert config.summary() == f"{path}: OK, 1 routes to 1 upstreams"


def test_the_summary_counts_the_files(tmp_path: Path) -> None:
    path = tree(tmp_path, {"routes.d/a.yaml": "routes:\n" + route("a", "/a")})
    assert load_config(path, {}).summary() == f"{path}: OK, 2 routes to 1 upstreams from 2 files"


def test_files_default_to_empty_for_a_config_built_by_hand() -> None:
    (files,) = [f for f in dataclasses.fields(Config) if f.name == "files"]
    assert files.default == ()


def test_included_files_are_read_from_the_disk_once_per_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A problem makes the loader read everything again, with positions: the texts of
    # the included files are the ones read the first time.
    path = tree(tmp_path, {"routes.d/a.yaml": "routes:\n" + route("a", "/a", "nope")})
    reads: list[str] = []
    original = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self.name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    problems(path)
    assert sorted(reads) == ["a.yaml", "routes.yaml"]


# --- Document: positions that know their file --------------------------------------------


def test_a_position_of_another_file_places_the_problem_there() -> None:
    doc = Document(
        "routes.yaml",
        {},
        {("routes", 0): Position(3, 5), ("routes", 1): Position(2, 5, "team.yaml")},
        {},
        route_numbers=[0, 0],
    )
    assert str(doc.problem(("routes", 1, "path"), "bad")) == "team.yaml:2:5: bad"
    assert str(doc.problem(("routes", 0, "path"), "bad")) == "routes.yaml:3:5: bad"
    assert str(doc.problem(("gateway",), "bad")) == "routes.yaml:1:1: bad"
    assert doc.file_of(("routes", 1, "name")) == "team.yaml"
    assert doc.local(("routes", 1, "cors")) == ("routes", 0, "cors")
    assert doc.local(("upstreams", "users")) == ("upstreams", "users")
    assert doc.mention(("routes", 0), seen_from=("routes", 1)) == "routes.yaml:3"
    assert doc.mention(("routes", 0), seen_from=("routes", 0, "name")) == "line 3"


# --- examples/teams: the reference deployment, one file per team -------------------------

ROOT = Path(__file__).resolve().parent.parent
TEAMS = ROOT / "examples" / "teams"


def _matcher(config: Config) -> PathMatcher[str]:
    matcher: PathMatcher[str] = PathMatcher()
    for r in config.routes:
        matcher.add(PathTemplate.parse(r.path), r.name, r.methods)
    return matcher


def test_the_teams_example_is_the_reference_deployment_in_effect() -> None:
    one = load_config(str(ROOT / "routes.yaml"), {})
    teams = load_config(str(TEAMS / "routes.yaml"), {})
    assert teams.files == (
        str(TEAMS / "routes.yaml"),
        str(TEAMS / "routes.d" / "orders.yaml"),
        str(TEAMS / "routes.d" / "users.yaml"),
    )
    for field in dataclasses.fields(Config):
        if field.name not in ("source", "files", "routes"):
            assert getattr(teams, field.name) == getattr(one, field.name), field.name
    # The same routes (a Route's location is not part of what it is) ...
    assert {r.name: r for r in teams.routes} == {r.name: r for r in one.routes}
    assert len(teams.routes) == len(one.routes)
    # ... and each request finds the same one, whatever order the files gave them.
    theirs, ours = _matcher(teams), _matcher(one)
    for r in one.routes:
        example = PathTemplate.parse(r.path).example()
        for method in r.methods:
            assert theirs.match(example, method)[0] == ours.match(example, method)[0]


def test_the_teams_example_places_each_route_in_its_teams_file() -> None:
    teams = load_config(str(TEAMS / "routes.yaml"), {})
    for r in teams.routes:
        assert r.location is not None
        team = "users.yaml" if r.name.split(".")[0] in ("auth", "users", "me") else "orders.yaml"
        assert r.location.file == str(TEAMS / "routes.d" / team), r.name
        lines = Path(r.location.file).read_text().splitlines()
        assert lines[r.location.line - 1].split("#")[0].strip() == f"- name: {r.name}"


@pytest.mark.parametrize(
    ("name", "schema"),
    [
        ("routes.yaml", "routes.schema.json"),
        ("routes.d/users.yaml", "routes-include.schema.json"),
        ("routes.d/orders.yaml", "routes-include.schema.json"),
    ],
)
def test_each_teams_file_names_its_published_schema_for_editors(name: str, schema: str) -> None:
    path = TEAMS / name
    text = path.read_text()
    (modeline,) = [line for line in text.splitlines() if "yaml-language-server" in line]
    target = (path.parent / modeline.split("$schema=", 1)[1].strip()).resolve()
    assert target == ROOT / "docs" / schema
    # What the editor checks: the file alone, against that schema (read as YAML's core
    # schema does, as editors do: dates stay strings).
    validator = jsonschema.Draft202012Validator(json.loads(target.read_text()))
    assert not list(validator.iter_errors(parse(text, name, {}).data))


def test_gateway_check_accepts_the_teams_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(TEAMS / "routes.yaml")]) == 0
    assert capsys.readouterr().out == (
        f"{TEAMS / 'routes.yaml'}: OK, 20 routes to 2 upstreams from 3 files\n"
    )


def test_gateway_check_places_a_teams_problem_in_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "teams"
    shutil.copytree(TEAMS, copy)
    users = copy / "routes.d" / "users.yaml"
    users.write_text(users.read_text().replace("upstream: users\n", "upstream: user\n", 1))
    with pytest.raises(SystemExit) as exit_:
        main(["check", "-c", str(copy / "routes.yaml")])
    assert exit_.value.code == 1
    out = capsys.readouterr().out.splitlines()
    line = users.read_text().splitlines().index("    upstream: user") + 1
    assert out == [
        f"{users}:{line}:15: route 'auth.login': upstream 'user' is not defined in upstreams; "
        "did you mean 'users'?",
        f"{copy / 'routes.yaml'}: 1 problem",
    ]
