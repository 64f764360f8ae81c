"""The shape every policy has.

Like a Kong plugin: a fixed ORDER, an access step that may end the request by
returning (or raising) a response, and a response step run in reverse order.
Whatever a later step needs (the identity, headers for the upstream) is left on
the RequestContext (gateway/context.py), never in globals.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from werkzeug.wrappers import Response

from gateway.context import RequestContext


class Policy(Protocol):
    ORDER: ClassVar[int]

    def on_request(self, ctx: RequestContext) -> Response | None:
        """Inspect the request; return a Response (or raise GatewayError) to end it."""

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        """Adjust the response on its way out (runs in reverse ORDER)."""
