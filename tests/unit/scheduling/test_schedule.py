from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sealdump.timetable import (
    ScheduleError,
    cron_trigger,
    interval_trigger,
    parse_cron,
    parse_every,
    parse_timezone,
)

UTC_ZONE = ZoneInfo("UTC")
# Saturday 2026-11-28 00:00 UTC.
SATURDAY = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


def fire_times(
    expression: str, count: int, start: datetime = SATURDAY, zone: ZoneInfo = UTC_ZONE
) -> list[datetime]:
    trigger = cron_trigger(parse_cron(expression), zone)
    times: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        times.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
    return times


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_zero_and_seven_are_sunday_like_crontab(sunday: str) -> None:
    fires = fire_times(f"30 2 * * {sunday}", 2)
    assert [f.strftime("%a %H:%M") for f in fires] == ["Sun 02:30", "Sun 02:30"]
    assert fires[0].date().isoformat() == "2026-11-29"


def test_weekday_ranges_and_steps_count_from_sunday() -> None:
    # crontab */2 in the weekday field: Sunday, Tuesday, Thursday, Saturday.
    days = {f.strftime("%a") for f in fire_times("0 0 * * */2", 8)}
    assert days == {"Sun", "Tue", "Thu", "Sat"}
    assert {f.strftime("%a") for f in fire_times("0 9 * * 1-5", 10)} == {
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
    }
    assert {f.strftime("%a") for f in fire_times("0 9 * * 5-7", 6)} == {"Fri", "Sat", "Sun"}


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # crontab runs on the 1st AND on every Monday, not only on Mondays that are the 1st.
    fires = fire_times("0 0 1 * 1", 6)
    assert [f.date().isoformat() for f in fires] == [
        "2026-11-30",
        "2026-12-01",
        "2026-12-07",
        "2026-12-14",
        "2026-12-21",
        "2026-12-28",
    ]


def test_macros_and_lists() -> None:
    later = SATURDAY + timedelta(seconds=1)
    assert fire_times("@daily", 2, later) == [
        SATURDAY + timedelta(days=1),
        SATURDAY + timedelta(days=2),
    ]
    assert fire_times("@hourly", 1, later) == [SATURDAY + timedelta(hours=1)]
    assert [f.minute for f in fire_times("5,35 * * * *", 3)] == [5, 35, 5]
    assert fire_times("0 0 1 jan *", 1)[0].isoformat() == "2027-01-01T00:00:00+00:00"


def test_schedule_honours_the_time_zone() -> None:
    paris = ZoneInfo("Europe/Paris")
    fire = fire_times("0 2 * * *", 1, zone=paris)[0]
    assert fire.astimezone(UTC).hour == 1  # 02:00 CET is 01:00 UTC in November


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 25 * * *", "minute 61 out of range 0-59; hour 25 out of range 0-23"),
        ("* * *", "expected 5 fields"),
        ("0 0 32 * *", "day of month 32 out of range 1-31"),
        ("0 0 * 13 *", "month 13 out of range 1-12"),
        ("0 0 * * 8", "day of week 8 out of range 0-7"),
        ("*/0 * * * *", "minute: bad step '0'"),
        ("0 5-1 * * *", "hour: range '5-1' runs backwards"),
        ("0 0 * * funday", "day of week: 'funday' is not a number or name"),
        ("@fortnightly", "unknown macro"),
    ],
)
def test_bad_cron_says_which_field(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("*", r"\*")):
        parse_cron(expression)


def test_every() -> None:
    assert parse_every("10s") == timedelta(seconds=10)
    assert parse_every("5m") == timedelta(minutes=5)
    assert parse_every("6h") == timedelta(hours=6)
    assert parse_every("1d") == timedelta(days=1)
    for bad in ("0s", "1w", "h", "1.5h", ""):
        with pytest.raises(ScheduleError):
            parse_every(bad)
    trigger = interval_trigger(parse_every("6h"), UTC_ZONE)
    first = trigger.get_next_fire_time(None, SATURDAY)
    assert trigger.get_next_fire_time(first, first) == first + timedelta(hours=6)


def test_timezone_names() -> None:
    assert str(parse_timezone("Europe/Paris")) == "Europe/Paris"
    with pytest.raises(ScheduleError, match="unknown time zone"):
        parse_timezone("Not/AZone")


def test_latest_fire_time_for_cron_and_interval() -> None:
    from sealdump.timetable import latest_fire_time

    cron = cron_trigger(parse_cron("0 2 * * *"), UTC_ZONE)
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert latest_fire_time(cron, now, timedelta(days=1)) == datetime(
        2026, 11, 28, 2, 0, tzinfo=UTC
    )
    assert latest_fire_time(cron, now, timedelta(hours=1)) is None
    every = interval_trigger(parse_every("6h"), UTC_ZONE)
    assert latest_fire_time(every, now, timedelta(days=1)) == datetime(
        2026, 11, 28, 12, 0, tzinfo=UTC
    )


def test_interval_grid_is_the_same_for_every_daemon() -> None:
    """Two daemons started at different moments agree on every fire time."""
    first = interval_trigger(parse_every("5m"), UTC_ZONE)
    second = interval_trigger(parse_every("5m"), UTC_ZONE)
    a = first.get_next_fire_time(None, SATURDAY + timedelta(seconds=7))
    b = second.get_next_fire_time(None, SATURDAY + timedelta(seconds=131))
    assert a == b == SATURDAY + timedelta(minutes=5)
