"""CORS for browser clients, computed by flask-cors from the route's settings.

The gateway owns CORS: an upstream's own Access-Control-* headers never reach the
client, preflights are answered here and never forwarded, and every response
(401/403/429/5xx problems included) carries the headers, so a browser script can
read why it was refused. It is not a policy: the app applies it to every answer in
one place, its finishing step (Gateway.handle). Origins match exactly, scheme, host
and port: each is compiled to an anchored, escaped pattern, so
`https://app.example.com` never admits `https://app.example.com.evil.io` and no
origin is ever read as a regex.
"""

from __future__ import annotations

import re

from flask_cors.core import get_cors_headers, serialize_options
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response

from gateway.config.model import CorsSettings
from gateway.context import RequestContext
from gateway.headers import add_vary

_PRIVATE_NETWORK = "Access-Control-Allow-Private-Network"


def is_preflight(headers: Headers, method: str) -> bool:
    return method == "OPTIONS" and "Access-Control-Request-Method" in headers


class PreflightAnswer(Response):
    """A preflight's answer: complete as it is, with CORS headers of its own."""

    default_mimetype = None  # no body, so no Content-Type


class Cors:
    def __init__(self, settings: CorsSettings) -> None:
        self.settings = settings
        wildcard = "*" in settings.allow_origins
        # The loader refuses this; a hand-built setting must not echo any origin either.
        assert not (wildcard and settings.allow_credentials), "'*' with credentials"
        origins: list[str | re.Pattern[str]] = (
            ["*"]
            if wildcard
            else [re.compile(re.escape(o) + r"\Z", re.IGNORECASE) for o in settings.allow_origins]
        )
        self.options = serialize_options(
            {
                "origins": origins,
                "methods": list(settings.allow_methods),
                "allow_headers": [
                    re.compile(re.escape(h) + r"\Z", re.IGNORECASE) for h in settings.allow_headers
                ],
                "expose_headers": list(settings.expose_headers) or None,
                "supports_credentials": settings.allow_credentials,
                "max_age": settings.max_age,
                "send_wildcard": wildcard and not settings.allow_credentials,
                "vary_header": True,
                "allow_private_network": settings.allow_private_network,
            }
        )

    def decorate(self, ctx: RequestContext, response: Response) -> Response:
        """Put these CORS headers on a response, replacing any upstream ones."""
        for name in list(response.headers.keys()):
            if name.lower().startswith("access-control-"):
                del response.headers[name]
        method = "GET" if ctx.request.method == "OPTIONS" else ctx.request.method
        self._apply(ctx.request.headers, method, response)
        return response

    def preflight(self, ctx: RequestContext, *, route_methods: tuple[str, ...]) -> Response:
        """Answer a preflight without credentials and without asking any upstream.

        `route_methods`: the methods the path really has; a preflight for any other
        method gets no CORS headers, so the browser stops before sending it.
        """
        response = PreflightAnswer(status=204)
        requested = ctx.request.headers.get("Access-Control-Request-Method", "").upper()
        if requested in route_methods:
            self._apply(ctx.request.headers, "OPTIONS", response)
            if "Access-Control-Allow-Methods" in response.headers:
                # flask-cors drops a max_age of 0; "0" means: do not cache this answer.
                response.headers["Access-Control-Max-Age"] = str(self.settings.max_age)
                offered = [m for m in self.settings.allow_methods if m in route_methods]
                response.headers["Access-Control-Allow-Methods"] = ", ".join(offered)
        add_vary(
            response, "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"
        )
        return response

    def _apply(self, request_headers: Headers, method: str, response: Response) -> None:
        for name, value in get_cors_headers(self.options, request_headers, method).items():
            if name == _PRIVATE_NETWORK and not self.settings.allow_private_network:
                continue  # only ever sent when configured
            if name == "Vary":
                continue
            response.headers[name] = str(value)
        # Vary: Origin always: the answer depends on Origin even when it says no, and a
        # cache must not hand one origin's answer to another (Fetch standard, CORS).
        add_vary(response, "Origin")
