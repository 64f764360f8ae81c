"""The gateway's gunicorn workers: the server's own answers are problems like the
app's. (The connection loop itself is tested across processes: tests/integration.)"""

from __future__ import annotations

import json
import socket

import pytest

from gateway.workers import write_problem_error


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        (400, "Bad Request", "bad_request"),
        (408, "Request Timeout", "request_timeout"),
        (414, "URI Too Long", "request_uri_too_long"),
        (431, "Request Header Fields Too Large", "request_header_fields_too_large"),
    ],
)
def test_the_servers_own_answer_is_a_problem(status: int, reason: str, code: str) -> None:
    left, right = socket.socketpair()
    with left, right:
        write_problem_error(left, status, reason, "what went wrong")
        left.shutdown(socket.SHUT_WR)
        data = b""
        while piece := right.recv(65536):
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} {reason}".encode())
    assert b"Content-Type: application/problem+json" in head
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    problem = json.loads(body)
    assert problem["status"] == status and problem["code"] == code
    assert problem["detail"] == "what went wrong"
    assert set(problem) >= {"type", "title", "instance", "request_id"}
    assert f"X-Request-ID: {problem['request_id']}".encode() in head
