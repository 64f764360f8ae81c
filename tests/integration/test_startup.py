"""Starting and stopping: config errors before any port is bound, the app factory
under plain gunicorn, and a master that takes its workers with it."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from .support import (
    LOOPBACK,
    Gateway,
    StartGateway,
    free_port,
    gateway_config,
    pid_alive,
    port_accepts,
    port_is_free,
    start_server,
    subprocess_env,
    venv_script,
    write_config,
)
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

MANY_PROBLEMS = """\
version: 1
gatway:
  public_url: ""
upstreams:
  backend:
    url: ftp://127.0.0.1:1
routes:
  - name: broken
    path: /a/{x}
    methods: [GET]
    upstream: nowhere
    auth: public
"""
MALFORMED = """\
version: 1
routes: [
  - name: x
"""
UNSET_VARIABLE = """\
version: 1
upstreams:
  backend:
    url: ${GATEWAY_TEST_SURELY_UNSET_VARIABLE}
routes: []
"""
BAD_CONFIGS = {
    "many_problems": (MANY_PROBLEMS, {2, 6, 11}),
    "malformed_yaml": (MALFORMED, None),
    "unset_variable": (UNSET_VARIABLE, {4}),
}


@pytest.mark.parametrize(("text", "lines"), list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_serve_with_invalid_config_exits_1_with_file_line_col_and_never_binds(
    tmp_path: Path, text: str, lines: set[int] | None
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(text)
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    bound = False
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [venv_script("gateway"), "serve", "-c", str(config), "--host", LOOPBACK]
            + ["--port", str(port), "--workers", "1"],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
            cwd=tmp_path,
        )
        try:
            ends = time.monotonic() + 20
            while process.poll() is None and time.monotonic() < ends:
                bound = bound or port_accepts(port)
                time.sleep(0.01)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
    assert process.returncode == 1
    assert not bound
    assert port_is_free(port)
    output = out.read_text() + err.read_text()
    problem = re.compile(rf"^{re.escape(str(config))}:(\d+):(\d+): \S.*$")
    found = [m for m in map(problem.match, output.splitlines()) if m]
    assert found, output
    assert all(int(m.group(1)) >= 1 and int(m.group(2)) >= 1 for m in found)
    if lines is not None:
        assert {int(m.group(1)) for m in found} >= lines, output
    assert "Traceback" not in output
    assert "Listening at" not in output


def test_gunicorn_app_factory_with_gateway_config_serves_requests(
    tmp_path: Path, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    config = write_config(
        tmp_path / "elsewhere.yaml",
        gateway_config(upstream.url, f"http://{LOOPBACK}:{closed_port}"),
    )
    workdir = tmp_path / "cwd"  # no ./routes.yaml here: only GATEWAY_CONFIG can name it
    workdir.mkdir()
    server = start_server(
        lambda port: [
            venv_script("gunicorn"),
            "gateway:create_app()",
            "--bind",
            f"{LOOPBACK}:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "2",
        ],
        workdir=workdir,
        name="gunicorn",
        env=subprocess_env(GATEWAY_CONFIG=str(config)),
        workers=1,
    )
    try:
        client = Gateway(server, {})
        reply = client.get(f"/items/a%20b?t={token}")
        assert reply.status == 200, reply.describe() + server.log()
        assert upstream.only(token).target == f"/up/ok/item/a%20b?t={token}"
        missing = client.get(f"/nowhere?t={token}")
        assert missing.status == 404
        assert missing.media_type == "application/problem+json"
    finally:
        assert server.stop() is not None


def test_sigterm_stops_the_master_and_every_worker(start_gateway: StartGateway) -> None:
    gateway = start_gateway(workers=2, threads=2)
    workers = gateway.server.workers()
    assert len(workers) == 2
    port = gateway.port
    started = time.monotonic()
    returncode = gateway.server.stop()
    assert returncode == 0
    assert time.monotonic() - started < 10
    assert not any(pid_alive(pid) for pid in workers)
    assert port_is_free(port)
