"""The access log as written by a running gateway: one JSON line per request on its
standard error, with what the client saw and nothing secret."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from .support import Gateway, Reply, StartGateway

pytestmark = pytest.mark.integration


def json_lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))  # every such line is one JSON object
    return entries


def test_one_json_line_per_request_with_what_the_client_saw_and_no_secret(
    start_gateway: StartGateway, token: str
) -> None:
    gateway: Gateway = start_gateway(workers=2)
    offset = len(gateway.server.log())
    bearer = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ" + uuid.uuid4().hex + ".c2lnbmF0dXJl"
    api_key = "apikey-" + uuid.uuid4().hex
    secrets = {"Authorization": f"Bearer {bearer}", "X-API-Key": api_key}

    def send(method: str, target: str, body: bytes | None = None, rid: str | None = None) -> Reply:
        headers = list(secrets.items())
        if rid is not None:
            headers.append(("X-Request-ID", rid))
        return gateway.request(method, target, headers, body)

    replies: dict[str, tuple[str, str, Reply]] = {}

    def record(method: str, path: str, reply: Reply) -> None:
        rid = reply.header("X-Request-ID")
        assert rid is not None
        replies[rid] = (method, path, reply)

    record("GET", f"/items/{token}-1", send("GET", f"/items/{token}-1", rid=f"{token}-a"))
    record("GET", f"/items/{token}-2", send("GET", f"/items/{token}-2"))  # id made up
    payload = b"p" * 1234
    record("POST", f"/api/ok/{token}", send("POST", f"/api/ok/{token}", payload, f"{token}-b"))
    record("GET", f"/nowhere/{token}", send("GET", f"/nowhere/{token}", rid=f"{token}-c"))
    record("GET", f"/closed/x/{token}", send("GET", f"/closed/x/{token}", rid=f"{token}-d"))
    record(
        "GET",
        f"/items/{token}\x1b[31m\n",
        send("GET", f"/items/{token}%1b%5b31m%0a", rid=f"{token}-e"),
    )
    for index in range(6):  # a few more, so both workers are likely to write
        path = f"/items/{token}-{index + 10}"
        record("GET", path, send("GET", path))

    log = gateway.server.log()[offset:]
    entries = json_lines(log)
    assert len(entries) == len(replies), log
    by_id = {entry["request_id"]: entry for entry in entries}
    assert set(by_id) == set(replies)

    for rid, (method, path, reply) in replies.items():
        entry = by_id[rid]
        assert entry["method"] == method
        assert entry["status"] == reply.status
        assert entry["client"] == "ip:127.0.0.1"
        assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
        if entry["upstream_ms"] is not None:
            assert 0 <= entry["upstream_ms"] <= entry["duration_ms"]
        if "\x1b" not in path:
            assert entry["path"] == path
        if reply.header("Content-Length") is not None and method != "HEAD":
            assert entry["bytes_out"] == int(reply.header("Content-Length") or 0)

    first = by_id[f"{token}-a"]
    assert first["route"] == "items.get" and first["upstream"] == "backend"
    assert first["status"] == 200 and first["upstream_ms"] is not None
    assert first["bytes_in"] == 0 and first["bytes_out"] == len(replies[f"{token}-a"][2].body)

    posted = by_id[f"{token}-b"]
    assert posted["route"] == "api.any" and posted["bytes_in"] == len(payload)

    unmatched = by_id[f"{token}-c"]
    assert unmatched["status"] == 404 and unmatched["route"] is None
    assert unmatched["upstream"] is None and unmatched["upstream_ms"] is None

    refused = by_id[f"{token}-d"]
    assert refused["status"] == 502 and refused["upstream"] == "closed"
    assert refused["upstream_error"] == "refused"

    escaped = by_id[f"{token}-e"]
    assert "\x1b" not in escaped["path"] and "\n" not in escaped["path"]
    assert escaped["path"].isprintable()

    for line in log.splitlines():
        if line.startswith("{"):
            assert all(32 <= ord(c) < 127 for c in line), repr(line)
    assert bearer not in log and api_key not in log
    assert bearer[-20:] not in log and api_key[-20:] not in log
