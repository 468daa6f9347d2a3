"""The systemd unit verifies, and its hardening measures OK with systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "sealdump.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    sealdump = Path(sys.executable).with_name("sealdump")
    unit = tmp_path / "sealdump.service"
    assert ANALYZE is not None  # needs_analyze skips otherwise
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/sealdump", str(sealdump)))
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@needs_analyze
def test_hardening_exposure_is_low() -> None:
    assert ANALYZE is not None  # needs_analyze skips otherwise
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for sealdump.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_is_notify_with_reload_and_credentials() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=sealdump",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ):
        assert f"\n{line}\n" in text
    assert "LoadCredential=" in text
