"""The timetable: every scheduled job and drill of a config, as APScheduler 3 triggers.

Shared by the daemon (which runs it), ``status`` and ``check`` (which show what comes
next). The parsing of what operators write lives in ``config.cron``.

APScheduler's ``CronTrigger.from_crontab`` is not crontab (Monday-first weekdays, AND of
the two day fields): a parsed ``Cron`` is handed to APScheduler field by field, weekdays by
name, which leaves no room for those differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sealdump.config.cron import (
    WEEKDAYS,
    Cron,
    ScheduleError,
    parse_cron,
    parse_every,
    parse_timezone,
)
from sealdump.config.model import Config, Job

__all__ = [
    "INTERVAL_ORIGIN",
    "Cron",
    "Planned",
    "ScheduleError",
    "cron_trigger",
    "interval_trigger",
    "job_trigger",
    "latest_fire_time",
    "next_fire_times",
    "parse_cron",
    "parse_every",
    "parse_timezone",
    "plan_jobs",
]


def _names(values: tuple[int, ...] | None, names: list[str] | None = None, low: int = 0) -> str:
    if values is None:
        return "*"
    return ",".join(names[v - low] if names else str(v) for v in values)


def cron_trigger(cron: Cron, timezone: ZoneInfo, jitter: int | None = None) -> Any:
    """An APScheduler trigger that fires exactly when crontab would."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    def make(day: str, day_of_week: str) -> Any:
        return CronTrigger(
            minute=_names(cron.minute),
            hour=_names(cron.hour),
            day=day,
            month=_names(cron.month),
            day_of_week=day_of_week,
            timezone=timezone,
            jitter=jitter,
        )

    day = _names(cron.day)
    # APScheduler's own weekday names, so its Monday-first numbering never comes into play.
    weekday = _names(cron.day_of_week, WEEKDAYS)
    if cron.day is not None and cron.day_of_week is not None:
        # crontab: when both day fields are restricted, either one matching is enough.
        return OrTrigger([make(day, "*"), make("*", weekday)], jitter=jitter)
    return make(day, weekday)


# Interval schedules count from a fixed instant, not from when a daemon started, so that
# daemons sharing a history agree on every fire time (and claim each run once).
INTERVAL_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


def interval_trigger(every: timedelta, timezone: ZoneInfo, jitter: int | None = None) -> Any:
    """An APScheduler trigger firing every ``every``, on a grid anchored at INTERVAL_ORIGIN."""
    from apscheduler.triggers.interval import IntervalTrigger

    return IntervalTrigger(
        seconds=int(every.total_seconds()),
        timezone=timezone,
        jitter=jitter,
        start_date=INTERVAL_ORIGIN,
    )


def latest_fire_time(trigger: Any, now: datetime, window: timedelta) -> datetime | None:
    """The trigger's most recent fire time at or before ``now`` (looking back ``window``)."""
    latest = None
    moment = trigger.get_next_fire_time(None, now - window)
    while moment is not None and moment <= now:
        latest = moment
        moment = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
    return latest


def next_fire_times(trigger: Any, now: datetime, count: int) -> list[datetime]:
    """The trigger's next ``count`` fire times after ``now``."""
    times: list[datetime] = []
    moment = trigger.get_next_fire_time(None, now)
    while moment is not None and len(times) < count:
        times.append(moment)
        moment = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
    return times


@dataclass(frozen=True)
class Planned:
    """One scheduled run series: what, where, and its schedule as text."""

    id: str
    kind: str  # "backup" | "drill"
    server: str
    job: str
    schedule: str
    trigger: Any


def plan_jobs(config: Config) -> dict[str, Planned]:
    """Every job with a schedule, and every drill, keyed by a stable id."""
    planned: dict[str, Planned] = {}
    for server in config.servers.values():
        for job in server.jobs.values():
            trigger = job_trigger(job)
            if trigger is not None:
                key = f"backup:{server.name}/{job.name}"
                planned[key] = Planned(
                    key, "backup", server.name, job.name, job.schedule_text or "", trigger
                )
            if job.drill:
                key = f"drill:{server.name}/{job.name}"
                drill = cron_trigger(parse_cron(job.drill), job.timezone)
                planned[key] = Planned(key, "drill", server.name, job.name, job.drill, drill)
    return planned


def job_trigger(job: Job) -> Any:
    """The APScheduler trigger of a backup job, or None for a job without a schedule."""
    if job.cron is not None:
        return cron_trigger(job.cron, job.timezone)
    if job.every is not None:
        return interval_trigger(job.every, job.timezone)
    return None
