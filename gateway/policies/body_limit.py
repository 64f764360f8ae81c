"""413 for a declared body over `max_body_bytes`, before anything reaches an upstream.

Chunked bodies have no declared size: the forwarder reads them under the same limit
before it connects (see proxy.py), so both paths end in the same 413.
"""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.policies.base import RequestContext
from gateway.problems import BadRequest, PayloadTooLarge


class BodyLimit:
    ORDER: ClassVar[int] = 20

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    def on_request(self, ctx: RequestContext) -> Response | None:
        declared = ctx.request.headers.get("Content-Length")
        if declared is None:
            return None
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number.")
        if int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(
                f"The request body is {declared} bytes; at most {self.max_body_bytes} "
                "are accepted.",
                max_body_bytes=self.max_body_bytes,
            )
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response


def too_large(max_body_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is over {max_body_bytes} bytes.",
        max_body_bytes=max_body_bytes,
    )
