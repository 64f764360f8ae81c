"""Rate limits per route and client, with the budget told to the client.

Keys: `user:<sub>` or `key:<id>` for an authenticated caller, else
`ip:<addr>` (from trusted_proxies only); `rate_limit_key: ip` always counts by address.
Counters are per route, or per named bucket shared by routes. Every limited response
carries X-RateLimit-* and the IETF RateLimit-Policy / RateLimit fields
(draft-ietf-httpapi-ratelimit-headers); a refusal is 429 rate_limited with Retry-After.
"""

from __future__ import annotations

import time
from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.config.model import RateLimit, Route
from gateway.context import RequestContext
from gateway.problems import RateLimited
from gateway.ratelimit import Counters, StorageUnavailable, Verdict, storage_down


def client_key(ctx: RequestContext, by: str) -> str:
    if by == "identity" and ctx.identity is not None:
        return ctx.identity.rate_limit_key
    return f"ip:{ctx.client.ip}"


def limit_headers(verdict: Verdict) -> dict[str, str]:
    limit = verdict.limit
    reset_in = max(0, int(verdict.reset_at - time.time() + 0.999))
    policy = f'"{limit.text}"'
    return {
        "X-RateLimit-Limit": str(limit.amount),
        "X-RateLimit-Remaining": str(verdict.remaining),
        "X-RateLimit-Reset": str(int(verdict.reset_at)),
        "RateLimit-Policy": f"{policy};q={limit.amount};w={limit.seconds}",
        "RateLimit": f"{policy};r={verdict.remaining};t={reset_in}",
    }


class ApplyRateLimit:
    ORDER: ClassVar[int] = 50

    def __init__(self, route: Route, limits: tuple[RateLimit, ...], counters: Counters) -> None:
        self.limits = limits
        self.counters = counters
        self.bucket = route.rate_limit_bucket or route.name
        self.key_by = route.rate_limit_key

    def on_request(self, ctx: RequestContext) -> Response | None:
        key = client_key(ctx, self.key_by)
        if ctx.rate_limit_storage_failed:
            # The guard's call failed a moment ago in this request: asking again would
            # make one request pay the storage's timeout twice over.
            error = storage_down(self.counters)
            if error is not None:
                raise error
            return None
        try:
            verdict = self.counters.hit(self.limits, self.bucket, key)
        except StorageUnavailable:
            ctx.rate_limit_storage_failed = True
            error = storage_down(self.counters)
            if error is not None:
                raise error from None
            return None
        ctx.rate_limit_verdict = verdict
        if not verdict.allowed:
            raise RateLimited(
                f"Too many requests: the limit is {verdict.limit.text}.",
                headers={**limit_headers(verdict), "Retry-After": str(verdict.retry_after())},
            )
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        verdict = ctx.rate_limit_verdict
        if verdict is not None and verdict.allowed:
            for name, value in limit_headers(verdict).items():
                response.headers[name] = value
        return response
