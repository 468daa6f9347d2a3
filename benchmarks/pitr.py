"""Point-in-time recovery: capture throughput, and a one-table restore as of a time.

Starts a throwaway TLS MariaDB (tests/support; binlog_format=ROW, binlog_row_image=FULL),
then:

(a) **capture**: generates about BINLOG_MB of binary log (half bulk transactions of 2,000
    rows, half single-row transactions, as a server-side loop) and copies all of it, from
    the first file, with `sealdump binlog pull` (a fresh chain each run: raw events grouped
    into transactions, zstd and AES-256-GCM, chained segments on a filesystem storage) and
    with `mariadb-binlog --read-from-remote-server --raw --to-last-log` (byte copies of the
    files), both over TLS with the server certificate verified. Each run is timed by GNU
    time: wall seconds, client CPU (user + system) and peak RSS; runs alternate, and the
    median is reported with MB/s of binlog.
(b) **restore**: a database of four tables (ROWS orders, and three smaller ones), a
    sealdump dump, then a workload of updates, inserts and deletes on every table and a
    pull; then `sealdump restore latest --table shop.orders --at T` (the dump plus the
    replay of its row changes), the same table from the dump alone, and a full restore of
    the database (all four tables, no replay). The restored orders must have the source's
    CHECKSUM TABLE.

Run: .venv/bin/python benchmarks/pitr.py [--binlog-mb 100] [--rows 300000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402
from tests.support.configs import write_config  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))
MIB = 1024 * 1024

CAPTURE_TABLE = """CREATE TABLE feed.events (
  id BIGINT UNSIGNED PRIMARY KEY, kind VARCHAR(20) NOT NULL, amount DECIMAL(12,2),
  at DATETIME(6) NOT NULL, note VARCHAR(255), payload VARBINARY(200)
) ENGINE=InnoDB"""

# Four tables of one database; {rows} orders, the others in proportion.
SHOP = """
CREATE DATABASE shop;
USE shop;
CREATE TABLE shop.customers (id INT UNSIGNED PRIMARY KEY, name VARCHAR(100) NOT NULL,
  email VARCHAR(190) NOT NULL, balance DECIMAL(14,4) NOT NULL, seen DATETIME(6)) ENGINE=InnoDB;
INSERT INTO shop.customers SELECT seq, CONCAT('Zoë ', seq), CONCAT('c', seq, '@example.com'),
  (seq * 7919 % 100000000) / 10000, '2026-01-01' + INTERVAL seq SECOND FROM seq_1_to_{customers};
CREATE TABLE shop.orders (id BIGINT UNSIGNED PRIMARY KEY, customer_id INT UNSIGNED NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL, amount DECIMAL(12,2) NOT NULL,
  weight DOUBLE, ordered_at DATETIME(6) NOT NULL, note VARCHAR(255), KEY (customer_id))
  ENGINE=InnoDB;
INSERT INTO shop.orders SELECT seq, 1 + seq % {customers}, ELT(1 + seq % 4, 'new', 'paid',
  'shipped', 'cancelled'), (seq * 31 % 10000000) / 100, seq / 7,
  '2026-01-01' + INTERVAL seq SECOND, CONCAT('note ', SHA1(seq)) FROM seq_1_to_{rows};
CREATE TABLE shop.items (order_id BIGINT UNSIGNED, line INT, sku CHAR(12), qty INT,
  PRIMARY KEY (order_id, line)) ENGINE=InnoDB;
INSERT INTO shop.items SELECT 1 + seq DIV 2, seq % 2, UPPER(LEFT(MD5(seq), 12)), seq % 9
  FROM seq_1_to_{items};
CREATE TABLE shop.audit (at DATETIME NOT NULL, what VARCHAR(40), detail TEXT) ENGINE=InnoDB;
INSERT INTO shop.audit SELECT '2026-01-01' + INTERVAL seq MINUTE, CONCAT('event ', seq % 13),
  REPEAT(MD5(seq), 3) FROM seq_1_to_{audit}
"""


@dataclass
class Measure:
    """One command under GNU time."""

    wall: float
    cpu: float  # user + system seconds of the command (and its children)
    rss_mib: float


def timed(command: list[str], env: dict[str, str] | None = None) -> Measure:
    """Run ``command`` under GNU time (a small C parent: its figures are the command's)."""
    with tempfile.NamedTemporaryFile(prefix="sealdump-time-", delete=False) as handle:
        report = Path(handle.name)
    try:
        result = subprocess.run(
            ["/usr/bin/time", "-o", str(report), "-f", "%e %U %S %M", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr.decode()[-2000:]}")
        wall, user, system, rss = report.read_text().split()[-4:]
    finally:
        report.unlink()
    return Measure(float(wall), float(user) + float(system), int(rss) / 1024)


def clean_env() -> dict[str, str]:
    """This environment without SEALDUMP_* settings that would change what is measured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}


def binlog_bytes(server: MariaDB) -> tuple[int, list[str]]:
    """Total size and names of the server's binary logs."""
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        rows = cur.fetchall()
    return sum(int(r[1]) for r in rows), [str(r[0]) for r in rows]


def generate_binlog(server: MariaDB, megabytes: int) -> int:
    """About ``megabytes`` of binary log: bulk transactions, then single-row commits."""
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2, GLOBAL sync_binlog = 0")
        cur.execute("CREATE DATABASE feed")
        cur.execute(CAPTURE_TABLE)
        cur.execute("USE feed")  # the sequence engine's seq_* tables need a database
        start, _ = binlog_bytes(server)
        next_id = 1
        while binlog_bytes(server)[0] - start < megabytes * MIB / 2:  # bulk: 2,000 rows a commit
            cur.execute(
                "INSERT INTO feed.events SELECT seq, ELT(1 + seq % 3, 'login', 'buy', 'error'), "  # noqa: S608 - integers
                "seq % 100000 / 100, '2026-01-01' + INTERVAL seq SECOND, CONCAT('é ', SHA1(seq)), "
                f"UNHEX(SHA2(seq, 512)) FROM seq_{next_id}_to_{next_id + 1999}"
            )
            next_id += 2000
        cur.execute("FLUSH BINARY LOGS")
        while binlog_bytes(server)[0] - start < megabytes * MIB:  # small: one row a commit
            cur.execute(
                "BEGIN NOT ATOMIC FOR i IN 1..5000 DO "
                "UPDATE feed.events SET amount = amount + 1, note = CONCAT('n', i) "
                "WHERE id = 1 + MOD(i * 7919, %s); END FOR; END",
                (next_id - 1,),
            )
        total, _ = binlog_bytes(server)
    return total


def capture_runs(work: Path, server: MariaDB, runs: int) -> dict[str, list[Measure]]:
    """Alternate sealdump binlog pull and mariadb-binlog --raw over every binary log."""
    _, files = binlog_bytes(server)
    client_cnf = work / "client.cnf"
    client_cnf.write_text(
        f"[client]\nuser={server.user}\npassword={server.password}\nhost=127.0.0.1\n"
        f"port={server.port}\nssl-ca={server.ca.cert_path}\nssl-verify-server-cert\n"
    )
    client_cnf.chmod(0o600)
    results: dict[str, list[Measure]] = {"sealdump binlog pull": [], "mariadb-binlog --raw": []}
    for run in range(runs):
        config = write_config(
            work / f"capture{run}", {"src": server}, "binlog: {server_id: 4747}\n"
        )
        results["sealdump binlog pull"].append(
            timed([SEALDUMP, "-q", "--config", str(config), "binlog", "pull", "src"], clean_env())
        )
        copy = work / f"raw{run}"
        copy.mkdir()
        results["mariadb-binlog --raw"].append(
            timed(
                [
                    "mariadb-binlog",
                    f"--defaults-extra-file={client_cnf}",
                    "--read-from-remote-server",
                    "--raw",
                    "--to-last-log",
                    f"--result-file={copy}/",
                    files[0],
                ]
            )
        )
        shutil.rmtree(copy)
        shutil.rmtree(work / f"capture{run}" / "backups")
    return results


def restore_runs(work: Path, server: MariaDB, rows: int, runs: int) -> dict[str, list[Measure]]:
    """A one-table restore as of a time (dump + replay), the same table from the dump
    alone, and a full restore of the database; each restored orders is checked."""
    customers, items, audit = rows // 6, rows * 2 // 3, rows // 3
    with server.root() as conn, conn.cursor() as cur:
        for statement in SHOP.format(
            rows=rows, customers=customers, items=items, audit=audit
        ).split(";\n"):
            if statement.strip():
                cur.execute(statement)
    config = write_config(
        work / "restore",
        {"shop": server},
        "binlog: {server_id: 4848}\njobs:\n  full: {databases: [shop]}\n",
    )
    command = [SEALDUMP, "-q", "--config", str(config)]
    env = clean_env()
    subprocess.run([*command, "backup", "shop/full"], env=env, check=True)
    with server.root() as conn, conn.cursor() as cur:
        for step in range(200):  # 200 transactions after the dump, on every table
            cur.execute("BEGIN")
            first = step * 250 + 1
            cur.execute(
                "UPDATE shop.orders SET status = 'paid', amount = amount + 1 "
                "WHERE id BETWEEN %s AND %s",
                (first, first + 99),
            )
            cur.execute("DELETE FROM shop.orders WHERE id = %s", (rows - step,))
            cur.execute(
                "INSERT INTO shop.orders VALUES (%s, 1, 'new', 1.5, 0.25, "
                "'2026-12-01 00:00:00.5', 'late')",
                (rows + 1 + step,),
            )
            cur.execute(
                "UPDATE shop.customers SET balance = balance - 1 WHERE id = %s", (step + 1,)
            )
            cur.execute("UPDATE shop.items SET qty = qty + 1 WHERE order_id = %s", (step + 1,))
            cur.execute("INSERT INTO shop.audit VALUES (NOW(), 'step', %s)", (str(step),))
            cur.execute("COMMIT")
        cur.execute("SELECT UNIX_TIMESTAMP()")
        last = int(cur.fetchone()[0])
        cur.execute("CHECKSUM TABLE shop.orders")
        expected = int(cur.fetchone()[1])
    subprocess.run([*command, "binlog", "pull", "shop"], env=env, check=True)
    at = datetime.fromtimestamp(last, UTC).isoformat().replace("+00:00", "Z")
    variants = {
        f"one table as of a time (--table shop.orders --at; {rows:,} rows + 200 transactions "
        "replayed)": ["--table", "shop.orders", "--at", at],
        "one table from the dump alone (--table shop.orders)": ["--table", "shop.orders"],
        "full restore of the database (4 tables)": ["--database", "shop"],
    }
    results: dict[str, list[Measure]] = {name: [] for name in variants}
    for run in range(runs):
        for number, (name, options) in enumerate(variants.items()):
            into = f"r{run}_{number}"
            results[name].append(
                timed(
                    [*command, "restore", "latest", "--server", "shop", *options, *target(into)],
                    env,
                )
            )
            with server.root() as conn, conn.cursor() as cur:
                cur.execute(f"CHECKSUM TABLE {into}.orders")
                found = int(cur.fetchone()[1])
                cur.execute(f"DROP DATABASE {into}")
            if number == 0 and found != expected:
                raise RuntimeError(f"{name}: CHECKSUM TABLE {found}, the source's {expected}")
    return results


def target(database: str) -> list[str]:
    """Where each benchmarked restore goes, with two loading connections (two CPUs here)."""
    return ["--into-database", database, "--parallel", "2"]


def median(measures: list[Measure]) -> Measure:
    return Measure(
        statistics.median(m.wall for m in measures),
        statistics.median(m.cpu for m in measures),
        max(m.rss_mib for m in measures),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binlog-mb", type=int, default=100)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sealdump-pitr-bench-"))
    server = MariaDB(work / "db", TestCA(work / "ca"), options=("--binlog-row-image=FULL",)).start()
    try:
        with server.root() as conn, conn.cursor() as cur:
            cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO %s@'%%'", (server.user,))
            cur.execute("SELECT VERSION()")
            version = str(cur.fetchone()[0])
        total = generate_binlog(server, args.binlog_mb)
        capture = capture_runs(work, server, args.runs)
        print(f"\nMariaDB {version}, {os.cpu_count()} CPUs, {args.runs} runs (median)\n")
        print(f"Capture of {total / MIB:.1f} MiB of binary log, TLS verified:\n")
        print("| client | wall s | client CPU s | MiB/s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for name, measures in capture.items():
            m = median(measures)
            print(
                f"| {name} | {m.wall:.2f} | {m.cpu:.2f} | {total / MIB / m.wall:.0f} | "
                f"{m.rss_mib:.0f} |"
            )
        restores = restore_runs(work, server, args.rows, args.runs)
        print("\nRestores (sealdump restore ... --parallel 2):\n")
        print("| restore | wall s | client CPU s | peak RSS MiB |")
        print("|---|---:|---:|---:|")
        for name, measures in restores.items():
            m = median(measures)
            print(f"| {name} | {m.wall:.2f} | {m.cpu:.2f} | {m.rss_mib:.0f} |")
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
