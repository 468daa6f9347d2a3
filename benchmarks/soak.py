"""Scale-out soak: several `sealdump run` daemons sharing one MariaDB history database.

Starts a throwaway MariaDB that only accepts verified TLS, creates SERVERS tiny databases
and one server file per database (every file points at the same MariaDB), each with two
jobs on short `every:` intervals, and starts DAEMONS daemons whose `history_url` is the
same `mysql+pymysql://...?ssl_ca=...` database on that server. Part-way through it
SIGKILLs one daemon while it runs a backup (it is not restarted: a node lost for good),
lets the others run on, then stops them with SIGTERM and checks, from the shared history:

- every fire time of every job inside the window was claimed exactly once and ran exactly
  once (a run per claim, no claim without a run, no fire time without a claim);
- what the killed daemon had claimed: its runs are closed as `interrupted` (dead process),
  and whether a claim of it has no run at all (a run lost to everyone);
- each daemon's RSS, sampled every few seconds, stays flat (first sample after warm-up,
  peak, last, and the least-squares slope in MiB per hour, over all samples after the
  warm-up and over their second half).

It prints a table and exits 1 if a fire time was lost or ran twice (the killed daemon's
interrupted runs are reported, not counted as failures). A benchmark, not a test.

Usage: .venv/bin/python benchmarks/soak.py [--daemons 3] [--servers 30] [--duration 360]
       [--kill-at 150] [--every-a 60] [--every-b 120] [--rows 200] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.certs import TestCA  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.net import free_port, wait_until  # noqa: E402

from sealdump.history import History, RunStatus  # noqa: E402
from sealdump.keys.local import generate_key_file  # noqa: E402

SEALDUMP = str(Path(sys.executable).with_name("sealdump"))
# `every:` schedules fire on a grid anchored at this instant, so that every daemon sharing a
# history computes the same fire times (the daemon's INTERVAL_ORIGIN).
INTERVAL_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
SAMPLE_SECONDS = 5.0
WARMUP_SECONDS = 45.0  # RSS before this is imports and first connections, not steady state


def rss_mib(pid: int) -> float | None:
    """Resident set size of a live process, MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    if len(samples) < 3:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    num = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return num / den * 3600 if den else 0.0


def fire_times(period: int, start: datetime, end: datetime) -> list[datetime]:
    """The `every:` grid (anchored at INTERVAL_ORIGIN, as the daemon does) within [start, end]."""
    since = (start - INTERVAL_ORIGIN).total_seconds()
    first = INTERVAL_ORIGIN + timedelta(seconds=-(-since // period) * period)
    times = []
    while first <= end:
        times.append(first)
        first += timedelta(seconds=period)
    return times


def prepare(server: MariaDB, base: Path, args: argparse.Namespace) -> tuple[str, list[Path]]:
    """The started server's databases, the history database and one config per daemon."""
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL max_connections = 500")
        cur.execute("CREATE DATABASE soak_history")
        for n in range(1, args.servers + 1):
            db = f"soak{n:02d}"
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"CREATE TABLE {db}.items (id INT PRIMARY KEY, name VARCHAR(40), qty INT)")
            fill = f"INSERT INTO {db}.items SELECT seq, CONCAT('i', seq), seq % 17 FROM mysql.seq_1_to_"  # noqa: S608 - our own names
            cur.execute(fill + str(args.rows))
    etc = base / "etc"
    servers_d = etc / "servers.d"
    servers_d.mkdir(parents=True)
    generate_key_file(etc / "kek.key")
    password = etc / "mariadb.password"
    password.write_text(server.password + "\n")
    password.chmod(0o600)
    for n in range(1, args.servers + 1):
        (servers_d / f"soak{n:02d}.yaml").write_text(
            f"host: 127.0.0.1\nport: {server.port}\nuser: {server.user}\n"
            f"password_file: {password}\n"
            f"tls: {{mode: verify-identity, ca_file: {server.ca.cert_path}}}\n"
            "jobs:\n"
            f"  a: {{every: {args.every_a}s, databases: [soak{n:02d}], connections: 1}}\n"
            f"  b: {{every: {args.every_b}s, databases: [soak{n:02d}], connections: 1}}\n"
        )
    history_url = (
        f"mysql+pymysql://{server.user}@127.0.0.1:{server.port}/soak_history"
        f"?ssl_ca={quote(str(server.ca.cert_path))}"
    )
    configs = []
    for d in range(args.daemons):
        state = base / f"state{d}"
        state.mkdir()
        config = etc / f"daemon{d}.yaml"
        config.write_text(
            f"state_dir: {state}\n"
            f"history_url: {history_url}\n"
            f"history_password_file: {password}\n"
            f"storages:\n  local: {{type: filesystem, path: {base / 'backups'}}}\n"
            f"keys:\n  local: {{type: local, key_file: {etc / 'kek.key'}}}\n"
            "defaults: {storage: local, key: local, retention: {keep_last: 3}}\n"
            f"servers_dir: {servers_d}\n"
            f"metrics_listen: 127.0.0.1:{free_port()}\n"
        )
        configs.append(config)
    full_url = history_url.replace(
        f"{server.user}@", f"{server.user}:{quote(server.password, safe='')}@"
    )
    return full_url, configs


def listen_of(config: Path) -> str:
    return next(
        line.split(": ", 1)[1]
        for line in config.read_text().splitlines()
        if line.startswith("metrics_listen")
    )


def healthy(config: Path) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{listen_of(config)}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def running(config: Path) -> bool:
    """Whether the daemon of ``config`` is running a job now (its sealdump_running_jobs)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{listen_of(config)}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return False
    return any(
        line.startswith("sealdump_running_jobs ") and float(line.split()[1]) > 0
        for line in text.splitlines()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--servers", type=int, default=30)
    parser.add_argument("--duration", type=int, default=360, help="seconds of scheduling")
    parser.add_argument(
        "--kill-at", type=int, default=150, help="SIGKILL daemon 0 at its first run after S s"
    )
    parser.add_argument("--every-a", type=int, default=60, help="period of job a, seconds")
    parser.add_argument("--every-b", type=int, default=120, help="period of job b, seconds")
    parser.add_argument("--rows", type=int, default=200, help="rows per tiny database")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="sealdump-soak-"))
    server = MariaDB(base / "mariadb", TestCA(base / "ca"))
    processes: list[subprocess.Popen[bytes]] = []
    samples: dict[int, list[tuple[float, float]]] = defaultdict(list)
    stop_sampling = threading.Event()
    try:
        server.start()
        history_url, configs = prepare(server, base, args)
        for d, config in enumerate(configs):
            log = open(base / f"daemon{d}.log", "wb")  # noqa: SIM115 - the child owns it
            processes.append(
                subprocess.Popen(
                    [SEALDUMP, "--config", str(config), "run", "--stop-grace", "60"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        for config in configs:
            wait_until(partial(healthy, config), 60, f"daemon with {config}")
        started = time.monotonic()
        window_start = datetime.now(UTC) + timedelta(seconds=1)
        print(
            f"{args.daemons} daemons (pids {', '.join(str(p.pid) for p in processes)}), "
            f"{args.servers} servers x 2 jobs (every {args.every_a}s / {args.every_b}s), "
            f"{args.duration}s; work dir {base}",
            flush=True,
        )

        def sample() -> None:
            while not stop_sampling.wait(SAMPLE_SECONDS):
                now = time.monotonic() - started
                for d, process in enumerate(processes):
                    if process.poll() is None and (mib := rss_mib(process.pid)) is not None:
                        samples[d].append((now, mib))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        killed_at: datetime | None = None
        killed = processes[0]
        while (elapsed := time.monotonic() - started) < args.duration:
            if killed_at is None and elapsed >= args.kill_at and running(configs[0]):
                killed.send_signal(signal.SIGKILL)
                killed.wait()
                killed_at = datetime.now(UTC)
                print(
                    f"SIGKILL daemon 0 (pid {killed.pid}) at {elapsed:.0f} s, during a run",
                    flush=True,
                )
            time.sleep(0.2 if killed_at is None and elapsed >= args.kill_at else 1)
        window_end = datetime.now(UTC) - timedelta(seconds=max(args.every_a, args.every_b) // 2)
        stop_sampling.set()
        for process in processes[1:]:
            process.send_signal(signal.SIGTERM)
        for process in processes[1:]:
            process.wait(timeout=120)
        return report(args, history_url, processes, samples, window_start, window_end, killed_at)
    finally:
        stop_sampling.set()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        server.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def report(
    args: argparse.Namespace,
    history_url: str,
    processes: list[subprocess.Popen[bytes]],
    samples: dict[int, list[tuple[float, float]]],
    window_start: datetime,
    window_end: datetime,
    killed_at: datetime | None,
) -> int:
    """Check claims against runs in the window; print the tables; 1 if a run was lost."""
    history = History(history_url)
    try:
        closed = history.close_dead_runs()  # as the next sealdump command on this host would
        runs = history.runs(limit=1_000_000)
        from sqlalchemy import select

        from sealdump.history.models import Claim

        with history.engine.connect() as connection:
            claims = connection.execute(select(Claim.job_key, Claim.fire_time, Claim.claimed_by))
            claim_rows = [
                (k, t.replace(tzinfo=UTC) if t.tzinfo is None else t, by) for k, t, by in claims
            ]
    finally:
        history.close()

    killed_pid = processes[0].pid
    claimed: dict[tuple[str, datetime], list[str]] = defaultdict(list)
    for key, fire, owner in claim_rows:
        claimed[(key, fire)].append(owner)
    ran: dict[tuple[str, datetime], list[str]] = defaultdict(list)
    for run in runs:
        if run.kind == "backup" and run.scheduled_for is not None:
            ran[(f"backup:{run.server}/{run.job}", run.scheduled_for)].append(run.status)

    expected: list[tuple[str, datetime]] = []
    for n in range(1, args.servers + 1):
        for job, period in (("a", args.every_a), ("b", args.every_b)):
            for fire in fire_times(period, window_start, window_end):
                expected.append((f"backup:soak{n:02d}/{job}", fire))

    outcome: Counter[str] = Counter()
    lost: list[tuple[str, datetime]] = []
    doubled: list[tuple[str, datetime]] = []
    killed_lost: list[tuple[str, datetime]] = []
    killed_interrupted: list[tuple[str, datetime]] = []
    for item in expected:
        by = claimed.get(item, [])
        statuses = ran.get(item, [])
        if len(by) > 1 or (len(statuses) > 1 and statuses.count(RunStatus.SUCCESS.value) > 1):
            doubled.append(item)
        if not by:
            lost.append(item)
            continue
        owner_killed = by[0].endswith(f":{killed_pid}")
        if not statuses:
            (killed_lost if owner_killed else lost).append(item)
            continue
        final = RunStatus.SUCCESS.value if RunStatus.SUCCESS.value in statuses else statuses[0]
        outcome[final] += 1
        if final == RunStatus.INTERRUPTED.value and owner_killed:
            killed_interrupted.append(item)

    per_daemon = Counter(
        owners[0].rsplit(":", 1)[1] for item in expected if (owners := claimed.get(item))
    )
    print()
    print(
        f"window {window_start:%H:%M:%S} - {window_end:%H:%M:%S} UTC; killed at "
        f"{killed_at:%H:%M:%S}"
        if killed_at
        else "no kill"
    )
    print(
        "| fire times expected | claimed once | ran | success | failed | interrupted: killed daemon "
        "| interrupted: other | lost | ran twice |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ran_once = sum(
        1 for item in expected if len(ran.get(item, [])) >= 1 and len(claimed.get(item, [])) == 1
    )
    print(
        f"| {len(expected)} | {sum(1 for i in expected if len(claimed.get(i, [])) == 1)} | "
        f"{ran_once} | {outcome[RunStatus.SUCCESS.value]} | {outcome[RunStatus.FAILED.value]} | {len(killed_interrupted)} | "
        f"{outcome[RunStatus.INTERRUPTED.value] - len(killed_interrupted)} | "
        f"{len(lost) + len(killed_lost)} | {len(doubled)} |"
    )
    print()
    print(
        "| daemon | pid | runs claimed in window | RSS at start MiB | RSS after warm-up MiB "
        "| peak MiB | last MiB | slope MiB/h | slope, 2nd half MiB/h | samples |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d, process in enumerate(processes):
        steady = [(t, m) for t, m in samples[d] if t >= WARMUP_SECONDS]
        idle = f"{samples[d][0][1]:.0f}" if samples[d] else "-"
        first = f"{steady[0][1]:.0f}" if steady else "-"
        peak = f"{max(m for _, m in steady):.0f}" if steady else "-"
        last = f"{steady[-1][1]:.0f}" if steady else "-"
        note = " (SIGKILLed)" if d == 0 and killed_at else ""
        print(
            f"| {d}{note} | {process.pid} | {per_daemon.get(str(process.pid), 0)} | {idle} | {first} | "
            f"{peak} | {last} | {slope_per_hour(steady):+.1f} | "
            f"{slope_per_hour(steady[len(steady) // 2 :]):+.1f} | {len(steady)} |"
        )
    print()
    print(f"runs of dead processes closed as interrupted at the end: {len(closed)}")
    for item in killed_interrupted:
        print(f"  interrupted by the kill: {item[0]} @ {item[1]:%H:%M:%S}")
    for item in killed_lost:
        print(
            f"  claimed by the killed daemon, never started (lost): {item[0]} @ {item[1]:%H:%M:%S}"
        )
    for item in lost:
        print(
            f"  LOST: {item[0]} @ {item[1]:%H:%M:%S} claims={claimed.get(item)} runs={ran.get(item)}"
        )
    for item in doubled:
        print(
            f"  RAN TWICE: {item[0]} @ {item[1]:%H:%M:%S} claims={claimed.get(item)} runs={ran.get(item)}"
        )
    print(f"command: {' '.join(['benchmarks/soak.py', *sys.argv[1:]])}")
    return 1 if lost or doubled else 0


if __name__ == "__main__":
    sys.exit(main())
