"""The app factories: health, request ids, no HTML, and the paths routes.yaml needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import MethodNotAllowed, NotFound

from upstream_stub.app import (
    MAX_BODY_BYTES,
    StubSettings,
    create_app,
    create_orders_app,
    create_users_app,
)
from upstream_stub.tokens import generate_key

ROUTES_YAML = Path(__file__).resolve().parent.parent / "routes.yaml"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def apps(key: rsa.RSAPrivateKey) -> dict[str, Flask]:
    settings = StubSettings(seed_users=5, seed_orders=20, private_key=key)
    return {"users": create_users_app(settings), "orders": create_orders_app(settings)}


@pytest.mark.parametrize("service", ["users", "orders"])
def test_healthz(apps: dict[str, Flask], service: str) -> None:
    response = apps[service].test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


@pytest.mark.parametrize("service", ["users", "orders"])
def test_request_id_is_echoed(apps: dict[str, Flask], service: str) -> None:
    response = apps[service].test_client().get("/healthz", headers={"X-Request-ID": "req-42"})
    assert response.headers["X-Request-ID"] == "req-42"


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [
        ("users", "get", "/"),
        ("users", "get", "/v2/orders"),
        ("orders", "get", "/users"),
        ("orders", "post", "/healthz"),
        ("users", "get", "//users"),
        ("users", "get", "/users/%ZZ"),
    ],
)
def test_no_html_error_pages(apps: dict[str, Flask], service: str, method: str, path: str) -> None:
    response = getattr(apps[service].test_client(), method)(path)
    assert response.status_code >= 400
    assert response.mimetype == "application/problem+json"
    assert b"<" not in response.data


def test_bodies_over_the_limit_are_413_problems(apps: dict[str, Flask]) -> None:
    response = (
        apps["users"]
        .test_client()
        .post("/users", data=b"x" * (MAX_BODY_BYTES + 1), content_type="application/json")
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert response.get_json(force=True)["code"] == "payload_too_large"


def test_create_app_picks_the_service(key: rsa.RSAPrivateKey) -> None:
    settings = StubSettings(seed_users=0, seed_orders=0, private_key=key)
    assert create_app("users", settings).name == "upstream_stub.users"
    assert create_app("orders", settings).name == "upstream_stub.orders"
    with pytest.raises(ValueError, match="unknown service"):
        create_app("payments", settings)  # type: ignore[arg-type]


def test_seeding_is_deterministic_across_starts(key: rsa.RSAPrivateKey) -> None:
    settings = StubSettings(seed_users=20, seed_orders=50, private_key=key)
    first = create_orders_app(settings).test_client().get("/v2/orders?limit=200").get_json()
    second = create_orders_app(settings).test_client().get("/v2/orders?limit=200").get_json()
    assert first["data"] == second["data"]
    assert len(first["data"]) == 50


def test_orders_belong_to_the_users_the_users_service_has(key: rsa.RSAPrivateKey) -> None:
    settings = StubSettings(seed_users=20, seed_orders=50, private_key=key)
    users = create_users_app(settings).test_client().get("/users?limit=200").get_json()["data"]
    orders = create_orders_app(settings).test_client().get("/v2/orders?limit=200").get_json()
    assert {o["user_id"] for o in orders["data"]} <= {u["id"] for u in users}


def _routes() -> list[tuple[str, str, str]]:
    """(service, method, path) for every upstream path routes.yaml sends to a stub."""
    config = yaml.safe_load(ROUTES_YAML.read_text())
    found = set()
    for route in config.get("routes", []):
        targets = [(route.get("upstream"), route.get("upstream_path"))]
        options = (route.get("versions") or {}).get("options") or {}
        for option in options.values():
            targets.append(
                (option.get("upstream", route.get("upstream")), option.get("upstream_path"))
            )
        for upstream, upstream_path in targets:
            if upstream not in ("users", "orders") or not upstream_path:
                continue
            path = re.sub(r"\{[^}]+\}", "some-id", upstream_path)
            for method in route.get("methods", ["GET"]):
                found.add((upstream, method, path))
    return sorted(found)


@pytest.mark.parametrize(("service", "method", "path"), _routes())
def test_every_upstream_path_in_routes_yaml_is_served(
    apps: dict[str, Flask], service: str, method: str, path: str
) -> None:
    adapter = apps[service].url_map.bind("stub.test")
    try:
        adapter.match(path, method=method)
    except (NotFound, MethodNotAllowed) as exc:
        pytest.fail(f"{service} does not serve {method} {path}: {exc}")


# --- no body crashes an endpoint -------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["admin@example.com", "member", "EUR", "SKU-1", "long-enough-pw"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "email",
                    "name",
                    "role",
                    "tenant_id",
                    "password",
                    "refresh_token",
                    "items",
                    "sku",
                    "quantity",
                    "total",
                    "amount_cents",
                    "currency",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_FUZZ_APPS: dict[str, Flask] = {}


def _fuzz_app(service: str) -> Flask:
    if service not in _FUZZ_APPS:
        settings = StubSettings(seed_users=3, seed_orders=5)
        _FUZZ_APPS[service] = create_app(service, settings)  # type: ignore[arg-type]
    return _FUZZ_APPS[service]


# Bodies near a valid one: each field of a valid body absent, valid, or any JSON
# value, so checks that run only once the other fields are fine are reached too.
_USER = {
    "email": "fuzz@example.com",
    "name": "Fuzz",
    "role": "member",
    "tenant_id": "acme",
    "password": "long-enough-pw",
}
_ITEMS = [{"sku": "SKU-1", "quantity": 1}]
_TARGETS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("users", "POST", "/users", _USER),
    ("users", "PATCH", "/users/{seeded}", _USER),
    ("users", "POST", "/auth/login", {"email": "member@example.com", "password": "x"}),
    ("users", "POST", "/auth/refresh", {"refresh_token": "a.b.c"}),
    ("orders", "POST", "/v1/orders", {"items": _ITEMS, "total": 12.5}),
    (
        "orders",
        "POST",
        "/v2/orders",
        {"items": _ITEMS, "total": {"amount_cents": 1, "currency": "EUR"}},
    ),
]


_MISSING = object()


def _field(value: Any) -> st.SearchStrategy[Any]:
    """Mostly the valid value; sometimes absent, null or any JSON value."""
    return st.sampled_from(["valid"] * 6 + ["absent", "null", "any"]).flatmap(
        lambda pick: {
            "valid": st.just(value),
            "absent": st.just(_MISSING),
            "null": st.none(),
            "any": _json,
        }[pick]
    )


def _near(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: _field(value) for name, value in valid.items()}).map(
        lambda body: {name: value for name, value in body.items() if value is not _MISSING}
    )


@settings(max_examples=300, deadline=None, database=None)
@given(target=st.sampled_from(_TARGETS), data=st.data())
def test_any_json_body_gets_a_deliberate_answer(
    target: tuple[str, str, str, dict[str, Any]], data: st.DataObject
) -> None:
    service, method, path, valid = target
    body = data.draw(_json | _near(valid), label="body")
    app = _fuzz_app(service)
    client = app.test_client()
    caller = {"X-User-Id": "usr_fuzz", "X-Tenant-Id": "acme"}
    if "{seeded}" in path:  # a user of the caller's tenant: others' are 404 by design
        first = client.get("/users?limit=1", headers=caller).get_json()["data"][0]["id"]
        path = path.replace("{seeded}", first)
    response = client.open(path, method=method, json=body, headers=caller)
    assert response.status_code in (200, 201, 401, 409, 422), response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"
    if response.status_code == 422:
        errors = response.get_json(force=True)["errors"]
        assert errors and all(set(e) == {"field", "message"} for e in errors)
