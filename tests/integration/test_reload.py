"""Reloading routes.yaml with kill -HUP, under a steady load from another process.

Five reloads each add a route, which answers once the new workers serve; then a broken
file changes nothing: the last table keeps serving, the log names every problem as
FILE:LINE:COL, and the metrics count one rejected reload. Over the whole run the load
sees only 2xx answers. The same holds for plain gunicorn with gunicorn.conf.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import (
    ServerProcess,
    gateway_serve_argv,
    http_request,
    pid_alive,
    start_server,
    subprocess_env,
    write_config,
)
from .test_operations_gunicorn_conf import start_gunicorn
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

STEADY_LOAD = Path(__file__).with_name("steady_load.py")
RELOADS = 5


def routes_config(upstream_url: str, added: int) -> dict[str, Any]:
    """One steady route and `added` more, /new1 ... /newN."""

    def route(name: str, prefix: str) -> dict[str, Any]:
        return {
            "name": name,
            "path": f"/{prefix}/{{rest:path}}",
            "methods": ["GET"],
            "upstream": "backend",
            "upstream_path": f"/up/ok/{prefix}/{{rest:path}}",
            "auth": "public",
        }

    return {
        "version": 1,
        "gateway": {"trusted_proxies": 0},
        "upstreams": {"backend": {"url": upstream_url, "timeout": 5.0}},
        "routes": [route("steady", "steady")]
        + [route(f"new{i}", f"new{i}") for i in range(1, added + 1)],
    }


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def answers(port: int, target: str) -> Callable[[], bool]:
    return lambda: http_request(port, "GET", target).status == 200


def samples(port: int, name: str) -> dict[frozenset[tuple[str, str]], float]:
    reply = http_request(port, "GET", "/metrics")
    assert reply.status == 200, reply.describe()
    found: dict[frozenset[tuple[str, str]], float] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


def serving_digests(port: int) -> set[str]:
    """The sha256 labels of gateway_config_info with a live worker behind them."""
    return {
        dict(labels)["sha256"]
        for labels, value in samples(port, "gateway_config_info").items()
        if value == 1
    }


def reloads(port: int, result: str) -> float:
    return samples(port, "gateway_config_reloads_total").get(frozenset({("result", result)}), 0.0)


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class SteadyLoad:
    """tests/integration/steady_load.py in a process of its own."""

    def __init__(self, workdir: Path, port: int, path: str) -> None:
        self.stop_file = workdir / "stop-load"
        self.out = workdir / "load.json"
        self.process = subprocess.Popen(
            [sys.executable, str(STEADY_LOAD), "--port", str(port), "--path", path]
            + ["--until", str(self.stop_file), "--out", str(self.out)],
            stdin=subprocess.DEVNULL,
        )

    def finish(self) -> dict[str, Any]:
        self.stop_file.touch()
        self.process.wait(timeout=60)
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result


def reload_under_load(server: ServerProcess, config: Path, upstream: MisbehavingUpstream) -> None:
    port = server.port
    assert serving_digests(port) == {digest_of(config)}
    load = SteadyLoad(config.parent, port, "/steady/x")
    try:
        time.sleep(1.0)  # the load is running before the first reload
        for added in range(1, RELOADS + 1):
            write_config(config, routes_config(upstream.url, added))
            os.kill(server.pid, signal.SIGHUP)
            wait_for(
                f"/new{added} answers",
                answers(port, f"/new{added}/x"),
            )
            # Until the old workers are gone, they may still show the old table.
            wait_for(
                "only the new table in service",
                lambda: serving_digests(port) == {digest_of(config)},
            )
        assert reloads(port, "applied") == RELOADS
        serving = digest_of(config)

        good = config.read_text()
        broken = routes_config(upstream.url, RELOADS + 1)
        broken["routes"][-1]["upstream"] = "nowhere"
        write_config(config, broken)
        os.kill(server.pid, signal.SIGHUP)
        wait_for("the rejected reload is counted", lambda: reloads(port, "rejected") == 1)
        time.sleep(1.0)  # the replaced workers are up by now: they kept the old table
        assert http_request(port, "GET", f"/new{RELOADS}/x").status == 200
        assert http_request(port, "GET", f"/new{RELOADS + 1}/x").status == 404
        assert serving_digests(port) == {serving}
        assert reloads(port, "applied") == RELOADS
        assert http_request(port, "GET", "/readyz").status == 200
        log = server.log()
        where = re.escape(str(config))
        assert re.search(
            rf"config reload rejected: {where}:\d+:\d+: route 'new{RELOADS + 1}': "
            r"upstream 'nowhere' is not defined",
            log,
        ), log[-3000:]
        assert f"still serving {serving}" in log
        assert pid_alive(server.pid)
        config.write_text(good)
    finally:
        result = load.finish()
    print("steady load:", result)
    answered = sum(result["statuses"].values())
    assert result["errors"] == [], result
    assert set(result["statuses"]) == {"200"}, result
    assert answered > 200, result


def test_gateway_serve_reloads_under_load_and_keeps_serving_a_broken_file(
    tmp_path: Path, upstream: MisbehavingUpstream
) -> None:
    config = write_config(tmp_path / "routes.yaml", routes_config(upstream.url, 0))
    server = start_server(
        gateway_serve_argv(config, 2, 4),
        workdir=tmp_path,
        name="gateway",
        env=subprocess_env(),
        workers=2,
    )
    try:
        reload_under_load(server, config, upstream)
    finally:
        server.stop()


def test_plain_gunicorn_reloads_under_load_and_keeps_serving_a_broken_file(
    tmp_path: Path, upstream: MisbehavingUpstream
) -> None:
    config = write_config(tmp_path / "routes.yaml", routes_config(upstream.url, 0))
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start_gunicorn(tmp_path, config, temp)
    try:
        reload_under_load(server, config, upstream)
    finally:
        server.stop()


def test_a_broken_file_at_start_stops_plain_gunicorn_with_its_problems(
    tmp_path: Path, upstream: MisbehavingUpstream
) -> None:
    broken = routes_config(upstream.url, 0)
    broken["routes"][0]["upstream"] = "nowhere"
    config = write_config(tmp_path / "routes.yaml", broken)
    temp = tmp_path / "tmp"
    temp.mkdir()
    with pytest.raises(RuntimeError) as caught:
        start_gunicorn(tmp_path, config, temp)
    assert re.search(
        rf"{re.escape(str(config))}:\d+:\d+: route 'steady': upstream 'nowhere'", str(caught.value)
    ), str(caught.value)[-3000:]


def test_watch_reloads_when_the_file_changes(tmp_path: Path, upstream: MisbehavingUpstream) -> None:
    config = write_config(tmp_path / "routes.yaml", routes_config(upstream.url, 0))

    def argv(port: int) -> list[str]:
        return [*gateway_serve_argv(config, 1, 2)(port), "--watch"]

    server = start_server(argv, workdir=tmp_path, name="gateway", env=subprocess_env(), workers=1)
    try:
        assert http_request(server.port, "GET", "/new1/x").status == 404
        write_config(config, routes_config(upstream.url, 1))
        wait_for(
            "the watched change is served",
            lambda: http_request(server.port, "GET", "/new1/x").status == 200,
        )
        assert reloads(server.port, "applied") == 1
        assert "config watch: a file changed" in server.log()
    finally:
        server.stop()


def test_the_served_openapi_document_follows_a_reload(
    tmp_path: Path, upstream: MisbehavingUpstream
) -> None:
    from openapi_spec_validator import validate

    def config(added: int) -> dict[str, Any]:
        return {**routes_config(upstream.url, added), "gateway": {"openapi_path": "/openapi.json"}}

    path = write_config(tmp_path / "routes.yaml", config(0))
    server = start_server(
        gateway_serve_argv(path, 1, 2),
        workdir=tmp_path,
        name="gateway",
        env=subprocess_env(),
        workers=1,
    )
    try:
        first = http_request(server.port, "GET", "/openapi.json")
        assert first.status == 200, first.describe()
        document = first.json()
        validate(document)
        assert set(document["paths"]) == {"/steady/{rest}"}
        assert upstream.host_port not in first.body.decode()

        write_config(path, config(1))
        os.kill(server.pid, signal.SIGHUP)
        wait_for("/new1 answers", answers(server.port, "/new1/x"))
        wait_for(
            "the document names the new route",
            lambda: (
                "/new1/{rest}" in http_request(server.port, "GET", "/openapi.json").json()["paths"]
            ),
        )
        again = http_request(server.port, "GET", "/openapi.json")
        assert again.header("ETag") != first.header("ETag")
    finally:
        server.stop()
