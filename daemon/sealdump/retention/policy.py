"""Grandfather-father-son selection of the backups to keep. Pure: no I/O.

A backup is kept when any rule keeps it. ``keep_last`` keeps the newest N; ``keep_daily``
the newest backup of each of the newest N days that have a backup (and likewise per ISO
week, month and year). Periods are counted in the job's time zone. The newest backup is
always kept, whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sealdump.config.model import Retention


@dataclass(frozen=True)
class Candidate:
    """A complete backup and when it started."""

    backup_id: str
    started_at: datetime


def _periods(
    backups: Sequence[Candidate], count: int, period: Callable[[datetime], tuple[int, ...]]
) -> set[str]:
    """The newest backup of each of the newest ``count`` periods."""
    kept: set[str] = set()
    seen: set[tuple[int, ...]] = set()
    for backup in backups:  # newest first
        if len(seen) >= count:
            break
        key = period(backup.started_at)
        if key not in seen:
            seen.add(key)
            kept.add(backup.backup_id)
    return kept


def select_kept(
    backups: Sequence[Candidate], retention: Retention, zone: ZoneInfo
) -> dict[str, list[str]]:
    """Backup id -> the rules that keep it; backups absent from the result are to be pruned."""
    ordered = sorted(backups, key=lambda b: (b.started_at, b.backup_id), reverse=True)
    local = [Candidate(b.backup_id, b.started_at.astimezone(zone)) for b in ordered]
    rules: dict[str, Callable[[datetime], tuple[int, ...]]] = {
        "daily": lambda t: (t.year, t.month, t.day),
        "weekly": lambda t: tuple(t.isocalendar()[:2]),
        "monthly": lambda t: (t.year, t.month),
        "yearly": lambda t: (t.year,),
    }
    reasons: dict[str, list[str]] = {}
    for backup in local[: retention.keep_last]:
        reasons.setdefault(backup.backup_id, []).append("last")
    counts = {
        "daily": retention.keep_daily,
        "weekly": retention.keep_weekly,
        "monthly": retention.keep_monthly,
        "yearly": retention.keep_yearly,
    }
    for name, period in rules.items():
        for backup_id in _periods(local, counts[name], period):
            reasons.setdefault(backup_id, []).append(name)
    if local:
        reasons.setdefault(local[0].backup_id, []).append("newest")
    return reasons
