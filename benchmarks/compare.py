"""sealdump against mariadb-dump | zstd and mydumper: same server, same data, one run.

Starts a throwaway TLS MariaDB (tests/support), loads a dataset server-side (the sequence
engine), then runs each tool's backup ``--runs`` times, alternated, and measures for each:

- wall seconds;
- the database server's CPU seconds (utime + stime of the mariadbd process, read from
  /proc/<pid>/stat before and after the command), and per GB of data;
- the client's CPU seconds (user + sys of every process of the command, GNU time's %U and
  %S; for ``mariadb-dump | zstd`` both processes, a real pipeline), and per GB of data;
- the client's peak RSS (GNU time's %M, the largest process of the command) and the peak of
  the summed PSS of the whole process tree, sampled every 0.1 s (what several worker
  processes would cost together);
- output bytes.

"GB" is 10^9 bytes of the source tables' InnoDB data (information_schema DATA_LENGTH after
ANALYZE TABLE): one denominator for every tool. Before each measured command the script
waits until the server is idle, and after the load and before each restore it has InnoDB
flush every dirty page (background flushing of an earlier load would otherwise count
against the next tool).

Then the restores, each into an emptied server, verified with CHECKSUM TABLE against the
source for every table (exit status 1 on any mismatch): ``zstd -d | mariadb``, ``myloader
-t 2`` and ``sealdump restore latest --parallel 2``, and ``sealdump restore latest --table``
of the smallest and the largest table. Every tool connects over TLS with the server
certificate verified; a preflight proves it (each client must refuse 127.0.0.2, an address
the server listens on that its certificate does not name).

Run:
  benchmarks/run                                  issue 13's dataset (~540 MB, 2.3 M rows)
  benchmarks/run --scale 0.1                      the same, a tenth of the rows
  benchmarks/run --only sealdump --no-restore     sealdump's backup alone (tuning)
  benchmarks/run --dataset small --rows 1000000   the earlier one-table dataset
  benchmarks/run 1000000                          the same (ROWS implies --dataset small)
"""

# Every SQL text here is built from this file's own constants (dataset definitions, table
# names), never from input: bandit's S608 cannot see that.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402
from tests.support.configs import write_config  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))
TIME = "/usr/bin/time"
GB = 1e9
MIB = 1048576
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOOLS = ("dump", "mydumper", "sealdump")
LABELS = {
    "dump": "mariadb-dump \\| zstd -3 -T1",
    "mydumper": "mydumper -t 2 --compress",
    "sealdump": "sealdump backup",
}
RESTORE_LABELS = {
    "dump": "zstd -d \\| mariadb",
    "mydumper": "myloader -t 2",
    "sealdump": "sealdump restore --parallel 2",
}
# Issue 13's acceptance, sealdump against mariadb-dump | zstd -3 -T1.
TARGET_WALL = 1.0
TARGET_SERVER_CPU = 1.2
TARGET_CLIENT_CPU = 1.0
TARGET_RSS_MIB = 256


# --- datasets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One table of a dataset: its DDL and a row generator over ``seq`` (sequence engine)."""

    database: str
    name: str
    rows: int
    ddl: str
    select: str  # SELECT ... FROM seq_{lo}_to_{hi}; may use {blob} and {customers}
    chunk: int = 200_000  # rows per INSERT ... SELECT


def random_blob(max_bytes: int, has_random_bytes: bool) -> str:
    """An SQL expression of up to ``max_bytes`` random bytes, ``seq``-dependent length."""
    if has_random_bytes:  # MariaDB 10.10+: RANDOM_BYTES(1..1024)
        parts = ", ".join(["RANDOM_BYTES(1024)"] * -(-max_bytes // 1024))
    else:  # SHA2-512 of distinct inputs: 64 pseudo-random bytes each
        parts = ", ".join(
            f"UNHEX(SHA2(CONCAT(seq, '-', {i}), 512))" for i in range(-(-max_bytes // 64))
        )
    return f"LEFT(CONCAT({parts}), seq * 7919 % {max_bytes + 1})"


# Unicode text: multi-byte characters, quotes, backslashes, newlines. Raw strings: what is
# written here is what the server parses (\\ is one backslash, \n a newline, '' a quote).
PHRASES = (
    r"'livraison à domicile « express »'",
    r"'Geschenk für Jürgen, Größe XL'",
    r"'配送：午前中 🚚 東京都'",
    r"'say \"hi\" to O''Neil'",
    r"'path C:\\temp\\new\\x.txt'",
    r"'Ольга: два\nстроки\tи таб'",
    r"'emoji 😀👍🏽 and ∑∞≠'",
)
NAMES = r"'Zoë', 'José', 'Łukasz', '田中', 'Ольга', 'O''Brien', 'Nguyễn', 'Müller\\Smith'"


def issue13_tables(scale: float, has_random_bytes: bool) -> list[Table]:
    """Issue 13's shape: two databases, four tables, ~2.3 M rows, ~540 MB at scale 1."""

    def rows(n: int) -> int:
        return max(1, round(n * scale))

    phrases = ", ".join(PHRASES)
    customers = rows(60_000)
    return [
        Table(
            "shop",
            "customers",
            customers,
            """CREATE TABLE shop.customers (
  id INT UNSIGNED PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(190) NOT NULL,
  profile JSON,
  balance DECIMAL(14,4) NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  last_seen DATETIME(6),
  score DOUBLE,
  bio TEXT,
  KEY (email)
) ENGINE=InnoDB""",
            rf"""SELECT seq,
  CONCAT(ELT(1 + seq % 8, {NAMES}), ' ', seq),
  CONCAT('c', seq, '@example.com'),
  JSON_OBJECT('id', seq, 'tier', ELT(1 + seq % 3, 'gold', 'silver', 'bronze'),
    'tags', JSON_ARRAY(CONCAT('t', seq % 17), CONCAT('t', seq % 31), seq % 7),
    'prefs', JSON_OBJECT('lang', ELT(1 + seq % 4, 'fr', 'de', 'ja', 'en'),
      'news', seq % 2 = 0, 'limit', seq % 100 / 8),
    'note', ELT(1 + seq % 7, {phrases})),
  (seq * 7919 % 100000000) / 10000 - 5000,
  FROM_UNIXTIME(1600000000 + seq * 37),
  IF(seq % 7 = 0, NULL, '2025-01-01' + INTERVAL seq * 13 SECOND + INTERVAL seq % 1000000 MICROSECOND),
  IF(seq % 11 = 0, NULL, seq / 3e0 - 1e4),
  IF(seq % 5 = 0, NULL, REPEAT(CONCAT('Bio ', seq, ': ', ELT(1 + seq % 7, {phrases}), '\n',
    MD5(seq), ' — it''s a \\ test. '), 1 + seq % 4))
FROM seq_{{lo}}_to_{{hi}}""",
        ),
        Table(
            "shop",
            "orders",
            rows(1_610_000),
            """CREATE TABLE shop.orders (
  id BIGINT UNSIGNED PRIMARY KEY,
  customer_id INT UNSIGNED NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  tax DECIMAL(10,4),
  weight DOUBLE,
  ordered_at DATETIME(6) NOT NULL,
  updated_at TIMESTAMP(3) NULL,
  coupon VARCHAR(32),
  note VARCHAR(255),
  KEY (customer_id)
) ENGINE=InnoDB""",
            rf"""SELECT seq, 1 + seq % {{customers}},
  ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
  (seq * 31 % 10000000) / 100,
  IF(seq % 3 = 0, NULL, (seq % 100000) / 10000),
  IF(seq % 9 = 0, NULL, seq * 0.001e0 / 7),
  '2026-01-01' + INTERVAL seq SECOND + INTERVAL (seq * 7 % 1000000) MICROSECOND,
  IF(seq % 4 = 0, NULL, FROM_UNIXTIME(1700000000 + seq + (seq % 1000) / 1000)),
  IF(seq % 2 = 0, NULL, UPPER(LEFT(MD5(seq), 12))),
  IF(seq % 5 = 0, NULL, CONCAT(ELT(1 + seq % 7, {phrases}), ' #', seq))
FROM seq_{{lo}}_to_{{hi}}""",
        ),
        Table(
            "media",
            "attachments",
            rows(35_000),
            """CREATE TABLE media.attachments (
  id INT UNSIGNED PRIMARY KEY,
  owner_id INT UNSIGNED NOT NULL,
  filename VARCHAR(255) NOT NULL,
  mime VARCHAR(64),
  sha256 BINARY(32) NOT NULL,
  thumb VARBINARY(255),
  content MEDIUMBLOB,
  meta JSON,
  uploaded_at DATETIME(6) NOT NULL
) ENGINE=InnoDB""",
            rf"""SELECT seq, 1 + seq % {{customers}},
  CONCAT(ELT(1 + seq % 4, 'photo', 'Rechnung', '請求書', 'l''été'), '_', seq, '.', ELT(1 + seq % 3, 'jpg', 'pdf', 'bin')),
  IF(seq % 10 = 0, NULL, ELT(1 + seq % 3, 'image/jpeg', 'application/pdf', 'application/octet-stream')),
  UNHEX(SHA2(seq, 256)),
  IF(seq % 6 = 0, NULL, {{thumb}}),
  IF(seq % 13 = 0, NULL, {{blob}}),
  JSON_OBJECT('w', seq % 4000, 'h', seq % 3000, 'exif', JSON_OBJECT('camera', ELT(1 + seq % 3, 'Canon', 'Nikon', 'Fujifilm'), 'iso', 100 * (1 + seq % 32)), 'caption', ELT(1 + seq % 7, {phrases})),
  '2024-06-01' + INTERVAL seq * 97 SECOND + INTERVAL seq % 999999 MICROSECOND
FROM seq_{{lo}}_to_{{hi}}""",
            chunk=10_000,
        ),
        Table(
            "media",
            "events",
            rows(595_000),
            """CREATE TABLE media.events (
  at DATETIME(6) NOT NULL,
  kind VARCHAR(20),
  actor VARCHAR(100),
  payload JSON,
  message TEXT,
  latency DOUBLE,
  KEY (at)
) ENGINE=InnoDB""",
            rf"""SELECT '2026-02-01' + INTERVAL seq * 3 SECOND + INTERVAL seq % 1000 MICROSECOND,
  ELT(1 + seq % 4, 'login', 'logout', 'error', 'upload'),
  IF(seq % 8 = 0, NULL, CONCAT(ELT(1 + seq % 8, {NAMES}), ' <u', seq % 1000, '>')),
  JSON_OBJECT('seq', seq, 'ip', CONCAT('10.', seq % 256, '.', seq DIV 256 % 256, '.', seq % 199),
    'ok', seq % 10 <> 0, 'path', CONCAT('/api/v1/items/', seq % 5000, '?q=a&b=\"c\"'),
    'ua', 'Mozilla/5.0 (X11; Linux x86_64)', 'ms', seq % 1000 / 7),
  IF(seq % 6 = 0, NULL, CONCAT('user ', seq % 1000, ' → ', ELT(1 + seq % 7, {phrases}), '\n', MD5(seq))),
  IF(seq % 12 = 0, NULL, (seq % 100000) / 3.7e0)
FROM seq_{{lo}}_to_{{hi}}""",
        ),
    ]


def small_tables(rows: int) -> list[Table]:
    """The earlier benchmark: bench.orders (ROWS rows) and bench.events (ROWS / 5, no key)."""
    return [
        Table(
            "bench",
            "orders",
            rows,
            """CREATE TABLE bench.orders (
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
) ENGINE=InnoDB""",
            """SELECT seq, seq % 100000, CONCAT('customer', seq % 100000, '@example.com'),
  ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), (seq % 100000) / 100,
  seq / 7, '2026-01-01' + INTERVAL seq SECOND,
  IF(seq % 5 = 0, NULL, CONCAT('note ', SHA1(seq))), UNHEX(SHA2(seq, 256))
FROM seq_{lo}_to_{hi}""",
        ),
        Table(
            "bench",
            "events",
            max(1, rows // 5),
            "CREATE TABLE bench.events (at DATETIME NOT NULL, kind VARCHAR(20), detail TEXT) ENGINE=InnoDB",
            """SELECT '2026-01-01' + INTERVAL seq MINUTE, ELT(1 + seq % 3, 'login', 'logout', 'error'),
  REPEAT(CONCAT('detail ', seq, ' '), 3)
FROM seq_{lo}_to_{hi}""",
        ),
    ]


# --- measuring --------------------------------------------------------------------------


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process ``pid`` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 utime, 15 stime


def wait_idle(pid: int, *, limit: float = 180.0) -> None:
    """Wait until the server uses under 3% of a CPU over a second (background work done)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = server_cpu(pid)
        time.sleep(1.0)
        if server_cpu(pid) - before < 0.03:
            return
    print(f"warning: the server was still busy after {limit:.0f}s", file=sys.stderr)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (through /proc/PID/task/TID/children)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                pending.append(int(child))
    return found


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Peak summed PSS of the processes below some roots (the GNU time wrappers)."""

    def __init__(self, roots: Sequence[int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roots = list(roots)
        self.interval = interval
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            total = sum(pss_kib(pid) for root in self.roots for pid in descendants(root))
            self.peak_kib = max(self.peak_kib, total)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Stage:
    """One process of a pipeline; ``stdin``/``stdout`` files only at the ends."""

    name: str
    command: list[str]


@dataclass
class Measure:
    """One measured command (a pipeline counts as one)."""

    wall: float
    server_cpu: float
    client_cpu: dict[str, float]  # user + sys per process of the pipeline
    max_rss_mib: float  # the largest process (GNU time %M)
    tree_pss_mib: float  # peak of the summed PSS of every process, sampled
    command: str = ""
    output_bytes: int = 0

    @property
    def client_total(self) -> float:
        return sum(self.client_cpu.values())


def measured(
    stages: Sequence[Stage],
    server_pid: int,
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
) -> Measure:
    """Run ``stages`` as one pipeline, each under GNU time, after the server went idle."""
    wait_idle(server_pid)
    reports = []
    for _ in stages:
        with tempfile.NamedTemporaryFile(prefix="sealdump-time-", delete=False) as handle:
            reports.append(Path(handle.name))
    source: Any = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
    sink: Any = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    processes: list[subprocess.Popen[bytes]] = []
    errors: list[Path] = []
    cpu_before = server_cpu(server_pid)
    started = time.perf_counter()
    try:
        upstream: Any = source
        for index, (stage, report) in enumerate(zip(stages, reports, strict=True)):
            last = index == len(stages) - 1
            error = report.with_suffix(".err")
            errors.append(error)
            with open(error, "wb") as err:
                process = subprocess.Popen(
                    [TIME, "-o", str(report), "-f", "%e %U %S %M", *stage.command],
                    stdin=upstream,
                    stdout=sink if last else subprocess.PIPE,
                    stderr=err,
                )
            if upstream is not source and upstream is not None:
                upstream.close()  # the next process holds it now
            upstream = process.stdout
            processes.append(process)
        sampler = TreeSampler([p.pid for p in processes])
        sampler.start()
        codes = [p.wait() for p in processes]
        wall = time.perf_counter() - started
        sampler.stop()
    finally:
        for stream in (source, sink):
            if hasattr(stream, "close"):
                stream.close()
    server = server_cpu(server_pid) - cpu_before
    failed = [
        f"{stage.name} exited {code}: {error.read_text(errors='replace')[-2000:]}"
        for stage, code, error in zip(stages, codes, errors, strict=True)
        if code != 0
    ]
    client: dict[str, float] = {}
    rss_kib = 0
    for stage, report in zip(stages, reports, strict=True):
        _, user, system, rss = report.read_text().split()[-4:]
        client[stage.name] = float(user) + float(system)
        rss_kib = max(rss_kib, int(rss))
        report.unlink()
    for error in errors:
        error.unlink(missing_ok=True)
    if failed:
        raise RuntimeError("\n".join(failed))
    shown = [shlex.join(stage.command) for stage in stages]
    if stdin:
        shown[0] += f" < {shlex.quote(str(stdin))}"
    command = " | ".join(shown)
    if stdout:
        command += f" > {shlex.quote(str(stdout))}"
    return Measure(wall, server, client, rss_kib / 1024, sampler.peak_kib / 1024, command)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class Bench:
    server: MariaDB
    work: Path
    tables: list[Table]
    config: Path
    client_cnf: Path
    mydumper_cnf: Path
    sealdump: list[str] = field(default_factory=lambda: [SEALDUMP])
    data_bytes: int = 0
    table_bytes: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, int | None] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The mariadbd process (tests/support/mariadb.py starts the binary directly)."""
        if self.server.process is None:
            raise RuntimeError("the server is not running")
        return self.server.process.pid

    @property
    def databases(self) -> list[str]:
        return sorted({t.database for t in self.tables})

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.server.root() as conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def drop_databases(self) -> None:
        for database in self.databases:
            self.query(f"DROP DATABASE IF EXISTS `{database}`")

    def sums(self, names: Sequence[str]) -> dict[str, int | None]:
        rows = self.query("CHECKSUM TABLE " + ", ".join(names))
        return {str(row[0]): None if row[1] is None else int(row[1]) for row in rows}

    def mydumper_connection(self, host: str = "127.0.0.1") -> list[str]:
        return [
            f"--defaults-file={self.mydumper_cnf}",
            "--ssl",
            "-h",
            host,
            "-P",
            str(self.server.port),
        ]

    # backups

    def backup(self, tool: str) -> Measure:
        if tool == "dump":
            target = self.work / "dump.sql.zst"
            m = measured(
                [
                    Stage(
                        "mariadb-dump",
                        [
                            "mariadb-dump",
                            f"--defaults-extra-file={self.client_cnf}",
                            "--single-transaction",
                            "--quick",
                            "--hex-blob",
                            "--databases",
                            *self.databases,
                        ],
                    ),
                    Stage("zstd", ["zstd", "-3", "-T1", "-q", "-c"]),
                ],
                self.pid,
                stdout=target,
            )
            m.output_bytes = size_of(target)
        elif tool == "mydumper":
            target = self.work / "mydumper"
            shutil.rmtree(target, ignore_errors=True)
            regex = "^(" + "|".join(self.databases) + r")\."
            m = measured(
                [
                    Stage(
                        "mydumper",
                        [
                            "mydumper",
                            *self.mydumper_connection(),
                            "-t",
                            "2",
                            "--compress",
                            "--regex",
                            regex,
                            "-o",
                            str(target),
                        ],
                    )
                ],
                self.pid,
            )
            m.output_bytes = size_of(target)
        else:
            before = size_of(self.work / "backups") if (self.work / "backups").exists() else 0
            m = measured(
                [
                    Stage(
                        "sealdump",
                        [
                            *self.sealdump,
                            "-q",
                            "--config",
                            str(self.config),
                            "backup",
                            "bench/full",
                        ],
                    )
                ],
                self.pid,
            )
            m.output_bytes = size_of(self.work / "backups") - before
        return m

    # restores

    def settle(self, limit: float = 600.0) -> None:
        """Flush every dirty page now, so that no tool pays for an earlier one's writes."""
        ((original, io, io_max),) = self.query(
            "SELECT @@GLOBAL.innodb_max_dirty_pages_pct, @@GLOBAL.innodb_io_capacity,"
            " @@GLOBAL.innodb_io_capacity_max"
        )
        # At the default 200 pages a second, a full buffer pool takes 40 s to flush.
        self.query("SET GLOBAL innodb_io_capacity_max = 100000")
        self.query("SET GLOBAL innodb_io_capacity = 100000")
        self.query("SET GLOBAL innodb_max_dirty_pages_pct = 0")  # 10.5+: flush them all
        try:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                ((_, dirty),) = self.query(
                    "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'"
                )
                if int(dirty) == 0:
                    break
                time.sleep(0.5)
        finally:
            self.query(f"SET GLOBAL innodb_max_dirty_pages_pct = {float(original)}")
            self.query(f"SET GLOBAL innodb_io_capacity = {int(io)}")
            self.query(f"SET GLOBAL innodb_io_capacity_max = {int(io_max)}")
        wait_idle(self.pid)

    def restore(self, tool: str) -> Measure:
        self.drop_databases()
        self.settle()
        if tool == "dump":
            return measured(
                [
                    Stage("zstd", ["zstd", "-d", "-q", "-c"]),
                    Stage("mariadb", ["mariadb", f"--defaults-extra-file={self.client_cnf}"]),
                ],
                self.pid,
                stdin=self.work / "dump.sql.zst",
            )
        if tool == "mydumper":
            return measured(
                [
                    Stage(
                        "myloader",
                        [
                            "myloader",
                            *self.mydumper_connection(),
                            "-t",
                            "2",
                            "-d",
                            str(self.work / "mydumper"),
                        ],
                    )
                ],
                self.pid,
            )
        return measured([Stage("sealdump", self.sealdump_restore("--parallel", "2"))], self.pid)

    def sealdump_restore(self, *options: str) -> list[str]:
        return [*self.sealdump, "-q", "--config", str(self.config), "restore", "latest", *options]

    def verify(self, what: str, renamed: dict[str, str] | None = None) -> list[str]:
        """Tables whose CHECKSUM TABLE differs from the source's (``renamed``: source->copy)."""
        names = renamed or {name: name for name in self.checksums}
        got = self.sums(list(names.values()))
        bad = [
            f"{what}: {copy} = {got.get(copy)}, source {source} = {self.checksums[source]}"
            for source, copy in names.items()
            if got.get(copy) != self.checksums[source] or got.get(copy) is None
        ]
        for line in bad:
            print("CHECKSUM MISMATCH", line, file=sys.stderr)
        return bad


def random_bytes_available(server: MariaDB) -> bool:
    """Whether the server has RANDOM_BYTES() (MariaDB 10.10 and later)."""
    with server.root() as conn, conn.cursor() as cur:
        try:
            cur.execute("SELECT RANDOM_BYTES(1)")
        except pymysql.err.MySQLError:
            return False
    return True


def load(bench: Bench) -> None:
    has_random_bytes = random_bytes_available(bench.server)
    customers = next((t.rows for t in bench.tables if t.name == "customers"), 1)
    with bench.server.root() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
        cur.execute("SET SESSION sql_log_bin = 0")  # the load is no part of the benchmark
        for database in bench.databases:
            cur.execute(f"CREATE DATABASE `{database}`")
        for table in bench.tables:
            cur.execute(table.ddl)
            cur.execute(f"USE `{table.database}`")  # seq_X_to_Y resolves in the current one
            for lo in range(1, table.rows + 1, table.chunk):
                hi = min(table.rows, lo + table.chunk - 1)
                cur.execute(
                    f"INSERT INTO {table.database}.{table.name} "
                    + table.select.format(
                        lo=lo,
                        hi=hi,
                        customers=customers,
                        blob=random_blob(6144, has_random_bytes),
                        thumb=random_blob(255, has_random_bytes),
                    )
                )
            cur.execute(f"ANALYZE TABLE {table.database}.{table.name}")
            cur.fetchall()
    names = [f"{t.database}.{t.name}" for t in bench.tables]
    for name, data in bench.query(
        "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME), DATA_LENGTH"
        " FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ("
        + ", ".join(f"'{d}'" for d in bench.databases)
        + ")"
    ):
        bench.table_bytes[str(name)] = int(data)
    for table in bench.tables:
        (count,) = bench.query(f"SELECT COUNT(*) FROM {table.database}.{table.name}")[0]
        if count != table.rows:
            raise RuntimeError(
                f"{table.database}.{table.name}: {count} rows, expected {table.rows}"
            )
    bench.data_bytes = sum(bench.table_bytes.values())
    bench.checksums = bench.sums(names)
    if any(value is None for value in bench.checksums.values()):
        raise RuntimeError(f"CHECKSUM TABLE failed on the source: {bench.checksums}")


def preflight_tls(bench: Bench, tools: Sequence[str]) -> None:
    """Each client must refuse 127.0.0.2 for its certificate: verification is on.

    The server listens there too, but its certificate names only localhost and 127.0.0.1.
    (mydumper and myloader 0.10 verify the chain but not the name unless the defaults file
    says ``ssl-verify-server-cert=1``: the bare flag is ignored in their groups.)
    """
    client = f"--defaults-extra-file={bench.client_cnf}"
    checks: list[list[str]] = []
    if "dump" in tools:
        checks.append(["mariadb", client, "-h", "127.0.0.2", "-e", "SELECT 1"])
        checks.append(["mariadb-dump", client, "-h", "127.0.0.2", "--no-data", "mysql"])
    if "mydumper" in tools:
        out = str(bench.work / "preflight")
        checks.append(
            ["mydumper", *bench.mydumper_connection("127.0.0.2"), "-B", "mysql", "-o", out]
        )
        fake = bench.work / "preflight-load"  # myloader looks at the directory first
        fake.mkdir(exist_ok=True)
        (fake / "metadata").write_text("")
        checks.append(["myloader", *bench.mydumper_connection("127.0.0.2"), "-d", str(fake)])
    for command in checks:
        result = subprocess.run(command, capture_output=True, check=False, timeout=60)
        said = result.stderr.decode(errors="replace")
        if result.returncode == 0 or "certificate" not in said.lower():
            raise RuntimeError(
                f"{command[0]} did not refuse a certificate that does not name 127.0.0.2: {said[-500:]}"
            )
    for leftover in ("preflight", "preflight-load"):
        shutil.rmtree(bench.work / leftover, ignore_errors=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_runs(values: Sequence[float], digits: int = 1) -> str:
    """``median (run1 / run2 ...)`` or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{median(values):.{digits}f} ({' / '.join(f'{v:.{digits}f}' for v in values)})"


def report_backups(bench: Bench, results: dict[str, list[Measure]]) -> None:
    gb = bench.data_bytes / GB
    print("\n### Backups, each run\n")
    print(
        "| tool | run | wall s | server CPU s | server CPU s/GB | client CPU s | client CPU s/GB | peak RSS MiB | tree PSS MiB | output MiB |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for tool, runs in results.items():
        for number, m in enumerate(runs, 1):
            parts = (
                " + ".join(f"{name} {cpu:.2f}" for name, cpu in m.client_cpu.items())
                if len(m.client_cpu) > 1
                else ""
            )
            client = f"{m.client_total:.2f}" + (f" ({parts})" if parts else "")
            print(
                f"| {LABELS[tool]} | {number} | {m.wall:.2f} | {m.server_cpu:.2f} | {m.server_cpu / gb:.2f} | "
                f"{client} | {m.client_total / gb:.2f} | {m.max_rss_mib:.0f} | {m.tree_pss_mib:.0f} | "
                f"{m.output_bytes / MIB:.1f} |"
            )

    print("\n### Backups, median of the runs (ratios to mariadb-dump | zstd)\n")
    medians: dict[str, dict[str, float]] = {
        tool: {
            "wall": median([m.wall for m in runs]),
            "server_cpu": median([m.server_cpu for m in runs]),
            "client_total": median([m.client_total for m in runs]),
            "max_rss_mib": max(m.max_rss_mib for m in runs),
            "tree_pss_mib": max(m.tree_pss_mib for m in runs),
            "output_bytes": median([m.output_bytes for m in runs]),
        }
        for tool, runs in results.items()
    }

    def ratio(tool: str, key: str) -> str:
        base = medians.get("dump", {}).get(key)
        return f"{medians[tool][key] / base:.2f}" if base else "–"

    print(
        "| tool | wall s | ×ref | server CPU s/GB | ×ref | client CPU s/GB | ×ref | peak RSS MiB | ×ref | tree PSS MiB | output MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tool, med in medians.items():
        print(
            f"| {LABELS[tool]} | {med['wall']:.2f} | {ratio(tool, 'wall')} | "
            f"{med['server_cpu'] / gb:.2f} | {ratio(tool, 'server_cpu')} | "
            f"{med['client_total'] / gb:.2f} | {ratio(tool, 'client_total')} | "
            f"{med['max_rss_mib']:.0f} | {ratio(tool, 'max_rss_mib')} | "
            f"{med['tree_pss_mib']:.0f} | {med['output_bytes'] / MIB:.1f} |"
        )
    print(
        "\n(Medians of the runs; RSS and PSS: the highest of the runs. ×ref: against mariadb-dump | zstd.)"
    )

    if "sealdump" not in medians:
        return
    s = medians["sealdump"]
    print("\n### Issue 13's acceptance (sealdump against mariadb-dump | zstd -3 -T1)\n")
    print("| criterion | target | measured | met |")
    print("|---|---:|---:|---|")
    if "dump" in medians:
        d = medians["dump"]
        for what, key, target in (
            ("wall time", "wall", TARGET_WALL),
            ("server CPU per GB", "server_cpu", TARGET_SERVER_CPU),
            ("client CPU per GB", "client_total", TARGET_CLIENT_CPU),
        ):
            value = s[key] / d[key]
            print(
                f"| {what} | <= {target:.1f}x | {value:.2f}x | {'yes' if value <= target else 'NO'} |"
            )
    rss = max(s["max_rss_mib"], s["tree_pss_mib"])
    print(
        f"| peak memory (RSS; tree PSS) | <= {TARGET_RSS_MIB} MiB | {rss:.0f} MiB | {'yes' if rss <= TARGET_RSS_MIB else 'NO'} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "rows_positional",
        nargs="?",
        type=int,
        metavar="ROWS",
        help="rows of the small dataset (implies --dataset small)",
    )
    parser.add_argument(
        "--dataset",
        choices=("issue13", "small"),
        help="default: issue13 (small when ROWS is given)",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="issue13: 1.0 = ~540 MB, 2.3 M rows"
    )
    parser.add_argument("--rows", type=int, help="small: rows of bench.orders (default 1,000,000)")
    parser.add_argument(
        "--runs", type=int, default=2, help="backups of each tool, alternated (default 2)"
    )
    parser.add_argument(
        "--only", choices=TOOLS, action="append", help="measure only this tool (repeatable)"
    )
    parser.add_argument("--no-restore", action="store_true", help="backups only")
    parser.add_argument(
        "--sealdump",
        default=SEALDUMP,
        help="the sealdump command (default: this venv's; e.g. 'python -m sealdump' with PYTHONPATH)",
    )
    parser.add_argument(
        "--job-options",
        default="",
        help="extra sealdump job settings, YAML flow entries ('connections: 3')",
    )
    args = parser.parse_args(argv)
    dataset = args.dataset or ("small" if args.rows_positional else "issue13")
    rows = args.rows or args.rows_positional or 1_000_000
    if args.runs < 1 or args.scale <= 0:
        parser.error("--runs must be >= 1 and --scale > 0")
    tools = [t for t in TOOLS if not args.only or t in args.only]

    work = Path(tempfile.mkdtemp(prefix="sealdump-bench-"))
    server = MariaDB(work / "db", TestCA(work / "ca"))
    server.start()
    try:
        has_random_bytes = random_bytes_available(server)
        tables = (
            issue13_tables(args.scale, has_random_bytes)
            if dataset == "issue13"
            else small_tables(rows)
        )
        databases = sorted({t.database for t in tables})
        client_cnf = work / "client.cnf"
        client = (
            f"user={server.user}\npassword={server.password}\nhost=127.0.0.1\nport={server.port}\n"
            f"ssl-ca={server.ca.cert_path}\nssl-verify-server-cert=1\n"
        )
        client_cnf.write_text("[client]\n" + client)
        mydumper_cnf = work / "mydumper.cnf"
        mydumper_cnf.write_text("[mydumper]\n" + client + "[myloader]\n" + client)
        for cnf in (client_cnf, mydumper_cnf):
            cnf.chmod(0o600)
        extra = f", {args.job_options}" if args.job_options else ""
        config = write_config(
            work,
            {"bench": server},
            f"jobs:\n  full: {{databases: [{', '.join(databases)}]{extra}}}\n",
        )
        bench = Bench(
            server, work, tables, config, client_cnf, mydumper_cnf, shlex.split(args.sealdump)
        )

        started = time.perf_counter()
        load(bench)
        loaded = time.perf_counter() - started
        bench.settle()
        preflight_tls(bench, tools)
        version = bench.query("SELECT VERSION()")[0][0]
        print(f"\n## sealdump vs mariadb-dump | zstd vs mydumper: dataset {dataset}", end="")
        print(f" (scale {args.scale:g})" if dataset == "issue13" else f" ({rows:,} rows)")
        print(
            f"\nMariaDB {version} (pid {bench.pid}), {os.cpu_count()} CPUs, verified TLS for every tool; "
            f"loaded in {loaded:.0f} s; {args.runs} run(s) per tool, alternated.\n"
        )
        print("| table | rows | data MiB |")
        print("|---|---:|---:|")
        for t in tables:
            name = f"{t.database}.{t.name}"
            print(f"| {name} | {t.rows:,} | {bench.table_bytes[name] / MIB:.1f} |")
        total_rows = sum(t.rows for t in tables)
        print(
            f"| **total** | {total_rows:,} | {bench.data_bytes / MIB:.1f} ({bench.data_bytes / GB:.3f} GB) |"
        )

        results: dict[str, list[Measure]] = {tool: [] for tool in tools}
        for run in range(args.runs):
            for tool in tools:
                print(f"backup {run + 1}/{args.runs}: {tool} ...", file=sys.stderr, flush=True)
                results[tool].append(bench.backup(tool))
        report_backups(bench, results)

        failures: list[str] = []
        restores: dict[str, Measure] = {}
        if not args.no_restore:
            for tool in tools:
                print(f"restore: {tool} ...", file=sys.stderr, flush=True)
                restores[tool] = bench.restore(tool)
                failures += bench.verify(RESTORE_LABELS[tool])
            print(
                "\n### Full restore (into an emptied server; CHECKSUM TABLE of every table against the source)\n"
            )
            print(
                "| tool | wall s | ×mariadb | ×myloader | server CPU s | client CPU s | peak RSS MiB | tree PSS MiB | checksums |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
            for tool, m in restores.items():
                vs_dump = f"{m.wall / restores['dump'].wall:.2f}" if "dump" in restores else "–"
                vs_myloader = (
                    f"{m.wall / restores['mydumper'].wall:.2f}" if "mydumper" in restores else "–"
                )
                ok = not any(f.startswith(RESTORE_LABELS[tool] + ":") for f in failures)
                print(
                    f"| {RESTORE_LABELS[tool]} | {m.wall:.2f} | {vs_dump} | {vs_myloader} | {m.server_cpu:.2f} | "
                    f"{m.client_total:.2f} | {m.max_rss_mib:.0f} | {m.tree_pss_mib:.0f} | "
                    f"{'all equal' if ok else 'MISMATCH'} |"
                )
            if "sealdump" in tools:
                failures += single_tables(bench, restores["sealdump"])
        print_commands(bench, results, restores)
        if failures:
            print(f"\n{len(failures)} CHECKSUM TABLE mismatch(es): see stderr", file=sys.stderr)
            return 1
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_commands(
    bench: Bench, results: dict[str, list[Measure]], restores: dict[str, Measure]
) -> None:
    """The exact commands measured ($WORK: the run's temporary directory)."""
    print("\n### Commands\n")
    work = str(bench.work)
    for runs in results.values():
        print(f"- backup: `{runs[-1].command.replace(work, '$WORK')}`")
    for m in restores.values():
        print(f"- restore: `{m.command.replace(work, '$WORK')}`")
    print(
        f"- sealdump job: `{bench.config.parent.joinpath('servers.d', 'bench.yaml').read_text().splitlines()[-1].strip()}`"
    )


def single_tables(bench: Bench, full: Measure) -> list[str]:
    """``sealdump restore latest --table`` of the smallest and the largest table."""
    ordered = sorted(bench.table_bytes, key=lambda name: bench.table_bytes[name])
    picks = [ordered[0], ordered[-1]] if len(ordered) > 1 else ordered
    failures: list[str] = []
    print(
        "\n### One table: `sealdump restore latest --table DB.T --into-database DB_one --parallel 2`\n"
    )
    print(
        "| table | rows | data MiB | share of data | wall s | share of the full restore's wall | s per GB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in picks:
        database, table = name.split(".")
        copy = f"{database}_one"
        bench.query(f"DROP DATABASE IF EXISTS `{copy}`")
        print(f"restore --table {name} ...", file=sys.stderr, flush=True)
        m = measured(
            [
                Stage(
                    "sealdump",
                    bench.sealdump_restore(
                        "--table", name, "--into-database", copy, "--parallel", "2"
                    ),
                )
            ],
            bench.pid,
        )
        failures += bench.verify(f"--table {name}", {name: f"{copy}.{table}"})
        bench.query(f"DROP DATABASE IF EXISTS `{copy}`")
        rows = next(t.rows for t in bench.tables if f"{t.database}.{t.name}" == name)
        size = bench.table_bytes[name]
        print(
            f"| {name} | {rows:,} | {size / MIB:.1f} | {size / bench.data_bytes:.0%} | {m.wall:.2f} | "
            f"{m.wall / full.wall:.0%} | {m.wall / (size / GB):.1f} |"
        )
    return failures


if __name__ == "__main__":
    sys.exit(main())
