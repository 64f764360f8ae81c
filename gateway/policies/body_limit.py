"""413 for a body over `max_body_bytes`, before any other check and any upstream.

A declared Content-Length is compared at once. A chunked body has no declared size,
so it is read here, whole and under the limit, and kept on the context for the
forwarder: an oversized upload is a 413 (CONTRACT §3 puts it before 401) and is
never half-forwarded.
"""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.policies.base import RequestContext
from gateway.problems import BadRequest, PayloadTooLarge

_CHUNK = 64 * 1024


class BodyLimit:
    ORDER: ClassVar[int] = 20

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    def on_request(self, ctx: RequestContext) -> Response | None:
        declared = ctx.request.headers.get("Content-Length")
        if declared is None:
            if "chunked" in ctx.request.headers.get("Transfer-Encoding", "").lower():
                ctx.body = self._read_chunked(ctx)
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

    def _read_chunked(self, ctx: RequestContext) -> bytes:
        buffer = bytearray()
        stream = ctx.request.stream
        while chunk := stream.read(_CHUNK):
            buffer += chunk
            if len(buffer) > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
        return bytes(buffer)

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response


def too_large(max_body_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is over {max_body_bytes} bytes.",
        max_body_bytes=max_body_bytes,
    )
