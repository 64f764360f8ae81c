"""Which of the package's optional extras are installed, without importing them."""

from __future__ import annotations

import importlib.util

TRACING_HINT = "install the tracing extra: pip install 'gateway[tracing]'"


def tracing_installed() -> bool:
    """Whether the `tracing` extra (the OpenTelemetry SDK and its OTLP/HTTP exporter)
    is installed."""
    try:
        exporter = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http")
        return exporter is not None and importlib.util.find_spec("opentelemetry.sdk") is not None
    except ModuleNotFoundError:
        return False
