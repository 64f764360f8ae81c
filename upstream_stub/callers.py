"""Who is calling, as the gateway tells it in identity headers.

The stub trusts these headers the way a service behind a gateway does: the gateway
strips client-sent copies and sets them from a verified token or API key. A request
with no identity headers at all comes from inside the trusted network (a benchmark
or a health probe hitting the stub directly) and is not restricted.

Tenant isolation: every other caller reads and changes only records of the tenant in
X-Tenant-Id, admins included; a caller without one (a token with no tenant_id claim)
reaches no record at all, so a missing header never widens access. The one exception
is the service role on an API key (a reporting key, which has no tenant): it reads
every tenant and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import request

from upstream_stub.problems import Problem

ADMIN = "admin"
SERVICE = "service"
API_KEY = "api_key"


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
            and self.tenant_id is None
            and self.auth_method is None
            and self.consumer_id is None
        )

    @property
    def service_key(self) -> bool:
        """The service role on an API key: a reporting client that belongs to no tenant.

        A JWT never qualifies, whatever its roles: a token speaks for a user, and a
        user belongs to one tenant.
        """
        return self.auth_method == API_KEY and SERVICE in self.roles

    @property
    def every_tenant(self) -> bool:
        """Reads the records of every tenant."""
        return self.anonymous or self.service_key

    @property
    def admin(self) -> bool:
        return ADMIN in self.roles

    def reads(self, tenant_id: str | None) -> bool:
        """May see records of `tenant_id`."""
        return self.every_tenant or self.in_tenant(tenant_id)

    def writes(self, tenant_id: str | None) -> bool:
        """May create, change or delete records of `tenant_id`."""
        return self.anonymous or (not self.service_key and self.in_tenant(tenant_id))

    def in_tenant(self, tenant_id: str | None) -> bool:
        return self.tenant_id is not None and tenant_id == self.tenant_id

    def refuse_read_only(self) -> None:
        """A 403 for the service key's writes: it may know the record exists."""
        if self.service_key:
            raise Problem(
                403,
                "The service key reads across tenants but may not change anything.",
                code="forbidden",
            )


def _header(name: str) -> str | None:
    value = request.headers.get(name, "").strip()
    return value or None


def _roles(header: str) -> frozenset[str]:
    # Exact names, as the gateway compares them: " admin" is not "admin" here either,
    # so a role cannot mean one thing at the gateway and another upstream.
    return frozenset(role for role in header.split(",") if role)


def current_caller() -> Caller:
    return Caller(
        user_id=_header("X-User-Id"),
        roles=_roles(request.headers.get("X-User-Roles", "")),
        tenant_id=_header("X-Tenant-Id"),
        auth_method=_header("X-Auth-Method"),
        consumer_id=_header("X-Consumer-Id"),
    )
