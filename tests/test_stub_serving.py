"""Serving under gunicorn: one worker, gthread, problem+json for gunicorn's own errors."""

from __future__ import annotations

import json
import socket

from flask import Flask

from upstream_stub.serving import StubServer, gunicorn_options, write_problem_error


def test_options_are_one_gthread_worker_with_threads() -> None:
    options = gunicorn_options("127.0.0.1", 8081, 8, access_log=False)
    assert options["bind"] == "127.0.0.1:8081"
    assert options["workers"] == 1
    assert options["threads"] == 8
    assert options["worker_class"] == "upstream_stub.serving.StubWorker"
    assert options["preload_app"] is True
    assert options["accesslog"] is None
    assert options["header_map"] == "drop"
    assert gunicorn_options("::1", 1, 1, access_log=True)["bind"] == "[::1]:1"
    assert gunicorn_options("::1", 1, 1, access_log=True)["accesslog"] == "-"


def test_gunicorns_own_errors_are_problem_json() -> None:
    left, right = socket.socketpair()
    with left, right:
        write_problem_error(left, 400, "Bad Request", "Invalid request line")
        raw = right.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 400
    assert problem["code"] == "bad_request"
    assert problem["detail"] == "Invalid request line"
    assert f"Content-Length: {len(body)}".encode() in head


def test_server_applies_options_and_builds_the_app_lazily() -> None:
    built: list[Flask] = []

    def build() -> Flask:
        built.append(Flask("built"))
        return built[-1]

    server = StubServer(build, gunicorn_options("127.0.0.1", 9, 3, access_log=False), "ready")
    assert server.cfg.threads == 3
    assert server.cfg.workers == 1
    if "control_socket_disable" in server.cfg.settings:
        assert server.cfg.settings["control_socket_disable"].get() is True
    assert built == []
    assert server.load() is built[0]
