"""The README's demo: sealdump against a throwaway MariaDB that only speaks verified TLS."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402 - after the path is set
from tests.support.configs import write_config  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.sample import load_sample  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))


def step(title: str) -> None:
    pass


def sealdump(config: Path, *args: str) -> None:
    """Run and show one sealdump command, failing the demo if it fails."""
    ["sealdump", "--config", str(config.relative_to(REPO)), *args]
    subprocess.run([SEALDUMP, "--config", str(config), *args], check=True, cwd=REPO)


DEMO_JOB = """\
jobs:
  nightly:
    schedule: "30 2 * * *"
    timezone: Europe/Paris
    databases: [shop]
    exclude_tables: ["shop.audit_*"]
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the server running at the end")
    args = parser.parse_args()
    demo = REPO / ".demo"
    shutil.rmtree(demo, ignore_errors=True)
    demo.mkdir()

    step("Starting a throwaway MariaDB that accepts only verified TLS")
    server = MariaDB(demo / "mariadb", TestCA(demo / "ca", "sealdump demo CA")).start()
    try:
        with server.connect() as conn, conn.cursor() as cur:
            load_sample(cur)
            cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
            dict(cur.fetchall())

        config = write_config(demo, {"demo": server}, DEMO_JOB, generate_key=False)
        step("Validating the configuration (every problem at once, with file and line)")
        sealdump(config, "config", "validate")
        step("A local key-encryption key (mode 0600, never overwritten)")
        sealdump(config, "keys", "generate", str(config.parent / "kek.key"))
        step("Backup: consistent TLS dump, per-table chunks, zstd, AES-256-GCM, to .demo/backups")
        sealdump(config, "backup", "demo/nightly")
        step("Completed backups")
        sealdump(config, "list")
        sealdump(config, "show", "latest")
        step("Restore one table into a new database (only its objects are downloaded)")
        sealdump(
            config,
            "restore",
            "latest",
            "--table",
            "shop.orders",
            "--into-database",
            "shop_restored",
        )
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("CHECKSUM TABLE shop.orders, shop_restored.orders")
            (_, original), (_, restored) = cur.fetchall()
        print(f"CHECKSUM TABLE shop.orders = {original}, shop_restored.orders = {restored}")
        if original != restored:
            print("MISMATCH", file=sys.stderr)
            return 1
        step("Single rows: delete order 4242 and change order 4243, then bring them back")
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM shop.orders WHERE id = 4242")
            cur.execute("UPDATE shop.orders SET quantity = 0 WHERE id = 4243")
        sealdump(config, "restore", "latest", "--table", "shop.orders", "--pk", "4242")
        sealdump(
            config, "restore", "latest", "--table", "shop.orders",
            "--where", "id BETWEEN 4242 AND 4243", "--mode", "replace",
        )  # fmt: skip
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute("CHECKSUM TABLE shop.orders")
            ((_, after),) = cur.fetchall()
        print(f"CHECKSUM TABLE shop.orders = {after} (at backup time: {original})")
        if after != original:
            print("MISMATCH", file=sys.stderr)
            return 1
        step("Verify: every object downloaded, authenticated and hashed")
        sealdump(config, "verify", "latest")
        step("Run history")
        sealdump(config, "history")
        print("\nNothing in .demo/backups names a database or table:")
        for path in sorted((demo / "backups").rglob("*"))[:6]:
            print("  " + str(path.relative_to(demo)))
    finally:
        if args.keep:
            pass
        else:
            server.stop()
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
