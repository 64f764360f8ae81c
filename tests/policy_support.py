"""A RequestContext for policy unit tests, built from a werkzeug request."""

from __future__ import annotations

import time

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.clientinfo import ClientInfo
from gateway.context import RequestContext


def context(
    path: str = "/x", headers: dict[str, str] | None = None, method: str = "GET"
) -> RequestContext:
    request = Request(EnvironBuilder(path=path, method=method, headers=headers).get_environ())
    return RequestContext(
        request=request,
        raw_path=path,
        path=path,
        request_id="req-1",
        client=ClientInfo("127.0.0.1", "127.0.0.1", "http", "gw.test"),
        public_base="https://gw.test",
        started=time.perf_counter(),
    )
