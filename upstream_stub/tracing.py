"""The stub's own spans, so that one trace crosses the gateway and the service.

On when the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
variable is set (and the gateway's `tracing` extra is installed): a server span per
request, a child of the `traceparent` the gateway sent, named by the Flask rule. The
stub sits behind the gateway, so every caller's traceparent is continued.
"""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, g, request

from gateway.config.model import TracingSettings
from gateway.tracing import make_tracing

log = logging.getLogger("upstream_stub.tracing")


def instrument(app: Flask, service: str) -> None:
    settings = TracingSettings(
        service_name=os.environ.get("OTEL_SERVICE_NAME") or f"{service}-stub",
        trusted_networks=("0.0.0.0/0", "::/0"),
    )
    tracing = make_tracing(settings)
    if tracing is None:
        return

    @app.before_request
    def start_span() -> None:
        g.trace_span = tracing.server_span(
            request.method, request.path, request.headers, request.remote_addr or ""
        )

    @app.after_request
    def name_span(response: Response) -> Response:
        span = g.get("trace_span")
        if span is not None:
            if request.url_rule is not None:
                span.update_name(f"{request.method} {request.url_rule.rule}")
                span.set_attribute("http.route", request.url_rule.rule)
            span.set_attribute("http.response.status_code", response.status_code)
        return response

    @app.teardown_request
    def end_span(_error: BaseException | None) -> None:
        span = g.pop("trace_span", None)
        if span is not None:
            span.end()

    app.extensions["tracing"] = tracing
