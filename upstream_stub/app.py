"""The app factories: one Flask app per service, each with its own seeded store.

Both services share the same frame: problem+json for every error, no trailing-slash
redirects (their bodies are HTML), a request size limit, X-Request-ID echoed, and
GET /healthz. Everything random (signing key, cursor secret, new ids) is per app;
everything seeded is the same on every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, request

from upstream_stub import seed as seeding
from upstream_stub.auth import blueprint as auth_blueprint
from upstream_stub.models import User
from upstream_stub.orders import blueprint as orders_blueprint
from upstream_stub.pagination import CursorCodec, cursor_secret
from upstream_stub.passwords import hash_password
from upstream_stub.problems import register_problem_handlers
from upstream_stub.state import (
    OrdersState,
    UsersState,
    attach,
    new_orders_collection,
    new_users_collection,
)
from upstream_stub.tokens import (
    DEFAULT_ACCESS_TTL,
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_REFRESH_TTL,
    TokenIssuer,
    generate_key,
)
from upstream_stub.tracing import instrument
from upstream_stub.users import blueprint as users_blueprint

Service = Literal["users", "orders"]
SERVICES: tuple[Service, ...] = ("users", "orders")
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StubSettings:
    """What a stub service is started with; the defaults match routes.yaml."""

    seed: int = seeding.DEFAULT_SEED
    seed_users: int = seeding.DEFAULT_USERS
    seed_orders: int = seeding.DEFAULT_ORDERS
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    token_ttl: int = DEFAULT_ACCESS_TTL
    refresh_ttl: int = DEFAULT_REFRESH_TTL
    private_key: rsa.RSAPrivateKey | None = None  # None: a new 2048-bit key
    cursor_secret: bytes | None = None  # None: STUB_CURSOR_SECRET, else random


def _base_app(name: str, settings: StubSettings) -> tuple[Flask, CursorCodec]:
    app = Flask(f"upstream_stub.{name}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    register_problem_handlers(app)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        request_id = request.headers.get("X-Request-ID")
        if request_id and "X-Request-ID" not in response.headers:
            response.headers["X-Request-ID"] = request_id
        return response

    return app, CursorCodec(settings.cursor_secret or cursor_secret())


def _seeded_users(settings: StubSettings) -> list[User]:
    return [
        User(
            id=person.id,
            email=person.email,
            name=person.name,
            role=person.role,
            tenant_id=person.tenant_id,
            created_us=person.created_us,
            updated_us=person.created_us,
            password_hash=hash_password(person.password) if person.password else None,
        )
        for person in seeding.people(settings.seed, settings.seed_users)
    ]


def create_users_app(settings: StubSettings | None = None) -> Flask:
    """The users service: /auth/login, /auth/refresh, /users, the JWKS."""
    settings = settings or StubSettings()
    app, cursors = _base_app("users", settings)
    users = new_users_collection()
    users.load(_seeded_users(settings))
    tokens = TokenIssuer(
        settings.private_key or generate_key(),
        issuer=settings.issuer,
        audience=settings.audience,
        access_ttl=settings.token_ttl,
        refresh_ttl=settings.refresh_ttl,
    )
    attach(app.extensions, UsersState(users, tokens, cursors))
    app.register_blueprint(auth_blueprint)
    app.register_blueprint(users_blueprint)
    return app


def create_orders_app(settings: StubSettings | None = None) -> Flask:
    """The orders service: /v1/orders and /v2/orders over one store."""
    settings = settings or StubSettings()
    app, cursors = _base_app("orders", settings)
    orders = new_orders_collection()
    directory = seeding.people(settings.seed, settings.seed_users)
    orders.load(seeding.orders(directory, settings.seed, settings.seed_orders))
    attach(app.extensions, OrdersState(orders, cursors))
    app.register_blueprint(orders_blueprint)
    return app


def create_app(service: Service, settings: StubSettings | None = None) -> Flask:
    if service == "users":
        app = create_users_app(settings)
    elif service == "orders":
        app = create_orders_app(settings)
    else:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    instrument(app, service)
    return app
