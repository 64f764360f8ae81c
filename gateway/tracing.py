"""OpenTelemetry traces: a server span per request, a client span per upstream attempt.

Off unless `tracing.otlp_endpoint` (or the OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
OTEL_EXPORTER_OTLP_ENDPOINT variable) names a collector; the SDK is imported only
then, so a gateway without traces carries none of it. Each worker builds its own
provider (create_app runs after gunicorn's fork) and exports in batches from a
bounded queue: a collector that is slow or down loses spans, never a request, and
the queue is flushed when the worker stops (Gateway.close).

A `traceparent` is continued only from the clients of `tracing.trusted_networks`:
anyone else could otherwise choose the trace id and force every request sampled. The
upstream gets the child `traceparent` of its own client span, one per attempt, so a
retry or a composed part is a sibling under the request's span.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gateway.clientinfo import in_networks, networks
from gateway.config.model import TracingSettings
from gateway.extras import TRACING_HINT, tracing_installed

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

log = logging.getLogger("gateway.tracing")

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
MAX_QUEUED_SPANS = 2048


def tracing_wanted(settings: TracingSettings, environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(settings.otlp_endpoint or any(environ.get(v) for v in _ENDPOINT_VARIABLES))


def make_tracing(
    settings: TracingSettings, on_dropped: Callable[[], None] | None = None
) -> Tracing | None:
    """The worker's tracer when tracing is wanted; None when off, or when the SDK is
    missing (said once per worker: the file's `otlp_endpoint` is checked at load, but
    the OTEL_* variables only here)."""
    if not tracing_wanted(settings):
        return None
    if not tracing_installed():
        log.error("tracing is asked for, but the OpenTelemetry SDK is missing: %s", TRACING_HINT)
        return None
    return Tracing(settings, on_dropped=on_dropped)


class Tracing:
    """The worker's tracer: spans for requests and upstream attempts."""

    def __init__(
        self,
        settings: TracingSettings,
        exporter: SpanExporter | None = None,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        name = settings.service_name or os.environ.get("OTEL_SERVICE_NAME") or "gateway"
        self.provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        )
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=settings.otlp_endpoint or None,
                headers=dict(settings.headers) or None,
                timeout=5,
            )
        processor = _counting_processor(BatchSpanProcessor, on_dropped)
        self.processor = processor(exporter, max_queue_size=MAX_QUEUED_SPANS)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("gateway")
        self.propagator = TraceContextTextMapPropagator()
        self.trusted = networks(settings.trusted_networks)

    def server_span(self, method: str, path: str, headers: Any, client_ip: str) -> Span:
        """The request's span, a child of the client's traceparent when it is trusted.
        Named by the method until the route is known (`name_route`)."""
        from opentelemetry.trace import SpanKind

        parent = None
        if in_networks(client_ip, self.trusted):
            carrier = {"traceparent": headers.get("traceparent", "")}
            if headers.get("tracestate"):
                carrier["tracestate"] = headers["tracestate"]
            parent = self.propagator.extract(carrier)
        return self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )

    @contextmanager
    def client_span(
        self, parent: Span | None, upstream: str, method: str, attempt: int
    ) -> Iterator[tuple[Span, str | None]]:
        """A span for one upstream attempt, and the traceparent to send with it."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        context = set_span_in_context(parent) if parent is not None else None
        if parent is not None and not parent.is_recording():
            # An unsampled trace: nothing would be recorded; the upstream still gets
            # the trace's context (sampled flag off) to carry on.
            carrier: dict[str, str] = {}
            self.propagator.inject(carrier, context=context)
            yield parent, carrier.get("traceparent")
            return
        span = self.tracer.start_span(
            f"{method} {upstream}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "gateway.upstream": upstream,
                "http.request.resend_count": attempt - 1,
            },
        )
        sent: dict[str, str] = {}
        self.propagator.inject(sent, context=set_span_in_context(span))
        try:
            yield span, sent.get("traceparent")
        finally:
            span.end()

    def close(self) -> None:
        """Flushes what is queued (bounded by the exporter's timeout) and stops."""
        self.provider.shutdown()


def _counting_processor(base: Any, on_dropped: Callable[[], None] | None) -> Any:
    """The SDK's batching processor, telling `on_dropped` of each span it drops for a
    full queue (the SDK only logs it, or counts it in its own metrics)."""
    if on_dropped is None:
        return base
    dropped: Callable[[], None] = on_dropped

    class CountingBatchSpanProcessor(base):  # type: ignore[misc]
        def on_end(self, span: Any) -> None:
            batch = getattr(self, "_batch_processor", None)
            queue = getattr(batch, "_queue", None)
            capacity = getattr(batch, "_max_queue_size", None)
            if queue is not None and capacity is not None and len(queue) >= capacity:
                dropped()
            super().on_end(span)

    return CountingBatchSpanProcessor


def trace_id_of(span: Span) -> str | None:
    """The span's trace id as 32 hex digits; None for an invalid one."""
    context = span.get_span_context()
    return f"{context.trace_id:032x}" if context.trace_id else None
