"""Deadlines in the configuration: per storage, per Key Vault key, and per job run."""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from sealdump.config import load_config
from sealdump.config.model import AzureBlobStorage, AzureKeyVaultKey
from sealdump.config.show import effective
from sealdump.errors import ConfigError

MAIN = """
storages:
  cloud:
    type: azure-blob
    account_url: https://acct.blob.core.windows.net
    container: backups
{storage_timeout}
keys:
  vault:
    type: azure-key-vault
    key_url: https://v.vault.azure.net/keys/kek
{key_timeout}
defaults: {{storage: cloud, key: vault}}
"""


def config_files(
    write: Callable[[str, str], Path],
    storage_timeout: str = "",
    key_timeout: str = "",
    job: str = "",
) -> Path:
    main = write(
        "sealdump.yaml",
        MAIN.format(storage_timeout=storage_timeout, key_timeout=key_timeout),
    )
    write("servers.d/db1.yaml", f"host: h\nuser: u\njobs:\n  nightly:\n    every: 1d\n{job}")
    return main


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return caught.value.problems


def test_defaults_bound_storage_and_vault_calls_and_leave_runs_unbounded(write) -> None:
    config = load_config(config_files(write), environ={})
    storage = config.storages["cloud"]
    key = config.keys["vault"]
    assert isinstance(storage, AzureBlobStorage)
    assert storage.timeout == 120
    assert isinstance(key, AzureKeyVaultKey)
    assert key.timeout == 60
    assert config.servers["db1"].jobs["nightly"].timeout is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("'90'", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("${RUN_DEADLINE:-45m}", timedelta(minutes=45)),
    ],
)
def test_job_timeout_takes_seconds_or_an_interval(write, text: str, expected: timedelta) -> None:
    main = config_files(write, job=f"    timeout: {text}\n")
    job = load_config(main, environ={}).servers["db1"].jobs["nightly"]
    assert job.timeout == expected


def test_explicit_storage_and_key_timeouts(write) -> None:
    main = config_files(write, storage_timeout="    timeout: 30", key_timeout="    timeout: 7.5")
    config = load_config(main, environ={})
    assert config.storages["cloud"].timeout == 30.0  # type: ignore[union-attr]
    assert config.keys["vault"].timeout == 7.5  # type: ignore[union-attr]


def test_effective_config_shows_the_timeouts(write) -> None:
    main = config_files(write, storage_timeout="    timeout: 30", job="    timeout: 2h\n")
    shown = effective(load_config(main, environ={}))
    assert shown["storages"]["cloud"]["timeout"] == 30.0
    assert shown["keys"]["vault"]["timeout"] == 60.0
    assert shown["servers"]["db1"]["jobs"]["nightly"]["timeout"] == "2:00:00"


def test_bad_timeouts_are_reported_with_file_and_line(write) -> None:
    main = config_files(
        write,
        storage_timeout="    timeout: 1",
        key_timeout="    timeout: soon",
        job="    timeout: 2x\n",
    )
    server = main.parent / "servers.d" / "db1.yaml"
    assert problems_of(main) == [
        f"{main}:6: storages.cloud.timeout: 1 is less than the minimum of 5",
        f"{main}:11: keys.vault.timeout: expected a number, got 'soon'",
        f"{server}:6: jobs.nightly.timeout: '2x' is not a duration such as 90 (seconds), "
        "30m, 2h or 1d",
    ]


@pytest.mark.parametrize("text", ["0", "'0'", "-5", "1.5", "[1]"])
def test_job_timeout_must_be_a_positive_whole_duration(write, text: str) -> None:
    main = config_files(write, job=f"    timeout: {text}\n")
    [problem] = problems_of(main)
    assert problem.startswith(f"{main.parent / 'servers.d' / 'db1.yaml'}:6: jobs.nightly.timeout: ")
