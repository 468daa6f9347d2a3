"""The lock files stay in step with pyproject.toml: every dependency pinned, with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins(lock: Path) -> dict[str, list[str]]:
    """name -> hashes of every ``name==version`` in a pip-compile lock file."""
    pins: dict[str, list[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+", line)
        if pinned:
            current = _name(pinned.group(1))
            pins[current] = []
        elif current and "--hash=sha256:" in line:
            pins[current].append(line.split("--hash=sha256:")[1].split()[0])
    return pins


@pytest.mark.parametrize(
    ("lock", "groups"),
    [
        ("requirements.lock", ("dependencies",)),
        ("requirements-test.lock", ("dependencies", "test")),
    ],
)
def test_every_dependency_is_pinned_with_hashes(lock: str, groups: tuple[str, ...]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    if "test" in groups:
        wanted += project["optional-dependencies"]["test"]
    pins = _pins(REPO / lock)
    missing = sorted({_name(r) for r in wanted} - set(pins))
    assert missing == [], f"not in {lock}; run scripts/lock"
    assert all(pins.values()), f"a pin without hashes in {lock}"


def test_the_image_and_setup_install_from_the_locks() -> None:
    assert "--require-hashes -r /src/requirements.lock" in (REPO / "Dockerfile").read_text()
    assert "--require-hashes -r requirements-test.lock" in (REPO / "scripts/setup").read_text()
