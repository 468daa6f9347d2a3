"""``sealdump backup`` when its storage fails for real: a stalled blob endpoint, a read-only
or full backup filesystem. Each run fails with exit 1 and a one-line cause, lists nothing
partial, and leaves earlier backups verifiable; the next run after the fault succeeds.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Run, _sealdump
from tests.support.azurite import Azurite
from tests.support.configs import write_config
from tests.support.dataset import create_slow_table
from tests.support.mariadb import MariaDB
from tests.support.tmpfs import fill, remount_read_only, remount_read_write, tmpfs

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def stalldb(prepared: MariaDB):
    """A table big enough that its backup is several objects, so storage can fail mid-way."""
    with prepared.root() as conn, conn.cursor() as cur:
        create_slow_table(cur, "stalldb", 600_000)
    yield prepared
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE stalldb")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _error_line(stderr: str) -> str:
    """The CLI's one-line error, which ends the output (no noise after it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("sealdump: ")]
    assert lines, stderr
    assert "Exception ignored" not in stderr, stderr
    return lines[-1]


@pytest.mark.azurite
def test_stalled_blob_storage_fails_the_backup_in_bounded_time_then_recovers(
    tmp_path: Path, stalldb: MariaDB, test_ca, sealdump: Run
) -> None:
    from azure.storage.blob import ContainerClient

    emulator = Azurite(tmp_path / "azurite", test_ca).start()  # its own: this one is frozen
    try:
        sas = emulator.container_with_sas("backups", tmp_path)
        cloud = (
            f"{{type: azure-blob, account_url: '{emulator.account_url}', container: backups, "
            f"sas_token_file: {sas}, ca_file: {test_ca.cert_path}, timeout: 20}}"
        )
        config = write_config(
            tmp_path,
            {"db1": stalldb},
            "jobs:\n  stall: {databases: [stalldb], storage: cloud}\n",
            storages={"cloud": cloud},
        )
        watcher = ContainerClient.from_connection_string(
            emulator.connection_string,
            "backups",
            connection_verify=str(test_ca.cert_path),
            retry_total=0,
        )
        process = subprocess.Popen(
            [*_sealdump(), "--config", str(config), "backup", "db1/stall"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        try:
            # Freeze the service once the backup has stored its key envelope: the table's
            # objects are still to be uploaded.
            deadline = time.monotonic() + 60
            while not any(b.name.endswith("/keys.json") for b in watcher.list_blobs()):
                assert time.monotonic() < deadline, "the backup never stored its keys.json"
                assert process.poll() is None, process.communicate()
                time.sleep(0.02)
            with emulator.paused():
                frozen = time.monotonic()
                _, stderr = process.communicate(timeout=120)
                took = time.monotonic() - frozen
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 1, stderr
        last = _error_line(stderr)
        assert re.match(
            r"sealdump: blob storage 'cloud' timed out after \d+ s: no answer to write of "
            + re.escape(f"{emulator.account_url}/backups/db1/stall/"),
            last,
        ), last
        assert "(timeout: 20 s per request, retries included)" in last
        # The timeout (20 s) bounds the failing write; cleanup gives up after one delete that
        # times out too. Without deadlines this run hung for six minutes and more.
        assert took < 2 * 20 + 10, (took, last)
        assert "cleanup of the failed backup stopped" in stderr

        def run(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
            return sealdump("--config", str(config), *args, check=check)

        assert json.loads(run("--json", "list").stdout) == []
        assert not [b.name for b in watcher.list_blobs() if b.name.endswith("/manifest")]
        failed = json.loads(run("--json", "history").stdout)[0]
        assert failed["status"] == "failed"
        assert "timed out" in failed["error"]

        # The service is back: the next backup succeeds and verifies.
        backup_id = json.loads(run("--json", "backup", "db1/stall").stdout)["backup_id"]
        assert [b["backup_id"] for b in json.loads(run("--json", "list").stdout)] == [backup_id]
        assert f"{backup_id}: OK" in run("verify", backup_id).stdout
    finally:
        emulator.stop()


def _config_on_tmpfs(tmp_path: Path, server: MariaDB) -> Path:
    return write_config(
        tmp_path,
        {"db1": server},
        "jobs:\n  nightly: {databases: [fidelity]}\n  stall: {databases: [stalldb]}\n",
    )


def test_read_only_backup_filesystem_names_the_path_and_keeps_earlier_backups(
    tmp_path: Path, stalldb: MariaDB, sealdump: Run
) -> None:
    config = _config_on_tmpfs(tmp_path, stalldb)
    backups = tmp_path / "backups"

    def run(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
        return sealdump("--config", str(config), *args, check=check)

    with tmpfs(backups, "256m"):
        earlier = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
        before = _files(backups)
        remount_read_only(backups)  # as errors=remount-ro does after an I/O error
        try:
            result = run("backup", "db1/stall", check=1)
            last = _error_line(result.stderr)
            assert re.fullmatch(
                rf"sealdump: cannot create {re.escape(str(backups))}/db1/stall/\S+: "
                "Read-only file system",
                last,
            ), last
            assert "internal error" not in result.stderr
            assert "Traceback" not in result.stderr
            assert _files(backups) == before
            assert [b["backup_id"] for b in json.loads(run("--json", "list").stdout)] == [earlier]
            assert f"{earlier}: OK" in run("verify", earlier).stdout
            failed = json.loads(run("--json", "history").stdout)[0]
            assert (failed["status"], failed["error"]) == (
                "failed",
                last.removeprefix("sealdump: "),
            )
        finally:
            remount_read_write(backups)
        # Writable again: the next run succeeds.
        run("backup", "db1/nightly")
        assert len(json.loads(run("--json", "list").stdout)) == 2


def test_full_backup_filesystem_names_the_reason_and_removes_the_partial_backup(
    tmp_path: Path, stalldb: MariaDB, sealdump: Run
) -> None:
    config = _config_on_tmpfs(tmp_path, stalldb)
    backups = tmp_path / "backups"

    def run(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
        return sealdump("--config", str(config), *args, check=check)

    with tmpfs(backups, "64m"):
        earlier = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
        before = _files(backups)
        filler = fill(backups, leave=1 << 20)  # 1 MiB free: the big table does not fit
        result = run("backup", "db1/stall", check=1)
        last = _error_line(result.stderr)
        assert re.fullmatch(
            rf"sealdump: cannot write {re.escape(str(backups))}/db1/stall/\S+: "
            "No space left on device",
            last,
        ), last
        assert "internal error" not in result.stderr
        # The partial backup is gone (deleting works on a full filesystem), nothing is listed.
        assert _files(backups) == sorted([*before, filler])
        assert [b["backup_id"] for b in json.loads(run("--json", "list").stdout)] == [earlier]
        assert f"{earlier}: OK" in run("verify", earlier).stdout
        assert json.loads(run("--json", "history").stdout)[0]["status"] == "failed"
