"""Shell completion through click's protocol, as bash, zsh and fish call the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run

SERVER = """\
host: {host}
user: backup
password_file: ../secret
tls: {{mode: verify-identity, ca_file: ../ca.pem}}
"""
JOBS = "jobs:\n  nightly: {schedule: '0 2 * * *'}\n  hourly: {every: 1h}\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Two servers, one with two jobs (no server is ever contacted by a completion)."""
    etc = tmp_path / "etc"
    (etc / "servers.d").mkdir(parents=True)
    (etc / "sealdump.yaml").write_text(
        "state_dir: ../state\n"
        "storages:\n  local: {type: filesystem, path: ../backups}\n"
        "keys:\n  local: {type: local, key_file: kek.key}\n"
        "defaults: {storage: local, key: local}\n"
    )
    (etc / "servers.d" / "orders.yaml").write_text(SERVER.format(host="orders.example") + JOBS)
    (etc / "servers.d" / "billing.yaml").write_text(SERVER.format(host="billing.example"))
    return etc / "sealdump.yaml"


def complete(sealdump: Run, words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash would offer for the last word of ``words`` (``""``: after a space)."""
    parts = words.split(" ")
    result = sealdump(
        env={
            "_SEALDUMP_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
            **(env or {}),
        },
        check=0,
    )
    assert result.stderr == ""
    # One "type,value" line per candidate (no candidates: one empty line).
    return [line.partition(",")[2] for line in result.stdout.splitlines() if line]


def test_servers_and_jobs_of_the_config(sealdump: Run, config: Path) -> None:
    offered = complete(sealdump, f"sealdump --config {config} backup ")
    assert offered == ["billing", "orders", "orders/hourly", "orders/nightly"]
    assert complete(sealdump, f"sealdump --config {config} backup or") == [
        "orders",
        "orders/hourly",
        "orders/nightly",
    ]
    assert complete(sealdump, f"sealdump --config {config} backup orders/n") == ["orders/nightly"]


def test_config_after_the_verb_and_from_the_environment(sealdump: Run, config: Path) -> None:
    assert complete(sealdump, f"sealdump backup --config {config} b") == ["billing"]
    env = {"SEALDUMP_CONFIG": str(config)}
    assert complete(sealdump, "sealdump history --server ", env) == ["billing", "orders"]
    assert complete(sealdump, "sealdump history --server orders --job ", env) == [
        "hourly",
        "nightly",
    ]
    assert complete(sealdump, "sealdump verify latest --restore-test o", env) == ["orders"]


def test_backup_ids_of_filesystem_storages(sealdump: Run, config: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    for server, job, backup_id in (
        ("orders", "nightly", "20250101T020000Z-aaaa"),
        ("orders", "hourly", "20250102T030000Z-bbbb"),
    ):
        (backups / server / job / backup_id / "o").mkdir(parents=True)
        (backups / server / job / backup_id / "manifest").write_bytes(b"")
    # A backup still being written (no manifest yet) is not offered.
    (backups / "orders" / "nightly" / "20250103T020000Z-cccc" / "o").mkdir(parents=True)
    env = {"SEALDUMP_CONFIG": str(config)}
    assert complete(sealdump, "sealdump show ", env) == [
        "latest",
        "20250102T030000Z-bbbb",
        "20250101T020000Z-aaaa",
    ]
    assert complete(sealdump, "sealdump restore --job nightly 2", env) == ["20250101T020000Z-aaaa"]


def test_a_broken_config_offers_nothing_and_prints_nothing(sealdump: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("storages: [not, a, mapping\n")
    assert complete(sealdump, f"sealdump --config {broken} backup ") == []
    assert complete(sealdump, f"sealdump --config {tmp_path / 'absent.yaml'} show ") == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_shell_scripts_are_click_s_own(sealdump: Run, shell: str) -> None:
    script = sealdump(env={"_SEALDUMP_COMPLETE": f"{shell}_source"}, check=0).stdout
    assert "_SEALDUMP_COMPLETE" in script
    assert f"{shell}_complete" in script
