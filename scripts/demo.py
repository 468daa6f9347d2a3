"""The README's demo: sealdump against a throwaway MariaDB that only speaks verified TLS.

Each step says what it does and why, shows the command as you would type it (from the
repository's root, with ``.venv/bin`` on your PATH) and runs it; sealdump's own output and
logs follow it. Everything lives in ``.demo/``; the server is stopped at the end unless
``--keep`` is given, so that the commands suggested at the end can be tried against it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402 - after the path is set
from tests.support.configs import write_config  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.sample import load_sample  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))
WIDTH = 92

DEMO_JOB = """\
jobs:
  nightly:
    schedule: "30 2 * * *"
    timezone: Europe/Paris
    databases: [shop]
    exclude_tables: ["shop.audit_*"]
"""


def relative(path: Path) -> str:
    """``path`` as typed from the repository's root (where the demo runs its commands)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class Narrator:
    """Tells a newcomer what happens: numbered steps, the reason for each, the commands."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.steps = 0
        self._bold = out.isatty() and "NO_COLOR" not in os.environ

    def _print(self, text: str = "") -> None:
        # Flushed at once: sealdump's output (another process, the same terminal) follows.
        print(text, file=self.out, flush=True)

    def _wrap(self, text: str, indent: str = "   ") -> str:
        return textwrap.fill(
            " ".join(text.split()), WIDTH, initial_indent=indent, subsequent_indent=indent
        )

    def step(self, title: str, why: str) -> None:
        """A new step: its number and title, then what it does and why, in a sentence or two."""
        self.steps += 1
        heading = f"{self.steps}. {title}"
        self._print()
        self._print(f"\033[1m{heading}\033[0m" if self._bold else heading)
        self._print(self._wrap(why))

    def note(self, text: str) -> None:
        """A result worth pointing out (a figure, a comparison, where something is)."""
        self._print(self._wrap(text, indent="   > "))

    def show_file(self, path: Path) -> None:
        """A file the demo wrote, as it is on disk."""
        self._print(f"   --- {relative(path)}")
        for line in path.read_text().splitlines():
            self._print(f"   | {line}")

    def command(self, config: Path, *args: str) -> str:
        """The command line as an operator types it: ``sealdump --config .demo/... ARGS``."""
        return shlex.join(["sealdump", "--config", relative(config), *args])

    def sealdump(self, config: Path, *args: str) -> None:
        """Show one sealdump command, then run it; a failure ends the demo."""
        self._print()
        self._print(f"$ {self.command(config, *args)}")
        subprocess.run([SEALDUMP, "--config", relative(config), *args], check=True, cwd=REPO)

    def next_steps(self, config: Path, port: int, pid_file: Path, kept: bool) -> None:
        """Where to go from here: the commands worth trying next, and the docs."""
        self.step(
            "What to try next",
            "The same commands work on your own servers once sealdump.yaml and servers.d/ "
            "describe them (config/ holds a commented example).",
        )
        tries = [
            ("check", "will tonight's run work? server, storage, key, history, schedule"),
            (
                "restore latest --table shop.orders --into-table orders_copy",
                "a table back under a new name, next to the live one",
            ),
            (
                "verify latest --restore-test demo",
                "a restore drill: every table restored into scratch schemas and compared",
            ),
            ("run", "the daemon: the nightly job on its schedule (Ctrl-C stops it)"),
            ("status", "in another terminal, while the daemon runs: last and next runs"),
        ]
        for args, what in tries:
            self._print(f"   $ {self.command(config, *shlex.split(args))}")
            self._print(f"       {what}")
        self._print('   $ eval "$(_SEALDUMP_COMPLETE=bash_source sealdump)"')
        self._print("       TAB completion of verbs, options, servers, jobs and backups")
        if kept:
            self.note(f"The server keeps running on 127.0.0.1:{port}; to stop it:")
            self._print(f"   $ kill $(cat {relative(pid_file)})")
        else:
            self.note(
                "The server is stopped: run `scripts/demo --keep` to leave it running and "
                "try these against it."
            )
        self.note(
            "Commands are shown without their .venv/bin/ prefix: `. .venv/bin/activate` "
            "first, or type it. Read next: README.md (every command), docs/operations.md "
            "(keys, restores, failures), docs/configuration.md (every key)."
        )


def tls_summary(cursor: Any) -> str:
    """The TLS protocol and cipher of ``cursor``'s connection, in one sentence."""
    cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
    status = {str(name): str(value) for name, value in cursor.fetchall()}
    version = status.get("Ssl_version") or "no TLS"
    cipher = status.get("Ssl_cipher") or "no cipher"
    return f"This connection: {version}, cipher {cipher}."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the server running at the end")
    args = parser.parse_args()
    say = Narrator(sys.stdout)
    demo = REPO / ".demo"
    shutil.rmtree(demo, ignore_errors=True)
    demo.mkdir()

    say.step(
        "A throwaway MariaDB that accepts only verified TLS",
        "Like Azure Database for MySQL: require_secure_transport is on, the certificate "
        "comes from a CA made for this demo, and the backup account has no SUPER and no "
        "BACKUP_ADMIN. sealdump checks the certificate and the server's name, always.",
    )
    server = MariaDB(demo / "mariadb", TestCA(demo / "ca", "sealdump demo CA")).start()
    say.note(f"MariaDB on 127.0.0.1:{server.port}, data and logs in {relative(server.workdir)}")
    try:
        say.step(
            "A small shop to back up",
            "Customers, products and orders (with foreign keys and awkward types: JSON, "
            "SET, BLOB, fractional timestamps), and an audit log the job will leave out.",
        )
        with server.connect() as conn, conn.cursor() as cur:
            load_sample(cur)
            cur.execute("SELECT COUNT(*) FROM shop.orders")
            (orders,) = cur.fetchone()
            say.note(f"shop.orders holds {orders} rows.")
            ca = relative(server.ca.cert_path)
            say.note(f"{tls_summary(cur)} The server's certificate was checked against {ca}.")

        config = write_config(demo, {"demo": server}, DEMO_JOB, generate_key=False)
        say.step(
            "The configuration",
            "One daemon-wide file (where backups go, which key protects them) and one file "
            "per server. Secrets are never in the YAML: the password is in a file of its own.",
        )
        say.show_file(config)
        say.show_file(config.parent / "servers.d" / "demo.yaml")

        say.step(
            "Validate it",
            "Every problem at once, each as FILE:LINE: key.path: message, before anything "
            "runs at night.",
        )
        say.sealdump(config, "config", "validate")

        say.step(
            "A local key-encryption key",
            "Every backup gets a random data key; this key wraps it. Written with mode 0600 "
            "and never overwritten. In production, Azure Key Vault holds the key instead.",
        )
        say.sealdump(config, "keys", "generate", relative(config.parent / "kek.key"))

        say.step(
            "Back up",
            "One consistent snapshot over verified TLS; every table cut into chunks by "
            "primary key, compressed (zstd), encrypted (AES-256-GCM) and signed, into "
            ".demo/backups. On a terminal, a progress bar shows tables, bytes and time left.",
        )
        say.sealdump(config, "backup", "demo/nightly")

        say.step(
            "What storage holds",
            "list finds complete backups in every storage; show reads one's manifest: "
            "tables, rows, chunks, the binlog position and the key that wraps it.",
        )
        say.sealdump(config, "list")
        say.sealdump(config, "show", "latest")

        say.step(
            "Restore one table into a new database",
            "Only that table's chunks are downloaded; it is loaded into a staging schema and "
            "moved into place in one atomic RENAME. CHECKSUM TABLE then compares it with "
            "the original.",
        )
        say.sealdump(
            config, "restore", "latest", "--table", "shop.orders",
            "--into-database", "shop_restored",
        )  # fmt: skip
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("CHECKSUM TABLE shop.orders, shop_restored.orders")
            (_, original), (_, restored) = cur.fetchall()
        say.note(f"CHECKSUM TABLE shop.orders = {original}, shop_restored.orders = {restored}")
        if original != restored:
            print("MISMATCH: the restored table differs from the original", file=sys.stderr)
            return 1

        say.step(
            "Bring back single rows",
            "Order 4242 is deleted and order 4243 changed, as a mistaken statement would. "
            "--pk fetches only the chunk that can hold the row and refuses to overwrite an "
            "existing one; --where with --mode replace also puts changed rows back.",
        )
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM shop.orders WHERE id = 4242")
            cur.execute("UPDATE shop.orders SET quantity = 0 WHERE id = 4243")
        say.sealdump(config, "restore", "latest", "--table", "shop.orders", "--pk", "4242")
        say.sealdump(
            config, "restore", "latest", "--table", "shop.orders",
            "--where", "id BETWEEN 4242 AND 4243", "--mode", "replace",
        )  # fmt: skip
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("CHECKSUM TABLE shop.orders")
            ((_, after),) = cur.fetchall()
        say.note(f"CHECKSUM TABLE shop.orders = {after} (at backup time: {original})")
        if after != original:
            print("MISMATCH: shop.orders is not back to its backup-time state", file=sys.stderr)
            return 1

        say.step(
            "Verify",
            "The signature and the listing, then every object downloaded, authenticated, "
            "decrypted and hashed: what a restore would need, checked before you need it.",
        )
        say.sealdump(config, "verify", "latest")

        say.step(
            "History",
            "Every run is recorded: backups, restores (row restores too), with their outcome.",
        )
        say.sealdump(config, "history")

        say.step(
            "Nothing in storage names a database or a table",
            "Names carry only the server, the job, the backup id and random object ids; the "
            "manifest that maps them is encrypted too.",
        )
        stored = sorted(path for path in (demo / "backups").rglob("*") if path.is_file())
        for path in stored[:6]:
            say.note(relative(path))
        say.note(f"... {len(stored)} files in all")
    finally:
        if not args.keep:
            server.stop()
    say.next_steps(config, server.port, server.workdir / "mariadbd.pid", kept=args.keep)
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
