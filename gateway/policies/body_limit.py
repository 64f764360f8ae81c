"""413 for a body over `max_body_bytes`, before any other check and any upstream.

A declared Content-Length is compared at once; such a body is read later, by the
forwarder, once the caller has passed every check. A chunked body has no declared
size, so it is read here, whole, under the limit and the body deadline, and kept on
the context for the forwarder: an oversized upload is a 413 before 401, and nothing
is ever half-forwarded.
"""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.config.model import GatewaySettings
from gateway.context import RequestContext
from gateway.request_body import declared_length, is_chunked, read_body


class BodyLimit:
    ORDER: ClassVar[int] = 20

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    def on_request(self, ctx: RequestContext) -> Response | None:
        settings = self.settings
        if declared_length(ctx.request, settings.max_body_bytes) is None and is_chunked(
            ctx.request
        ):
            ctx.body = read_body(
                ctx.request,
                max_bytes=settings.max_body_bytes,
                memory_bytes=settings.body_memory_bytes,
                timeout=settings.request_body_timeout,
            )
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        return response
