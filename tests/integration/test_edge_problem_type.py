"""An upstream problem's `type` reaches the client only if a browser that follows it
stays on the web: an absolute http(s) URI or a relative reference. Anything else
(`javascript:`, `data:`, `//host`, the same with whitespace or controls mixed in)
becomes `about:blank`, and the upstream's value is gone from the answer.

The upstream here is a small server of this module that answers 400 problem+json
with the `type` named by the request path; a real `gateway serve` is in front of it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .support import (
    LOOPBACK,
    Gateway,
    assert_problem,
    serving,
)

pytestmark = pytest.mark.integration

TYPES = {
    "javascript": "javascript:alert(document.domain)",
    "leading-space": " javascript:alert(document.domain)",
    "tab-inside": "java\tscript:alert(document.domain)",
    "newline-inside": "java\nscript:alert(document.domain)",
    "nul-first": "\x00javascript:alert(document.domain)",
    "upper-case": "JAVASCRIPT:alert(document.domain)",
    "data": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript": "vbscript:msgbox(1)",
    "network-path": "//evil.example/problems/x",
    "backslash": "/\\evil.example/problems/x",
    "userinfo": "https://docs.example@evil.example/x",
}
KEPT = {
    "absolute": "https://problems.example.test/out-of-credit",
    "relative": "/problems/out-of-credit",
}


class _ProblemUpstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        case = self.path.rsplit("/", 1)[-1]
        problem = {
            "type": {**TYPES, **KEPT}[case],
            "title": "Not enough credit.",
            "detail": "Your balance is 30.",
            "balance": 30,
        }
        body = json.dumps(problem).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def problem_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _ProblemUpstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, problem_upstream: str) -> Iterator[Gateway]:
    config = {
        "version": 1,
        "upstreams": {"problems": {"url": problem_upstream, "retries": 0}},
        "routes": [
            {
                "name": "problem",
                "path": "/problem/{case}",
                "methods": ["GET"],
                "upstream": "problems",
                "upstream_path": "/answer/{case}",
                "auth": "public",
            }
        ],
    }
    workdir = tmp_path_factory.mktemp("edge-problem-type")
    with serving(workdir, config, name="gateway-problem-type") as gateway:
        yield gateway


@pytest.mark.parametrize("case", list(TYPES))
def test_an_upstream_problem_type_that_leaves_the_web_becomes_about_blank(
    gateway: Gateway, case: str
) -> None:
    reply = gateway.get(f"/problem/{case}")
    body = assert_problem(reply, 400, "bad_request", f"/problem/{case}")
    assert body["type"] == "about:blank", body
    # The upstream's value is dropped, not moved to another member or a header (the
    # case name is in `instance`, which is the gateway's own).
    text = json.dumps({k: v for k, v in body.items() if k != "instance"}).lower()
    text += reply.raw_head.decode("latin-1").lower()
    for piece in ("script", "alert", "evil.example", "msgbox", "base64"):
        assert piece not in text, reply.describe()
    # The rest of the upstream's problem is kept.
    assert (body["title"], body["detail"], body["balance"]) == (
        "Not enough credit.",
        "Your balance is 30.",
        30,
    )


def test_only_the_scheme_decides_whether_a_problem_type_is_kept(gateway: Gateway) -> None:
    for case in (*KEPT, "javascript"):
        reply = gateway.get(f"/problem/{case}")
        body = assert_problem(reply, 400, "bad_request", f"/problem/{case}")
        assert body["type"] == KEPT.get(case, "about:blank"), body
