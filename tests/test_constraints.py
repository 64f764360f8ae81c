"""constraints.txt pins every dependency pyproject.toml declares, extras included, so
an install from it is the set the tests ran against."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    """The normalised project name of a requirement (PEP 503)."""
    bare = re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned with ==: {line!r}"
            pins[_name(name)] = version
    return pins


def test_every_declared_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    missing = sorted({_name(r) for r in declared} - set(pinned()))
    assert not missing, f"not in constraints.txt (run make lock): {missing}"


def test_the_project_itself_is_not_pinned() -> None:
    assert "gateway" not in pinned()
