"""Who is calling, as the gateway tells it in identity headers (CONTRACT §4).

The stub trusts these headers the way a service behind a gateway does: the gateway
strips client-sent copies and sets them from a verified token or API key. A request
with no identity headers at all comes from inside the trusted network (a benchmark
or a health probe hitting the stub directly) and is not restricted.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import request

# Roles that see every order; anyone else with an identity sees only their own.
ALL_SEEING = frozenset({"admin", "service"})


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str | None
    roles: frozenset[str]
    tenant_id: str | None
    auth_method: str | None
    consumer_id: str | None

    @property
    def anonymous(self) -> bool:
        """No identity headers at all: a direct call, not one through the gateway."""
        return (
            self.user_id is None
            and not self.roles
            and self.auth_method is None
            and self.consumer_id is None
        )

    @property
    def sees_everything(self) -> bool:
        return self.anonymous or bool(self.roles & ALL_SEEING)


def _header(name: str) -> str | None:
    value = request.headers.get(name, "").strip()
    return value or None


def current_caller() -> Caller:
    roles = frozenset(
        role.strip() for role in request.headers.get("X-User-Roles", "").split(",") if role.strip()
    )
    return Caller(
        user_id=_header("X-User-Id"),
        roles=roles,
        tenant_id=_header("X-Tenant-Id"),
        auth_method=_header("X-Auth-Method"),
        consumer_id=_header("X-Consumer-Id"),
    )
