"""Which process is running a run, and whether it can still be running.

A run records the process running it (host, pid, start time) so that a run whose process
died (SIGKILL, OOM killer, power loss) is closed as ``interrupted`` by the next command
instead of showing ``running`` forever.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from sealdump.history.models import Run


def dead_reason(run: Run, host: str, now: datetime, lease_seconds: float) -> str | None:
    """Why ``run`` cannot be running any more, or None if it may be.

    On ``host`` the process itself is asked about, since a pid alone can be reused; from
    another host only the heartbeat can tell, so a run is dead once its lease expired.
    """
    if run.hostname == host and run.pid is not None:
        current = process_start(run.pid)
        if current is None:
            return f"process {run.pid} on host {host} ended without finishing (killed?)"
        if run.process_start and current and current != run.process_start:
            return (
                f"process {run.pid} on host {host} ended without finishing (killed?); "
                f"the pid now belongs to another process"
            )
        return None
    last = run.heartbeat_at or run.started_at
    if now - last <= timedelta(seconds=lease_seconds):
        return None
    return (
        f"no heartbeat from host {run.hostname or '?'} since "
        f"{last:%Y-%m-%d %H:%M:%SZ}: lease expired"
    )


def process_start(pid: int) -> str | None:
    """``BOOT_ID:TICKS`` of a running process; None if there is none; "" if unknowable.

    TICKS is field 22 of /proc/PID/stat (start time in clock ticks since boot): with the
    boot id it tells the process that recorded a run from a later one given the same pid.
    """
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # Linux: no such process
        return _exists_without_procfs(pid)
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie has ended: only its exit status is left
        return None
    return f"{_boot_id()}:{fields[19]}"


def _exists_without_procfs(pid: int) -> str | None:
    """None if ``pid`` does not exist, else "": without /proc its start time is unknowable.

    Signal 0 only asks whether the process exists; ``PermissionError`` means it does, as
    another user's.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""  # exists, another user's
    return ""


@cache
def _boot_id() -> str:
    """This boot's id ("" if unknowable): start ticks count from boot, so they need it.

    It cannot change while this process lives, hence read once.
    """
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
