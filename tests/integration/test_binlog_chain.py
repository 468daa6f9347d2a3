"""The chain under faults: a purged binlog is a recorded gap; a changed, swapped, replayed
or deleted segment in storage is found by ``binlog status``."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealdump.errors import ExitCode
from tests.integration.test_binlog_capture import BINLOG_YAML, start_source, workload
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb
FIRST_IDS = itertools.count(100_000, 10_000)  # workloads never reuse a key


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[MariaDB]:
    server = start_source(tmp_path_factory.mktemp("binlog-chain-src"), test_ca)
    yield server
    server.stop()


def sealdump(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
    command = str(Path(sys.executable).with_name("sealdump"))
    return subprocess.run(
        [command, "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def segments(config: Path) -> list[Path]:
    return sorted((config.parent.parent / "backups" / "src" / "_binlog" / "s").iterdir())


@pytest.fixture
def captured(tmp_path: Path, source: MariaDB) -> Path:
    """A config whose chain holds several segments (a fresh storage per test)."""
    config = write_config(tmp_path, {"src": source}, BINLOG_YAML)
    workload(source, next(FIRST_IDS))
    assert sealdump(config, "binlog", "pull", "src").returncode == 0
    assert len(segments(config)) >= 3
    assert sealdump(config, "binlog", "status", "src", "--verify").returncode == 0
    return config


def status(config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = sealdump(config, "--json", "binlog", "status", "src", *extra)
    return done.returncode, json.loads(done.stdout)


def test_purged_binlog_is_a_recorded_gap_and_a_non_zero_exit(
    captured: Path, source: MariaDB
) -> None:
    workload(source, 900_000)  # not captured before it is purged
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("SHOW BINARY LOGS")
        newest = cur.fetchall()[-1][0]
        cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
        cur.execute("SHOW BINARY LOGS")  # MariaDB keeps files crash recovery still needs
        oldest = cur.fetchall()[0][0]
        cur.execute("INSERT INTO shop.orders VALUES (999999, 'after', 1, NULL)")
    pulled = sealdump(captured, "--json", "binlog", "pull", "src")
    assert pulled.returncode == ExitCode.PARTIAL, pulled.stdout + pulled.stderr
    assert "purged" in pulled.stdout
    code, chain = status(captured, "--verify")
    assert code == 0
    gaps = chain["gaps"]
    assert isinstance(gaps, list)
    assert len(gaps) == 1
    assert "purged" in gaps[0]["reason"]
    assert gaps[0]["to"] == f"{oldest}:4"  # the new window starts at the oldest file left
    windows = chain["windows"]
    assert isinstance(windows, list)
    assert len(windows) == 2  # the break ended the first covered window
    assert windows[1]["start"] == f"{oldest}:4"
    # The gap is recorded once; the next pull continues the new window.
    assert sealdump(captured, "binlog", "pull", "src").returncode == 0


def test_tampered_segment_is_found_by_a_verifying_status(captured: Path) -> None:
    victim = segments(captured)[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 + 40] ^= 0x01
    victim.write_bytes(bytes(data))
    code, chain = status(captured, "--verify")
    assert code == ExitCode.INTEGRITY
    assert any(victim.name in problem for problem in chain["problems"])


def test_swapped_segments_are_found(captured: Path) -> None:
    first, second = segments(captured)[0:2]
    held = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(held)
    code, chain = status(captured)
    assert code == ExitCode.INTEGRITY
    problems = " ".join(chain["problems"])
    assert first.name in problems
    assert second.name in problems


def test_replayed_segment_is_found(captured: Path) -> None:
    names = segments(captured)
    shutil.copy(names[0], names[0].with_name(f"{len(names) + 1:012d}-00000000"))
    code, chain = status(captured)
    assert code == ExitCode.INTEGRITY
    assert any("00000000" in problem for problem in chain["problems"])


def test_deleted_segment_is_found(captured: Path) -> None:
    victim = segments(captured)[1]
    victim.unlink()
    code, chain = status(captured)
    assert code == ExitCode.INTEGRITY
    assert any("#2 is missing" in problem for problem in chain["problems"])
    # Capture refuses to build on a damaged chain only when its head is gone; here it
    # goes on, and status keeps reporting the hole.
    assert sealdump(captured, "binlog", "pull", "src").returncode == 0
