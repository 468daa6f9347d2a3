"""The validated configuration as typed, immutable objects.

Built only from data that already passed the schema and the cross-file checks, so the
code that uses it never re-checks shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from sealdump.config.cron import Cron
from sealdump.config.secrets import Secret, SecretFile

TlsMode = Literal["verify-identity", "verify-ca", "insecure-skip-verify"]
# The history database's TLS: as a source's, plus plaintext (no TLS at all); both
# insecure-skip-verify and plaintext are warned at every open. SQLite ignores it.
HistoryTlsMode = Literal["verify-identity", "verify-ca", "insecure-skip-verify", "plaintext"]
# Default per-request deadlines, in seconds, retries and back-off included.
STORAGE_TIMEOUT = 120.0
KEY_VAULT_TIMEOUT = 60.0
# The token scope of Azure Database for MySQL (and PostgreSQL) in Azure's public cloud.
ENTRA_MYSQL_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
ServerAuth = Literal["password", "entra"]
# Whether a dump may hold FLUSH TABLES WITH READ LOCK while its snapshots open: auto (MySQL
# does, MariaDB needs not), always (MySQL's way on MariaDB too), never (no global lock).
SnapshotLock = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class Retention:
    """GFS retention counts; zero means the rule keeps nothing."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0


@dataclass(frozen=True)
class FilesystemStorage:
    """Backups in a local directory."""

    name: str
    path: Path
    type: Literal["filesystem"] = "filesystem"


@dataclass(frozen=True)
class AzureBlobStorage:
    """Backups in an Azure Blob Storage container."""

    name: str
    account_url: str
    container: str
    prefix: str = ""
    sas_token_file: SecretFile | None = None
    account_key_file: SecretFile | None = None
    connection_string_file: SecretFile | None = None
    managed_identity_client_id: str | None = None
    ca_file: Path | None = None
    tier: str | None = None
    allow_insecure_http: bool = False
    create_container: bool = False
    max_concurrency: int = 4
    immutability_days: int | None = None
    legal_hold: bool = False
    timeout: float = STORAGE_TIMEOUT  # seconds per request, retries included
    type: Literal["azure-blob"] = "azure-blob"


Storage = FilesystemStorage | AzureBlobStorage


@dataclass(frozen=True)
class LocalKey:
    """A key-encryption key in a local file, plus older files kept for rotation."""

    name: str
    key_file: Path
    old_key_files: tuple[Path, ...] = ()
    type: Literal["local"] = "local"


@dataclass(frozen=True)
class AzureKeyVaultKey:
    """A key-encryption key in Azure Key Vault or Managed HSM."""

    name: str
    key_url: str
    algorithm: str = "RSA-OAEP-256"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_file: SecretFile | None = None
    authority_host: str | None = None
    ca_file: Path | None = None
    verify_challenge_resource: bool = True
    timeout: float = KEY_VAULT_TIMEOUT  # seconds per call, retries included
    type: Literal["azure-key-vault"] = "azure-key-vault"


KeyConfig = LocalKey | AzureKeyVaultKey


@dataclass(frozen=True)
class Tls:
    """How the server certificate is checked; verify-identity is the default."""

    mode: TlsMode = "verify-identity"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Job:
    """One backup job of one server, with defaults already applied."""

    name: str
    server: str
    storage: str
    key: str
    cron: Cron | None = None
    every: timedelta | None = None
    schedule_text: str | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    databases: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    retention: Retention = field(default_factory=Retention)
    connections: int = 2
    snapshot_lock: SnapshotLock = "auto"
    # Overall deadline of one run: past it the run is stopped, cleaned up, recorded as failed
    # and retried as a transient failure. None: no deadline.
    timeout: timedelta | None = None
    drill: str | None = None  # cron text, validated; the daemon schedules it
    drill_target: str | None = None
    webhooks: dict[str, str] = field(default_factory=dict)  # start / success / failure


@dataclass(frozen=True)
class EntraLogin:
    """How sealdump gets a Microsoft Entra ID token to log in to a server (``auth: entra``).

    The credential keys mean what they mean for a Key Vault key (sealdump.azure_identity).
    """

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_file: SecretFile | None = None
    authority_host: str | None = None
    ca_file: Path | None = None
    scope: str = ENTRA_MYSQL_SCOPE


@dataclass(frozen=True)
class BinlogCapture:
    """A server's binary-log capture for point-in-time recovery (its file's ``binlog:``).

    ``server_id`` is the replication id capture presents to the server: unique among its
    replicas, or the server ends one of the two streams.
    """

    storage: str
    key: str
    server_id: int
    enabled: bool = True
    segment_bytes: int = 16 * 1024 * 1024
    segment_seconds: int = 60


@dataclass(frozen=True)
class Server:
    """A MySQL server and its jobs."""

    name: str
    file: Path
    host: str
    user: str
    port: int = 3306
    password: Secret | None = None
    password_file: SecretFile | None = None
    tls: Tls = field(default_factory=Tls)
    allow_plaintext: bool = False
    jobs: dict[str, Job] = field(default_factory=dict)
    auth: ServerAuth = "password"
    entra: EntraLogin | None = None  # set when auth is "entra"
    binlog: BinlogCapture | None = None  # set when the file has a binlog section


class HistoryUrl(str):
    """``history_url`` that also carries ``history_password_file`` and ``history_tls``.

    It is the URL string itself, so every ``History(config.history_url)`` gets how to log in
    and how to check the server's certificate without a second argument.
    """

    password_file: SecretFile | None
    tls: HistoryTlsMode

    def __new__(
        cls,
        url: str,
        password_file: SecretFile | None = None,
        tls: HistoryTlsMode = "verify-identity",
    ) -> HistoryUrl:
        made = super().__new__(cls, url)
        made.password_file = password_file
        made.tls = tls
        return made

    def __getnewargs__(self) -> tuple[str, SecretFile | None, HistoryTlsMode]:  # type: ignore[override]
        return (str(self), self.password_file, self.tls)

    def __repr__(self) -> str:
        return "HistoryUrl(<may hold a password>)"


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    file: Path
    state_dir: Path
    history_url: str = field(repr=False)  # may carry a database password (a HistoryUrl)
    servers_dir: Path
    storages: dict[str, Storage]
    keys: dict[str, KeyConfig]
    servers: dict[str, Server]
    metrics_listen: str | None = None
    default_storage: str | None = None
    default_key: str | None = None
    default_retention: Retention = field(default_factory=Retention)
