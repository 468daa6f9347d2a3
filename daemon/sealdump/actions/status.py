"""The status action: per scheduled job and drill, the last outcome and what comes next."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sealdump.config.model import Config
from sealdump.history import History, RunStatus
from sealdump.timetable import plan_jobs


def status(config: Config, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per planned run series: its schedule, last run and outcome, last success
    and next fire time (runs whose process died are closed first, never shown running)."""
    moment = now or datetime.now(UTC)
    history = History(config.history_url)
    rows: list[dict[str, Any]] = []
    try:
        history.close_dead_runs()
        for item in plan_jobs(config).values():
            last = history.runs(item.server, item.job, limit=1, kind=item.kind)
            good = history.runs(
                item.server, item.job, limit=1, kind=item.kind, status=RunStatus.SUCCESS
            )
            upcoming = item.trigger.get_next_fire_time(None, moment)
            rows.append(
                {
                    "server": item.server,
                    "job": item.job,
                    "kind": item.kind,
                    "schedule": item.schedule,
                    "last_status": last[0].status if last else None,
                    "last_run": last[0].started_at.isoformat() if last else None,
                    "last_error": last[0].error if last else None,
                    "last_success": good[0].started_at.isoformat() if good else None,
                    "next_run": upcoming.astimezone(UTC).isoformat() if upcoming else None,
                }
            )
    finally:
        history.close()
    return rows
