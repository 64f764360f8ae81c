"""`upstream-stub`: flags, the taken-port check, and one real run under gunicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from upstream_stub import cli
from upstream_stub.serving import StubServer
from upstream_stub.tokens import public_jwk

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[StubServer]:
    """Servers main() would have run; gunicorn itself is not started."""
    runs: list[StubServer] = []
    monkeypatch.setattr(StubServer, "run", lambda self: runs.append(self))
    return runs


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUB_ISSUER", raising=False)
    args = cli.parser().parse_args(["--service", "users"])
    assert args.host == "127.0.0.1"
    assert args.port is None  # chosen per service
    assert args.threads == 8
    assert args.seed_users == 250 and args.seed_orders == 1000
    assert args.token_ttl == 900 and args.refresh_ttl == 7 * 24 * 3600
    assert args.issuer == "http://127.0.0.1:8081"
    assert cli.DEFAULT_PORTS == {"users": 8081, "orders": 8082}


def test_issuer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_ISSUER", "https://id.example.test")
    assert cli.parser().parse_args(["--service", "users"]).issuer == "https://id.example.test"
    explicit = ["--service", "users", "--issuer", "http://x.test"]
    assert cli.parser().parse_args(explicit).issuer == "http://x.test"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--service", "payments"],
        ["--service", "users", "--port", "0"],
        ["--service", "users", "--port", "70000"],
        ["--service", "users", "--threads", "0"],
        ["--service", "users", "--seed-users", "-1"],
        ["--service", "users", "--token-ttl", "0"],
    ],
)
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.parser().parse_args(argv)
    assert caught.value.code == 2


def test_a_taken_port_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert cli.port_problem(LOOPBACK, port) == f"port {port} on 127.0.0.1 is already in use"
        assert cli.main(["--service", "orders", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == f"upstream-stub: port {port} on 127.0.0.1 is already in use\n"


def test_a_free_port_has_no_problem() -> None:
    assert cli.port_problem(LOOPBACK, free_port()) is None


def test_an_unresolvable_host_is_reported() -> None:
    problem = cli.port_problem("no-such-host.invalid", free_port())
    assert problem is not None and problem.startswith("cannot resolve host")


def test_main_runs_the_chosen_service_with_its_settings(captured: list[StubServer]) -> None:
    port = free_port()
    argv = ["--service", "orders", "--port", str(port), "--threads", "3", "--seed-orders", "7"]
    assert cli.main(argv) == 0
    [server] = captured
    assert server.cfg.bind == [f"127.0.0.1:{port}"]
    assert server.cfg.threads == 3
    app = server.load()
    body = app.test_client().get("/v2/orders?limit=200").get_json()
    assert len(body["data"]) == 7


@pytest.mark.parametrize(("service", "port"), [("users", 8081), ("orders", 8082)])
def test_default_port_per_service(
    service: str, port: int, captured: list[StubServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[tuple[str, int]] = []
    monkeypatch.setattr(cli, "port_problem", lambda host, port: checked.append((host, port)))
    assert cli.main(["--service", service, "--seed-users", "0"]) == 0
    assert checked == [("127.0.0.1", port)]
    assert captured[0].cfg.bind == [f"127.0.0.1:{port}"]


def test_private_key_file_is_used(tmp_path: Path, captured: list[StubServer]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    argv = ["--service", "users", "--port", str(free_port()), "--private-key", str(path)]
    assert cli.main([*argv, "--seed-users", "0"]) == 0
    jwks = captured[0].load().test_client().get("/.well-known/jwks.json").get_json()
    assert jwks["keys"][0]["kid"] == public_jwk(key)["kid"]


def test_unusable_private_keys_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.pem"
    assert cli.main(["--service", "users", "--private-key", str(missing)]) == 1
    assert "cannot read" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    assert cli.main(["--service", "users", "--private-key", str(garbage)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("upstream-stub: ") and err.count("\n") == 1


# --- a real process ------------------------------------------------------------------


def _request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.integration
def test_the_console_script_serves_users_over_http() -> None:
    script = Path(sys.executable).with_name("upstream-stub")
    assert script.exists(), "install the package first (pip install -e .)"
    port = free_port()
    process = subprocess.Popen(
        [str(script), "--service", "users", "--port", str(port), "--seed-users", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                status, body = _request(f"{base}/healthz")
            except OSError:
                status, body = 0, None
            if status == 200:
                break
            assert time.monotonic() < deadline, "the stub did not become healthy"
            time.sleep(0.1)
        assert body == {"status": "ok"}
        status, tokens = _request(
            f"{base}/auth/login", {"email": "admin@example.com", "password": "admin-password"}
        )
        assert status == 200
        assert tokens["token_type"] == "Bearer"
        status, problem = _request(
            f"{base}/auth/login", {"email": "admin@example.com", "password": "nope"}
        )
        assert status == 401 and problem["code"] == "unauthorized"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()
    assert process.returncode == 0
    assert f"users service listening on http://127.0.0.1:{port}" in stderr.decode()
