"""Request ids and the access log: what an operator needs to follow one request."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from werkzeug.wrappers import Request

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

access_log = logging.getLogger("gateway.access")


def request_id_for(request: Request) -> str:
    """The client's X-Request-ID when it is safe to echo and log, else a new one."""
    offered = request.headers.get("X-Request-ID", "")
    if _CLIENT_REQUEST_ID.match(offered):
        return offered
    return uuid.uuid4().hex


def setup_logging() -> None:
    """JSON lines to stderr, once per process, unless the host app configured logging."""
    root = logging.getLogger("gateway")
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
    other = logging.StreamHandler(sys.stderr)
    other.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(other)
    root.setLevel(logging.INFO)


def log_access(**fields: Any) -> None:
    if access_log.isEnabledFor(logging.INFO):
        fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        access_log.info(json.dumps(fields, separators=(",", ":"), ensure_ascii=True))


class StorageFailures:
    """A worker's count of a storage's failures, warned about at most once every
    `every` seconds: a storage that is down fails every request, and a line per request
    would bury the log."""

    def __init__(self, log: logging.Logger, what: str, mode: str, every: float) -> None:
        self.log = log
        self.what = what  # "rate-limit storage", "cache storage"
        self.mode = mode  # the on_storage_error that applies
        self.every = every
        self.count = 0
        self._last_warning = 0.0

    def failed(self, exc: Exception) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last_warning >= self.every:
            self._last_warning = now
            self.log.warning(
                "%s failed (%s); on_storage_error=%s applies. %d failures so far in this worker.",
                self.what,
                exc,
                self.mode,
                self.count,
            )
