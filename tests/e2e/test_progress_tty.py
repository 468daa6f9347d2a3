"""``sealdump backup`` draws progress on a terminal, and only there."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import Run
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))
JOB = "jobs:\n  nightly: {schedule: '0 2 * * *', databases: [fidelity]}\n"
# What only the progress display prints: its table counter ("3/12 tables"), the estimate's
# mark and the time left (log lines say "tables=12").
BAR = re.compile(r"\d+/\d+ tables|\(estimated\)|ETA")


def _in_terminal(args: list[str], cwd: Path, timeout: float = 180) -> tuple[int, str, str]:
    """Run sealdump with stderr on a pseudo-terminal (160x40) and stdout on a pipe.

    Returns (exit status, what the terminal showed, stdout).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
    env.update(TERM="xterm-256color", COLUMNS="160", LINES="40")
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [SEALDUMP, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=cwd,
        env=env,
    )
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError as exc:  # EIO: the terminal's last writer closed it
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            shown += data
        else:
            process.kill()
            pytest.fail(f"sealdump {' '.join(args)} did not finish in {timeout} s")
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        status = process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return status, shown.decode(errors="replace"), stdout


@pytest.fixture
def config(tmp_path: Path, prepared: MariaDB) -> str:
    return str(write_config(tmp_path, {"db1": prepared}, JOB))


def test_a_terminal_shows_progress_and_readable_logs(config: str, tmp_path: Path) -> None:
    status, shown, stdout = _in_terminal(["backup", "db1/nightly", "--config", config], tmp_path)
    assert status == 0, shown
    assert "(estimated)" in shown, shown
    listed = subprocess.check_output([SEALDUMP, "--json", "--config", config, "list"])
    tables = json.loads(listed)[0]["tables"]
    assert f"{tables}/{tables} tables" in shown  # the final state stays on screen
    assert "ETA" in shown
    # Logs printed above the bar, as text for a person, not JSON lines.
    assert "table dumped" in shown
    assert "backup complete" in shown
    assert '{"event"' not in shown
    assert "db1/nightly:" in stdout
    assert "stored" in stdout


@pytest.mark.parametrize("quiet", [["--json"], ["-q"]])
def test_json_or_quiet_draw_nothing_on_a_terminal(
    config: str, tmp_path: Path, quiet: list[str]
) -> None:
    status, shown, stdout = _in_terminal(["backup", "db1", *quiet, "--config", config], tmp_path)
    assert status == 0, shown
    assert not BAR.search(shown), shown
    if quiet == ["--json"]:
        assert json.loads(stdout)["tables"] > 0


def test_no_terminal_no_progress(config: str, sealdump: Run) -> None:
    text = sealdump("backup", "db1/nightly", "--config", config, check=0)
    as_json = sealdump("backup", "db1/nightly", "--config", config, "--json", check=0)
    for result in (text, as_json):
        assert not BAR.search(result.stderr)
        assert "\x1b[" not in result.stderr  # no cursor movement or colour either
        # stderr holds only log lines, each a JSON object.
        for line in result.stderr.splitlines():
            json.loads(line)
    assert json.loads(as_json.stdout)["backup_id"]
