"""Runs a route's policies around the forwarding step (Envoy's filter order).

on_request in ORDER; the first Response (or GatewayError) ends the walk; the
terminal step forwards; on_response runs in reverse over the policies that ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from werkzeug.wrappers import Response

from gateway.context import RequestContext
from gateway.policies.base import Policy
from gateway.problems import GatewayError, error_response

Terminal = Callable[[RequestContext], Response]


class PolicyChain:
    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(sorted(policies, key=lambda p: p.ORDER))

    @property
    def names(self) -> list[str]:
        return [type(p).__name__ for p in self.policies]

    def run(self, ctx: RequestContext, terminal: Terminal) -> Response:
        ran: list[Policy] = []
        response: Response | None = None
        try:
            for policy in self.policies:
                ran.append(policy)
                response = policy.on_request(ctx)
                if response is not None:
                    break
            if response is None:
                response = terminal(ctx)
        except GatewayError as error:
            # Rendered here, not higher up, so the response hooks of the policies that
            # ran (CORS above all) also apply to error responses.
            response = error_response(error, instance=ctx.path, request_id=ctx.request_id)
        for policy in reversed(ran):
            response = policy.on_response(ctx, response)
        return response
