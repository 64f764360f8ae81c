"""Tokens, keys, a JWKS server and authenticating gateways for the auth tests.

Every key is generated here, in the test process; every token is minted here with
PyJWT or, for tokens PyJWT refuses to make (alg none, HS256 keyed with a public key),
by hand. The JWKS server listens on loopback only, counts every request it gets, and
can change what it serves (or stop answering) while a gateway is running.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.server
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ..tokens import DROP, mint_token, set_path
from .support import (
    LOOPBACK,
    Gateway,
    Reply,
    assert_problem,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    write_config,
)

ISSUER = "http://127.0.0.1:8081"
AUDIENCE = "gateway"
LEEWAY = 30
JWKS_PATH = "/.well-known/jwks.json"
API_KEY_HEADER = "X-API-Key"
IDENTITY_NAMES = ("x-user-id", "x-user-roles", "x-tenant-id", "x-auth-method", "x-consumer-id")

# Routes every authenticating gateway here serves: (name, auth, roles).
ROUTES: tuple[tuple[str, Any, list[str] | None], ...] = (
    ("open", "public", None),
    ("jwt", ["jwt"], None),
    ("jwt-admin", ["jwt"], ["admin"]),
    ("key", ["api_key"], None),
    ("key-service", ["api_key"], ["service"]),
    ("any", ["jwt", "api_key"], None),
    ("any-admin", ["jwt", "api_key"], ["admin"]),
)


@dataclass(frozen=True)
class RawApiKey:
    id: str
    raw: str
    roles: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw.encode()).hexdigest()

    @property
    def header_value(self) -> str:
        """The key's UTF-8 bytes, as the raw client sends them (it writes latin-1)."""
        return self.raw.encode().decode("latin-1")


def make_api_keys() -> dict[str, RawApiKey]:
    """Fresh raw keys; the gateway's config only ever holds their digests."""
    return {
        "reporting": RawApiKey("reporting", "rk_" + secrets.token_urlsafe(24), ("service",)),
        "ops": RawApiKey("ops", "ok_" + secrets.token_urlsafe(24), ("admin",)),
        "bare": RawApiKey("bare", "bk_" + secrets.token_urlsafe(24), ()),
        # Not ASCII: the digest is of the key's UTF-8 bytes, as clients send them.
        "intl": RawApiKey("intl", "ключ-" + secrets.token_urlsafe(24), ("member",)),
    }


# -- keys and tokens --------------------------------------------------------------------


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One 2048-bit RSA key per name and test process."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_jwk(key: rsa.RSAPrivateKey, kid: str, alg: str | None = "RS256") -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig"})
    if alg:
        jwk["alg"] = alg
    return jwk


def ec_public_jwk(kid: str) -> dict[str, Any]:
    """A P-256 key: of no use to a gateway that accepts RS256 only."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return jwk


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hand_made(header: Any, claims: Any, sign: Callable[[bytes], bytes] | None) -> str:
    """A compact JWS built without PyJWT: `sign` gets the signing input (None: no sig).

    `header` and `claims` are JSON values, or bytes taken as they are."""
    parts = [b64url(p) if isinstance(p, bytes) else b64json(p) for p in (header, claims)]
    signing_input = ".".join(parts)
    signature = b64url(sign(signing_input.encode("ascii"))) if sign else ""
    return f"{signing_input}.{signature}"


def hmac_sha256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


def signer(key: Any, algorithm: str) -> Callable[[bytes], bytes]:
    """Sign like the JWS `algorithm` (HS256/384/512, RS256/384/512) with `key`."""
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[algorithm[2:]]
    if algorithm.startswith("HS"):
        return lambda data: hmac.new(key, data, digest).digest()
    hash_type = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[algorithm[2:]]
    return lambda data: key.sign(data, padding.PKCS1v15(), hash_type())


def hs256_token(
    secret: str, subject: str | None = None, *, roles: Sequence[str] | None = None
) -> str:
    """A token of ISSUER for AUDIENCE that a gateway configured with `secret` accepts;
    without a subject, one of its own, so no two callers share an identity's budget."""
    return mint_token(secret, issuer=ISSUER, audience=AUDIENCE, subject=subject, roles=roles)


def forged_token() -> str:
    """A well-formed token signed with a secret no gateway has: a bad signature."""
    return hs256_token(secrets.token_urlsafe(40), "admin")


def api_keys_section(keys: Iterable[RawApiKey]) -> dict[str, Any]:
    """The api_keys config of `keys`: digests only, never the raw keys."""
    return {
        "header": API_KEY_HEADER,
        "keys": [{"id": k.id, "sha256": k.sha256, "roles": list(k.roles)} for k in keys],
    }


def hs256_auth(secret: str, *keys: RawApiKey, **jwt_settings: Any) -> dict[str, Any]:
    """The auth config of a gateway taking hs256_token(secret, ...) tokens and `keys`."""
    return {
        "jwt": {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["HS256"],
            "secret": secret,
            **jwt_settings,
        },
        "api_keys": api_keys_section(keys),
    }


@dataclass
class Target:
    """A running gateway with one key source, and what signs tokens it accepts."""

    name: str
    gateway: Gateway
    algorithm: str
    key: Any  # the HS secret (bytes) or the RSA private key
    kid: str | None
    roles_claim: str
    api_keys: dict[str, RawApiKey]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def symmetric(self) -> bool:
        return self.algorithm.startswith("HS")

    def claims(self, roles: Any = ("member",), **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-" + uuid.uuid4().hex[:10],
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "tenant_id": "tenant-7",
        }
        if roles is not None:
            set_path(claims, self.roles_claim, list(roles) if isinstance(roles, tuple) else roles)
        for name, value in overrides.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        headers: dict[str, Any] | None = None,
        algorithm: str | None = None,
        key: Any = None,
        kid: Any = DROP,
    ) -> str:
        """A token signed with the gateway's own key unless told otherwise."""
        all_headers: dict[str, Any] = {}
        chosen_kid = self.kid if kid is DROP else kid
        if chosen_kid is not None:
            all_headers["kid"] = chosen_kid
        all_headers.update(headers or {})
        return jwt.encode(
            claims if claims is not None else self.claims(),
            key if key is not None else self.key,
            algorithm=algorithm or self.algorithm,
            headers=all_headers or None,
        )

    def forge(
        self,
        header: Any,
        claims: Any,
        *,
        key: Any = None,
        algorithm: str | None = None,
    ) -> str:
        """A token PyJWT would refuse to make, signed by hand (own key unless told)."""
        return hand_made(
            header,
            claims,
            signer(key if key is not None else self.key, algorithm or self.algorithm),
        )


# -- the JWKS server --------------------------------------------------------------------

HANG_LIMIT_SECONDS = 8.0  # a hanging answer gives up after this, whatever happens
DRIP_INTERVAL = 0.25  # shorter than any jwks_timeout the tests configure
DRIP_LIMIT_SECONDS = 4.0


class JwksServer:
    """A key-set server on loopback: counts requests, serves what it is told to.

    Modes: ok (the JWK Set), error (500), not_json, hang (accept, read, never answer),
    drip (a valid head, then one byte of body every DRIP_INTERVAL). Every wait ends
    at its limit or when the server stops.
    """

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._keys = list(keys or [])
        self.mode = "ok"
        self.paths: list[str] = []
        self.stopping = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's handler naming
                owner._serve(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.url = self.base_url + JWKS_PATH
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._stopped = False

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def set_keys(self, keys: list[dict[str, Any]]) -> None:
        with self._lock:
            self._keys = list(keys)

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.paths)

    def hits_on(self, marker: str) -> int:
        with self._lock:
            return sum(marker in path for path in self.paths)

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.paths.append(handler.path)
            keys = list(self._keys)
        mode = self.mode
        handler.close_connection = True
        if mode == "hang":
            self.stopping.wait(HANG_LIMIT_SECONDS)
            return
        if mode == "error":
            self._send(handler, 500, b'{"error": "key store down"}')
            return
        if mode == "not_json":
            self._send(handler, 200, b"<html>maintenance</html>")
            return
        body = json.dumps({"keys": keys}).encode()
        if mode == "drip":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            ends = time.monotonic() + DRIP_LIMIT_SECONDS
            for byte in body:
                if time.monotonic() > ends or self.stopping.wait(DRIP_INTERVAL):
                    return
                try:
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                except OSError:
                    return
            return
        self._send(handler, 200, body)

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass


# -- authenticating gateways ------------------------------------------------------------


def auth_config(
    upstream_url: str, jwt_settings: dict[str, Any], api_keys: dict[str, RawApiKey]
) -> dict[str, Any]:
    routes = []
    for name, auth, roles in ROUTES:
        route: dict[str, Any] = {
            "name": name,
            "path": f"/{name}/{{rest:path}}",
            "methods": ["GET", "POST"],
            "upstream": "backend",
            "upstream_path": f"/up/ok/{name}/{{rest:path}}",
            "auth": auth,
        }
        if roles:
            route["roles"] = roles
        routes.append(route)
    return {
        "version": 1,
        "gateway": {"trusted_proxies": 0},
        # These gateways see hundreds of refused tokens from one address on purpose;
        # the brute-force guard (tested on its own) would turn them into 429s.
        "rate_limits": {"auth_failures": []},
        "auth": {
            "jwt": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "leeway": LEEWAY,
                **jwt_settings,
            },
            "api_keys": api_keys_section(api_keys.values()),
        },
        "upstreams": {
            "backend": {"url": upstream_url, "connect_timeout": 1.0, "timeout": 2.0, "retries": 0}
        },
        "routes": routes,
    }


def start_auth_gateway(
    workdir: Path,
    upstream_url: str,
    jwt_settings: dict[str, Any],
    api_keys: dict[str, RawApiKey],
    *,
    workers: int = 2,
    threads: int = 4,
) -> Gateway:
    """`gateway serve` on a free loopback port; the caller stops `.server`."""
    config = auth_config(upstream_url, jwt_settings, api_keys)
    path = write_config(workdir / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, workers, threads),
        workdir=workdir,
        name="gateway-auth",
        env=subprocess_env(),
        workers=workers,
    )
    return Gateway(server, config)


class AuthStack:
    """The three key sources, each behind its own gateway, started on first use."""

    def __init__(self, workdirs: Callable[[str], Path], upstream_url: str) -> None:
        self._workdirs = workdirs
        self._upstream_url = upstream_url
        self._targets: dict[str, Target] = {}
        self._jwks: JwksServer | None = None
        self.api_keys = make_api_keys()

    def target(self, name: str) -> Target:
        if name not in self._targets:
            self._targets[name] = getattr(self, f"_start_{name}")()
        return self._targets[name]

    def _start_hs256(self) -> Target:
        secret = secrets.token_urlsafe(40)
        settings = {
            "algorithms": ["HS256"],
            "secret": secret,
            "roles_claim": "realm.roles",
        }
        gateway = start_auth_gateway(
            self._workdirs("gw-hs256"), self._upstream_url, settings, self.api_keys
        )
        return Target(
            "hs256", gateway, "HS256", secret.encode(), None, "realm.roles", self.api_keys
        )

    def _start_pem(self) -> Target:
        workdir = self._workdirs("gw-pem")
        key = rsa_key("main")
        (workdir / "issuer.pem").write_bytes(public_pem(key))
        settings = {
            "algorithms": ["RS256"],
            "public_key_file": "issuer.pem",
            "roles_claim": "role",
        }
        gateway = start_auth_gateway(workdir, self._upstream_url, settings, self.api_keys)
        return Target("pem", gateway, "RS256", key, "pem-key-1", "role", self.api_keys)

    def _start_jwks(self) -> Target:
        key = rsa_key("main")
        self._jwks = JwksServer([public_jwk(key, "jwks-key-1")]).start()
        settings = {
            "algorithms": ["RS256"],
            "jwks_url": self._jwks.url,
            "jwks_cache_seconds": 300,
            "jwks_cooldown_seconds": 1.0,
            "jwks_timeout": 2.0,
            "roles_claim": "role",
        }
        gateway = start_auth_gateway(
            self._workdirs("gw-jwks"), self._upstream_url, settings, self.api_keys
        )
        return Target(
            "jwks",
            gateway,
            "RS256",
            key,
            "jwks-key-1",
            "role",
            self.api_keys,
            extra={"jwks": self._jwks},
        )

    def close(self) -> None:
        # Each stop waits for its own master (by PID): run them side by side.
        stoppers = [
            threading.Thread(target=target.gateway.server.stop) for target in self._targets.values()
        ]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout=60)
        if self._jwks is not None:
            self._jwks.stop()


# -- assertions -------------------------------------------------------------------------

_AUTH_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"([^"]*)"')


def challenge(reply: Reply) -> tuple[str, dict[str, str]]:
    """The one WWW-Authenticate challenge of a reply: scheme and auth-params."""
    values = reply.header_values("WWW-Authenticate")
    assert len(values) == 1, reply.describe()
    scheme, _, rest = values[0].partition(" ")
    return scheme, dict(_AUTH_PARAM.findall(rest))


def assert_unauthorized(reply: Reply, instance: str, *, token_sent: bool) -> dict[str, Any]:
    """401 problem+json `unauthorized`, with the RFC 6750 bearer challenge."""
    body = assert_problem(reply, 401, "unauthorized", instance)
    scheme, params = challenge(reply)
    assert scheme == "Bearer", reply.describe()
    assert params.get("realm") == "gateway", reply.describe()
    if token_sent:
        assert params.get("error") == "invalid_token", reply.describe()
    else:
        assert "error" not in params, reply.describe()
    return body


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")
