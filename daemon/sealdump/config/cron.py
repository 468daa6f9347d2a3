"""Schedules as operators write them: crontab lines, ``every:`` intervals, time zones.

Operators write crontab. APScheduler's ``CronTrigger.from_crontab`` is not crontab: it
numbers weekdays from Monday (0 = Monday, not Sunday), treats ``*/2`` in the weekday field
from Monday, and ANDs day-of-month with day-of-week where cron ORs them when both are
restricted. So the cron text is parsed here into explicit sets, which
``sealdump.timetable`` hands to APScheduler by name, leaving no room for those
differences. Parsing is part of the configuration (validation needs it); building triggers
is the scheduler's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # crontab order: 0 = Sunday


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: list[str] | None = None  # names[i] stands for the number low + i


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, [*WEEKDAYS, "sun"]),
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"^([1-9][0-9]{0,11})([smhd])$")
# Intervals and deadlines sealdump accepts: a second to a (leap) year.
SHORTEST = timedelta(seconds=1)
LONGEST = timedelta(days=366)


class ScheduleError(ValueError):
    """A schedule that cannot be parsed; the message says which part and why."""


class OutOfRange(ScheduleError):
    """An interval or deadline shorter than SHORTEST or longer than LONGEST."""


@dataclass(frozen=True)
class Cron:
    """A parsed crontab line: each field as a sorted tuple of values, or None for '*'."""

    minute: tuple[int, ...] | None
    hour: tuple[int, ...] | None
    day: tuple[int, ...] | None
    month: tuple[int, ...] | None
    day_of_week: tuple[int, ...] | None  # 0 = Sunday ... 6 = Saturday; 7 folded into 0


def parse_cron(text: str) -> Cron:
    """Parse 5-field crontab text (or a macro such as ``@daily``); report every bad field."""
    expression = MACROS.get(text.strip().lower(), text)
    if expression.strip().startswith("@"):
        raise ScheduleError(f"unknown macro {text.strip()!r} (known: {', '.join(MACROS)})")
    parts = expression.split()
    if len(parts) != 5:
        raise ScheduleError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    values: list[tuple[int, ...] | None] = []
    errors: list[str] = []
    for spec, part in zip(_FIELDS, parts, strict=True):
        try:
            values.append(_parse_field(spec, part))
        except ScheduleError as exc:
            errors.append(str(exc))
            values.append(None)
    if errors:
        raise ScheduleError("; ".join(errors))
    dow = values[4]
    if dow is not None:
        dow = tuple(sorted({day % 7 for day in dow}))
    return Cron(values[0], values[1], values[2], values[3], dow)


def _parse_field(spec: _Field, text: str) -> tuple[int, ...] | None:
    if text == "*":
        return None
    chosen: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            step = _digits(step_text) or 0
            if step < 1:
                raise ScheduleError(f"{spec.name}: bad step {step_text!r} in {item!r}")
        if base == "*":
            start, end = spec.low, spec.high
        elif "-" in base:
            left, _, right = base.partition("-")
            start, end = _value(spec, left), _value(spec, right)
            if start > end:
                raise ScheduleError(f"{spec.name}: range {base!r} runs backwards")
        else:
            start = _value(spec, base)
            end = spec.high if step_text else start
        chosen.update(range(start, end + 1, step))
    return tuple(sorted(chosen))


def _digits(text: str) -> int | None:
    """``text`` as a number if it is 1-9 ASCII digits (``str.isdigit`` also takes '³')."""
    if 0 < len(text) < 10 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _value(spec: _Field, text: str) -> int:
    number = _digits(text)
    if number is not None:
        if not spec.low <= number <= spec.high:
            raise ScheduleError(f"{spec.name} {number} out of range {spec.low}-{spec.high}")
        return number
    if spec.names and text.lower() in spec.names:
        return spec.low + spec.names.index(text.lower())
    raise ScheduleError(f"{spec.name}: {text!r} is not a number or name")


def parse_every(text: str) -> timedelta:
    """``10s``, ``5m``, ``6h``, ``1d`` -> timedelta, from 1 second to 366 days."""
    match = _EVERY.match(text.strip())
    if not match:
        raise ScheduleError(f"{text!r} is not an interval such as 10s, 5m, 6h or 1d")
    return bounded(int(match.group(1)) * _UNITS[match.group(2)], text)


def bounded(seconds: int, text: object) -> timedelta:
    """``seconds`` as a timedelta if within SHORTEST..LONGEST, else ScheduleError."""
    if seconds > LONGEST.total_seconds():
        raise OutOfRange(f"{text!r} is longer than the longest allowed, {LONGEST.days} days")
    if seconds < SHORTEST.total_seconds():
        raise OutOfRange(f"{text!r} is shorter than one second")
    return timedelta(seconds=seconds)


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone by name; abbreviations such as CET are refused for clarity."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long
        raise ScheduleError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        ) from exc
    return zone
