"""JWTs for the tests, minted with PyJWT: one way to build their claims, for every file.

Unit tests and the integration tests both sign their own tokens; what a gateway
checks (issuer, audience, expiry, roles at a configured claim path) is spelled the
same way everywhere, so a test says only what its token has that others do not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt

DROP = object()  # a claim override that removes the claim


def set_path(claims: dict[str, Any], dotted: str, value: Any) -> None:
    """Put `value` at a dotted claim path (roles_claim: realm.roles), making the parents."""
    parts = dotted.split(".")
    node = claims
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def mint_token(
    secret: Any,
    *,
    issuer: str,
    audience: str,
    subject: str | None = None,
    roles: Sequence[str] | None = None,
    roles_claim: str = "role",
    lifetime: int = 300,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A signed token: `secret` is the HMAC secret, or the private key of RS/ES algorithms.

    Without a `subject`, each token has a subject of its own, so tests that count per
    identity never share a budget by accident. `roles` go at `roles_claim`; without
    them the token has no roles claim. `claims` are applied last: they replace any
    claim above (exp, sub, a whole roles parent), and DROP removes one.
    """
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject if subject is not None else "user-" + uuid.uuid4().hex[:12],
        "iat": now,
        "exp": now + lifetime,
    }
    if roles is not None:
        set_path(payload, roles_claim, list(roles))
    payload.update(claims)
    return jwt.encode(
        {name: value for name, value in payload.items() if value is not DROP},
        secret,
        algorithm=algorithm,
    )
