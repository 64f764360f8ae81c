"""Authentication: a verified identity for every request to a non-public route.

Any one of the route's methods suffices (`auth: [jwt, api_key]`). A request whose
credentials fail is answered 401 and never forwarded; what was verified is left on
the context as an Identity for the roles check, the rate limiter and the upstream.
"""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.config.model import AuthMethod, RateLimit
from gateway.context import RequestContext
from gateway.credentials.apikeys import ApiKeyRing
from gateway.credentials.identity import Identity, UnusableClaim, header_safe
from gateway.credentials.jwks import KeysUnavailable
from gateway.credentials.jwt import InvalidToken, JwtVerifier
from gateway.problems import RateLimited, ServiceUnavailable, Unauthorized
from gateway.ratelimit import Counters, StorageUnavailable, storage_down

# RFC 6750 §3: the challenge of a bearer-token resource; `error` only when a token
# was sent and refused.
CHALLENGE = 'Bearer realm="gateway"'
INVALID_TOKEN_CHALLENGE = 'Bearer realm="gateway", error="invalid_token"'
# What a client may be told; other reasons are logged and counted, not explained.
_TOKEN_ERRORS_EXPLAINED = {
    "expired": "The access token has expired.",
    "not_yet_valid": "The access token is not valid yet.",
    "not_access_token": "The token is not an access token.",
    "too_large": "The access token is too large.",
}


class Authenticate:
    ORDER: ClassVar[int] = 30

    def __init__(
        self,
        methods: tuple[AuthMethod, ...],
        verifier: JwtVerifier | None,
        keyring: ApiKeyRing | None,
        guard: FailureGuard | None = None,
    ) -> None:
        self.methods = methods
        self.verifier = verifier if "jwt" in methods else None
        self.keyring = keyring if "api_key" in methods else None
        # On a route that does not take keys only the header's name is kept, never the
        # keys: a key sent there is refused unread, so no answer, timing or count can
        # tell a prober whether it exists.
        self.unaccepted_key_header = (
            keyring.header if keyring is not None and self.keyring is None else None
        )
        self.guard = guard

    def on_request(self, ctx: RequestContext) -> Response | None:
        token: str | None = None
        if self.verifier is not None:
            token = _bearer_token(ctx.request.headers.get("Authorization", ""))
            if token:
                ctx.identity = self.verifier.already_verified(token)
        if ctx.identity is None and self.guard is not None:
            # 429 before any credential is looked at. A token this worker has already
            # verified (and whose exp has not passed) is spared the storage round trip:
            # it carries a valid signature, so it cannot be a guess.
            self.guard.check(ctx)
        token_error: str | None = None
        key_presented = False
        key_not_accepted = False
        keys_unavailable: KeysUnavailable | None = None
        if self.verifier is not None and token is not None and ctx.identity is None:
            try:
                ctx.identity = self.verifier.verify(token)
            except InvalidToken as exc:
                token_error = exc.reason
            except KeysUnavailable as exc:
                keys_unavailable = exc  # an API key may still let the caller in
        if ctx.identity is None and self.keyring is not None:
            presented = ctx.request.headers.get(self.keyring.header)
            key_presented = bool(presented)
            key = self.keyring.lookup(presented) if presented else None
            if key is not None:
                try:
                    ctx.identity = Identity(
                        method="api_key",
                        consumer_id=header_safe(key.id, "key id"),
                        roles=key.roles,
                    )
                except UnusableClaim:  # pragma: no cover - ids are validated at load
                    ctx.identity = None
        elif ctx.identity is None and self.unaccepted_key_header is not None:
            key_not_accepted = key_presented = bool(
                ctx.request.headers.get(self.unaccepted_key_header)
            )
        if ctx.identity is None and keys_unavailable is not None:
            ctx.auth_failure = "keys_unavailable"
            raise ServiceUnavailable(
                "The keys to verify access tokens cannot be had right now.",
                headers={"Retry-After": str(keys_unavailable.retry_after)},
            )
        if ctx.identity is None:
            ctx.auth_failure = token_error or (
                "api_key_not_accepted" if key_not_accepted else "missing_or_invalid"
            )
            if self.guard is not None and (token_error is not None or key_presented):
                self.guard.failed(ctx)  # only refused credentials count, not absent ones
            if token_error is not None:
                raise Unauthorized(
                    _TOKEN_ERRORS_EXPLAINED.get(token_error, "The access token is invalid."),
                    headers={"WWW-Authenticate": INVALID_TOKEN_CHALLENGE},
                )
            # A bad API key, a missing one and any key on a route that does not take
            # keys fail alike: nothing tells a prober which keys exist.
            raise Unauthorized(
                "Credentials are missing or invalid.",
                headers={"WWW-Authenticate": CHALLENGE},
            )
        ctx.upstream_headers.update(ctx.identity.upstream_headers())
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response


def _bearer_token(authorization: str) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750);
    "" for the Bearer scheme with no token (sent, and invalid); None for no bearer."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


class FailureGuard:
    """Brute-force guard: refused credentials count per client address; an address
    over `rate_limits.auth_failures` gets 429 before its credentials are checked,
    unless it presents a bearer token this worker has already verified (Authenticate
    skips the check for those). Each check and each count is one storage call."""

    BUCKET = "gateway:auth-failures"  # ":" cannot occur in a route or bucket name

    def __init__(self, limits: tuple[RateLimit, ...], counters: Counters) -> None:
        self.limits = limits
        self.counters = counters

    def check(self, ctx: RequestContext) -> None:
        try:
            verdict = self.counters.test(self.limits, self.BUCKET, f"ip:{ctx.client.ip}")
        except StorageUnavailable:
            ctx.rate_limit_storage_failed = True
            error = storage_down(self.counters)
            if error is not None:
                raise error from None
            return
        if verdict is not None:
            ctx.auth_failure = "too_many_failures"
            raise RateLimited(
                "Too many failed authentications from this address; try again later.",
                headers={"Retry-After": str(verdict.retry_after())},
            )

    def failed(self, ctx: RequestContext) -> None:
        if ctx.rate_limit_storage_failed:
            return  # the check just failed: this request pays the storage timeout once
        try:
            self.counters.hit(self.limits, self.BUCKET, f"ip:{ctx.client.ip}")
        except StorageUnavailable:
            ctx.rate_limit_storage_failed = True  # logged already; the 401 stands
