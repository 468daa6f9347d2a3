"""Binlog capture against a real MariaDB: every transaction stored byte for byte, once.

The oracle is the server's own binlog files, read from its data directory: the events of
every stored segment, concatenated, must equal the transaction events of the files (the
file-level events, which capture does not store, left out), with nothing missing or
repeated after killed connections and SIGKILLed pulls.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealdump.actions.binlog import resolve_capture, run_pull
from sealdump.binlog.chain import ChainReader
from sealdump.binlog.status import chain_status
from sealdump.config import Config, load_config
from sealdump.errors import SourceError
from sealdump.keys import providers
from sealdump.storage.filesystem import FilesystemStore
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb

# Events that describe a binlog file, not a change: capture does not store them.
FILE_EVENTS = {3, 4, 15, 35, 161, 163}
BINLOG_YAML = "binlog: {server_id: 4242, segment_bytes: 65536}\n"


def start_source(workdir: Path, ca) -> MariaDB:
    """A MariaDB of its own (tests purge and flush its logs), capture account ready."""
    server = MariaDB(workdir, ca).start()
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO %s@'%%'", (server.user,))
        cur.execute("CREATE DATABASE shop")
        cur.execute(
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(200), "
            "amount DECIMAL(10,2), blobby LONGBLOB)"
        )
    return server


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[MariaDB]:
    server = start_source(tmp_path_factory.mktemp("binlog-src"), test_ca)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, source: MariaDB) -> Path:
    return write_config(tmp_path_factory.mktemp("binlog-cfg"), {"src": source}, BINLOG_YAML)


@pytest.fixture(scope="module")
def config(config_file: Path) -> Config:
    return load_config(config_file, environ={})


def workload(server: MariaDB, first: int, count: int = 20, payload: int = 100) -> None:
    """Inserts, updates and deletes in several transactions, a large multi-statement one,
    and a rotation in the middle."""
    with server.root() as conn, conn.cursor() as cur:
        for n in range(first, first + count):
            cur.execute(
                "INSERT INTO shop.orders VALUES (%s, %s, %s, %s)",
                (n, f"order {n}", n * 1.5, os.urandom(payload)),
            )
        cur.execute("UPDATE shop.orders SET note = CONCAT(note, ' paid') WHERE MOD(id, 3) = 0")
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("BEGIN")
        for n in range(first + count, first + 2 * count):
            cur.execute(
                "INSERT INTO shop.orders VALUES (%s, %s, %s, %s)",
                (n, "bulk", 1, os.urandom(payload * 10)),
            )
            cur.execute("UPDATE shop.orders SET amount = amount + 1 WHERE id = %s", (n,))
        cur.execute("DELETE FROM shop.orders WHERE id = %s", (first + count,))
        cur.execute("COMMIT")
        cur.execute("DELETE FROM shop.orders WHERE id = %s", (first,))


def events_of(image: bytes) -> list[bytes]:
    """The events of a binlog file image, after its magic."""
    assert image[:4] == b"\xfebin"
    found, at = [], 4
    while at < len(image):
        (size,) = struct.unpack_from("<I", image, at + 9)
        found.append(image[at : at + size])
        at += size
    assert at == len(image)
    return found


def server_events(server: MariaDB) -> list[bytes]:
    """The transaction events of every binlog file the server still has, in order."""
    datadir = server.workdir / "data"
    names = (datadir / "binlog.index").read_text().split()
    found: list[bytes] = []
    for name in names:
        found += [
            e
            for e in events_of((datadir / Path(name).name).read_bytes())
            if e[4] not in FILE_EVENTS
        ]
    return found


def stored_events(config: Config, server: str = "src") -> list[bytes]:
    """The events of every stored segment, in chain order (the FORMAT_DESCRIPTIONs left out)."""
    storage = FilesystemStore(config.storages["local"].path)  # type: ignore[union-attr]
    status = chain_status(storage, server, providers(config), verify=True)
    assert status.problems == []
    reader = ChainReader(storage, server, providers(config))
    found: list[bytes] = []
    for element in status.elements:
        _, image = reader.read(element.name)
        if element.index.kind == "segment":
            events = events_of(image)
            assert events[0][4] == 15  # each segment is a binlog file of its own
            found += events[1:]
    return found


def test_pull_stores_every_transaction_once_byte_for_byte(
    config: Config, source: MariaDB, tmp_path: Path
) -> None:
    server, settings = resolve_capture(config, "src")
    workload(source, 1)
    first = run_pull(config, server, settings)
    assert first.segments >= 2
    assert first.gaps == []
    assert stored_events(config) == server_events(source)

    workload(source, 1000)
    second = run_pull(config, server, settings)
    assert first.head is not None
    assert second.start == first.head.resume  # continues exactly where the first stopped
    assert stored_events(config) == server_events(source)

    again = run_pull(config, server, settings)  # nothing new: nothing stored
    assert again.segments == 0
    assert again.head == second.head

    storage = FilesystemStore(config.storages["local"].path)  # type: ignore[union-attr]
    status = chain_status(storage, "src", providers(config), verify=True)
    assert len(status.windows) == 1
    assert status.gaps == []
    assert {"shop.orders"} <= {t for e in status.elements for t in e.index.tables}
    # A segment is a binlog file mariadb-binlog reads like the server's own.
    reader = ChainReader(storage, "src", providers(config))
    biggest = max(status.elements, key=lambda e: e.index.transactions)
    image = tmp_path / "segment.bin"
    image.write_bytes(reader.read(biggest.name)[1])
    decoded = subprocess.run(
        ["mariadb-binlog", "--base64-output=decode-rows", "-v", str(image)],
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
    )
    assert "`shop`.`orders`" in decoded.stdout
    assert (
        decoded.stdout.count("Xid =") + decoded.stdout.count("COMMIT") >= biggest.index.transactions
    )


def dump_threads(server: MariaDB) -> list[int]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Binlog Dump'",
            (server.user,),
        )
        return [row[0] for row in cur.fetchall()]


def segment_count(config: Config) -> int:
    root = Path(str(config.storages["local"].path)) / "src" / "_binlog" / "s"  # type: ignore[union-attr]
    return len(list(root.iterdir())) if root.exists() else 0


def big_backlog(server: MariaDB, first: int) -> None:
    """Enough binlog (about 20 MB in 200 transactions) that a pull takes a while."""
    with server.root() as conn, conn.cursor() as cur:
        for n in range(first, first + 200):
            cur.execute(
                "INSERT INTO shop.orders VALUES (%s, 'big', 0, %s)", (n, os.urandom(100_000))
            )


def test_killed_capture_connection_loses_and_repeats_nothing(
    config: Config, source: MariaDB
) -> None:
    server, settings = resolve_capture(config, "src")
    run_pull(config, server, settings)
    before = segment_count(config)
    big_backlog(source, 10_000)
    failure: list[BaseException] = []

    def pull() -> None:
        try:
            run_pull(config, server, settings)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    worker = threading.Thread(target=pull)
    worker.start()
    wait_until(
        lambda: segment_count(config) > before + 2 and bool(dump_threads(source)),
        60,
        "capture mid-stream",
    )
    with source.root() as conn, conn.cursor() as cur:
        for thread in dump_threads(source):
            cur.execute(f"KILL {int(thread)}")
    worker.join(120)
    assert len(failure) == 1, failure
    assert isinstance(failure[0], SourceError), failure
    assert stored_events(config) != server_events(source)  # it really stopped mid-stream
    run_pull(config, server, settings)
    assert stored_events(config) == server_events(source)


def sealdump_command() -> list[str]:
    return [str(Path(sys.executable).with_name("sealdump"))]


def test_sigkilled_pull_then_another_pull_completes_the_chain(
    config_file: Path, config: Config, source: MariaDB
) -> None:
    server, settings = resolve_capture(config, "src")
    run_pull(config, server, settings)
    before = segment_count(config)
    big_backlog(source, 20_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
    process = subprocess.Popen(
        [*sealdump_command(), "--config", str(config_file), "binlog", "pull", "src"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: segment_count(config) > before + 3, 60, "pull storing segments")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    done = subprocess.run(
        [*sealdump_command(), "--config", str(config_file), "--json", "binlog", "pull", "src"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert stored_events(config) == server_events(source)
    status = subprocess.run(
        [*sealdump_command(), "--config", str(config_file), "binlog", "status", "src", "--verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "PROBLEM" not in status.stdout
    assert "GAP" not in status.stdout
