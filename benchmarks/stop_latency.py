"""How long a stop takes: SIGTERM to exit of `sealdump backup` in the middle of a large table.

Starts a throwaway TLS MariaDB, fills one table with ROWS rows (default 2,000,000), times a
whole backup, then starts the backup again and sends SIGTERM after 1 s and after 2 s.
Usage: .venv/bin/python benchmarks/stop_latency.py [ROWS]
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402
from tests.support.configs import write_config  # noqa: E402
from tests.support.dataset import create_slow_table  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    base = Path(tempfile.mkdtemp(prefix="sealdump-stop-"))
    (base / "m").mkdir()
    server = MariaDB(base / "m", TestCA(base / "ca")).start()
    try:
        with server.root() as conn, conn.cursor() as cur:
            create_slow_table(cur, "stopdb", rows)
        config = write_config(
            base, {"db1": server}, "jobs:\n  slow: {databases: [stopdb], connections: 1}\n"
        )
        command = [SEALDUMP, "--config", str(config), "backup", "db1/slow"]
        started = time.monotonic()
        subprocess.run(command, capture_output=True, check=True)
        print(f"whole backup of {rows} rows: {time.monotonic() - started:.2f} s")
        for delay in (1.0, 2.0):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(delay)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.communicate()
            print(
                f"SIGTERM {delay:.0f} s into the backup: exit {process.returncode} "
                f"{time.monotonic() - signalled:.2f} s later"
            )
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
