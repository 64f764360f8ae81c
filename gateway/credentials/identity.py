"""Who a verified caller is, and how that is told to an upstream."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

# Printable ASCII only: header values beyond it are not portable (RFC 9110 §5.5) and
# cannot be sent upstream as they are.
_UNSAFE = re.compile(r"[^\x20-\x7e]")
MAX_CLAIM_CHARS = 256


class UnusableClaim(ValueError):
    """A claim that cannot be passed upstream as a header value."""


def header_safe(value: str, what: str) -> str:
    """`value` if it can travel in an HTTP header unchanged (RFC 9110 §5.5), else raise."""
    if not value or len(value) > MAX_CLAIM_CHARS or _UNSAFE.search(value):
        raise UnusableClaim(f"the {what} claim is empty, too long or holds control characters")
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    method: Literal["jwt", "api_key"]
    subject: str | None = None  # the JWT `sub`
    consumer_id: str | None = None  # the API key's id
    roles: tuple[str, ...] = ()
    tenant_id: str | None = None

    @property
    def rate_limit_key(self) -> str:
        return f"user:{self.subject}" if self.subject else f"key:{self.consumer_id}"

    def upstream_headers(self) -> dict[str, str]:
        """Identity goes upstream only in headers the gateway itself sets."""
        headers = {"X-Auth-Method": self.method, "X-User-Roles": ",".join(self.roles)}
        if self.subject:
            headers["X-User-Id"] = self.subject
        if self.tenant_id:
            headers["X-Tenant-Id"] = self.tenant_id
        if self.consumer_id:
            headers["X-Consumer-Id"] = self.consumer_id
        return headers


def claim_at(claims: dict[str, Any], dotted: str) -> Any:
    """The claim named `dotted` itself (e.g. "https://example.com/roles"), else the
    value at that dotted path (e.g. "realm_access.roles")."""
    if dotted in claims:
        return claims[dotted]
    value: Any = claims
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def roles_from(value: Any) -> tuple[str, ...]:
    """A roles claim: one string or a list of strings; anything else grants no role.

    Role names are compared exactly, here and upstream. A name that reads differently
    once trimmed (" admin"), or once split, is refused with the whole claim, never
    repaired: a comma would forge a role in the comma-separated X-User-Roles, and
    whitespace around it is optional (RFC 9110 §5.6.1), so a reader that trims would
    turn " admin" into admin.
    """
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    roles = []
    for item in items:
        if not isinstance(item, str):
            continue
        if "," in item:
            raise UnusableClaim("a role holds a comma")
        if not item or any(c.isspace() for c in item):
            raise UnusableClaim("a role is empty or holds whitespace")
        roles.append(header_safe(item, "roles"))
    return tuple(dict.fromkeys(roles))


def identity_from_claims(claims: dict[str, Any], roles_claim: str) -> Identity:
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise UnusableClaim("the sub claim is missing or not a string")
    tenant = claims.get("tenant_id")
    if isinstance(tenant, int) and not isinstance(tenant, bool):
        tenant = str(tenant)
    return Identity(
        method="jwt",
        subject=header_safe(subject, "sub"),
        roles=roles_from(claim_at(claims, roles_claim)),
        tenant_id=header_safe(tenant, "tenant_id") if isinstance(tenant, str) else None,
    )
