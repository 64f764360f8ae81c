"""Validation of routes.yaml: every problem as FILE:LINE:COL: message, and the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from textwrap import dedent, indent

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.config import Config, ConfigError, load_config, load_config_text, resolve_config_path
from gateway.config.model import (
    ApiKey,
    ApiKeySettings,
    CorsSettings,
    GatewaySettings,
    JwtSettings,
    Location,
    RateLimit,
    RateLimitSettings,
    Route,
    Upstream,
)
from tests.configs import DIGEST, REFERENCE_EXAMPLE

FILE = "routes.yaml"


# A minimal valid file; line 6 is the first route item.
MINIMAL = """\
version: 1
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


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return load_config_text(dedent(text), FILE, env or {})


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    return [str(p) for p in caught.value.problems]


def with_routes(routes: str, head: str = "") -> str:
    """A file with one `users` upstream; `routes` starts on line 6 (+ lines of head)."""
    return (
        "version: 1\n"
        + head
        + "upstreams:\n  users:\n    url: http://127.0.0.1:8081\nroutes:\n"
        + indent(dedent(routes), "  ")
    )


# --- the valid model ------------------------------------------------------------------


def test_contract_example_loads_into_the_model() -> None:
    config = load(REFERENCE_EXAMPLE)
    assert config.source == FILE
    assert config.gateway == GatewaySettings(
        public_url="", trusted_proxies=0, max_body_bytes=1048576
    )
    assert config.cors.allow_origins == ("http://localhost:3000",)
    assert config.cors.allow_credentials is True
    assert config.cors.allow_methods == ("GET", "POST", "PUT", "PATCH", "DELETE")
    assert "X-API-Key" in config.cors.allow_headers
    assert config.cors.max_age == 600
    assert config.auth.jwt == JwtSettings(
        issuer="http://127.0.0.1:8081",
        audience="gateway",
        algorithms=("RS256",),
        jwks_url="http://127.0.0.1:8081/.well-known/jwks.json",
        leeway=30,
        roles_claim="role",
    )
    assert config.auth.api_keys is not None
    assert config.auth.api_keys.header == "X-API-Key"
    assert config.auth.api_keys.keys == (ApiKey("reporting", DIGEST, ("service",)),)
    assert config.rate_limits.storage == "memory://"
    assert config.rate_limits.strategy == "moving-window"
    assert config.rate_limits.on_storage_error == "allow"
    assert config.rate_limits.default == (RateLimit("1000/minute", 1000, 60),)
    assert dict(config.upstreams) == {
        "users": Upstream(
            name="users",
            url="http://127.0.0.1:8081",
            connect_timeout=1.0,
            timeout=10.0,
            retries=1,
        )
    }
    (route,) = config.routes
    assert route == Route(
        name="users.get",
        path="/api/v1/users/{user_id}",
        methods=("GET",),
        upstream="users",
        upstream_path="/users/{user_id}",
        auth=("jwt", "api_key"),
        roles=("admin", "member", "service"),
        rate_limit=(RateLimit("100/minute", 100, 60),),
        rate_limit_key="identity",
    )
    assert route.location == Location(FILE, 37, 5)
    assert not route.is_public
    assert config.summary() == "routes.yaml: OK, 1 routes to 1 upstreams"


def test_environment_reaches_the_model() -> None:
    env = {"USERS_URL": "http://users.internal:9000", "RATE_LIMIT_STORAGE": "redis://r:6379/0"}
    config = load(REFERENCE_EXAMPLE, env)
    assert config.upstreams["users"].url == "http://users.internal:9000"
    assert config.auth.jwt is not None
    assert config.auth.jwt.jwks_url == "http://users.internal:9000/.well-known/jwks.json"
    assert config.rate_limits.storage == "redis://r:6379/0"


def test_the_model_is_frozen() -> None:
    config = load(REFERENCE_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routes = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routes[0].path = "/other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.upstreams["users"].url = "http://evil"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gateway.trusted_proxies = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.upstreams["other"] = config.upstreams["users"]  # type: ignore[index]
    assert isinstance(config.routes, tuple)
    assert isinstance(config.routes[0].methods, tuple)


def test_every_model_class_is_a_frozen_dataclass() -> None:
    from gateway.config import model

    classes = [
        obj
        for obj in vars(model).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == model.__name__
    ]
    assert len(classes) >= 10
    for cls in classes:
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, cls.__name__


def test_defaults_fill_what_the_file_leaves_out() -> None:
    config = load(MINIMAL)
    assert config.gateway == GatewaySettings()
    assert config.cors == CorsSettings()
    assert config.auth.jwt is None and config.auth.api_keys is None
    assert config.rate_limits == RateLimitSettings()
    assert config.rate_limits.auth_failures == (RateLimit("10/minute", 10, 60),)
    assert config.upstreams["users"] == Upstream("users", "http://127.0.0.1:8081")
    route = config.routes[0]
    assert route.upstream_path == "/users/{id}"
    assert route.is_public and route.auth == ()
    assert route.rate_limit is None  # the default limits apply
    assert route.rate_limit_key == "identity"


def test_empty_rate_limit_list_means_not_limited() -> None:
    config = load(MINIMAL + "    rate_limit: []\n")
    assert config.routes[0].rate_limit == ()


def test_trailing_slashes_of_urls_are_dropped() -> None:
    text = MINIMAL.replace("http://127.0.0.1:8081", "http://127.0.0.1:8081/base/")
    text = "gateway:\n  public_url: https://api.example.com/\n" + text
    config = load(text)
    assert config.upstreams["users"].url == "http://127.0.0.1:8081/base"
    assert config.gateway.public_url == "https://api.example.com"


def test_plain_reference_gives_typed_numbers() -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8081\n", "    url: http://u\n    retries: ${R:-3}\n"
    )
    assert load(text).upstreams["users"].retries == 3


def test_quoted_reference_for_a_number_is_a_type_problem() -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8081\n", "    url: http://u\n    retries: '${R:-3}'\n"
    )
    assert problems(text) == [
        "routes.yaml:5:5: upstreams.users.retries: '3' is not of type 'integer'"
    ]


def test_a_method_listed_twice_in_one_route_is_reported() -> None:
    text = with_routes(
        """\
          - name: a
            path: /a
            methods: [GET, GET]
            upstream: users
            auth: public
        """
    )
    assert problems(text) == ["routes.yaml:8:14: route 'a': method GET is listed twice"]


# --- unknown keys -----------------------------------------------------------------------


def test_unknown_key_suggests_the_close_match() -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8081\n", "    url: http://u\n    retires: 2\n"
    )
    assert problems(text) == [
        "routes.yaml:5:5: unknown key 'retires' in upstreams.users; did you mean 'retries'?"
    ]


def test_unknown_key_in_a_route_suggests_the_close_match() -> None:
    assert problems(MINIMAL + "    rate_limt: [5/minute]\n") == [
        "routes.yaml:11:5: unknown key 'rate_limt' in routes[0]; did you mean 'rate_limit'?"
    ]


def test_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    assert problems("zzz: 1\n" + MINIMAL) == [
        "routes.yaml:1:1: unknown key 'zzz' in the top level; allowed: version, gateway, "
        "cors, auth, rate_limits, cache, tracing, upstreams, routes, include"
    ]


def test_unknown_nested_key_points_at_the_key() -> None:
    text = "cors:\n  allow_origin: [http://a.example]\n" + MINIMAL
    assert problems(text) == [
        "routes.yaml:2:3: unknown key 'allow_origin' in cors; did you mean 'allow_origins'?"
    ]


def test_missing_required_key_is_reported() -> None:
    text = MINIMAL.replace("    auth: public\n", "")
    assert problems(text) == ["routes.yaml:6:5: routes[0]: missing required key 'auth'"]


def test_wrong_type_points_at_the_key() -> None:
    text = MINIMAL.replace("    auth: public\n", "    auth: public\n    roles: admin\n")
    assert "routes.yaml:11:5: routes[0].roles: 'admin' is not of type 'array'" in problems(text)


def test_value_outside_an_enum_lists_the_options() -> None:
    text = MINIMAL + "    rate_limit_key: user\n"
    assert problems(text) == [
        "routes.yaml:11:21: routes[0].rate_limit_key: 'user' is not one of: identity, ip"
    ]


def test_auth_that_is_neither_public_nor_a_list_is_explained() -> None:
    text = MINIMAL.replace("auth: public", "auth: anonymous")
    assert problems(text) == [
        "routes.yaml:10:11: routes[0].auth: must be `public` or a list of `jwt` and/or `api_key`"
    ]


def test_unsupported_version_is_a_problem() -> None:
    assert problems(MINIMAL.replace("version: 1", "version: 2")) == [
        "routes.yaml:1:10: version: 2 is not one of: 1"
    ]


# --- upstreams --------------------------------------------------------------------------


def test_undefined_upstream_suggests_the_close_match() -> None:
    text = MINIMAL.replace("upstream: users", "upstream: user")
    assert problems(text) == [
        "routes.yaml:9:15: route 'users.get': upstream 'user' is not defined in upstreams; "
        "did you mean 'users'?"
    ]


def test_undefined_upstream_without_a_close_match_lists_the_defined_ones() -> None:
    text = MINIMAL.replace("upstream: users", "upstream: billing")
    assert problems(text) == [
        "routes.yaml:9:15: route 'users.get': upstream 'billing' is not defined in upstreams; "
        "defined: users"
    ]


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:8081", "127.0.0.1:8081", "file:///etc/passwd", "http://", "users"],
)
def test_upstream_url_must_be_http_or_https(url: str) -> None:
    text = MINIMAL.replace("http://127.0.0.1:8081", url)
    assert problems(text) == [
        f"routes.yaml:4:10: upstream 'users' url {url!r} must be an http:// or https:// "
        "URL with a host"
    ]


def test_upstream_url_with_credentials_or_query_is_refused() -> None:
    text = MINIMAL.replace("http://127.0.0.1:8081", "http://user:pw@127.0.0.1:8081")
    (line,) = problems(text)
    assert line.startswith("routes.yaml:4:10: ")
    assert "must not carry a query, fragment or credentials" in line


def test_upstream_url_with_a_bad_port_is_refused() -> None:
    text = MINIMAL.replace("http://127.0.0.1:8081", "http://127.0.0.1:99999")
    assert problems(text) == [
        "routes.yaml:4:10: upstream 'users' url 'http://127.0.0.1:99999' has an invalid port"
    ]


def test_https_upstream_with_a_base_path_is_accepted() -> None:
    text = MINIMAL.replace("http://127.0.0.1:8081", "https://users.internal/api")
    assert load(text).upstreams["users"].url == "https://users.internal/api"


def test_retries_above_the_maximum_are_refused() -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8081\n", "    url: http://u\n    retries: 9\n"
    )
    assert problems(text) == [
        "routes.yaml:5:14: upstreams.users.retries: 9 is greater than the maximum of 5"
    ]


# --- large tables -----------------------------------------------------------------------


def test_a_value_repeated_across_routes_is_reported_at_every_route() -> None:
    # The schema check remembers values it found valid; a bad one is judged each time.
    text = with_routes(
        """\
        - {name: a, path: /a, methods: [GET], upstream: users, auth: public}
        - {name: b, path: /b, methods: [FETCH], upstream: users, auth: public}
        - {name: c, path: /c, methods: [GET], upstream: users, auth: public}
        - {name: d, path: /d, methods: [FETCH], upstream: users, auth: public}
        """
    )
    assert problems(text) == [
        "routes.yaml:7:35: routes[1].methods[0]: 'FETCH' is not one of: "
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        "routes.yaml:9:35: routes[3].methods[0]: 'FETCH' is not one of: "
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
    ]


def test_ten_thousand_routes_with_every_policy_load() -> None:
    # More than 100,000 values, written out rather than shared through aliases.
    head = dedent(
        """\
        auth:
          jwt: {issuer: i, audience: a, algorithms: [HS256], secret: %s}
        """
        % ("s" * 32)
    )
    route = (
        "- name: r{i}\n"
        "  path: /api/v1/svc{i}/items/{{item_id}}\n"
        "  methods: [GET, POST]\n"
        "  upstream: users\n"
        "  upstream_path: /items/{{item_id}}\n"
        "  auth: [jwt]\n"
        "  roles: [admin, member]\n"
        "  rate_limit: [10/second, 1000/minute]\n"
        "  rate_limit_key: ip\n"
        "  rate_limit_bucket: svc{i}\n"
        "  cors: {{allow_origins: ['https://app.example.com'], max_age: 60}}\n"
        "  deprecation: {{since: 2026-01-01, sunset: 2027-06-30, successor: /api/v2/x}}\n"
    )
    text = with_routes("".join(route.format(i=i) for i in range(10_000)), head)
    config = load(text)
    assert len(config.routes) == 10_000
    last = config.routes[-1]
    assert last.roles == ("admin", "member")
    assert last.rate_limit == (RateLimit("10/second", 10, 1), RateLimit("1000/minute", 1000, 60))
    assert last.cors is not None and last.cors.max_age == 60
    assert last.location == Location(FILE, 6 + 9_999 * 12 + 2, 5)


# --- collisions -------------------------------------------------------------------------


def test_same_method_and_path_twice_is_reported_on_the_second() -> None:
    text = with_routes(
        """\
          - name: a
            path: /users/{id}
            methods: [GET]
            upstream: users
            auth: public
          - name: b
            path: /users/{id}
            methods: [GET]
            upstream: users
            auth: public
        """
    )
    assert problems(text) == [
        "routes.yaml:12:11: route 'b': GET /users/{id} is the same method and path as "
        "route 'a' (line 6)"
    ]


def test_same_path_with_different_parameter_names_is_the_same_path() -> None:
    text = with_routes(
        """\
          - name: a
            path: /users/{id}
            methods: [GET, POST]
            upstream: users
            auth: public
          - name: b
            path: /users/{user_id}
            methods: [GET, PUT]
            upstream: users
            auth: public
        """
    )
    assert problems(text) == [
        "routes.yaml:12:11: route 'b': GET /users/{user_id} is the same method and path as "
        "route 'a' (line 6)"
    ]


def test_explicit_head_duplicates_the_implicit_head_of_a_get_route() -> None:
    text = with_routes(
        """\
          - name: a
            path: /users
            methods: [GET]
            upstream: users
            auth: public
          - name: b
            path: /users
            methods: [HEAD]
            upstream: users
            auth: public
        """
    )
    assert problems(text) == [
        "routes.yaml:12:11: route 'b': HEAD /users is the same method and path as "
        "route 'a' (line 6)"
    ]


def test_same_path_with_different_methods_is_fine() -> None:
    text = with_routes(
        """\
          - name: list
            path: /users
            methods: [GET]
            upstream: users
            auth: public
          - name: create
            path: /users
            methods: [POST]
            upstream: users
            auth: public
        """
    )
    assert [r.name for r in load(text).routes] == ["list", "create"]


def test_segment_and_path_parameter_siblings_are_both_reachable() -> None:
    # /files/readme reaches `one`, /files/a/b reaches `nested`: neither hides the other.
    text = with_routes(
        """\
          - name: one
            path: /files/{name}
            methods: [GET]
            upstream: users
            auth: public
          - name: nested
            path: /files/{rest:path}
            methods: [GET]
            upstream: users
            auth: public
        """
    )
    assert [r.name for r in load(text).routes] == ["one", "nested"]


def test_route_order_does_not_make_a_literal_route_unreachable() -> None:
    text = with_routes(
        """\
          - name: by_id
            path: /users/{id}
            methods: [GET]
            upstream: users
            auth: public
          - name: me
            path: /users/me
            methods: [GET]
            upstream: users
            auth: public
        """
    )
    assert len(load(text).routes) == 2


def test_a_literal_that_looks_like_a_placeholder_does_not_shadow_the_parameter_route() -> None:
    # /users/42 reaches by_id whatever the literal sibling is called.
    text = with_routes(
        """\
          - name: special
            path: /users/x-id
            methods: [GET]
            upstream: users
            auth: public
          - name: by_id
            path: /users/{id}
            methods: [GET]
            upstream: users
            auth: public
        """
    )
    assert len(load(text).routes) == 2


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_a_route_on_a_gateway_endpoint_is_refused(path: str) -> None:
    text = MINIMAL.replace("path: /users/{id}", f"path: {path}")
    (line,) = problems(text)
    assert line.startswith(f"routes.yaml:7:11: route 'users.get': {path} ")


def test_route_name_used_twice_is_reported() -> None:
    text = with_routes(
        """\
          - name: a
            path: /a
            methods: [GET]
            upstream: users
            auth: public
          - name: a
            path: /b
            methods: [GET]
            upstream: users
            auth: public
        """
    )
    assert problems(text) == ["routes.yaml:11:11: route name 'a' is used twice (first at line 6)"]


# --- rate limits ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["lots", "100/fortnight", "100", "/minute", "100 per"])
def test_rate_limit_that_does_not_parse_is_reported_at_its_item(limit: str) -> None:
    text = MINIMAL + f"    rate_limit: [1/second, '{limit}']\n"
    assert problems(text) == [
        f"routes.yaml:11:28: rate limit {limit!r} does not parse; write N/second, N/minute, "
        "N/hour or N/day (e.g. 100/minute)"
    ]


def test_default_rate_limit_that_does_not_parse_is_reported() -> None:
    text = "rate_limits:\n  default:\n    - 1000/minute\n    - soon\n" + MINIMAL
    (line,) = problems(text)
    assert line.startswith("routes.yaml:4:7: rate limit 'soon' does not parse")


def test_rate_limit_of_zero_is_refused() -> None:
    text = MINIMAL + "    rate_limit: [0/minute]\n"
    assert problems(text) == ["routes.yaml:11:18: rate limit '0/minute' must allow at least 1"]


def test_two_limits_in_one_item_are_refused() -> None:
    text = MINIMAL + "    rate_limit: ['10/second;100/minute']\n"
    assert problems(text) == [
        "routes.yaml:11:18: rate limit '10/second;100/minute': write one limit per list item"
    ]


@pytest.mark.parametrize(
    ("text", "amount", "seconds"),
    [
        ("5/second", 5, 1),
        ("100/minute", 100, 60),
        ("1000/hour", 1000, 3600),
        ("10/2 minutes", 10, 120),
    ],
)
def test_rate_limits_parse_into_amount_and_period(text: str, amount: int, seconds: int) -> None:
    config = load(MINIMAL + f"    rate_limit: ['{text}']\n")
    assert config.routes[0].rate_limit == (RateLimit(text, amount, seconds),)


def test_unknown_rate_limit_storage_is_refused() -> None:
    text = "rate_limits:\n  storage: postgres://db/x\n" + MINIMAL
    assert problems(text) == [
        "routes.yaml:2:12: rate_limits.storage 'postgres://db/x': use memory:// or "
        "redis://host:port/db"
    ]


# --- cors -------------------------------------------------------------------------------


def test_wildcard_origin_with_credentials_is_refused() -> None:
    text = 'cors:\n  allow_origins: ["*"]\n  allow_credentials: true\n' + MINIMAL
    assert problems(text) == [
        "routes.yaml:2:18: cors: '*' in allow_origins cannot be combined with "
        "allow_credentials: true (browsers refuse it; list the origins)"
    ]


def test_wildcard_origin_without_credentials_is_accepted() -> None:
    text = 'cors:\n  allow_origins: ["*"]\n  allow_credentials: false\n' + MINIMAL
    assert load(text).cors.allow_origins == ("*",)


@pytest.mark.parametrize(
    "origin", ["localhost:3000", "http://a.example/", "http://a.example/app", "null"]
)
def test_origin_must_be_scheme_host_and_port(origin: str) -> None:
    text = f"cors:\n  allow_origins:\n    - http://ok.example\n    - '{origin}'\n" + MINIMAL
    assert problems(text) == [
        f"routes.yaml:4:7: cors origin {origin!r} must be scheme://host[:port], with no "
        "path or trailing slash"
    ]


# --- auth -------------------------------------------------------------------------------


def jwt_file(body: str) -> str:
    """auth.jwt on lines 3.., followed by MINIMAL."""
    return "auth:\n  jwt:\n" + indent(dedent(body), "    ") + MINIMAL.replace("version: 1\n", "", 1)


def test_jwt_without_a_key_source_is_refused() -> None:
    text = jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [RS256]
        """
    )
    assert problems("version: 1\n" + text) == [
        "routes.yaml:3:3: auth.jwt needs a key source: one of jwks_url, public_key_file, secret"
    ]


def test_jwt_with_two_key_sources_is_refused_at_the_second() -> None:
    text = jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [RS256]
            jwks_url: http://issuer/jwks.json
            public_key_file: key.pem
        """
    )
    found = problems("version: 1\n" + text)
    assert (
        "routes.yaml:8:5: auth.jwt has two key sources (jwks_url and public_key_file); keep one"
        in found
    )


def test_hs_secret_under_32_bytes_is_refused() -> None:
    text = jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [HS256]
            secret: ${JWT_SECRET}
        """
    )
    assert problems("version: 1\n" + text, {"JWT_SECRET": "s" * 31}) == [
        "routes.yaml:7:13: auth.jwt.secret must be at least 32 bytes (it has 31)"
    ]


def test_hs_secret_counts_bytes_not_characters() -> None:
    text = jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [HS256]
            secret: ${JWT_SECRET}
        """
    )
    # 16 two-byte characters: 32 bytes.
    config = load("version: 1\n" + text, {"JWT_SECRET": "é" * 16})
    assert config.auth.jwt is not None and config.auth.jwt.secret == "é" * 16


def test_hs_algorithm_with_a_public_key_source_is_refused() -> None:
    text = jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [HS256]
            jwks_url: http://issuer/jwks.json
        """
    )
    assert problems("version: 1\n" + text) == [
        "routes.yaml:6:17: auth.jwt: HS* algorithms need `secret`"
    ]


def test_public_key_file_must_exist_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(rsa_public_pem())
    text = "version: 1\n" + jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [RS256]
            public_key_file: key.pem
        """
    )
    config_file = tmp_path / "routes.yaml"
    config_file.write_text(text)
    config = load_config(str(config_file), {})
    assert config.auth.jwt is not None
    assert config.auth.jwt.public_key_file == str(tmp_path / "key.pem")
    config_file.write_text(text.replace("key.pem", "missing.pem"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_file), {})
    assert [str(p) for p in caught.value.problems] == [
        f"{config_file}:7:22: auth.jwt.public_key_file 'missing.pem' does not exist"
    ]


def rsa_public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def test_public_key_file_that_is_no_key_or_the_wrong_kind_is_a_problem(tmp_path: Path) -> None:
    config_file = tmp_path / "routes.yaml"
    text = "version: 1\n" + jwt_file(
        """\
            issuer: http://issuer
            audience: gateway
            algorithms: [ES256]
            public_key_file: key.pem
        """
    )
    config_file.write_text(text)
    (tmp_path / "key.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_file), {})
    (problem,) = caught.value.problems
    assert "is not a PEM public key or certificate" in problem.message
    (tmp_path / "key.pem").write_bytes(rsa_public_pem())
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_file), {})
    (problem,) = caught.value.problems
    assert problem.message.endswith("holds a key that cannot verify ES256")


def test_route_using_jwt_needs_auth_jwt() -> None:
    text = MINIMAL.replace("auth: public", "auth: [jwt]")
    assert problems(text) == [
        "routes.yaml:10:11: route 'users.get': uses jwt, but auth.jwt is not configured"
    ]


def test_roles_on_a_public_route_are_refused_at_the_roles_key() -> None:
    assert problems(MINIMAL + "    roles: [admin]\n") == [
        "routes.yaml:11:5: route 'users.get': a public route cannot require roles"
    ]


def test_api_key_digest_must_be_64_hex_characters() -> None:
    text = "auth:\n  api_keys:\n    keys:\n      - {id: a, sha256: abc123}\n" + MINIMAL.replace(
        "version: 1\n", ""
    )
    assert problems("version: 1\n" + text) == [
        "routes.yaml:5:25: auth.api_keys.keys[0].sha256: must be 64 hex characters "
        "(a SHA-256 digest)"
    ]


# --- path templates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("users", "path template 'users' must start with '/'"),
        ("/users//{id}", "path template '/users//{id}' has an empty segment"),
        ("/users/", "path template '/users/' has an empty segment"),
        (
            "/users/{id:int}",
            "path template '/users/{id:int}': unknown parameter type 'int' "
            "(only {name} and {name:path})",
        ),
        (
            "/files/{rest:path}/meta",
            "path template '/files/{rest:path}/meta': {rest:path} must be the last segment",
        ),
        ("/users/{id}/{id}", "path template '/users/{id}/{id}' repeats parameter 'id'"),
        (
            "/users/user-{id}",
            "path template '/users/user-{id}': 'user-{id}' is not a parameter; write "
            "{name} or {name:path}, alone in its segment",
        ),
        ("/users/{1st}", None),
        ("/a/../b", "path template '/a/../b': segment '..' is not a plain path segment"),
        ("/a b", "path template '/a b': segment 'a b' is not a plain path segment"),
        ("/a%2Fb", "path template '/a%2Fb': segment 'a%2Fb' is not a plain path segment"),
        ("/a;b", "path template '/a;b': segment 'a;b' is not a plain path segment"),
    ],
)
def test_bad_path_template_is_reported_at_the_path_value(
    template: str, message: str | None
) -> None:
    text = MINIMAL.replace("path: /users/{id}", f"path: '{template}'")
    (line,) = problems(text)
    assert line.startswith("routes.yaml:7:11: route 'users.get': path template ")
    if message is not None:
        assert line == f"routes.yaml:7:11: route 'users.get': {message}"


def test_bad_upstream_path_template_is_reported_at_its_value() -> None:
    text = MINIMAL + "    upstream_path: /u/{id\n"
    (line,) = problems(text)
    assert line.startswith("routes.yaml:11:20: route 'users.get': path template '/u/{id'")


def test_upstream_path_may_only_use_parameters_of_the_path() -> None:
    text = MINIMAL + "    upstream_path: /u/{id}/{tenant}\n"
    assert problems(text) == [
        "routes.yaml:11:20: route 'users.get': upstream_path uses {tenant}, which path "
        "does not define"
    ]


def test_parameter_kind_must_agree_between_path_and_upstream_path() -> None:
    text = MINIMAL + "    upstream_path: /u/{id:path}\n"
    assert problems(text) == [
        "routes.yaml:11:20: route 'users.get': {id} is a different parameter type in path "
        "and upstream_path"
    ]


# --- YAML-level problems reach the same report ------------------------------------------


def test_malformed_yaml_is_reported_with_its_position() -> None:
    text = MINIMAL.replace("    methods: [GET]\n", "    methods: [GET\n")
    (line,) = problems(text)
    assert line.startswith("routes.yaml:9:13: malformed YAML: ")


def test_python_tag_is_reported_and_not_constructed() -> None:
    text = MINIMAL.replace("auth: public", "auth: !!python/name:os.system")
    assert problems(text) == [
        "routes.yaml:10:11: tag 'tag:yaml.org,2002:python/name:os.system' "
        "is not allowed (plain YAML only)"
    ]


def test_duplicate_route_key_is_reported() -> None:
    assert problems(MINIMAL + "    auth: [jwt]\n") == [
        "routes.yaml:11:5: duplicate key 'auth' (first at line 10)"
    ]


def test_unset_variable_is_reported_by_name() -> None:
    text = MINIMAL.replace("http://127.0.0.1:8081", "${USERS_URL}")
    assert problems(text) == [
        "routes.yaml:4:10: environment variable USERS_URL is not set and has no default"
    ]


# --- all problems together --------------------------------------------------------------


FIVE_PROBLEMS = """\
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


def test_all_problems_are_reported_together_sorted_by_line() -> None:
    found = problems(FIVE_PROBLEMS)
    assert len(found) == 5
    assert [line.split(":")[1:3] for line in found] == [
        ["3", "18"],
        ["7", "10"],
        ["8", "5"],
        ["13", "15"],
        ["15", "18"],
    ]
    assert "'*' in allow_origins" in found[0]
    assert "must be an http:// or https:// URL" in found[1]
    assert "unknown key 'retires'" in found[2]
    assert "upstream 'billing' is not defined" in found[3]
    assert "rate limit 'lots' does not parse" in found[4]


def test_yaml_level_and_schema_level_problems_are_reported_together() -> None:
    # A well-formed file with an unset variable and a duplicate key is still checked in
    # full: one round of fixes, not one round per kind of problem.
    text = (
        "version: 1\n"
        "gateway:\n"
        "  public_url: ${PUBLIC_URL}\n"
        "upstreams:\n"
        "  users:\n"
        "    url: http://127.0.0.1:8081\n"
        "    retires: 2\n"
        "    timeout: 1\n"
        "    timeout: 2\n"
        "routes: []\n"
    )
    assert problems(text) == [
        "routes.yaml:3:15: environment variable PUBLIC_URL is not set and has no default",
        "routes.yaml:7:5: unknown key 'retires' in upstreams.users; did you mean 'retries'?",
        "routes.yaml:9:5: duplicate key 'timeout' (first at line 8)",
    ]


def test_config_error_message_lists_every_problem_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load(FIVE_PROBLEMS)
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


def test_problems_in_a_non_dict_document_do_not_crash_the_checker() -> None:
    assert problems("- just\n- a list\n") == [
        "routes.yaml:1:1: the top level: ['just', 'a list'] is not of type 'object'"
    ]


def test_wrongly_typed_sections_are_reported_without_a_traceback() -> None:
    text = "version: 1\nauth: [jwt]\ncors: 5\nupstreams: []\nroutes: {a: 1}\n"
    found = problems(text)
    assert len(found) == 4
    assert all(line.startswith("routes.yaml:") for line in found)


# --- files ------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL)
    config = load_config(str(path), {})
    assert config.source == str(path)
    assert config.routes[0].location == Location(str(path), 6, 5)


def test_problems_name_the_file_they_are_in(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL.replace("upstream: users", "upstream: nope"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {})
    assert str(caught.value.problems[0]).startswith(f"{path}:9:15: ")


def test_missing_file_is_a_config_problem(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.column) == (path, 1, 1)
    assert problem.message.startswith("cannot read the file: ")


def test_non_utf8_file_is_a_config_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("version: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {})
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.column) == (str(path), 1, 1)
    assert problem.message.startswith("cannot read the file: ")


def test_a_directory_is_a_config_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path), {})
    assert caught.value.problems[0].message.startswith("cannot read the file: ")


def test_load_config_uses_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(MINIMAL.replace("http://127.0.0.1:8081", "${USERS_URL}"))
    monkeypatch.setenv("USERS_URL", "http://from-env:1234")
    assert load_config(str(path)).upstreams["users"].url == "http://from-env:1234"


def test_config_path_comes_from_the_flag_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    assert resolve_config_path(None) == "routes.yaml"
    monkeypatch.setenv("GATEWAY_CONFIG", "/etc/gateway/routes.yaml")
    assert resolve_config_path(None) == "/etc/gateway/routes.yaml"
    assert resolve_config_path("mine.yaml") == "mine.yaml"


@pytest.mark.parametrize("role", [" admin", "admin ", "a,b", "ad min", "\u00e9t\u00e9"])
def test_a_route_role_that_would_not_survive_x_user_roles_is_a_problem(role: str) -> None:
    text = with_routes(
        f"""\
        - name: users.get
          path: /users/{{id}}
          methods: [GET]
          upstream: users
          auth: [jwt]
          roles: [member, "{role}"]
        """,
        head="auth:\n  jwt: {issuer: i, audience: a, algorithms: [HS256], "
        "secret: 0123456789abcdef0123456789abcdef}\n",
    )
    found = problems(text)
    assert len(found) == 1, found
    assert f"role {role!r} must be 1 to 256 printable ASCII characters" in found[0]
    assert found[0].startswith("routes.yaml:13:")


def test_plain_role_names_are_accepted() -> None:
    text = with_routes(
        """\
        - name: users.get
          path: /users/{id}
          methods: [GET]
          upstream: users
          auth: [jwt]
          roles: [member, team.lead, ops-2, "x_y"]
        """,
        head="auth:\n  jwt: {issuer: i, audience: a, algorithms: [HS256], "
        "secret: 0123456789abcdef0123456789abcdef}\n",
    )
    assert load(text).routes[0].roles == ("member", "team.lead", "ops-2", "x_y")


def test_sections_that_state_no_default_load_the_models_defaults() -> None:
    """The loader takes every default from the model: a section given with only its
    required keys equals the model built with only those."""
    text = MINIMAL.replace(
        "upstreams:",
        "auth:\n  jwt: {issuer: i, audience: a, algorithms: [HS256],"
        " secret: 0123456789abcdef0123456789abcdef}\n"
        "  api_keys: {keys: []}\n"
        "upstreams:",
    ).replace("    url: http://127.0.0.1:8081", "    url: http://127.0.0.1:8081\n    breaker: {}")
    config = load(text)
    assert config.auth.jwt == JwtSettings(
        "i", "a", ("HS256",), secret="0123456789abcdef0123456789abcdef"
    )
    assert config.auth.api_keys == ApiKeySettings()
    assert config.upstreams["users"] == Upstream("users", "http://127.0.0.1:8081")
