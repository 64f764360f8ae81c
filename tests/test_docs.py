"""The documentation cannot drift from the code: schema file, key coverage, examples."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.cli import build_parser, main
from gateway.config.load import load_config, load_config_text
from gateway.config.schema import INCLUDED_SCHEMA, SCHEMA

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"
OPERATIONS = DOCS / "operations.md"
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
SCHEMA_FILE = DOCS / "routes.schema.json"
INCLUDED_SCHEMA_FILE = DOCS / "routes-include.schema.json"

# What the examples may need: environment variables without defaults, and the files
# they name (resolved, like the gateway does, relative to the config file).
EXAMPLE_ENVIRON = {"JWT_SECRET": "an-example-secret-of-at-least-32-bytes"}
EXAMPLE_FILES = ("certs/internal-ca.pem", "keys/jwt-public.pem")

_FENCE = re.compile(r"^```([A-Za-z0-9_-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`+([^`\n]+?)`+")


def _property_names(schema: Any) -> Iterator[str]:
    """Every key of every `properties` mapping, at any depth of the schema."""
    if isinstance(schema, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict):
            yield from properties
        for value in schema.values():
            yield from _property_names(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _property_names(item)


def _code_blocks(language: str) -> list[tuple[int, str]]:
    text = REFERENCE.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in _FENCE.finditer(text)
        if match.group(1) == language
    ]


def _is_full_config(block: str) -> bool:
    """Starts with `version: 1` (after any leading comments, such as a modeline)."""
    for line in block.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped == "version: 1"
    return False


FULL_EXAMPLES = [(line, block) for line, block in _code_blocks("yaml") if _is_full_config(block)]


def test_published_schema_file_equals_the_schema_the_loader_uses() -> None:
    with SCHEMA_FILE.open(encoding="utf-8") as handle:
        assert json.load(handle) == SCHEMA


def test_published_schema_file_is_exactly_what_gateway_schema_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema"]) == 0
    assert SCHEMA_FILE.read_text(encoding="utf-8") == capsys.readouterr().out


def test_published_included_file_schema_is_exactly_the_one_the_loader_uses() -> None:
    expected = json.dumps(INCLUDED_SCHEMA, indent=2) + "\n"
    assert INCLUDED_SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "write it again: .venv/bin/gateway schema --include > docs/routes-include.schema.json"
    )


@pytest.fixture(scope="module")
def rsa_public_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _example_file_content(name: str, rsa_public_key_pem: bytes) -> bytes:
    """Real content for a file an example names: both kinds are parsed at load time."""
    if name.startswith("keys/") and name.endswith(".pem"):
        return rsa_public_key_pem  # public_key_file: a key fit for RS* and PS*
    if name.startswith("certs/") and name.endswith(".pem"):
        return Path(certifi.where()).read_bytes()  # ca_bundle: a real PEM CA bundle
    raise AssertionError(f"no content known for example file {name!r}")


def test_every_schema_property_is_named_in_backticks_in_the_reference() -> None:
    spans = set(_CODE_SPAN.findall(REFERENCE.read_text(encoding="utf-8")))
    named = {span.strip() for span in spans}
    named |= {span.strip().rsplit(".", 1)[-1] for span in spans if "." in span}
    properties = set(_property_names(SCHEMA)) | set(_property_names(INCLUDED_SCHEMA))
    missing = sorted(properties - named)
    assert not missing, f"not documented in {REFERENCE.name}: {', '.join(missing)}"


def test_property_walk_reaches_nested_and_additional_properties() -> None:
    names = set(_property_names(SCHEMA))
    # top level, nested object, array items, and upstreams' additionalProperties
    assert {"version", "trusted_proxies", "sha256", "ca_bundle", "rate_limit_key"} <= names


def test_reference_has_complete_examples_to_check() -> None:
    assert len(FULL_EXAMPLES) >= 5


@pytest.mark.parametrize("key", ["public_key_file", "secret", "jwks_url", "ca_bundle"])
def test_complete_examples_cover_every_file_and_key_source(key: str) -> None:
    # Each of these is loaded for real when an example is checked, so each should
    # appear in at least one complete example.
    assert any(re.search(rf"^\s*{key}:", block, re.MULTILINE) for _, block in FULL_EXAMPLES)


def test_example_files_get_real_content_of_their_kind(rsa_public_key_pem: bytes) -> None:
    for name in EXAMPLE_FILES:
        content = _example_file_content(name, rsa_public_key_pem)
        kind = b"PUBLIC KEY" if name.startswith("keys/") else b"CERTIFICATE"
        assert b"-----BEGIN " + kind + b"-----" in content, name


@pytest.mark.parametrize(
    "block", [block for _, block in FULL_EXAMPLES], ids=[f"line{n}" for n, _ in FULL_EXAMPLES]
)
def test_every_complete_yaml_example_in_the_reference_loads(
    block: str, tmp_path: Path, rsa_public_key_pem: bytes
) -> None:
    for name in EXAMPLE_FILES:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_example_file_content(name, rsa_public_key_pem))
    config = load_config_text(block, str(tmp_path / "routes.yaml"), EXAMPLE_ENVIRON)
    assert config.routes, "an example should show at least one route"


def test_the_include_example_of_the_reference_loads_as_one_tree(tmp_path: Path) -> None:
    # The blocks of "One file per team" that start with a comment naming their file.
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("## One file per team") :]
    section = section[: section.index("\n## ", 1)]
    files = {}
    for match in _FENCE.finditer(section):
        first = match.group(2).split("\n", 1)[0]
        if match.group(1) == "yaml" and re.fullmatch(r"# [\w./-]+\.yaml", first):
            files[first[2:]] = match.group(2)
    assert sorted(files) == ["routes.d/orders.yaml", "routes.d/users.yaml", "routes.yaml"]
    for name, block in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(block, encoding="utf-8")
    config = load_config(str(tmp_path / "routes.yaml"), {})
    summary = config.summary().replace(str(tmp_path / "routes.yaml"), "routes.yaml")
    assert f"`{summary}`" in section


def test_editor_modeline_points_at_the_published_schema() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert "# yaml-language-server: $schema=docs/routes.schema.json" in text


# -- commands named in the prose docs ------------------------------------------------

_SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
# Fenced blocks, also those indented under a list item.
_ANY_FENCE = re.compile(
    r"^[ \t]*```([A-Za-z0-9_-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL
)
_SHELL_COMMENT = re.compile(r"(?:^|\s+)#.*$")
# `make demo`; `gateway check` or `.venv/bin/gateway check`, not `gateway.serving`
_MAKE = r"make\s+([A-Za-z0-9_][A-Za-z0-9_.-]*)"
_GATEWAY = r"(?:[\w.~/-]*/)?gateway[ \t]+([a-z][a-z-]*)"
# In a shell line the command may follow `;`, `&&`, `$(` or variable assignments.
_IN_SHELL = r"(?:^|[\s;&|(])"
# An inline code span names a command only when it starts with one (after optional
# NAME=value assignments): `gateway demo: stopped the gateway and ...` is output.
_SPAN_START = r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
_MAKE_RULE = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)", re.MULTILINE)


def _commands(path: Path, command: str) -> set[str]:
    """What follows `command` (a pattern with one group) wherever `path` shows it as
    code: in sh/bash/console blocks (shell comments cut off, since they are prose) and
    at the start of inline code spans. Text blocks hold output, not commands."""
    text = path.read_text(encoding="utf-8")
    in_shell = re.compile(_IN_SHELL + command)
    at_span_start = re.compile(_SPAN_START + command)
    found: set[str] = set()
    for block in _ANY_FENCE.finditer(text):
        if block.group(1) in _SHELL_LANGUAGES:
            for line in block.group(2).splitlines():
                line = _SHELL_COMMENT.sub("", line.strip().removeprefix("$ "))
                found.update(in_shell.findall(line))
    for span in _CODE_SPAN.findall(_ANY_FENCE.sub("", text)):
        match = at_span_start.match(span.strip())
        if match:
            found.add(match.group(1))
    return found


def _makefile_targets() -> set[str]:
    targets: set[str] = set()
    for match in _MAKE_RULE.finditer(MAKEFILE.read_text(encoding="utf-8")):
        targets.update(name for name in match.group(1).split() if not name.startswith("."))
    return targets


def _gateway_subcommands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("gateway's parser has no subcommands")


def test_makefile_targets_are_read() -> None:
    assert {"demo", "test", "install", "unit", "integration"} <= _makefile_targets()


def test_every_make_target_in_the_readme_exists_in_the_makefile() -> None:
    named = _commands(README, _MAKE)
    assert {"demo", "test"} <= named, "the README's quick start names make demo and make test"
    missing = sorted(named - _makefile_targets())
    assert not missing, f"README.md names make targets the Makefile lacks: {', '.join(missing)}"


@pytest.mark.parametrize("doc", [README, OPERATIONS, REFERENCE], ids=lambda p: p.name)
def test_every_gateway_subcommand_in_the_docs_is_real(doc: Path) -> None:
    named = _commands(doc, _GATEWAY)
    assert {"check", "serve"} <= named, f"{doc.name} should show gateway check and serve"
    unknown = sorted(named - _gateway_subcommands())
    assert not unknown, f"{doc.name} names gateway subcommands that do not exist: {unknown}"


@pytest.mark.parametrize(
    ("command", "code", "in_shell", "at_span_start"),
    [
        (_MAKE, "RATE_LIMIT_STORAGE=redis://127.0.0.1:6379/0 make demo", ["demo"], "demo"),
        (_GATEWAY, ".venv/bin/gateway hash-key 'k'", ["hash-key"], "hash-key"),
        (_GATEWAY, "NEXT=$(gateway explain GET /x)", ["explain"], None),
        (_GATEWAY, "gateway.workers.GatewayWorker", [], None),
        (_GATEWAY, "Logs: /tmp/gateway-demo-x", [], None),
        (_GATEWAY, "gateway demo: stopped the gateway and both stubs.", None, "demo"),
    ],
)
def test_command_patterns_read_what_a_reader_would_paste(
    command: str, code: str, in_shell: list[str] | None, at_span_start: str | None
) -> None:
    if in_shell is not None:
        assert re.findall(_IN_SHELL + command, code) == in_shell
    match = re.match(_SPAN_START + command, code)
    assert (match.group(1) if match else None) == at_span_start


def test_shell_comments_are_prose() -> None:
    assert _SHELL_COMMENT.sub("", "gateway demo   # the gateway is up") == "gateway demo"


# -- operations.md against the code it describes -------------------------------------

GUNICORN_CONF = ROOT / "gunicorn.conf.py"
APP_SOURCE = ROOT / "gateway" / "app.py"
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*$", re.MULTILINE)
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The text outside fenced blocks: where headings and links are."""
    return _ANY_FENCE.sub("", path.read_text(encoding="utf-8"))


def _spans(path: Path) -> set[str]:
    return {span.strip() for span in _CODE_SPAN.findall(path.read_text(encoding="utf-8"))}


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    found: set[str] = set()
    for heading in _HEADING.findall(_prose(path)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        number, candidate = 0, slug
        while candidate in found:
            number += 1
            candidate = f"{slug}-{number}"
        found.add(candidate)
    return found


def test_anchor_reader_follows_github_rules(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# `/healthz` and `/readyz`\n## A, b\n## A, b\n```\n# not a heading\n```\n")
    assert _anchors(page) == {"healthz-and-readyz", "a-b", "a-b-1"}


@pytest.mark.parametrize("doc", [README, OPERATIONS, REFERENCE], ids=lambda p: p.name)
def test_every_relative_link_in_the_docs_reaches_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(doc)):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        name, _, fragment = target.partition("#")
        destination = (doc.parent / name) if name else doc
        if not destination.exists():
            broken.append(target)
        elif fragment and destination.suffix == ".md" and fragment not in _anchors(destination):
            broken.append(target)
    assert not broken, f"{doc.name} links to what does not exist: {broken}"


def test_operations_guide_names_every_metric_with_its_exposed_name() -> None:
    from gateway.metrics import Metrics

    exposed = set()
    for family in Metrics().registry.collect():
        exposed.add(f"{family.name}_total" if family.type == "counter" else family.name)
    assert exposed, "the metrics registry should hold the gateway's metrics"
    missing = sorted(exposed - _spans(OPERATIONS))
    assert not missing, f"operations.md does not name these metrics: {missing}"


def test_operations_guide_names_every_variable_gunicorn_conf_reads() -> None:
    text = GUNICORN_CONF.read_text(encoding="utf-8")
    variables = set(re.findall(r"os\.environ\.get\(\s*\"([A-Z_]+)\"", text))
    assert {"GATEWAY_BIND", "GATEWAY_WORKERS", "GATEWAY_THREADS"} <= variables
    missing = sorted(variables - _spans(OPERATIONS))
    assert not missing, f"operations.md does not name: {missing}"


def test_operations_guide_describes_every_access_log_field() -> None:
    import ast

    fields = {"time"}  # added by log_access itself
    for node in ast.walk(ast.parse(APP_SOURCE.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "log_access"
        ):
            fields.update(k.arg for k in node.keywords if k.arg)
    assert {"request_id", "route", "status", "duration_ms", "upstream_ms", "client"} <= fields
    text = OPERATIONS.read_text(encoding="utf-8")
    missing = sorted(f for f in fields if f"| `{f}` |" not in text)
    assert not missing, f"the access-log table of operations.md lacks: {missing}"


def test_reference_lists_the_default_metrics_networks() -> None:
    from gateway.config.model import PRIVATE_NETWORKS

    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("### `metrics_allow`") :]
    section = section[: section.index("\n## ")]
    missing = [n for n in PRIVATE_NETWORKS if f"`{n}`" not in section]
    assert not missing, f"the metrics_allow section does not list: {missing}"
