"""Authentication for routes that are not `auth: public`.

Fail closed: until a route's credentials can be verified (JWT and API-key
verification are not part of this release), every request to a non-public route is
answered 401 and never forwarded. A route that declares authentication must never
become an open door because the code to check it is missing.
"""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.policies.base import RequestContext
from gateway.problems import Unauthorized

# RFC 6750 §3: the challenge a 401 for a bearer-token resource carries.
CHALLENGE = 'Bearer realm="gateway"'


class DenyUnverified:
    ORDER: ClassVar[int] = 30

    def on_request(self, ctx: RequestContext) -> Response | None:
        raise Unauthorized(
            "This route requires credentials that this gateway release cannot verify.",
            headers={"WWW-Authenticate": CHALLENGE},
        )

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response
