"""Server flavors from what servers report, including those the tests cannot start.

The tests run MariaDB only; MySQL's answers to ``SELECT VERSION(), @@version_comment`` are
taken from the servers themselves (MySQL 5.7, 8.0, 8.4 Community, Percona Server, Azure
Database for MySQL Flexible Server) so that the MySQL-only statements are at least chosen
right. Whether MySQL accepts them is listed in docs/development.md as unverified.
"""

from __future__ import annotations

import pytest

from sealdump.source.dialect import flavor_of


@pytest.mark.parametrize(
    ("version", "comment", "product", "major", "minor", "binlog_status", "gtid"),
    [
        (
            "8.0.36",
            "MySQL Community Server - GPL",
            "mysql",
            8,
            0,
            "SHOW MASTER STATUS",
            "SELECT @@GLOBAL.gtid_executed",
        ),
        (
            "8.4.3",
            "MySQL Community Server - GPL",
            "mysql",
            8,
            4,
            "SHOW BINARY LOG STATUS",  # SHOW MASTER STATUS is gone in 8.4
            "SELECT @@GLOBAL.gtid_executed",
        ),
        (
            "8.2.0",
            "MySQL Community Server - GPL",
            "mysql",
            8,
            2,
            "SHOW BINARY LOG STATUS",
            "SELECT @@GLOBAL.gtid_executed",
        ),
        (
            "5.7.44-log",
            "MySQL Community Server (GPL)",
            "mysql",
            5,
            7,
            "SHOW MASTER STATUS",
            "SELECT @@GLOBAL.gtid_executed",
        ),
        (
            "8.0.35-27",
            "Percona Server (GPL), Release 27, Revision 2f8eeab2",
            "mysql",
            8,
            0,
            "SHOW MASTER STATUS",
            "SELECT @@GLOBAL.gtid_executed",
        ),
        (
            "8.0.39-azure",
            "Source distribution",
            "mysql",
            8,
            0,
            "SHOW MASTER STATUS",
            "SELECT @@GLOBAL.gtid_executed",
        ),
        (
            "10.11.6-MariaDB-0+deb12u1",
            "Debian 12",
            "mariadb",
            10,
            11,
            "SHOW MASTER STATUS",
            "SELECT @@GLOBAL.gtid_binlog_pos",
        ),
        (
            "11.4.2-MariaDB-log",
            "MariaDB Server",
            "mariadb",
            11,
            4,
            "SHOW MASTER STATUS",
            "SELECT @@GLOBAL.gtid_binlog_pos",
        ),
    ],
)
def test_flavor_and_its_statements(
    version: str,
    comment: str,
    product: str,
    major: int,
    minor: int,
    binlog_status: str,
    gtid: str,
) -> None:
    flavor = flavor_of(version, comment)
    assert (flavor.product, flavor.version, flavor.major, flavor.minor) == (
        product,
        version,
        major,
        minor,
    )
    assert flavor.binlog_status_sql() == binlog_status
    assert flavor.gtid_sql() == gtid
    # Only MariaDB reports its snapshot's binlog position; MySQL needs the global read lock.
    assert flavor.snapshot_reports_binlog_position is (product == "mariadb")
    assert flavor.is_mariadb is (product == "mariadb")


def test_an_unparseable_version_is_kept_and_compares_lowest() -> None:
    flavor = flavor_of("unknown", "")
    assert (flavor.product, flavor.version, flavor.major, flavor.minor) == (
        "mysql",
        "unknown",
        0,
        0,
    )
    assert flavor.binlog_status_sql() == "SHOW MASTER STATUS"
