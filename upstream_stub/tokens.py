"""RS256 access and refresh tokens, and the JWKS the gateway verifies them with.

Access tokens follow RFC 9068 (typ at+jwt, iss, aud, sub, exp, iat, jti, plus the
role and tenant_id the gateway turns into X-User-Roles and X-Tenant-Id). Refresh
tokens are JWTs too, but marked so no verifier can mistake one for an access token:
header typ refresh+jwt, claim token_use refresh, and the issuer itself as audience.
The key id is the key's RFC 7638 thumbprint, so the same key always has the same kid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from upstream_stub.models import User

ALGORITHM = "RS256"
ACCESS_TYPE = "at+jwt"
REFRESH_TYPE = "refresh+jwt"
DEFAULT_ACCESS_TTL = 900
DEFAULT_REFRESH_TTL = 7 * 24 * 3600
DEFAULT_ISSUER = "http://127.0.0.1:8081"
DEFAULT_AUDIENCE = "gateway"
MIN_KEY_BITS = 2048


class UnusableKey(ValueError):
    """A private key file that cannot be used for RS256."""


class RefreshRefused(Exception):
    """A refresh token that must not be honoured; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=MIN_KEY_BITS)


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """An RSA private key of at least 2048 bits from PEM, else UnusableKey."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UnusableKey(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnusableKey("not an RSA key; RS256 needs one")
    if key.key_size < MIN_KEY_BITS:
        raise UnusableKey(f"the key has {key.key_size} bits; RS256 needs at least {MIN_KEY_BITS}")
    return key


def _b64_uint(value: int) -> str:
    data = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The public half as a JWK, with its RFC 7638 thumbprint as kid."""
    numbers = key.public_key().public_numbers()
    required = {"e": _b64_uint(numbers.e), "kty": "RSA", "n": _b64_uint(numbers.n)}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode("utf-8")
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=")
    return {**required, "kid": thumbprint.decode("ascii"), "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


class TokenIssuer:
    """Issues token pairs and honours each refresh token once (rotation)."""

    def __init__(
        self,
        key: rsa.RSAPrivateKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        access_ttl: int = DEFAULT_ACCESS_TTL,
        refresh_ttl: int = DEFAULT_REFRESH_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if access_ttl < 1 or refresh_ttl < 1:
            raise ValueError("token lifetimes must be at least one second")
        self._key = key
        self._public = key.public_key()
        self.jwk = public_jwk(key)
        self.kid = self.jwk["kid"]
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._clock = clock
        # Refresh token ids already exchanged, with their expiry: a replayed refresh
        # token (stolen, or sent twice) is refused.
        self._spent: dict[str, int] = {}
        self._spent_lock = threading.Lock()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.jwk)]}

    def issue(self, user: User) -> TokenPair:
        now = int(self._clock())
        access = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user.id,
            "role": user.role,
            "tenant_id": user.tenant_id,
            "email": user.email,
            "iat": now,
            "nbf": now,
            "exp": now + self.access_ttl,
            "jti": secrets.token_urlsafe(16),
            "token_use": "access",
        }
        refresh = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": user.id,
            "iat": now,
            "exp": now + self.refresh_ttl,
            "jti": secrets.token_urlsafe(16),
            "token_use": "refresh",
        }
        return TokenPair(
            self._sign(access, ACCESS_TYPE), self._sign(refresh, REFRESH_TYPE), self.access_ttl
        )

    def _sign(self, claims: dict[str, Any], token_type: str) -> str:
        return jwt.encode(
            claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": token_type}
        )

    def redeem_refresh(self, token: str) -> str:
        """The user id a refresh token speaks for, spending it; else RefreshRefused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise RefreshRefused("malformed") from None
        if header.get("typ") != REFRESH_TYPE or header.get("alg") != ALGORITHM:
            raise RefreshRefused("not_refresh_token")
        if header.get("kid") != self.kid:
            raise RefreshRefused("unknown_key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=self.issuer,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise RefreshRefused("expired") from None
        except jwt.PyJWTError:
            raise RefreshRefused("invalid") from None
        if claims.get("token_use") != "refresh":
            raise RefreshRefused("not_refresh_token")
        subject, jti, exp = claims["sub"], claims["jti"], claims["exp"]
        if not isinstance(subject, str) or not isinstance(jti, str):
            raise RefreshRefused("invalid")
        self._spend(jti, int(exp))
        return subject

    def _spend(self, jti: str, exp: int) -> None:
        now = int(self._clock())
        with self._spent_lock:
            if jti in self._spent:
                raise RefreshRefused("reused")
            if len(self._spent) > 10_000:  # forget ids whose tokens expired anyway
                self._spent = {k: v for k, v in self._spent.items() if v > now}
            self._spent[jti] = exp
