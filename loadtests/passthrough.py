#!/usr/bin/env python3
"""The benchmark's baseline: a plain Flask app that forwards requests with httpx.

No routing table, no policies, no logging, no metrics: every `GET /<path>` goes to the
same path (and query string) at the upstream through one shared `httpx.Client`, and
the upstream's status, headers and body come back. It runs under gunicorn's threaded
(gthread) worker with the same workers, threads, keep-alive and timeouts as
`gateway serve`, so the two differ only in what the application does per request.

    .venv/bin/python loadtests/passthrough.py --upstream http://127.0.0.1:8081 \\
        --port 8090 --workers 2 --threads 8
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import httpx
from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication

# RFC 9110 section 7.6.1: connection-specific headers are not forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def create_app(upstream: str, max_connections: int = 100) -> Flask:
    app = Flask("passthrough")
    # One client per worker process (the app is built in each worker), shared by its
    # threads; its pool keeps the upstream connections alive.
    client = httpx.Client(
        base_url=upstream,
        timeout=httpx.Timeout(10.0, connect=1.0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )

    @app.get("/", defaults={"path": ""})
    @app.get("/<path:path>")
    def forward(path: str) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        upstream_response = client.get(
            "/" + path, params=request.query_string.decode("latin-1") or None, headers=headers
        )
        out_headers = [
            (k, v) for k, v in upstream_response.headers.multi_items() if k not in HOP_BY_HOP
        ]
        return Response(upstream_response.content, upstream_response.status_code, out_headers)

    return app


class PassthroughServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, upstream: str, options: dict[str, Any]) -> None:
        self.upstream = upstream
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Flask:
        return create_app(self.upstream)


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """The serving settings of `gateway serve` that bear on speed, without its hooks."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "keepalive": 5,
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "forwarded_allow_ips": "",
        "header_map": "drop",
        "limit_request_field_size": 16384,
        "proc_name": "passthrough",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="passthrough", description="Plain Flask + httpx GET passthrough (bench baseline)."
    )
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    options = gunicorn_options(args.host, args.port, args.workers, args.threads)
    PassthroughServer(args.upstream.rstrip("/"), options).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
