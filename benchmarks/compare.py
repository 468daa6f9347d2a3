"""sealdump against mariadb-dump and mydumper: same server, same data, same run.

Starts a throwaway TLS MariaDB (tests/support), loads ROWS rows, then times each tool's
backup and restore and reads each one's peak memory (ru_maxrss from wait4). Every tool
connects over TLS with the server certificate verified. Results are printed as a Markdown
table of absolute figures and ratios to mariadb-dump.

Run: benchmarks/run [ROWS]        (default 1,000,000 rows, about 200 MB of row data)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402
from tests.support.configs import write_config  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))

DATASET = """
CREATE DATABASE bench;
USE bench;
CREATE TABLE orders (
  id BIGINT UNSIGNED PRIMARY KEY,
  customer_id INT UNSIGNED NOT NULL,
  email VARCHAR(190) NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  weight DOUBLE,
  ordered_at DATETIME(6) NOT NULL,
  note VARCHAR(255),
  payload VARBINARY(64),
  KEY (customer_id)
) ENGINE=InnoDB;
INSERT INTO orders
  SELECT seq, seq % 100000, CONCAT('customer', seq % 100000, '@example.com'),
         ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), (seq % 100000) / 100,
         seq / 7, '2026-01-01' + INTERVAL seq SECOND,
         IF(seq % 5 = 0, NULL, CONCAT('note ', SHA1(seq))), UNHEX(SHA2(seq, 256))
  FROM seq_1_to_{rows};
CREATE TABLE events (at DATETIME NOT NULL, kind VARCHAR(20), detail TEXT) ENGINE=InnoDB;
INSERT INTO events SELECT '2026-01-01' + INTERVAL seq MINUTE, ELT(1 + seq % 3, 'login', 'logout', 'error'),
  REPEAT(CONCAT('detail ', seq, ' '), 3) FROM seq_1_to_{events};
"""


@dataclass
class Measure:
    """One timed command."""

    seconds: float
    max_rss_mib: float
    output_bytes: int = 0


def timed(
    command: list[str],
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> Measure:
    """Run ``command`` under GNU time: wall seconds and that process's peak RSS.

    (ru_maxrss of a child forked from this Python process would include this process's own
    memory at fork time; GNU time is a small C parent.)
    """
    with tempfile.NamedTemporaryFile(prefix="sealdump-time-", delete=False) as handle:
        report = Path(handle.name)
    source = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
    sink = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    try:
        result = subprocess.run(
            ["/usr/bin/time", "-o", str(report), "-f", "%e %M", *command],
            stdin=source,
            stdout=sink,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        for stream in (source, sink):
            if hasattr(stream, "close"):
                stream.close()
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stderr.decode()[-2000:]}")
    seconds, rss_kib = report.read_text().split()[-2:]
    report.unlink()
    return Measure(float(seconds), int(rss_kib) / 1024)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    events = max(1, rows // 5)
    work = Path(tempfile.mkdtemp(prefix="sealdump-bench-"))
    server = MariaDB(work / "db", TestCA(work / "ca"))
    server.start()
    try:
        with server.root() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
            for statement in DATASET.format(rows=rows, events=events).split(";\n"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute("SELECT COUNT(*) FROM bench.orders")
            if cur.fetchone()[0] != rows:
                raise RuntimeError("the dataset did not load")
        client_cnf = work / "client.cnf"
        client_cnf.write_text(
            f"[client]\nuser={server.user}\npassword={server.password}\nhost=127.0.0.1\nport={server.port}\n"
            f"ssl-ca={server.ca.cert_path}\nssl-verify-server-cert\n"
        )
        client_cnf.chmod(0o600)
        config = write_config(work, {"bench": server}, "jobs:\n  full: {databases: [bench]}\n")
        results: dict[str, dict[str, Measure]] = {}

        def drop(database: str) -> None:
            with server.root() as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {database}")

        # mariadb-dump: the reference, plain and piped through zstd -3 (like sealdump's default).
        dump_file = work / "dump.sql"
        m = timed(
            [
                "mariadb-dump",
                f"--defaults-extra-file={client_cnf}",
                "--single-transaction",
                "--quick",
                "--hex-blob",
                "--routines",
                "--triggers",
                "--events",
                "bench",
            ],
            stdout=dump_file,
        )
        m.output_bytes = size_of(dump_file)
        zst = work / "dump.sql.zst"
        z = timed(["zstd", "-3", "-q", "-T1", "-c", str(dump_file)], stdout=zst)
        drop("bench_r1")
        with server.root() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE bench_r1")
        r = timed(
            ["mariadb", f"--defaults-extra-file={client_cnf}", "--database=bench_r1"],
            stdin=dump_file,
        )
        results["mariadb-dump"] = {"backup": m, "restore": r}
        results["mariadb-dump | zstd -3"] = {
            "backup": Measure(
                m.seconds + z.seconds, max(m.max_rss_mib, z.max_rss_mib), size_of(zst)
            ),
            "restore": r,
        }

        # mydumper / myloader, 2 threads (this machine's cores), TLS through the defaults file.
        out = work / "mydumper"
        mydumper_cnf = work / "mydumper.cnf"
        mydumper_cnf.write_text(
            client_cnf.read_text().replace("[client]", "[mydumper]")
            + client_cnf.read_text().replace("[client]", "[myloader]")
        )
        mydumper_cnf.chmod(0o600)
        md = timed(
            [
                "mydumper",
                f"--defaults-file={mydumper_cnf}",
                "--ssl",
                "-h",
                "127.0.0.1",
                "-P",
                str(server.port),
                "-t",
                "2",
                "-B",
                "bench",
                "-o",
                str(out),
                "--compress",
            ]
        )
        md.output_bytes = size_of(out)
        drop("bench_r2")
        ml = timed(
            [
                "myloader",
                f"--defaults-file={mydumper_cnf}",
                "--ssl",
                "-h",
                "127.0.0.1",
                "-P",
                str(server.port),
                "-t",
                "2",
                "-d",
                str(out),
                "-B",
                "bench_r2",
            ]
        )
        results["mydumper -c / myloader (2 threads)"] = {"backup": md, "restore": ml}

        # sealdump: TLS verified, zstd-3, AES-256-GCM, local key, filesystem storage.
        sb = timed([SEALDUMP, "-q", "--config", str(config), "backup", "bench/full"])
        sb.output_bytes = size_of(work / "backups")
        drop("bench_r3")
        sr = timed(
            [
                SEALDUMP,
                "-q",
                "--config",
                str(config),
                "restore",
                "latest",
                "--database",
                "bench",
                "--into-database",
                "bench_r3",
                "--parallel",
                "2",
            ]
        )
        results["sealdump (encrypted)"] = {"backup": sb, "restore": sr}

        with server.root() as conn, conn.cursor() as cur:
            cur.execute(
                "CHECKSUM TABLE bench.orders, bench_r1.orders, bench_r2.orders, bench_r3.orders"
            )
            sums = {row[0]: row[1] for row in cur.fetchall()}
        reference = results["mariadb-dump"]
        print(
            f"\n{rows:,} + {events:,} rows, MariaDB {server_version(server)}, {os.cpu_count()} CPUs\n"
        )
        print(
            "| tool | backup s | ×dump | backup peak RSS MiB | output MiB | restore s | ×dump | restore peak RSS MiB |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, measured in results.items():
            b, r = measured["backup"], measured["restore"]
            print(
                f"| {name} | {b.seconds:.1f} | {b.seconds / reference['backup'].seconds:.2f} | {b.max_rss_mib:.0f} | "
                f"{b.output_bytes / 1048576:.1f} | {r.seconds:.1f} | {r.seconds / reference['restore'].seconds:.2f} | {r.max_rss_mib:.0f} |"
            )
        print(
            "\nCHECKSUM TABLE of orders (source, mariadb-dump, myloader, sealdump):",
            ", ".join(str(v) for v in sums.values()),
        )
        return 0 if len(set(sums.values())) == 1 else 1
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def server_version(server: MariaDB) -> str:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        return str(cur.fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
