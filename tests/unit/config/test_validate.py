import shutil
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from sealdump.config import load_config
from sealdump.config.model import (
    AzureBlobStorage,
    AzureKeyVaultKey,
    FilesystemStorage,
    LocalKey,
)
from sealdump.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

MAIN = textwrap.dedent("""
    state_dir: state
    storages:
      local: {type: filesystem, path: backups}
    keys:
      onprem: {type: local, key_file: kek.key}
    defaults: {storage: local, key: onprem}
""").lstrip()


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return caught.value.problems


def test_shipped_examples_validate() -> None:
    """config/ is the commented contract: every file validates and its keys mean what the
    comments say (this used to be checked against a design note outside the repository)."""
    config = load_config(REPO / "config" / "sealdump.yaml", environ={})
    assert config.history_url == "sqlite:////var/lib/sealdump/history.db"
    assert config.state_dir == Path("/var/lib/sealdump")
    assert config.servers_dir == REPO / "config" / "servers.d"
    assert config.metrics_listen == "127.0.0.1:9187"
    assert (config.default_storage, config.default_key) == ("offsite", "prod")
    retention = config.default_retention
    assert (retention.keep_last, retention.keep_daily, retention.keep_weekly) == (3, 7, 4)
    assert (retention.keep_monthly, retention.keep_yearly) == (12, 0)
    offsite = config.storages["offsite"]
    assert isinstance(offsite, AzureBlobStorage)
    assert (offsite.container, offsite.prefix, offsite.tier) == ("mysql-backups", "prod/", "cool")
    assert offsite.ca_file is None
    assert offsite.sas_token_file is not None
    assert offsite.sas_token_file.path() == Path("/run/credentials/sealdump.service/sas")
    assert config.storages["local"] == FilesystemStorage("local", Path("/var/backups/sealdump"))
    prod = config.keys["prod"]
    assert isinstance(prod, AzureKeyVaultKey)
    assert (prod.key_url, prod.algorithm) == (
        "https://myvault.vault.azure.net/keys/backup-kek",
        "RSA-OAEP-256",
    )
    assert config.keys["onprem"] == LocalKey("onprem", Path("/etc/sealdump/kek.key"))
    orders = config.servers["orders"]
    assert (orders.host, orders.port, orders.user) == (
        "orders.mysql.database.azure.com",
        3306,
        "backup",
    )
    assert (orders.tls.mode, orders.tls.ca_file) == (
        "verify-identity",
        Path("/etc/sealdump/azure-mysql-ca.pem"),
    )
    nightly = orders.jobs["nightly"]
    assert (nightly.storage, nightly.key) == ("offsite", "prod")
    assert (nightly.databases, nightly.exclude_tables) == (("shop", "hr"), ("shop.audit_*",))
    assert (nightly.schedule_text, str(nightly.timezone)) == ("0 2 * * *", "UTC")
    assert nightly.retention == retention  # from defaults
    hourly = orders.jobs["hourly-shop"]
    assert (hourly.storage, hourly.key, hourly.every) == ("local", "onprem", timedelta(hours=1))
    assert hourly.retention.keep_last == 24


def yaml_blocks(markdown: Path, section: str) -> list[str]:
    """The ```yaml blocks of one ``## section`` of a Markdown file, verbatim."""
    text = markdown.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]


def test_readme_configuration_example_validates_verbatim(tmp_path: Path) -> None:
    """The README's two files are what an operator copies first: they validate unchanged and
    mean what they say (bare ``*_file`` names are systemd credentials)."""
    main, server = yaml_blocks(REPO / "README.md", "Configuration")
    assert main.startswith("# /etc/sealdump/sealdump.yaml\n"), main
    assert server.startswith("# /etc/sealdump/servers.d/orders.yaml\n"), server
    (tmp_path / "servers.d").mkdir()
    (tmp_path / "sealdump.yaml").write_text(main)
    (tmp_path / "servers.d" / "orders.yaml").write_text(server)
    config = load_config(tmp_path / "sealdump.yaml", environ={})
    assert list(config.servers) == ["orders"]
    orders = config.servers["orders"]
    assert (orders.tls.mode, orders.user) == ("verify-identity", "backup")
    assert orders.password_file is not None
    assert orders.password_file.is_credential
    nightly = orders.jobs["nightly"]
    assert (nightly.storage, nightly.key, nightly.databases) == ("offsite", "prod", ("shop", "hr"))
    assert str(nightly.timezone) == "Europe/Paris"
    assert (nightly.retention.keep_daily, nightly.retention.keep_weekly) == (7, 4)
    storage = config.storages["offsite"]
    assert isinstance(storage, AzureBlobStorage)
    assert storage.sas_token_file is not None
    assert storage.sas_token_file.is_credential
    assert storage.sas_token_file.path({"CREDENTIALS_DIRECTORY": "/run/c"}) == Path("/run/c/sas")
    assert isinstance(config.keys["prod"], AzureKeyVaultKey)


def test_bad_server_file_reports_every_problem_with_file_and_line(write) -> None:
    main = write("sealdump.yaml", MAIN)
    server = write(
        "servers.d/db1.yaml",
        """
        host: db1
        port: abc
        user: backup
        tls:
          mode: sometimes
        jobs:
          nightly:
            schedule: "61 25 * * *"
    """,
    )
    assert problems_of(main) == [
        f"{server}:2: port: expected an integer, got 'abc'",
        f"{server}:5: tls.mode: 'sometimes' is not one of: verify-identity, verify-ca, insecure-skip-verify",
        f"{server}:8: jobs.nightly.schedule: '61 25 * * *': minute 61 out of range 0-59; hour 25 out of range 0-23",
    ]


def test_references_to_unknown_storage_and_key_list_the_known_ones(write) -> None:
    main = write("sealdump.yaml", MAIN)
    server = write(
        "servers.d/db1.yaml",
        """
        host: db1
        user: backup
        jobs:
          nightly: {storage: offsite, key: prod}
    """,
    )
    assert problems_of(main) == [
        f"{server}:4: jobs.nightly.key: unknown key 'prod' (known keys: onprem)",
        f"{server}:4: jobs.nightly.storage: unknown storage 'offsite' (known storages: local)",
    ]


def test_job_without_storage_or_default_is_refused(write) -> None:
    main = write("sealdump.yaml", "keys:\n  k: {type: local, key_file: k}\n")
    server = write("servers.d/db1.yaml", "host: h\nuser: u\njobs:\n  j:\n    key: k\n")
    assert problems_of(main) == [
        f"{server}:4: jobs.j: no storage: set storage here or defaults.storage"
    ]


def test_unknown_default_storage(write) -> None:
    main = write("sealdump.yaml", "defaults: {storage: nowhere}\n")
    assert problems_of(main) == [
        f"{main}:1: defaults.storage: unknown storage 'nowhere' (no storages are configured)"
    ]


def test_duplicate_server_names_across_files(write) -> None:
    main = write("sealdump.yaml", MAIN)
    first = write("servers.d/a.yaml", "name: orders\nhost: h\nuser: u\n")
    second = write("servers.d/b.yaml", "host: h\nuser: u\nname: orders\n")
    assert problems_of(main) == [
        f"{second}:3: name: server name 'orders' is already used by {first}"
    ]


def test_unknown_keys_are_errors_with_a_suggestion(write) -> None:
    main = write("sealdump.yaml", MAIN + "servers_dri: servers.d\n")
    assert problems_of(main) == [
        f"{main}:7: servers_dri: unknown key (did you mean 'servers_dir'?)"
    ]


def test_password_in_clear_is_refused_without_echoing_it(write) -> None:
    main = write("sealdump.yaml", MAIN)
    write("servers.d/db1.yaml", "host: h\nuser: u\npassword: hunter2-secret\n")
    write("servers.d/db2.yaml", "host: h\nuser: u\npassword: 12345678\n")
    problems = problems_of(main)
    assert len(problems) == 3
    assert "a password in clear is refused" in problems[0]
    assert "a password in clear is refused" in problems[1]
    assert "expected a string, got the value given" in problems[2]
    assert not any("hunter2" in p or "12345678" in p for p in problems)


def test_password_from_environment_is_accepted_and_redacted(write) -> None:
    main = write("sealdump.yaml", MAIN)
    write("servers.d/db1.yaml", "host: h\nuser: u\npassword: ${DB1_PASSWORD}\n")
    config = load_config(main, environ={"DB1_PASSWORD": "s3cret-value"})
    password = config.servers["db1"].password
    assert password is not None
    assert password.reveal() == "s3cret-value"
    assert "s3cret" not in repr(config)


def test_schedule_and_every_together_are_refused(write) -> None:
    main = write("sealdump.yaml", MAIN)
    server = write(
        "servers.d/db1.yaml",
        "host: h\nuser: u\njobs:\n  j:\n    schedule: '@daily'\n    every: 1h\n",
    )
    assert problems_of(main) == [f"{server}:6: jobs.j.every: give schedule or every, not both"]


def test_bad_interval_and_timezone(write) -> None:
    main = write("sealdump.yaml", MAIN)
    server = write(
        "servers.d/db1.yaml",
        "host: h\nuser: u\njobs:\n  j:\n    every: 90x\n    timezone: Mars/Olympus\n",
    )
    problems = problems_of(main)
    assert problems == [
        f"{server}:5: jobs.j.every: '90x' is not an interval such as 10s, 5m, 6h or 1d",
        f"{server}:6: jobs.j.timezone: unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Paris)",
    ]


def test_plain_http_blob_endpoint_is_refused_unless_allowed(write) -> None:
    main = write(
        "sealdump.yaml",
        """
        storages:
          emu: {type: azure-blob, account_url: "http://127.0.0.1:10000/devstoreaccount1", container: backups}
    """,
    )
    assert problems_of(main) == [
        f"{main}:2: storages.emu.account_url: http:// is refused (secure transfer required); "
        "use https:// or, for an emulator only, allow_insecure_http: true"
    ]
    main.write_text(
        main.read_text().replace(
            "container: backups", "container: backups, allow_insecure_http: true"
        )
    )
    assert load_config(main, environ={}).storages["emu"]


def test_invalid_names_are_refused(write) -> None:
    main = write("sealdump.yaml", "storages:\n  'bad name': {type: filesystem, path: x}\n")
    assert problems_of(main) == [
        f"{main}:2: storages.bad name: invalid name 'bad name': use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit"
    ]


def test_storage_type_selects_its_keys(write) -> None:
    main = write("sealdump.yaml", "storages:\n  s:\n    type: filesystem\n    container: x\n")
    assert problems_of(main) == [
        f"{main}:2: storages.s: missing required key 'path'",
        f"{main}:4: storages.s.container: unknown key",
    ]


def test_explicit_servers_dir_must_exist(write) -> None:
    main = write("sealdump.yaml", "servers_dir: nowhere\n")
    assert problems_of(main) == [
        f"{main}:1: servers_dir: not a directory: {main.parent / 'nowhere'}"
    ]


def test_defaults_and_relative_paths(write) -> None:
    main = write("sealdump.yaml", MAIN)
    write(
        "servers.d/db1.yaml",
        "host: h\nuser: u\npassword_file: secrets/pw\ntls: {ca_file: ca.pem}\njobs:\n  j: {every: 6h}\n",
    )
    config = load_config(main, environ={})
    base = main.parent
    assert config.state_dir == base / "state"
    assert config.history_url == f"sqlite:///{base / 'state' / 'history.db'}"
    server = config.servers["db1"]
    assert server.port == 3306
    assert server.tls.mode == "verify-identity"
    assert server.tls.ca_file == base / "servers.d" / "ca.pem"
    assert server.password_file is not None
    assert server.password_file.path({}) == base / "servers.d" / "secrets" / "pw"
    job = server.jobs["j"]
    assert (job.storage, job.key, str(job.timezone)) == ("local", "onprem", "UTC")


def test_every_problem_across_files_at_once(write) -> None:
    main = write("sealdump.yaml", MAIN + "metrics_listen: nowhere\n")
    write("servers.d/a.yaml", "host: h\n")
    write("servers.d/b.yaml", "user: u\n")
    problems = problems_of(main)
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == [
        str(main),
        str(main.parent / "servers.d" / "a.yaml"),
        str(main.parent / "servers.d" / "b.yaml"),
    ]


def test_examples_directory_is_copyable(tmp_path: Path) -> None:
    """Operators start by copying config/: the copy validates where it lands."""
    shutil.copytree(REPO / "config", tmp_path / "etc", symlinks=False)
    assert load_config(tmp_path / "etc" / "sealdump.yaml", environ={}).servers


def test_drill_schedule_and_target_are_checked(write) -> None:
    main = write("sealdump.yaml", MAIN)
    server = write(
        "servers.d/db1.yaml",
        "host: h\nuser: u\njobs:\n  j:\n    drill: '0 4 * * 8'\n    drill_target: elsewhere\n",
    )
    assert problems_of(main) == [
        f"{server}:5: jobs.j.drill: '0 4 * * 8': day of week 8 out of range 0-7",
        f"{server}:6: jobs.j.drill_target: unknown server 'elsewhere' (known servers: db1)",
    ]
    server.write_text("host: h\nuser: u\njobs:\n  j: {drill: '0 4 * * 0', drill_target: db1}\n")
    job = load_config(main, environ={}).servers["db1"].jobs["j"]
    assert (job.drill, job.drill_target) == ("0 4 * * 0", "db1")
