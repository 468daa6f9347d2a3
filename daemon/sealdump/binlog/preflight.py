"""Will the server's binary log serve point-in-time recovery? Checked before capture.

Each finding names the exact server variable to change; on Azure Database for MySQL
Flexible Server the server parameters carry the same names (Server parameters in the
portal, or ``az mysql flexible-server parameter set --name NAME``), and ``binlog_format``
is always ROW there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pymysql

from sealdump.errors import SourceError

MIN_EXPIRY_SECONDS = 86400
_VARIABLES = (
    "log_bin",
    "binlog_format",
    "binlog_row_image",
    "binlog_checksum",
    "binlog_expire_logs_seconds",
    "expire_logs_days",
    "log_bin_compress",
    "binlog_transaction_compression",
    "binlog_row_value_options",
)


@dataclass
class Findings:
    """What stops capture (``refusals``) and what the operator should fix (``warnings``)."""

    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def server_variables(conn: Any) -> dict[str, str]:
    """The global variables preflight looks at (those the server has)."""
    names = ", ".join(f"'{name}'" for name in _VARIABLES)
    with conn.cursor() as cur:
        cur.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
        return {str(name).lower(): str(value) for name, value in cur.fetchall()}


def check(variables: dict[str, str], host: str) -> Findings:
    """Judge the server's settings (pure: ``variables`` from ``server_variables``)."""
    found = Findings()
    azure = host.lower().endswith(".mysql.database.azure.com")

    def value(name: str) -> str:
        return variables.get(name, "").upper()

    if value("log_bin") not in ("ON", "1"):
        found.refusals.append("the binary log is off: start the server with log_bin")
    if value("binlog_format") != "ROW":
        found.refusals.append(
            f"binlog_format is {variables.get('binlog_format')!r}: set binlog_format=ROW "
            "(statement-format changes cannot be replayed row by row)"
        )
    if value("binlog_row_image") != "FULL":
        found.refusals.append(
            f"binlog_row_image is {variables.get('binlog_row_image')!r}: set "
            "binlog_row_image=FULL (server parameter binlog_row_image on Azure), so every "
            "row event carries whole rows"
        )
    if value("log_bin_compress") in ("ON", "1"):
        found.refusals.append("log_bin_compress is ON: set log_bin_compress=OFF")
    if value("binlog_transaction_compression") in ("ON", "1"):
        found.refusals.append(
            "binlog_transaction_compression is ON: set binlog_transaction_compression=OFF"
        )
    if "PARTIAL_JSON" in value("binlog_row_value_options"):
        found.refusals.append("binlog_row_value_options is PARTIAL_JSON: set it to ''")
    if value("binlog_checksum") != "CRC32":
        found.warnings.append(
            f"binlog_checksum is {variables.get('binlog_checksum')!r}: events cannot be "
            "checked in transit; set binlog_checksum=CRC32"
        )
    seconds = _expiry_seconds(variables)
    if seconds == 0:
        advice = (
            f"set binlog_expire_logs_seconds to at least {MIN_EXPIRY_SECONDS} (a week, 604800, "
            "is common advice)"
        )
        if azure:
            found.refusals.append(
                "binlog_expire_logs_seconds is 0: on Azure Database for MySQL Flexible Server "
                "a binary log is then deleted as soon as no replica holds it, so any pause in "
                f"capture is a gap; {advice} (server parameter binlog_expire_logs_seconds)"
            )
        else:
            found.warnings.append(
                "binlog_expire_logs_seconds and expire_logs_days are 0: binary logs are never "
                "purged here, but on Azure Database for MySQL this setting deletes them as soon "
                f"as no replica holds them; {advice}"
            )
    elif seconds < MIN_EXPIRY_SECONDS:
        found.warnings.append(
            f"binary logs expire after {seconds} s: a capture that stops for longer leaves a "
            f"gap; set binlog_expire_logs_seconds to at least {MIN_EXPIRY_SECONDS}"
        )
    return found


def _expiry_seconds(variables: dict[str, str]) -> int:
    seconds = _number(variables.get("binlog_expire_logs_seconds"))
    days = _number(variables.get("expire_logs_days"))
    return int(seconds) if seconds else int(days * 86400)


def _number(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def binary_logs(conn: Any) -> list[str]:
    """The server's binary log files, oldest first (SHOW BINARY LOGS)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [str(row[0]) for row in cur.fetchall()]
    except pymysql.err.MySQLError as exc:
        raise SourceError(
            f"SHOW BINARY LOGS failed: {exc.args[1] if len(exc.args) > 1 else exc} (the "
            "account needs REPLICATION CLIENT, called BINLOG MONITOR on MariaDB 10.5+)"
        ) from None
