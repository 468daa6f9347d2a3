"""What differs between MySQL 8.x and MariaDB 10.6+, kept in one place.

Everything else in sealdump speaks the common subset; every query reading
``information_schema`` aliases its columns because MySQL 8 returns their labels upper-case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flavor:
    """The server's product and version."""

    product: str  # "mysql" | "mariadb"
    version: str  # as the server reports it
    major: int
    minor: int

    @property
    def is_mariadb(self) -> bool:
        """MariaDB (or a fork reporting itself as such)."""
        return self.product == "mariadb"

    def binlog_status_sql(self) -> str:
        """The statement returning the current binary log file and position."""
        if not self.is_mariadb and (self.major, self.minor) >= (8, 2):
            return "SHOW BINARY LOG STATUS"  # SHOW MASTER STATUS is gone in 8.4
        return "SHOW MASTER STATUS"

    def gtid_sql(self) -> str:
        """The variable holding the executed GTID set."""
        return (
            "SELECT @@GLOBAL.gtid_binlog_pos"
            if self.is_mariadb
            else "SELECT @@GLOBAL.gtid_executed"
        )

    @property
    def snapshot_reports_binlog_position(self) -> bool:
        """MariaDB (and Percona) expose the binlog position of a consistent snapshot."""
        return self.is_mariadb


def detect(cursor: Any) -> Flavor:
    """Ask the server what it is."""
    cursor.execute("SELECT VERSION() AS version, @@version_comment AS comment")
    version, comment = cursor.fetchone()
    return flavor_of(str(version), str(comment))


def flavor_of(version: str, comment: str) -> Flavor:
    """The flavor a server reporting ``VERSION()`` and ``@@version_comment`` is.

    Separate from ``detect`` so that the version strings of servers the tests cannot start
    (MySQL 5.7, 8.0, 8.4, Percona, Azure) are checked too.
    """
    product = "mariadb" if "mariadb" in f"{version} {comment}".lower() else "mysql"
    numbers = version.split("-", 1)[0].split(".")
    major = int(numbers[0]) if numbers and numbers[0].isdigit() else 0
    minor = int(numbers[1]) if len(numbers) > 1 and numbers[1].isdigit() else 0
    return Flavor(product, version, major, minor)
