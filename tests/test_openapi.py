"""`gateway openapi`: the OpenAPI 3.1 document of the public routes (gateway/openapi.py)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from gateway.cli import main
from gateway.config import ConfigError
from gateway.config.load import load_config, load_config_text
from gateway.config.model import Config
from gateway.openapi import openapi_document
from tests.configs import DIGEST

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ROOT / "routes.yaml"
CHECKED_IN = ROOT / "docs" / "openapi.json"
# Every variable the reference routes.yaml reads (with a default): the document is of
# the defaults, whatever the shell running the tests has set.
REFERENCE_VARIABLES = sorted(set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", ROUTES.read_text())))
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_CONFIG", *REFERENCE_VARIABLES):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def reference() -> dict[str, Any]:
    return openapi_document(load_config(str(ROUTES)))


def build(text: str) -> dict[str, Any]:
    return openapi_document(load_config_text(text, "routes.yaml", {}))


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def operation(document: dict[str, Any], operation_id: str) -> dict[str, Any]:
    found = [op for _, _, op in operations(document) if op["operationId"] == operation_id]
    assert len(found) == 1, f"{operation_id}: {len(found)} operations"
    return found[0]


def strings(value: Any) -> Iterator[str]:
    """Every key and string value of a JSON document, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = document
    for key in ref[2:].split("/"):
        node = node[key]
    assert isinstance(node, dict)
    return node


JWT = """\
auth:
  jwt:
    issuer: https://id.example.com
    audience: gateway
    algorithms: [RS256]
    jwks_url: https://id.example.com/.well-known/jwks.json
"""

NO_AUTH = """\
version: 1
gateway:
  public_url: ""
upstreams:
  users:
    url: http://127.0.0.1:8081
routes:
  - name: users.get
    path: /api/v1/users/{user_id}
    methods: [GET]
    upstream: users
    upstream_path: /users/{user_id}
    auth: public
  - name: users.write
    path: /api/v1/users/{user_id}
    methods: [PUT, PATCH]
    upstream: users
    upstream_path: /users/{user_id}
    auth: public
    rate_limit: []
"""


# -- validity and the checked-in copy ------------------------------------------------


def test_the_reference_document_is_valid_openapi_3_1(reference: dict[str, Any]) -> None:
    assert reference["openapi"] == "3.1.0"
    validate(reference)


def test_the_validator_refuses_a_broken_document(reference: dict[str, Any]) -> None:
    broken = copy.deepcopy(reference)
    del broken["paths"]["/api/v1/users/{user_id}"]["get"]["parameters"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_the_checked_in_document_is_what_gateway_openapi_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["openapi", "-c", str(ROUTES)]) == 0
    printed = capsys.readouterr().out
    unset = " ".join(f"-u {name}" for name in REFERENCE_VARIABLES)
    assert CHECKED_IN.read_text(encoding="utf-8") == printed, (
        "docs/openapi.json is stale; regenerate it with the variables routes.yaml reads "
        f"unset: env {unset} .venv/bin/gateway openapi -c routes.yaml > docs/openapi.json"
    )


def test_the_document_does_not_depend_on_the_order_of_the_routes(
    reference: dict[str, Any],
) -> None:
    config = load_config(str(ROUTES))
    reversed_routes = dataclasses.replace(config, routes=tuple(reversed(config.routes)))
    again = openapi_document(reversed_routes)
    assert json.dumps(again, indent=2) == json.dumps(reference, indent=2)
    assert list(reference["paths"]) == sorted(reference["paths"])


def test_info_and_servers(reference: dict[str, Any]) -> None:
    from gateway import __version__

    assert reference["info"]["title"] == "Gateway"
    assert reference["info"]["version"] == __version__
    assert reference["servers"] == [{"url": "http://127.0.0.1:8080"}]
    assert "servers" not in build(NO_AUTH), "no public_url: clients use the document's origin"


def test_servers_follow_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", "https://api.example.com/edge/")
    document = openapi_document(load_config(str(ROUTES)))
    assert document["servers"] == [{"url": "https://api.example.com/edge"}]


# -- security --------------------------------------------------------------------------


def test_security_schemes_of_the_reference(reference: dict[str, Any]) -> None:
    assert reference["components"]["securitySchemes"] == {
        "apiKeyAuth": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": reference["components"]["securitySchemes"]["apiKeyAuth"]["description"],
        },
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": reference["components"]["securitySchemes"]["bearerAuth"]["description"],
        },
    }


@pytest.mark.parametrize(
    ("operation_id", "security"),
    [
        ("auth.login", []),
        ("users.create", [{"bearerAuth": []}]),
        ("users.list", [{"bearerAuth": []}, {"apiKeyAuth": []}]),
        ("me.dashboard", [{"bearerAuth": []}]),
    ],
)
def test_each_operation_lists_the_credentials_its_route_accepts(
    reference: dict[str, Any], operation_id: str, security: list[dict[str, list[str]]]
) -> None:
    op = operation(reference, operation_id)
    assert op["security"] == security
    assert ("401" in op["responses"]) == bool(security)


def test_the_api_key_scheme_names_the_configured_header() -> None:
    document = build(
        f"""\
version: 1
auth:
  api_keys:
    header: X-Service-Key
    keys:
      - {{id: reporting, sha256: {DIGEST}}}
upstreams:
  users:
    url: http://127.0.0.1:8081
routes:
  - name: users.list
    path: /users
    methods: [GET]
    upstream: users
    auth: [api_key]
"""
    )
    schemes = document["components"]["securitySchemes"]
    assert list(schemes) == ["apiKeyAuth"]
    assert schemes["apiKeyAuth"]["name"] == "X-Service-Key"
    assert operation(document, "users.list")["security"] == [{"apiKeyAuth": []}]
    validate(document)


def test_a_config_without_auth_has_no_security_schemes() -> None:
    document = build(NO_AUTH)
    validate(document)
    assert "securitySchemes" not in document["components"]
    for _, _, op in operations(document):
        assert op["security"] == []
        assert "401" not in op["responses"]
    assert "Unauthorized" not in document["components"]["responses"]
    assert "WWW-Authenticate" not in document["components"]["headers"]


# -- roles and rate limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation_id", "roles", "rate_limit"),
    [
        ("auth.login", [], {"limits": ["5/minute"], "key": "ip"}),
        (
            "users.list",
            ["admin", "member", "service"],
            {"limits": ["1000/minute"], "key": "identity"},
        ),
        (
            "users.get",
            ["admin", "member", "service"],
            {"limits": ["100/minute"], "key": "identity"},
        ),
        ("users.write.delete", ["admin"], {"limits": ["1000/minute"], "key": "identity"}),
    ],
)
def test_roles_and_rate_limits_are_extensions(
    reference: dict[str, Any], operation_id: str, roles: list[str], rate_limit: dict[str, Any]
) -> None:
    op = operation(reference, operation_id)
    assert op["x-roles"] == roles
    assert op["x-rate-limit"] == rate_limit
    assert ("403" in op["responses"]) == bool(roles)


def test_rate_limits_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_USERS_GET", "7/second")
    document = openapi_document(load_config(str(ROUTES)))
    assert operation(document, "users.get")["x-rate-limit"]["limits"] == ["7/second"]


def test_a_limited_operation_documents_429_and_the_rate_limit_headers(
    reference: dict[str, Any],
) -> None:
    op = operation(reference, "auth.login")
    assert op["responses"]["429"] == {"$ref": "#/components/responses/RateLimited"}
    limited = reference["components"]["responses"]["RateLimited"]["headers"]
    assert {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(limited)
    assert {"X-RateLimit-Limit", "X-RateLimit-Reset"} <= set(op["responses"]["2XX"]["headers"])


def test_an_unlimited_public_route_has_no_429_and_no_limits() -> None:
    document = build(NO_AUTH)
    for operation_id in ("users.write.put", "users.write.patch"):
        op = operation(document, operation_id)
        assert op["x-rate-limit"] == {"limits": [], "key": "identity"}
        assert "429" not in op["responses"]
        assert "X-RateLimit-Limit" not in op["responses"]["2XX"]["headers"]


def test_a_guarded_route_without_limits_still_documents_429() -> None:
    # The brute-force guard (rate_limits.auth_failures) answers 429 on any route that
    # is not public, limited or not.
    document = build(
        f"""\
version: 1
{JWT}upstreams:
  users:
    url: http://127.0.0.1:8081
routes:
  - name: users.me
    path: /users/me
    methods: [GET]
    upstream: users
    auth: [jwt]
    rate_limit: []
"""
    )
    op = operation(document, "users.me")
    assert op["x-rate-limit"]["limits"] == []
    assert "429" in op["responses"]
    assert "403" not in op["responses"], "no roles: nothing the gateway refuses with 403"


# -- versions and deprecation ------------------------------------------------------------


def test_header_versions_are_a_header_parameter(reference: dict[str, Any]) -> None:
    op = reference["paths"]["/api/orders/{order_id}"]["get"]
    assert op["operationId"] == "orders.get"
    [header] = [p for p in op["parameters"] if p["in"] == "header"]
    assert header["name"] == "Accept-Version"
    assert header["required"] is False
    assert header["schema"] == {"type": "string", "enum": ["1", "2"], "default": "2"}
    assert header["x-deprecated-versions"] == {
        "1": {
            "since": "2026-01-01",
            "sunset": "2027-06-30",
            "successor": "/api/v2/orders/{order_id}",
        }
    }
    assert "deprecated" not in op, "the default version is current"
    assert op["responses"]["400"] == {"$ref": "#/components/responses/UnsupportedVersion"}
    assert {"Deprecation", "Sunset", "Link"} <= set(op["responses"]["2XX"]["headers"])


def test_a_deprecated_url_version_is_a_deprecated_operation(reference: dict[str, Any]) -> None:
    old = reference["paths"]["/api/v1/orders"]["get"]
    assert old["deprecated"] is True
    assert old["x-deprecation"] == {
        "since": "2026-01-01",
        "sunset": "2027-06-30",
        "successor": "/api/v2/orders",
    }
    assert {"Deprecation", "Sunset", "Link"} <= set(old["responses"]["2XX"]["headers"])
    assert old["responses"]["400"] == {"$ref": "#/components/responses/BadRequest"}
    current = reference["paths"]["/api/v2/orders"]["get"]
    assert "deprecated" not in current and "x-deprecation" not in current
    assert "Deprecation" not in current["responses"]["2XX"]["headers"]
    assert "parameters" not in current


def test_deprecation_date_times_keep_their_time() -> None:
    document = build(
        """\
version: 1
upstreams:
  orders:
    url: http://127.0.0.1:8082
routes:
  - name: orders.v1
    path: /v1/orders
    methods: [GET]
    upstream: orders
    auth: public
    deprecation: {since: "2026-01-01T12:30:00Z"}
"""
    )
    op = operation(document, "orders.v1")
    assert op["x-deprecation"] == {"since": "2026-01-01T12:30:00Z"}
    assert "Sunset" not in op["responses"]["2XX"]["headers"]


# -- composed routes -------------------------------------------------------------------


def test_a_composed_answer_is_an_object_of_its_parts(reference: dict[str, Any]) -> None:
    op = operation(reference, "me.dashboard")
    assert "2XX" not in op["responses"]
    ok = op["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["profile", "orders"]
    assert list(schema["properties"]) == ["profile", "orders", "_problems"]
    profile = schema["properties"]["profile"]
    assert profile["type"] == "object"
    assert list(profile["properties"]) == ["id", "name", "email", "role", "tenant_id"]
    orders = schema["properties"]["orders"]
    assert set(orders) == {"description"}, "any JSON, null included"
    assert "null" in orders["description"]
    assert schema["properties"]["_problems"]["additionalProperties"] == PROBLEM_REF
    assert "Gateway-Partial" in ok["headers"]
    assert op["x-compose"] == {
        "timeout": 2.5,
        "parts": [
            {
                "name": "profile",
                "required": True,
                "fields": ["id", "name", "email", "role", "tenant_id"],
            },
            {"name": "orders", "required": False},
        ],
    }
    assert "requestBody" not in op


def test_a_composed_answer_without_optional_parts_is_never_partial(
    reference: dict[str, Any],
) -> None:
    op = operation(reference, "users.overview")
    ok = op["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert list(schema["properties"]) == ["user", "orders"]
    assert schema["properties"]["user"] == {"description": "The part's JSON."}
    assert "Gateway-Partial" not in ok["headers"]
    assert "5XX" not in op["responses"], "a part's 5xx is answered 502"


def test_an_optional_part_with_fields_may_be_null() -> None:
    document = build(
        f"""\
version: 1
{JWT}upstreams:
  users:
    url: http://127.0.0.1:8081
routes:
  - name: me
    path: /me
    methods: [GET]
    auth: [jwt]
    compose:
      parts:
        tenant:
          upstream: users
          path: /tenants/{{identity.tenant_id}}
          required: false
          fields: [id]
"""
    )
    validate(document)
    op = operation(document, "me")
    tenant = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["tenant"]
    assert tenant["type"] == ["object", "null"]
    assert "403" in op["responses"], "a caller without tenant_id is refused with 403"


# -- problem responses -----------------------------------------------------------------


def test_every_error_references_one_problem_schema(reference: dict[str, Any]) -> None:
    assert list(reference["components"]["schemas"]) == ["Problem"]
    problem = reference["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "code", "request_id"} <= set(
        problem["properties"]
    )
    assert problem["additionalProperties"] is True
    used = set()
    for path, method, op in operations(reference):
        for status, response in op["responses"].items():
            if status.startswith("2") or status == "304":  # success or not modified
                continue
            assert set(response) == {"$ref"}, f"{method} {path} {status}"
            used.add(response["$ref"])
            body = resolve(reference, response["$ref"])
            assert body["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}
            assert "X-Request-ID" in body["headers"]
    assert used == {f"#/components/responses/{n}" for n in reference["components"]["responses"]}


@pytest.mark.parametrize(
    ("operation_id", "statuses"),
    [
        ("auth.login", {"400", "404", "405", "408", "413", "429", "500", "502", "503", "504"}),
        ("users.list", {"400", "401", "403", "404", "405", "429", "500", "502", "503", "504"}),
        ("orders.create", {"400", "401", "403", "408", "413", "429"}),
        ("me.dashboard", {"401", "403", "404", "429", "502", "503", "504"}),
    ],
)
def test_each_operation_lists_the_problems_the_gateway_can_answer(
    reference: dict[str, Any], operation_id: str, statuses: set[str]
) -> None:
    responses = operation(reference, operation_id)["responses"]
    assert statuses <= set(responses)
    assert "4XX" in responses, "the upstream's other 4xx, as problem+json"


def test_the_problem_responses_carry_their_headers(reference: dict[str, Any]) -> None:
    responses = reference["components"]["responses"]
    assert "WWW-Authenticate" in responses["Unauthorized"]["headers"]
    assert "Allow" in responses["MethodNotAllowed"]["headers"]
    assert "Retry-After" in responses["ServiceUnavailable"]["headers"]
    for response in responses.values():
        for header in response["headers"].values():
            resolve(reference, header["$ref"])


def test_only_body_methods_document_a_body_and_413(reference: dict[str, Any]) -> None:
    for _, method, op in operations(reference):
        has_body = method in ("post", "put", "patch")
        assert ("requestBody" in op) == has_body, op["operationId"]
        assert ("413" in op["responses"]) == has_body, op["operationId"]


# -- nothing about the upstreams -------------------------------------------------------


def _upstream_texts(config: Config) -> tuple[set[str], set[str]]:
    """(what may appear nowhere, even inside a string; what no string may equal)."""
    anywhere: set[str] = set()
    exact: set[str] = set()
    for upstream in config.upstreams.values():
        parts = urlsplit(upstream.url)
        anywhere |= {upstream.url, parts.netloc, f":{parts.port}"}
    for route in config.routes:
        if route.upstream_path:
            exact.add(route.upstream_path)
        for option in route.versions.options if route.versions else ():
            exact.add(option.upstream_path)
        for part in route.compose.parts if route.compose else ():
            exact.add(part.path)
    # A part's placeholders stand only in part paths.
    anywhere |= {"{identity.", "{query."}
    return anywhere, exact


def test_the_reference_document_reveals_no_upstream(reference: dict[str, Any]) -> None:
    config = load_config(str(ROUTES))
    anywhere, exact = _upstream_texts(config)
    assert "127.0.0.1:8081" in anywhere and "/v1/orders/{order_id}" in exact
    assert "/users/{identity.sub}" in exact
    texts = list(strings(reference))
    for text in texts:
        assert not [a for a in anywhere if a in text], text
        assert text not in exact, text
    assert "upstream" not in {key for key in texts if key.islower()}
    for _, _, op in operations(reference):
        for part in op.get("x-compose", {}).get("parts", []):
            assert set(part) <= {"name", "required", "fields"}


def test_upstream_hosts_from_the_environment_do_not_reach_the_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USERS_URL", "http://users-9f2c.internal:9101/base")
    monkeypatch.setenv("ORDERS_URL", "http://orders-9f2c.internal:9102")
    text = json.dumps(openapi_document(load_config(str(ROUTES))))
    for secret in ("users-9f2c", "orders-9f2c", "9101", "9102", "/base"):
        assert secret not in text


def test_distinctive_upstream_names_and_paths_do_not_reach_the_document() -> None:
    document = build(
        f"""\
version: 1
{JWT}upstreams:
  billing-backend-q7:
    url: http://10.1.2.3:7443/internal-prefix-q7
routes:
  - name: invoices.get
    path: /api/invoices/{{invoice_id}}
    methods: [GET, DELETE]
    upstream: billing-backend-q7
    upstream_path: /svc-q7/invoices/{{invoice_id}}
    auth: [jwt]
  - name: invoices.list
    path: /api/invoices
    methods: [GET]
    upstream: billing-backend-q7
    auth: [jwt]
    versions:
      default: "2"
      options:
        "1": {{upstream_path: /legacy-q7/invoices}}
        "2": {{upstream_path: /current-q7/invoices}}
  - name: invoices.summary
    path: /api/invoices/{{invoice_id}}/summary
    methods: [GET]
    auth: [jwt]
    compose:
      parts:
        invoice:
          upstream: billing-backend-q7
          path: /part-q7/invoices/{{invoice_id}}?for={{identity.sub}}
"""
    )
    validate(document)
    text = json.dumps(document)
    assert "q7" not in text
    assert "10.1.2.3" not in text and "7443" not in text
    assert "id.example.com" not in text, "the token issuer and key URL are not the client's"


# -- paths and their parameters --------------------------------------------------------


def test_a_segment_parameter_is_a_required_string(reference: dict[str, Any]) -> None:
    op = operation(reference, "users.get")
    assert "/api/v1/users/{user_id}" in reference["paths"]
    [parameter] = op["parameters"]
    assert parameter["name"] == "user_id"
    assert parameter["in"] == "path"
    assert parameter["required"] is True
    assert parameter["schema"] == {"type": "string", "minLength": 1}
    assert "x-multi-segment" not in parameter


REST_ROUTES = """\
version: 1
upstreams:
  files:
    url: http://127.0.0.1:8083
routes:
  - name: files.get
    path: /files/{rest:path}
    methods: [GET]
    upstream: files
    auth: public
  - name: files.meta
    path: /files/{file_id}
    methods: [GET]
    upstream: files
    upstream_path: /meta/{file_id}
    auth: public
  - name: files.put
    path: /files/{rest:path}
    methods: [PUT]
    upstream: files
    auth: public
  - name: folders.get
    path: /folders/{folder_id}/items
    methods: [GET]
    upstream: files
    auth: public
  - name: folders.post
    path: /folders/{parent}/items
    methods: [POST]
    upstream: files
    auth: public
"""


def test_a_path_parameter_may_hold_slashes() -> None:
    document = build(REST_ROUTES)
    validate(document)
    item = document["paths"]["/files/{file_id}"]
    assert set(item) == {"get", "put"}
    [parameter] = item["put"]["parameters"]
    assert parameter["name"] == "file_id", "the {name} route names the parameter"
    assert parameter["required"] is True
    assert parameter["x-multi-segment"] is True
    assert "/" in parameter["description"]


def test_a_segment_route_and_a_rest_route_on_one_openapi_path() -> None:
    # GET /files/{file_id} and GET /files/{rest:path} are one OpenAPI path: the
    # one-segment route is listed (the gateway sends one-segment paths to it), the
    # other is named under x-unlisted-operations.
    document = build(REST_ROUTES)
    get = document["paths"]["/files/{file_id}"]["get"]
    assert get["operationId"] == "files.meta"
    assert "x-multi-segment" not in get["parameters"][0]
    assert document["x-unlisted-operations"] == [
        {
            "operationId": "files.get",
            "method": "GET",
            "path": "/files/{rest:path}",
            "reason": "OpenAPI cannot tell it apart from GET /files/{file_id}",
        }
    ]
    assert "x-unlisted-operations" not in build(NO_AUTH)


def test_routes_that_differ_in_parameter_names_share_one_path() -> None:
    document = build(REST_ROUTES)
    item = document["paths"]["/folders/{folder_id}/items"]
    assert [p["name"] for p in item["post"]["parameters"]] == ["folder_id"]
    assert not any("{parent}" in path for path in document["paths"])


# -- operations ------------------------------------------------------------------------


def test_operation_ids_are_route_names_and_unique(reference: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(reference)]
    assert len(ids) == len(set(ids))
    assert {"users.list", "users.write.patch", "users.write.delete"} <= set(ids)
    item = reference["paths"]["/api/v1/users/{user_id}"]
    assert list(item) == ["get", "delete", "patch"]
    assert item["get"]["tags"] == ["users"]
    assert [t["name"] for t in reference["tags"]] == ["auth", "me", "orders", "users"]


def test_an_operation_id_never_takes_another_routes_name() -> None:
    document = build(
        """\
version: 1
upstreams:
  a:
    url: http://127.0.0.1:8081
routes:
  - name: a
    path: /a
    methods: [GET, POST]
    upstream: a
    auth: public
  - name: a.get
    path: /b
    methods: [GET]
    upstream: a
    auth: public
"""
    )
    validate(document)
    assert document["paths"]["/a"]["get"]["operationId"] == "a:get"
    assert document["paths"]["/a"]["post"]["operationId"] == "a.post"
    assert document["paths"]["/b"]["get"]["operationId"] == "a.get"


def test_head_is_implied_by_get_and_not_listed(reference: dict[str, Any]) -> None:
    assert not any(method == "head" for _, method, _ in operations(reference))
    assert "HEAD" in reference["info"]["description"]


def test_the_guide_regenerates_the_file_with_every_variable_unset() -> None:
    guide = (ROOT / "docs" / "openapi.md").read_text(encoding="utf-8")
    command = guide[guide.index("env -u") : guide.index("> docs/openapi.json")]
    assert sorted(re.findall(r"-u ([A-Z_][A-Z0-9_]*)", command)) == REFERENCE_VARIABLES


# --- served by the gateway at gateway.openapi_path ----------------------------------------

SERVED = """\
version: 1
gateway: {openapi_path: /openapi.json}
upstreams:
  users: {url: "http://users.internal"}
routes:
  - {name: users.get, path: "/api/users/{user_id}", methods: [GET], upstream: users,
     upstream_path: "/users/{user_id}", auth: public}
"""


def test_the_gateway_serves_its_document_at_openapi_path(gateway_client: Any) -> None:
    client = gateway_client(SERVED)
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    document = response.get_json()
    assert document == openapi_document(load_config_text(SERVED, "routes.yaml", {}))
    validate(document)
    assert "users.internal" not in response.get_data(as_text=True)


def test_the_served_document_answers_if_none_match_with_304(gateway_client: Any) -> None:
    client = gateway_client(SERVED)
    first = client.get("/openapi.json")
    again = client.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    head = client.head("/openapi.json")
    assert head.status_code == 200 and head.get_data() == b""
    assert client.post("/openapi.json").status_code == 405


def test_without_openapi_path_no_document_is_served(gateway_client: Any) -> None:
    client = gateway_client(SERVED.replace("gateway: {openapi_path: /openapi.json}\n", ""))
    assert client.get("/openapi.json").status_code == 404


def test_a_route_on_openapi_path_is_refused() -> None:
    text = SERVED.replace('path: "/api/users/{user_id}"', "path: /openapi.json").replace(
        'upstream_path: "/users/{user_id}"', "upstream_path: /x"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "routes.yaml", {})
    assert [p.message for p in caught.value.problems] == [
        "route 'users.get': /openapi.json is the gateway's own endpoint and cannot be routed"
    ]
