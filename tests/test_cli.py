"""The `gateway` command: check, schema, routes, explain, hash-key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway import cli
from gateway.config.schema import SCHEMA
from tests.configs import DIGEST, REFERENCE_EXAMPLE

REPO = Path(__file__).resolve().parent.parent

# The documented routes.yaml example, with a real digest in place of its placeholder.

# Public routes, so `explain` follows them all the way to the upstream.
ROUTES = """\
version: 1
rate_limits:
  default: [1000/minute]
upstreams:
  users:
    url: http://127.0.0.1:8081
  orders:
    url: http://127.0.0.1:8082/svc
routes:
  - name: users.get
    path: /api/v1/users/{user_id}
    methods: [GET]
    upstream: users
    upstream_path: /users/{user_id}
    auth: public
  - name: users.list
    path: /api/v1/users
    methods: [GET, POST]
    upstream: users
    upstream_path: /users
    auth: public
    rate_limit: [5/minute]
    rate_limit_key: ip
  - name: orders.delete
    path: /api/v1/orders/{order_id}
    methods: [DELETE]
    upstream: orders
    upstream_path: /orders/{order_id}
    auth: public
    rate_limit: []
"""

BROKEN = """\
version: 1
cors:
  allow_origins: ["*"]
  allow_credentials: true
upstreams:
  users:
    url: ftp://users.internal
    retires: 2
routes:
  - name: a
    path: /a
    methods: [GET]
    upstream: billing
    auth: public
    rate_limit: [lots]
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_CONFIG", "USERS_URL", "RATE_LIMIT_STORAGE"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "routes.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# --- check ----------------------------------------------------------------------------------


def test_check_valid_config_exits_0_with_a_one_line_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, ROUTES)
    code, out, _ = run(capsys, "check", "-c", path)
    assert code == 0
    assert out.splitlines() == [f"{path}: OK, 3 routes to 2 upstreams"]


def test_check_contract_example_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check", "-c", write(tmp_path, REFERENCE_EXAMPLE))
    assert code == 0
    assert out.strip().endswith("OK, 1 routes to 1 upstreams")


def test_check_invalid_config_exits_1_with_every_problem_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BROKEN)
    code, out, err = run(capsys, "check", "-c", path)
    assert code == 1
    lines = (out + err).splitlines()
    problem_lines = [
        line for line in lines if line.startswith(f"{path}:") and "problem" not in line
    ]
    assert [line.split(":")[1:3] for line in problem_lines] == [
        ["3", "18"],
        ["7", "10"],
        ["8", "5"],
        ["13", "15"],
        ["15", "18"],
    ]
    assert "did you mean 'retries'?" in problem_lines[2]


def test_check_reports_a_missing_file_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "absent.yaml")
    code, out, err = run(capsys, "check", "-c", path)
    assert code == 1
    assert f"{path}:1:1: cannot read the file" in out + err
    assert "Traceback" not in out + err


def test_check_finds_the_config_through_gateway_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ROUTES, "elsewhere.yaml")
    monkeypatch.setenv("GATEWAY_CONFIG", path)
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert out.startswith(f"{path}: OK")


def test_check_defaults_to_routes_yaml_in_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, ROUTES)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert out.startswith("routes.yaml: OK")


def test_check_flag_wins_over_gateway_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", write(tmp_path, BROKEN, "broken.yaml"))
    code, _, _ = run(capsys, "check", "-c", write(tmp_path, ROUTES))
    assert code == 0


def test_reference_routes_yaml_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check", "-c", str(REPO / "routes.yaml"))
    assert code == 0, out + err
    assert len(out.splitlines()) == 1


# --- schema ---------------------------------------------------------------------------------


def printed_schema(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema: dict[str, Any] = json.loads(out)
    return schema


def test_schema_prints_a_valid_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    schema = printed_schema(capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads(json.dumps(SCHEMA))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_contract_example_validates_against_the_printed_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    validator = jsonschema.Draft202012Validator(printed_schema(capsys))
    errors = [error.message for error in validator.iter_errors(yaml.safe_load(REFERENCE_EXAMPLE))]
    assert errors == []


def test_printed_schema_refuses_unknown_keys(capsys: pytest.CaptureFixture[str]) -> None:
    validator = jsonschema.Draft202012Validator(printed_schema(capsys))
    data = yaml.safe_load(REFERENCE_EXAMPLE)
    data["upstreams"]["users"]["retires"] = 2
    data["routes"][0]["rate_limt"] = ["1/second"]
    assert len(list(validator.iter_errors(data))) == 2


def test_published_schema_file_matches_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    published = REPO / "docs" / "routes.schema.json"
    assert json.loads(published.read_text()) == printed_schema(capsys)


# --- routes ---------------------------------------------------------------------------------


def test_routes_lists_every_route_with_its_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "routes", "-c", write(tmp_path, ROUTES))
    assert code == 0
    header, *rows = out.splitlines()
    for column in (
        "NAME",
        "METHODS",
        "PATH",
        "UPSTREAM",
        "UPSTREAM PATH",
        "AUTH",
        "ROLES",
        "RATE LIMIT",
        "VERSIONS",
        "FILE",
    ):
        assert column in header
    assert len(rows) == 3
    cells = [row.split() for row in rows]
    assert cells[0][:6] == [
        "users.get",
        "GET",
        "/api/v1/users/{user_id}",
        "users",
        "/users/{user_id}",
        "public",
    ]
    assert "default:" in rows[0] and "1000/minute" in rows[0]
    assert cells[1][:6] == ["users.list", "GET,POST", "/api/v1/users", "users", "/users", "public"]
    assert "5/minute per ip" in rows[1]
    assert cells[2][:5] == [
        "orders.delete",
        "DELETE",
        "/api/v1/orders/{order_id}",
        "orders",
        "/orders/{order_id}",
    ]
    assert "none" in rows[2]


def test_routes_columns_line_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "routes", "-c", write(tmp_path, ROUTES))
    header, *rows = out.splitlines()
    start = header.index("UPSTREAM PATH")
    for row, upstream_path in zip(
        rows, ["/users/{user_id}", "/users", "/orders/{order_id}"], strict=True
    ):
        assert row[start:].startswith(upstream_path)


def test_routes_shows_auth_and_roles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "routes", "-c", write(tmp_path, REFERENCE_EXAMPLE))
    assert code == 0
    row = out.splitlines()[1]
    assert "jwt,api_key" in row
    assert "admin,member,service" in row
    assert "100/minute" in row


def test_routes_shows_the_file_and_line_of_each_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = ROUTES.replace("routes:\n", "include: [teams/*.yaml]\nroutes:\n", 1)
    (tmp_path / "teams").mkdir()
    team = "# the billing team\nroutes:\n  - {name: bills, path: /bills, methods: [GET], "
    write(tmp_path, team + "upstream: orders, auth: public}\n", "teams/billing.yaml")
    code, out, _ = run(capsys, "routes", "-c", write(tmp_path, entry))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[-1] == "FILE"
    start = header.index("FILE")
    # Relative to the entry file's folder, with the line where the route starts.
    assert [row[start:] for row in rows] == [
        "routes.yaml:11",
        "routes.yaml:17",
        "routes.yaml:25",
        "teams/billing.yaml:3",
    ]


def test_routes_on_an_invalid_config_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "routes", "-c", write(tmp_path, BROKEN))
    assert code == 1
    assert "unknown key 'retires'" in out + err


# --- explain --------------------------------------------------------------------------------


def test_explain_a_matching_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, ROUTES)
    code, out, _ = run(capsys, "explain", "-c", path, "GET", "/api/v1/users/42?x=1")
    assert code == 0
    assert f"users.get ({path}:10:5)" in out
    assert "{'user_id': '42'}" in out
    assert "BodyLimit" in out and "forward" in out
    assert "GET http://127.0.0.1:8081/users/42?x=1" in out
    assert "X-Forwarded-For: 127.0.0.1" in out


def test_explain_builds_the_upstream_url_with_a_base_path_and_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, ROUTES)
    code, out, _ = run(capsys, "explain", "-c", path, "DELETE", "/api/v1/orders/a%20b")
    assert code == 0
    assert "DELETE http://127.0.0.1:8082/svc/orders/a%20b" in out


def test_explain_shows_the_headers_the_upstream_would_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, ROUTES)
    code, out, _ = run(
        capsys,
        "explain",
        "-c",
        path,
        "GET",
        "/api/v1/users/1",
        "-H",
        "X-User-Id: admin",
        "-H",
        "Accept: application/json",
    )
    assert code == 0
    assert "Accept: application/json" in out
    assert "X-User-Id" not in out


def test_explain_a_404(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "-c", write(tmp_path, ROUTES), "GET", "/api/v2/nope")
    assert code == 1
    assert "404 not_found" in out


def test_explain_a_405_lists_the_allowed_methods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "explain", "-c", write(tmp_path, ROUTES), "PUT", "/api/v1/users")
    assert code == 1
    assert "405 method_not_allowed" in out
    assert "Allow: GET, HEAD, POST" in out


@pytest.mark.parametrize(
    "target", ["/api/v1/users/%2e%2e", "/api/v1/users/a%2Fb", "/api/v1//users", "/api/v1/users;x"]
)
def test_explain_a_path_trick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    code, out, _ = run(capsys, "explain", "-c", write(tmp_path, ROUTES), "GET", target)
    assert code == 1
    assert "400 invalid_path" in out


def test_explain_a_builtin_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "-c", write(tmp_path, ROUTES), "GET", "/healthz")
    assert code == 1
    assert "built-in" in out


def test_explain_refuses_a_malformed_header_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, ROUTES)
    code, _, err = run(capsys, "explain", "-c", path, "GET", "/api/v1/users", "-H", "NoColon")
    assert code == 2
    assert "Name: value" in err


def test_explain_lowercase_method_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "explain", "-c", write(tmp_path, ROUTES), "get", "/api/v1/users")
    assert code == 0
    assert "users.list" in out


# --- hash-key -------------------------------------------------------------------------------


def test_hash_key_prints_the_sha256_hex_digest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "hash-key", "abc")
    assert code == 0
    assert out == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"


def test_hash_key_reads_stdin_when_no_key_is_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("demo-service-key\n"))
    code, out, _ = run(capsys, "hash-key")
    assert code == 0
    assert out.strip() == DIGEST


def test_hash_key_without_a_key_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "hash-key")
    assert code == 2
    assert "no key" in err


# --- the parser -----------------------------------------------------------------------------


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "usage" in err.lower()


def test_serve_refuses_an_invalid_config_before_binding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "serve", "-c", write(tmp_path, BROKEN), "--port", "1")
    assert code == 1
    assert "unknown key 'retires'" in out + err


# --- composed routes --------------------------------------------------------------------------

COMPOSED = (
    ROUTES
    + """\
  - name: overview
    path: /api/v1/users/{user_id}/overview
    methods: [GET]
    auth: public
    compose:
      timeout: 2
      parts:
        user: {upstream: users, path: "/users/{user_id}"}
        orders:
          upstream: orders
          path: "/orders?user_id={user_id}&limit={query.limit:-5}"
          required: false
"""
)


def test_routes_lists_a_composed_route_with_each_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "routes", "-c", write(tmp_path, COMPOSED))
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("overview "))
    assert "(compose)" in lines[at] and "2 parts within 2 s" in lines[at]
    assert lines[at + 1].split() == ["+", "user", "users", "/users/{user_id}"]
    assert lines[at + 2].split() == [
        "+",
        "orders",
        "(optional)",
        "orders",
        "/orders?user_id={user_id}&limit={query.limit:-5}",
    ]


def test_explain_shows_each_part_as_the_request_fills_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, COMPOSED)
    code, out, _ = run(
        capsys, "explain", "-c", path, "GET", "/api/v1/users/a%20b%3F/overview?limit=2%26x%3D1"
    )
    assert code == 0
    assert "-> compose" in out
    assert "part user (required): GET http://127.0.0.1:8081/users/a%20b%3F" in out
    assert (
        "part orders (optional): GET "
        "http://127.0.0.1:8082/svc/orders?user_id=a%20b%3F&limit=2%26x%3D1" in out
    )
    assert "Accept-Encoding: identity" in out
