"""Role checks: the identity must hold any one of the route's roles (exact match)."""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.context import RequestContext
from gateway.problems import Forbidden


class RequireRoles:
    ORDER: ClassVar[int] = 40

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.roles = frozenset(roles)

    def on_request(self, ctx: RequestContext) -> Response | None:
        held = ctx.identity.roles if ctx.identity else ()
        if self.roles.isdisjoint(held):
            ctx.auth_failure = "role"
            raise Forbidden("Your credentials do not grant access to this route.")
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response
