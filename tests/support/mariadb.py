"""A throwaway MariaDB that only accepts verified TLS, in a temporary data directory.

Started as DESIGN §10 describes: ``mariadb-install-db`` then ``mariadbd`` on a free
loopback port with a CA-signed certificate, ``require_secure_transport=ON`` and the binary
log on. The backup account gets what Azure Database for MySQL grants its admin (no SUPER,
no BACKUP_ADMIN), so tests exercise what production allows.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from tests.support.certs import ServerCert, TestCA
from tests.support.net import free_port, wait_until

# Azure Flexible Server's admin privileges: everything an application needs, plus RELOAD,
# LOCK TABLES and REPLICATION CLIENT; never SUPER.
AZURE_LIKE_GRANTS = (
    "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, "
    "ALTER, SHOW DATABASES, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, "
    "REPLICATION CLIENT, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER"
)


def _binary(name: str, *fallbacks: str) -> str:
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (
            f"/usr/sbin/{candidate}" if Path(f"/usr/sbin/{candidate}").exists() else None
        )
        if found:
            return found
    raise FileNotFoundError(f"{name} not found: install Debian's mariadb-server")


@dataclass
class MariaDB:
    """One running server; ``user``/``password`` is the Azure-like backup account."""

    workdir: Path
    ca: TestCA
    cert: ServerCert | None = None
    port: int = 0
    user: str = "sealdump"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    process: subprocess.Popen[bytes] | None = None
    tls: bool = True  # False: a server offering no TLS at all, to test refusals
    options: tuple[str, ...] = ()  # extra mariadbd options, after the defaults (they win)

    @property
    def socket(self) -> Path:
        """The Unix socket (root setup only; tests connect over TLS)."""
        return self.workdir / "mysqld.sock"

    def start(self) -> MariaDB:
        """Initialise the data directory, start the server, create the backup account."""
        datadir = self.workdir / "data"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert = self.cert or self.ca.issue("mariadb")
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                _binary("mariadb-install-db", "mysql_install_db"),
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *as_root,
            ],
            check=True,
            capture_output=True,
        )
        self.port = self.port or free_port()
        tmpdir = self.workdir / "tmp"
        tmpdir.mkdir(exist_ok=True)
        log = open(self.workdir / "error.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                _binary("mariadbd", "mysqld"),
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                # 127.0.0.2 is not in the certificate: tests use it to prove hostname checks.
                "--bind-address=127.0.0.1,127.0.0.2",
                f"--pid-file={self.workdir / 'mariadbd.pid'}",
                f"--log-error={self.workdir / 'error.log'}",
                # Its own temporary directory: /tmp is shared with every other test run.
                f"--tmpdir={tmpdir}",
                *self._tls_options(),
                "--log-bin=binlog",
                "--server-id=1",
                "--binlog-format=ROW",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=64M",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
                *self.options,
                *as_root,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._socket_ready, 60, f"MariaDB (log: {self.workdir / 'error.log'})")
        with self.root() as conn, conn.cursor() as cur:
            # mariadb-install-db leaves password-less root accounts on TCP; keep root socket-only.
            cur.execute("SELECT host FROM mysql.user WHERE user = 'root' AND host <> 'localhost'")
            for (host,) in cur.fetchall():
                cur.execute("DROP USER 'root'@%s", (host,))
            require = " REQUIRE SSL" if self.tls else ""
            cur.execute(
                f"CREATE USER %s@'%%' IDENTIFIED BY %s{require}", (self.user, self.password)
            )
            cur.execute(f"GRANT {AZURE_LIKE_GRANTS} ON *.* TO %s@'%%'", (self.user,))
        return self

    def _tls_options(self) -> list[str]:
        if not self.tls or self.cert is None:
            return []
        return [
            f"--ssl-ca={self.ca.cert_path}",
            f"--ssl-cert={self.cert.cert}",
            f"--ssl-key={self.cert.key}",
            "--require-secure-transport=ON",
        ]

    def _socket_ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{log}")
        try:
            self.root().close()
        except pymysql.err.OperationalError:
            return False
        return True

    def root(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """An administrative connection over the Unix socket (setup and inspection)."""
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True, **kwargs)

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A verified-TLS connection as the backup account."""
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "ssl_ca": str(self.ca.cert_path),
            "ssl_verify_cert": True,
            "ssl_verify_identity": True,
            "autocommit": True,
        }
        options.update(kwargs)
        return pymysql.connect(**options)

    def sessions(self, user: str | None = None) -> list[str | None]:
        """What every session of ``user`` (the backup account by default) runs right now.

        One entry per connection: its statement, or None while idle. Tests wait on this
        (a dump reading a table, a killed client's connections gone) instead of sleeping.
        """
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT INFO FROM information_schema.PROCESSLIST WHERE USER = %s",
                (user or self.user,),
            )
            return [None if info is None else str(info) for (info,) in cur.fetchall()]

    def reading(self, database: str, table: str) -> bool:
        """Whether a session of the backup account is selecting from ``database.table``."""
        name = f"`{database}`.`{table}`"
        return any(
            info is not None and info.startswith("SELECT") and name in info
            for info in self.sessions()
        )

    def stop(self) -> None:
        """Shut the server down and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
