"""Running one stub service under gunicorn.

One worker, because the store lives in that process's memory; gthread with several
threads, so slow clients do not serialise everyone. The app is built before the
worker forks (preload), so a replaced worker starts from the same signing key.
gunicorn's own error answers (a request it cannot parse) are problem+json too, so
no response of the stub is ever an HTML page.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn import util as gunicorn_util  # type: ignore[import-untyped]
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

from upstream_stub.problems import PROBLEM_JSON, problem_type, status_code_name, status_title


def write_problem_error(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn's error answer, as problem+json instead of its HTML page."""
    body = json.dumps(
        {
            "type": problem_type(status),
            "title": status_title(status),
            "status": status,
            "detail": message or reason,
            "instance": "",
            "code": status_code_name(status),
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    gunicorn_util.write_nonblock(sock, head + body)


class StubWorker(ThreadWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        gunicorn_util.write_error = write_problem_error
        super().init_process()


def gunicorn_options(host: str, port: int, threads: int, *, access_log: bool) -> dict[str, Any]:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": 1,
        "worker_class": "upstream_stub.serving.StubWorker",
        "threads": threads,
        "preload_app": True,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "warning",
        "timeout": 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        # Identity arrives in X-User-Id and friends; X_User_Id must not pass as one.
        "header_map": "drop",
        "forwarded_allow_ips": "",
    }


class StubServer(BaseApplication):  # type: ignore[misc]
    def __init__(
        self, build: Callable[[], Flask], options: dict[str, Any], ready_line: str
    ) -> None:
        self._build = build
        self.options = options
        self._ready_line = ready_line
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # Newer gunicorn opens a control socket at one fixed path per user, which
            # two stubs on one host would fight over; nothing here uses it.
            self.cfg.set("control_socket_disable", True)
        ready_line = self._ready_line

        def when_ready(_server: Any) -> None:
            print(ready_line, file=sys.stderr, flush=True)

        self.cfg.set("when_ready", when_ready)

    def load(self) -> Flask:
        return self._build()
