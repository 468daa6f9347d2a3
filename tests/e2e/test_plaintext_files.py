"""``decrypt -o`` and ``export -o`` write plaintext owner-only from its first byte."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _sealdump
from tests.support.configs import write_config
from tests.support.dataset import create_slow_table
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb


def _umask_022() -> None:
    os.umask(0o022)


def sealdump(config: Path, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    """``sealdump --config CONFIG ARGS`` under umask 022, as a login shell would have it."""
    return subprocess.Popen(
        [*_sealdump(), "--config", str(config), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_umask_022,  # only a umask, before exec
    )


def finish(process: subprocess.Popen[bytes]) -> bytes:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB) -> tuple[Path, str]:
    """A backup of ``plainbig.big`` (large enough that exporting it takes a while)."""
    with mariadb.root() as conn, conn.cursor() as cur:
        create_slow_table(cur, "plainbig", 400_000)
    directory = tmp_path_factory.mktemp("plaintext")
    config = write_config(directory, {"db1": mariadb}, "jobs:\n  big: {databases: [plainbig]}\n")
    out = finish(sealdump(config, "--json", "backup", "db1/big", cwd=directory))
    return config, json.loads(out)["backup_id"]


def test_decrypt_and_export_outputs_are_0600_under_umask_022(backed_up, tmp_path) -> None:
    config, backup_id = backed_up
    manifest = config.parent.parent / "backups" / "db1" / "big" / backup_id / "manifest"
    decrypted = tmp_path / "manifest.json"
    finish(sealdump(config, "decrypt", str(manifest), "-o", str(decrypted), cwd=tmp_path))
    assert json.loads(decrypted.read_bytes())["backup_id"] == backup_id
    assert mode(decrypted) == 0o600
    exported = tmp_path / "big.sql"
    finish(sealdump(config, "export", backup_id, "-o", str(exported), cwd=tmp_path))
    assert b"INSERT INTO `big`" in exported.read_bytes()
    assert mode(exported) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.sql", "manifest.json"]


def _stopped_mid_write(config: Path, backup_id: str, out: Path) -> subprocess.Popen[bytes]:
    """An export to ``out``, stopped (SIGSTOP) as soon as its temporary file exists."""
    process = sealdump(config, "export", backup_id, "-o", str(out), cwd=out.parent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.name.startswith(f".tmp-{out.name}.") for p in out.parent.iterdir()):
            process.send_signal(signal.SIGSTOP)
            return process
        assert process.poll() is None, process.communicate()[1].decode()
        time.sleep(0.002)
    process.kill()
    pytest.fail("the export never created its temporary file")


def test_a_killed_export_leaves_no_plaintext_readable_by_others(backed_up, tmp_path) -> None:
    config, backup_id = backed_up
    out = tmp_path / "killed" / "big.sql"
    out.parent.mkdir()
    process = _stopped_mid_write(config, backup_id, out)
    (temporary,) = out.parent.iterdir()
    assert mode(temporary) == 0o600  # what it holds so far was never readable by others
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    left = list(out.parent.iterdir())
    assert all(mode(p) & 0o077 == 0 for p in left), [(p.name, oct(mode(p))) for p in left]
    assert not out.exists()


def test_a_terminated_export_removes_its_temporary_file(backed_up, tmp_path) -> None:
    config, backup_id = backed_up
    out = tmp_path / "terminated" / "big.sql"
    out.parent.mkdir()
    process = _stopped_mid_write(config, backup_id, out)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGCONT)
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"Traceback" not in err
    assert list(out.parent.iterdir()) == []
