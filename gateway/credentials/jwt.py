"""Bearer JWT verification, by RFC 8725 (JWT best current practice).

The algorithm list comes from the config and is never widened by a token; a token's
`jku`, `x5u` and `kid` are never fetched or used as paths (`kid` only picks among keys
already known); `crit` extensions are refused because none are understood; refresh
and ID tokens are not access tokens. Every refusal is an InvalidToken with a short
reason, never an unexpected exception.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from typing import Any

import cachetools
import jwt

from gateway.config.model import JwtSettings
from gateway.credentials.identity import Identity, UnusableClaim, identity_from_claims
from gateway.credentials.jwks import JwksKeys
from gateway.credentials.keys import PublicKey, load_public_key

MAX_TOKEN_BYTES = 8192
# Three base64url parts: a JWS in compact form (RFC 7515 §7.1). JWE (five parts) and
# anything else are not access tokens here.
_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
# RFC 9068 §2.1 access-token media types, and the plain JWT one.
_ACCESS_TOKEN_TYPES = {"jwt", "at+jwt", "application/jwt", "application/at+jwt"}
_NOT_ACCESS = {"refresh", "id", "id_token", "refresh_token", "refresh+jwt", "id+jwt"}


class InvalidToken(Exception):
    """A token that must not be accepted; `reason` is a short, loggable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "audience"),
    (jwt.InvalidIssuerError, "issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "signature"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.InvalidKeyError, "algorithm"),
    (jwt.DecodeError, "malformed"),
)


class JwtVerifier:
    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._secret = settings.secret.encode() if settings.secret else None
        self._public_key: PublicKey | None = None
        if settings.public_key_file:
            with open(settings.public_key_file, "rb") as handle:
                self._public_key = load_public_key(handle.read())
        self.jwks = (
            JwksKeys(
                settings.jwks_url,
                algorithms=settings.algorithms,
                cache_seconds=settings.jwks_cache_seconds,
                cooldown_seconds=settings.jwks_cooldown_seconds,
                timeout=settings.jwks_timeout,
            )
            if settings.jwks_url
            else None
        )
        # Verified tokens, by SHA-256 of the token, until their exp at the latest.
        self._verified: cachetools.LRUCache[bytes, tuple[float, Identity]] | None = (
            cachetools.LRUCache(settings.verified_token_cache)
            if settings.verified_token_cache
            else None
        )
        self._verified_lock = threading.Lock()

    def close(self) -> None:
        if self.jwks is not None:
            self.jwks.close()

    def verify(self, token: str) -> Identity:
        """The identity a token proves, or raise InvalidToken (or KeysUnavailable)."""
        if not token:
            raise InvalidToken("malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("too_large")
        if not _COMPACT_JWS.match(token):
            raise InvalidToken("malformed")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        remembered = self._remembered(digest)
        if remembered is not None:
            return remembered
        claims = self._verified_claims(token)
        try:
            identity = identity_from_claims(claims, self.settings.roles_claim)
        except UnusableClaim:
            raise InvalidToken("claims") from None
        self._remember(digest, claims, identity)
        return identity

    def already_verified(self, token: str) -> Identity | None:
        """The identity of a token this verifier has verified before and whose exp has
        not passed, from the cache alone; None for any other token. A token found here
        carries a valid signature, so it cannot be a guess: the brute-force guard may
        let it pass without asking the rate-limit storage."""
        if self._verified is None or not token or len(token) > MAX_TOKEN_BYTES:
            return None
        if not token.isascii():  # verify() accepts only base64url, never cached otherwise
            return None
        return self._remembered(hashlib.sha256(token.encode("ascii")).digest())

    def _remembered(self, digest: bytes) -> Identity | None:
        if self._verified is None:
            return None
        with self._verified_lock:
            entry = self._verified.get(digest)
        if entry is None:
            return None
        expires, identity = entry
        if time.time() >= expires:
            return None
        return identity

    def _remember(self, digest: bytes, claims: dict[str, Any], identity: Identity) -> None:
        if self._verified is None:
            return
        # Never past exp: remembered until exp itself, without the leeway.
        with self._verified_lock:
            self._verified[digest] = (float(claims["exp"]), identity)

    def _verified_claims(self, token: str) -> dict[str, Any]:
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in settings.algorithms:
            raise InvalidToken("algorithm")
        if "crit" in header:
            # RFC 7515 §4.1.11: extensions listed in crit must be understood; we
            # understand none, so such a token cannot be accepted.
            raise InvalidToken("crit")
        token_type = header.get("typ")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() not in _ACCESS_TOKEN_TYPES
        ):
            raise InvalidToken("not_access_token")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise InvalidToken("malformed")
        key = self._key(kid, algorithm)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
            )
        except jwt.PyJWTError as exc:
            for kind, reason in _PYJWT_REASONS:
                if isinstance(exc, kind):
                    raise InvalidToken(reason) from None
            raise InvalidToken("invalid") from None
        # Checked again here so a library regression cannot turn "starts with" or
        # "contains" into "equals" (RFC 8725 §3.8).
        if claims.get("iss") != settings.issuer:
            raise InvalidToken("issuer")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise InvalidToken("missing_claim")
        for marker in (claims.get("token_use"), claims.get("typ")):
            if isinstance(marker, str) and marker.lower() in _NOT_ACCESS:
                raise InvalidToken("not_access_token")
        return claims

    def _key(self, kid: str | None, algorithm: str) -> Any:
        if self._secret is not None:
            return self._secret
        if self._public_key is not None:
            return self._public_key
        assert self.jwks is not None
        found = self.jwks.key_for(kid, algorithm)
        if found is None:
            raise InvalidToken("unknown_kid")
        # The bare key: pyjwt would hold a JWK without "alg" to RS256 alone, while
        # _pick already checked the key's family and any "alg" it names.
        return found.jwk.key
