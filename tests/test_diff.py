"""`gateway diff -c OLD NEW`: what changed in effect between two configs."""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import pytest
import yaml

from gateway.cli import main
from gateway.config.diff import run_diff

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "diff"
OPERATIONS = ROOT / "docs" / "operations.md"

REPORTING_KEY = "the-reporting-key"
PARTNER_KEY = "the-partner-key"
REPORTING_DIGEST = hashlib.sha256(REPORTING_KEY.encode()).hexdigest()
PARTNER_DIGEST = hashlib.sha256(PARTNER_KEY.encode()).hexdigest()
JWT_SECRET = "a-jwt-secret-of-at-least-thirty-two-bytes"

# The base config of most tests, as data: each test changes one thing in a copy.
BASE: dict[str, Any] = {
    "version": 1,
    "cors": {"allow_origins": ["https://app.example.com"], "max_age": 600},
    "auth": {
        "jwt": {
            "issuer": "https://id.example.com",
            "audience": "gateway",
            "algorithms": ["HS256"],
            "secret": JWT_SECRET,
        },
        "api_keys": {
            "keys": [{"id": "reporting", "sha256": REPORTING_DIGEST, "roles": ["service"]}]
        },
    },
    "rate_limits": {"default": ["1000/minute"]},
    "upstreams": {
        "users": {"url": "http://users.internal:8081"},
        "orders": {"url": "http://orders.internal:8082"},
    },
    "routes": [
        {
            "name": "users.get",
            "path": "/api/v1/users/{user_id}",
            "methods": ["GET"],
            "upstream": "users",
            "upstream_path": "/users/{user_id}",
            "auth": ["jwt", "api_key"],
            "roles": ["admin", "member", "service"],
            "rate_limit": ["100/minute"],
        },
        {
            "name": "users.me",
            "path": "/api/v1/users/me",
            "methods": ["GET"],
            "upstream": "users",
            "upstream_path": "/users/me",
            "auth": ["jwt"],
        },
        {
            "name": "orders.get",
            "path": "/api/orders/{order_id}",
            "methods": ["GET"],
            "upstream": "orders",
            "auth": ["jwt"],
            "rate_limit": ["50/minute"],
            "cors": {"allow_origins": ["https://partner.example.com"]},
            "versions": {
                "default": "2",
                "options": {
                    "1": {"upstream_path": "/v1/orders/{order_id}"},
                    "2": {"upstream_path": "/v2/orders/{order_id}"},
                },
            },
        },
        {
            "name": "me.dashboard",
            "path": "/api/v1/me/dashboard",
            "methods": ["GET"],
            "auth": ["jwt"],
            "rate_limit": [],
            "compose": {
                "timeout": 2.5,
                "parts": {
                    "profile": {
                        "upstream": "users",
                        "path": "/users/{identity.sub}",
                        "fields": ["id", "name"],
                    },
                    "orders": {
                        "upstream": "orders",
                        "path": "/v2/orders?user_id={identity.sub}",
                        "required": False,
                    },
                },
            },
        },
    ],
}

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reference files read these, with defaults the tests expect.
    for name in (
        "GATEWAY_CONFIG",
        "GATEWAY_PUBLIC_URL",
        "USERS_URL",
        "ORDERS_URL",
        "RATE_LIMIT_STORAGE",
        "RATE_LIMIT_DEFAULT",
        "RATE_LIMIT_LOGIN",
        "RATE_LIMIT_USERS_GET",
    ):
        monkeypatch.delenv(name, raising=False)


def route(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in config["routes"] if r["name"] == name)
    return found


def write(path: Path, data: dict[str, Any] | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return str(path)


def diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Edit
) -> tuple[int, list[str], str]:
    """The exit status, stdout's lines and stderr of BASE against BASE after `edit`."""
    new = copy.deepcopy(BASE)
    edit(new)
    code = run_diff(write(tmp_path / "old.yaml", BASE), write(tmp_path / "new.yaml", new))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def detail(lines: list[str]) -> list[str]:
    """The indented lines of a report, with runs of spaces made one."""
    return [re.sub(r"\s+", " ", line.strip()) for line in lines if line.startswith("    ")]


def one_route_changed(lines: list[str], name: str) -> list[str]:
    """The detail lines of a report that says exactly one route changed, `name`."""
    assert lines[0] == "routes: 0 added, 0 removed, 1 changed, 3 unchanged", lines
    assert re.sub(r"\s+", " ", lines[1]).startswith(f"~ {name} "), lines
    assert lines[-1] == "settings: no changes", lines
    return detail(lines)


# -- the same in effect ----------------------------------------------------------------

SAME_IN_EFFECT_OLD = """\
version: 1
rate_limits:
  default: [1000/minute]
upstreams:
  users:
    url: http://users.internal:8081
    timeout: 10
routes:
  - name: users.get
    path: /api/v1/users/{user_id}
    methods: [GET, DELETE]
    upstream: users
    upstream_path: /users/{user_id}
    auth: [jwt, api_key]
    roles: [admin, member]
    rate_limit: [100/minute]
  - name: users.list
    path: /api/v1/users
    methods: [GET]
    upstream: users
    auth: [jwt]
    roles: [admin, member]
auth:
  jwt:
    issuer: https://id.example.com
    audience: gateway
    algorithms: [HS256]
    secret: a-jwt-secret-of-at-least-thirty-two-bytes
  api_keys:
    keys:
      - id: reporting
        sha256: dc1d67428b2b1c975f03027d3f345cb1fdd323220e4d2f972632048f9df8a011
"""

# The same config: other comments, key order, flow style, quoting, anchors, methods,
# roles and auth in another order, defaults written out, routes in another order.
SAME_IN_EFFECT_NEW = """\
# The user routes.
version: 1
auth:
  api_keys:
    header: X-API-Key   # the default, written out
    keys: [{id: reporting,
            sha256: "dc1d67428b2b1c975f03027d3f345cb1fdd323220e4d2f972632048f9df8a011"}]
  jwt: {issuer: "https://id.example.com", audience: gateway, algorithms: [HS256],
        secret: 'a-jwt-secret-of-at-least-thirty-two-bytes', leeway: 30}
upstreams:
  users: {url: "http://users.internal:8081/", timeout: 10.0, retries: 1}
rate_limits: {default: ["1000/minute"], strategy: moving-window}

routes:


  - name: users.list         # moved up
    upstream: users
    path: /api/v1/users
    upstream_path: /api/v1/users
    methods: [GET]
    auth: [jwt]
    roles: &readers [member, admin]
    rate_limit_bucket: users.list
  - path: '/api/v1/users/{user_id}'
    name: users.get
    methods: [DELETE, GET]
    upstream: users
    upstream_path: /users/{user_id}
    auth: [api_key, jwt, jwt]
    roles: *readers
    rate_limit:
      - 100/minute
    rate_limit_key: identity
"""


def test_files_that_differ_only_in_writing_are_the_same_in_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write(tmp_path / "old.yaml", SAME_IN_EFFECT_OLD)
    new = write(tmp_path / "elsewhere" / "new.yaml", SAME_IN_EFFECT_NEW)
    assert run_diff(old, new) == 0
    out, err = capsys.readouterr()
    assert out == "no changes: the same in effect (2 routes)\n"
    assert err == ""


def test_a_file_against_itself_is_the_same_in_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = diff(tmp_path, capsys, lambda c: None)
    assert (code, lines) == (0, ["no changes: the same in effect (4 routes)"])


def test_an_explicit_limit_equal_to_the_default_is_the_same_in_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        route(config, "users.me")["rate_limit"] = ["1000/minute"]

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert (code, lines) == (0, ["no changes: the same in effect (4 routes)"])


def test_a_route_cors_that_restates_the_top_level_is_the_same_in_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        route(config, "users.me")["cors"] = {"allow_origins": ["https://app.example.com"]}

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert (code, lines) == (0, ["no changes: the same in effect (4 routes)"])


def test_files_named_relative_to_each_config_are_the_same_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A config and its copy in another folder (main's routes.yaml written to /tmp for
    # review) name the CA bundle beside each of them: the same in effect.
    config = copy.deepcopy(BASE)
    config["upstreams"]["users"]["ca_bundle"] = "certs/ca.pem"
    for folder in ("old", "new"):
        (tmp_path / folder / "certs").mkdir(parents=True)
        shutil.copy(certifi.where(), tmp_path / folder / "certs" / "ca.pem")
    old = write(tmp_path / "old" / "routes.yaml", config)
    new = write(tmp_path / "new" / "routes.yaml", config)
    assert run_diff(old, new) == 0
    config["upstreams"]["users"]["ca_bundle"] = "certs/other.pem"
    shutil.copy(certifi.where(), tmp_path / "new" / "certs" / "other.pem")
    new = write(tmp_path / "new" / "routes.yaml", config)
    capsys.readouterr()
    assert run_diff(old, new) == 1
    assert "    upstreams.users.ca_bundle:  certs/ca.pem -> certs/other.pem" in (
        capsys.readouterr().out.splitlines()
    )


# -- each policy of a route --------------------------------------------------------------


def _set(name: str, key: str, value: Any) -> Edit:
    def edit(config: dict[str, Any]) -> None:
        route(config, name)[key] = value

    return edit


def _drop(name: str, key: str) -> Edit:
    def edit(config: dict[str, Any]) -> None:
        del route(config, name)[key]

    return edit


def _option_path(config: dict[str, Any]) -> None:
    route(config, "orders.get")["versions"]["options"]["1"]["upstream_path"] = "/v1/o/{order_id}"


def _option_added(config: dict[str, Any]) -> None:
    options = route(config, "orders.get")["versions"]["options"]
    options["3"] = {"upstream_path": "/v3/orders/{order_id}"}


def _option_deprecated(config: dict[str, Any]) -> None:
    options = route(config, "orders.get")["versions"]["options"]
    options["1"]["deprecation"] = {"since": "2026-01-01"}


def _version_default(config: dict[str, Any]) -> None:
    route(config, "orders.get")["versions"]["default"] = "1"


def _own_cors(config: dict[str, Any]) -> None:
    route(config, "orders.get")["cors"]["max_age"] = 60


POLICY_CASES: list[tuple[str, str, Edit, list[str]]] = [
    (
        "auth",
        "users.get",
        _set("users.get", "auth", ["jwt"]),
        ["auth: jwt, api_key -> jwt"],
    ),
    ("public", "users.me", _set("users.me", "auth", "public"), ["auth: jwt -> public"]),
    (
        "roles",
        "users.get",
        _set("users.get", "roles", ["admin", "member"]),
        ["roles: admin, member, service -> admin, member"],
    ),
    (
        "no roles",
        "users.get",
        _drop("users.get", "roles"),
        ["roles: admin, member, service -> any"],
    ),
    (
        "rate_limit",
        "users.get",
        _set("users.get", "rate_limit", ["10/second", "100/minute"]),
        ["rate limit: 100/minute -> 10/second, 100/minute"],
    ),
    (
        "rate_limit to the default",
        "users.get",
        _drop("users.get", "rate_limit"),
        ["rate limit: 100/minute -> default (1000/minute)"],
    ),
    (
        "unlimited",
        "users.me",
        _set("users.me", "rate_limit", []),
        ["rate limit: default (1000/minute) -> none"],
    ),
    (
        "rate_limit_key",
        "users.get",
        _set("users.get", "rate_limit_key", "ip"),
        ["rate limit key: identity -> ip"],
    ),
    (
        "rate_limit_bucket",
        "users.get",
        _set("users.get", "rate_limit_bucket", "users.reads"),
        ["rate limit bucket: users.get -> users.reads"],
    ),
    ("upstream", "users.me", _set("users.me", "upstream", "orders"), ["upstream: users -> orders"]),
    (
        "path",
        "users.me",
        _set("users.me", "path", "/api/v1/me"),
        ["path: GET /api/v1/users/me -> GET /api/v1/me"],
    ),
    (
        "methods",
        "users.me",
        _set("users.me", "methods", ["PUT", "GET"]),
        ["path: GET /api/v1/users/me -> GET,PUT /api/v1/users/me"],
    ),
    (
        "upstream_path",
        "users.me",
        _set("users.me", "upstream_path", "/me"),
        ["upstream_path: /users/me -> /me"],
    ),
    (
        "upstream_path left to the path",
        "users.me",
        _drop("users.me", "upstream_path"),
        ["upstream_path: /users/me -> /api/v1/users/me"],
    ),
    (
        "versions: an option's upstream_path",
        "orders.get",
        _option_path,
        ["versions: option 1: upstream_path /v1/orders/{order_id} -> /v1/o/{order_id}"],
    ),
    (
        "versions: an option added",
        "orders.get",
        _option_added,
        ["versions: option 3 added (/v3/orders/{order_id})"],
    ),
    (
        "versions: an option deprecated",
        "orders.get",
        _option_deprecated,
        ["versions: option 1: deprecation none -> since 2026-01-01"],
    ),
    ("versions: default", "orders.get", _version_default, ["versions: default 2 -> 1"]),
    (
        "versions: header",
        "orders.get",
        lambda c: route(c, "orders.get")["versions"].update(header="X-Version"),
        ["versions: header Accept-Version -> X-Version"],
    ),
    (
        "deprecation",
        "users.me",
        _set("users.me", "deprecation", {"since": "2026-01-01", "sunset": "2027-06-30T12:00:00Z"}),
        ["deprecation: none -> since 2026-01-01, sunset 2027-06-30T12:00:00Z"],
    ),
    (
        "cors of the route",
        "orders.get",
        _own_cors,
        ["cors: max_age 600 -> 60"],
    ),
    (
        "cache added",
        "users.me",
        _set("users.me", "cache", {"ttl": 10}),
        ["cache: none -> ttl 10s, scope identity"],
    ),
    (
        "cache: scope and vary",
        "users.me",
        _set("users.me", "cache", {"ttl": 10, "scope": "tenant", "vary": ["Accept-Version"]}),
        ["cache: none -> ttl 10s, scope tenant, vary accept-version"],
    ),
    (
        "cors: a route's own instead of the top-level",
        "users.me",
        _set("users.me", "cors", {"allow_origins": ["*"], "allow_credentials": False}),
        ["cors: allow_origins https://app.example.com -> *"],
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [(name, edit, expected) for _, name, edit, expected in POLICY_CASES],
    ids=[case[0] for case in POLICY_CASES],
)
def test_each_policy_change_is_exactly_its_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    edit: Edit,
    expected: list[str],
) -> None:
    code, lines, err = diff(tmp_path, capsys, edit)
    assert code == 1, lines
    assert err == ""
    assert one_route_changed(lines, name) == expected


def test_a_route_that_becomes_versioned_says_so_and_loses_its_upstream_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        me = route(config, "users.me")
        del me["upstream_path"]
        me["versions"] = {
            "default": "2",
            "options": {"1": {"upstream_path": "/v1/me"}, "2": {"upstream_path": "/v2/me"}},
        }

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert one_route_changed(lines, "users.me") == [
        "upstream_path: /users/me -> (by version)",
        "versions: none -> 1, 2 by Accept-Version (default 2)",
    ]


def test_the_default_limits_reach_only_the_routes_that_use_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["rate_limits"]["default"] = ["500/minute"]

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert lines == [
        "routes: 0 added, 0 removed, 1 changed, 3 unchanged",
        "~ users.me  GET /api/v1/users/me",
        "    rate limit:  default (1000/minute) -> default (500/minute)",
        "settings:",
        "    rate_limits.default:  1000/minute -> 500/minute",
    ]


def test_without_limits_a_key_or_bucket_counts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        route(config, "me.dashboard")["rate_limit_key"] = "ip"
        route(config, "me.dashboard")["rate_limit_bucket"] = "dashboards"

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert (code, lines) == (0, ["no changes: the same in effect (4 routes)"])


def test_a_changed_upstream_reaches_every_route_that_calls_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["upstreams"]["orders"].update(timeout=5, breaker={"failures": 3})

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert lines == [
        "routes: 0 added, 0 removed, 2 changed, 2 unchanged",
        "~ me.dashboard  GET /api/v1/me/dashboard",
        "    upstream:  orders: timeout 10 -> 5",
        "    upstream:  orders: breaker.failures 0 -> 3",
        "~ orders.get    GET /api/orders/{order_id}",
        "    upstream:  orders: timeout 10 -> 5",
        "    upstream:  orders: breaker.failures 0 -> 3",
        "settings:",
        "    upstreams.orders.timeout:           10 -> 5",
        "    upstreams.orders.breaker.failures:  0 -> 3",
    ]


def test_the_top_level_cors_reaches_the_routes_without_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["cors"]["allow_headers"] = ["Authorization"]

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    # orders.get has its own cors, but inherits the keys it leaves out.
    assert lines[0] == "routes: 0 added, 0 removed, 4 changed, 0 unchanged"
    assert detail(lines) == [
        "cors: allow_headers none -> Authorization",
        "cors: allow_headers none -> Authorization",
        "cors: allow_headers none -> Authorization",
        "cors: allow_headers none -> Authorization",
        "cors.allow_headers: none -> Authorization",
    ]


# -- compose ---------------------------------------------------------------------------


def _parts(config: dict[str, Any]) -> dict[str, Any]:
    parts: dict[str, Any] = route(config, "me.dashboard")["compose"]["parts"]
    return parts


def _part_added(config: dict[str, Any]) -> None:
    _parts(config)["settings"] = {"upstream": "users", "path": "/settings/{identity.sub}"}


def _part_removed(config: dict[str, Any]) -> None:
    del _parts(config)["orders"]


def _part_changed(config: dict[str, Any]) -> None:
    orders = _parts(config)["orders"]
    orders.update(upstream="users", path="/orders", required=True, fields=["data"])


def _fields_dropped(config: dict[str, Any]) -> None:
    del _parts(config)["profile"]["fields"]


def _parts_reordered(config: dict[str, Any]) -> None:
    parts = _parts(config)
    route(config, "me.dashboard")["compose"]["parts"] = {
        "orders": parts["orders"],
        "profile": parts["profile"],
    }


def _compose_limits(config: dict[str, Any]) -> None:
    route(config, "me.dashboard")["compose"].update(timeout=5, max_part_bytes=2048)


COMPOSE_CASES: list[tuple[str, Edit, list[str]]] = [
    (
        "part added",
        _part_added,
        [
            "compose: part settings added (upstream users, path /settings/{identity.sub}, "
            "required, fields all)"
        ],
    ),
    ("part removed", _part_removed, ["compose: part orders removed"]),
    (
        "part changed",
        _part_changed,
        [
            "compose: part orders: upstream orders -> users",
            "compose: part orders: path /v2/orders?user_id={identity.sub} -> /orders",
            "compose: part orders: required false -> true",
            "compose: part orders: fields all -> data",
        ],
    ),
    ("fields", _fields_dropped, ["compose: part profile: fields id, name -> all"]),
    ("order", _parts_reordered, ["compose: parts order profile, orders -> orders, profile"]),
    (
        "timeout and max_part_bytes",
        _compose_limits,
        ["compose: timeout 2.5 -> 5", "compose: max_part_bytes 1048576 -> 2048"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(edit, expected) for _, edit, expected in COMPOSE_CASES],
    ids=[case[0] for case in COMPOSE_CASES],
)
def test_compose_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Edit, expected: list[str]
) -> None:
    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert one_route_changed(lines, "me.dashboard") == expected


def test_a_route_that_becomes_composed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(config: dict[str, Any]) -> None:
        me = route(config, "users.me")
        del me["upstream"], me["upstream_path"]
        me["compose"] = {"parts": {"me": {"upstream": "users", "path": "/users/me"}}}

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert one_route_changed(lines, "users.me") == [
        "upstream: users -> (compose)",
        "upstream_path: /users/me -> (compose)",
        "compose: none -> parts me (timeout 5)",
    ]


# -- routes added, removed, renamed ------------------------------------------------------


def test_added_and_removed_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["routes"] = [r for r in config["routes"] if r["name"] != "users.get"]
        config["routes"].append(
            {
                "name": "orders.export",
                "path": "/api/v2/orders/export",
                "methods": ["GET"],
                "upstream": "orders",
                "upstream_path": "/v2/orders/export",
                "auth": "public",
            }
        )

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert lines == [
        "routes: 1 added, 1 removed, 0 changed, 3 unchanged",
        "+ orders.export  GET /api/v2/orders/export",
        "    auth:        public",
        "    roles:       any",
        "    rate limit:  default (1000/minute)",
        "    upstream:    orders /v2/orders/export",
        "- users.get      GET /api/v1/users/{user_id}",
        "settings: no changes",
    ]


def test_a_renamed_route_is_removed_and_added_and_said_to_be_renamed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        route(config, "users.me")["name"] = "me.profile"

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert lines == [
        "routes: 1 added, 1 removed, 0 changed, 3 unchanged (1 added is a rename)",
        "+ me.profile  GET /api/v1/users/me",
        "    renamed from:       users.me (same methods and path)",
        "    rate limit bucket:  users.me -> me.profile",
        "- users.me    GET /api/v1/users/me",
        "    renamed to:         me.profile",
        "settings: no changes",
    ]


def test_a_route_moved_to_another_path_is_no_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        route(config, "users.me").update(name="me.profile", path="/api/v1/me")

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert lines[0] == "routes: 1 added, 1 removed, 0 changed, 3 unchanged"
    assert not any("renamed" in line for line in lines)


# -- settings ----------------------------------------------------------------------------


def test_settings_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["gateway"] = {"max_body_bytes": 2048, "trusted_proxies": 1}
        config["auth"]["jwt"].update(leeway=5, algorithms=["HS512", "HS256"])
        config["rate_limits"].update(strategy="fixed-window", auth_failures=["5/minute"])
        config["upstreams"]["billing"] = {"url": "https://billing.internal:8443/api"}
        config["upstreams"]["users"]["retries"] = 0
        config["cache"] = {"storage": "redis://:s3cret@cache.internal:6379/1"}

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    settings = lines[lines.index("settings:") + 1 :]
    assert detail(settings) == [
        "gateway.trusted_proxies: 0 -> 1",
        "gateway.max_body_bytes: 1048576 -> 2048",
        "auth.jwt.algorithms: HS256 -> HS256, HS512",
        "auth.jwt.leeway: 30 -> 5",
        "rate_limits.strategy: moving-window -> fixed-window",
        "rate_limits.auth_failures: 10/minute -> 5/minute",
        "cache.storage: memory:// -> redis://:***@cache.internal:6379/1",
        "upstreams.billing: added (https://billing.internal:8443/api)",
        "upstreams.users.retries: 1 -> 0",
    ]
    # retries of users reach the routes that call users: users.get, users.me, the
    # dashboard; the settings of the gateway, of auth and rate_limits reach no route alone.
    assert lines[0] == "routes: 0 added, 0 removed, 3 changed, 1 unchanged"


def test_only_settings_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = copy.deepcopy(BASE)
    old["gateway"] = {"max_body_bytes": 2048}
    old["upstreams"]["billing"] = {"url": "https://billing.internal:8443/api"}
    assert run_diff(write(tmp_path / "old.yaml", old), write(tmp_path / "new.yaml", BASE)) == 1
    assert capsys.readouterr().out.splitlines() == [
        "routes: 0 added, 0 removed, 0 changed, 4 unchanged",
        "settings:",
        "    gateway.max_body_bytes:  2048 -> 1048576",
        "    upstreams.billing:       removed",
    ]


def test_secrets_are_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new_secret = "another-jwt-secret-of-at-least-thirty-two"

    def edit(config: dict[str, Any]) -> None:
        config["auth"]["jwt"]["secret"] = new_secret
        config["rate_limits"]["storage"] = "redis://app:s3cr3t-pass@redis.internal:6379/0"

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    text = "\n".join(lines)
    assert detail(lines) == [
        "auth.jwt.secret: changed (not shown)",
        "rate_limits.storage: memory:// -> redis://app:***@redis.internal:6379/0",
    ]
    for secret in (JWT_SECRET, new_secret, "s3cr3t-pass"):
        assert secret not in text


def test_api_keys_added_and_removed_show_ids_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["auth"]["api_keys"]["keys"] = [
            {"id": "partner", "sha256": PARTNER_DIGEST, "roles": ["partner"]}
        ]
        # users.get accepts api_key: a key must be left for it.

    code, lines, err = diff(tmp_path, capsys, edit)
    assert (code, err) == (1, "")
    assert lines == [
        "routes: 0 added, 0 removed, 0 changed, 4 unchanged",
        "settings:",
        "    auth.api_keys.keys.partner:    added (roles partner)",
        "    auth.api_keys.keys.reporting:  removed",
    ]
    text = "\n".join(lines)
    for secret in (REPORTING_DIGEST, PARTNER_DIGEST, REPORTING_KEY, PARTNER_KEY, "sha256:"):
        assert secret not in text
    assert not re.search(r"[0-9a-f]{16}", text)


def test_a_rotated_key_and_its_roles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["auth"]["api_keys"]["keys"][0].update(sha256=PARTNER_DIGEST, roles=["admin"])

    code, lines, _ = diff(tmp_path, capsys, edit)
    assert code == 1
    assert detail(lines) == [
        "auth.api_keys.keys.reporting: sha256 changed: another key (digest not shown)",
        "auth.api_keys.keys.reporting.roles: service -> admin",
    ]
    assert PARTNER_DIGEST not in "\n".join(lines)
    assert REPORTING_DIGEST not in "\n".join(lines)


# -- invalid files -----------------------------------------------------------------------


def test_an_invalid_new_file_exits_2_with_its_located_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write(tmp_path / "old.yaml", BASE)
    new = write(
        tmp_path / "new.yaml", SAME_IN_EFFECT_OLD.replace("upstream: users", "upstream: user")
    )
    assert run_diff(old, new) == 2
    out, err = capsys.readouterr()
    assert out == ""
    problems = err.splitlines()
    assert problems[-1] == f"{new}: 2 problems"
    assert re.fullmatch(
        re.escape(new) + r":12:15: route 'users.get': upstream 'user' is not defined in "
        r"upstreams; did you mean 'users'\?",
        problems[0],
    ), problems
    assert all(re.match(re.escape(new) + r":\d+:\d+: ", p) for p in problems[:-1])


def test_both_invalid_files_are_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = str(tmp_path / "absent.yaml")
    new = write(tmp_path / "new.yaml", "version: 2\n")
    assert run_diff(old, new) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{old}:1:1: cannot read the file" in err
    assert f"{new}: " in err


# -- the command and its documented example ------------------------------------------------


def test_gateway_diff_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write(tmp_path / "old.yaml", SAME_IN_EFFECT_OLD)
    assert main(["diff", "-c", old, write(tmp_path / "new.yaml", SAME_IN_EFFECT_NEW)]) == 0
    assert capsys.readouterr().out == "no changes: the same in effect (2 routes)\n"
    changed = SAME_IN_EFFECT_NEW.replace("[member, admin]", "[admin]")
    assert main(["diff", "-c", old, write(tmp_path / "new.yaml", changed)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "routes: 0 added, 0 removed, 2 changed, 0 unchanged",
        "~ users.get   GET,DELETE /api/v1/users/{user_id}",
        "    roles:  admin, member -> admin",
        "~ users.list  GET /api/v1/users",
        "    roles:  admin, member -> admin",
        "settings: no changes",
    ]
    broken = write(tmp_path / "broken.yaml", "version: 1\n")
    assert main(["diff", "-c", old, broken]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{broken}:1:1: the top level: missing required key 'upstreams'" in err


def _documented_example() -> tuple[list[str], str]:
    """The command and the output that docs/operations.md shows for gateway diff."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text[text.index("## Reviewing a change: `gateway diff`") :]
    section = section[: section.index("\n## ", 1)]
    match = re.search(r"```sh\n\$ (gateway diff [^\n]+)\n```\n+```text\n(.*?)```", section, re.S)
    assert match, "the section should show a command in ```sh and its output in ```text"
    return match.group(1).split()[1:], match.group(2)


def test_the_documented_example_is_what_gateway_diff_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, documented = _documented_example()
    assert argv == ["diff", "-c", "examples/diff/before.yaml", "examples/diff/after.yaml"]
    monkeypatch.chdir(ROOT)
    assert main(argv) == 1
    assert capsys.readouterr().out == documented


def test_the_examples_show_each_kind_of_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_diff(str(EXAMPLES / "before.yaml"), str(EXAMPLES / "after.yaml"))
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert {line[0] for line in lines if line[:1] in "+-~"} == {"+", "-", "~"}
    assert any("renamed from" in line for line in lines)
    assert "settings:" in lines


# -- trees of files (include) -------------------------------------------------------------

TEAMS = Path(__file__).resolve().parent.parent / "examples" / "teams"


def test_two_trees_differ_in_exactly_the_policies_a_team_file_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(TEAMS, old)
    shutil.copytree(TEAMS, new)
    orders = new / "routes.d" / "orders.yaml"
    data = yaml.safe_load(orders.read_text())
    listed = route(data, "orders.v2.list")
    listed["roles"] = ["admin", "member"]
    listed["rate_limit"] = ["50/minute"]
    write(orders, data)

    assert run_diff(str(old / "routes.yaml"), str(old / "routes.yaml")) == 0
    capsys.readouterr()
    code = run_diff(str(old / "routes.yaml"), str(new / "routes.yaml"))
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0] == "routes: 0 added, 0 removed, 1 changed, 19 unchanged", lines
    assert re.sub(r"\s+", " ", lines[1]) == "~ orders.v2.list GET /api/v2/orders"
    assert detail(lines) == [
        "roles: admin, member, service -> admin, member",
        "rate limit: default (1000/minute) -> 50/minute",
    ]
    assert lines[-1] == "settings: no changes"


def test_a_tree_and_the_one_file_it_was_split_from_are_the_same_in_effect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    one_file = TEAMS.parent.parent / "routes.yaml"
    assert run_diff(str(one_file), str(TEAMS / "routes.yaml")) == 0
    assert capsys.readouterr().out.startswith("no changes: the same in effect (20 routes)")
