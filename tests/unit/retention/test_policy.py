from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sealdump.config.model import Retention
from sealdump.retention.policy import Candidate, select_kept

UTC_ZONE = ZoneInfo("UTC")


def daily(days: int, hour: int = 2) -> list[Candidate]:
    """One backup a day at ``hour`` UTC for ``days`` days up to 2026-11-28."""
    end = datetime(2026, 11, 28, hour, tzinfo=UTC)
    return [Candidate(f"b{i:03d}", end - timedelta(days=i)) for i in range(days)]


def test_keep_last() -> None:
    kept = select_kept(daily(10), Retention(keep_last=3), UTC_ZONE)
    assert sorted(kept) == ["b000", "b001", "b002"]


def test_gfs_keeps_the_newest_of_each_period() -> None:
    kept = select_kept(
        daily(400), Retention(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=2), UTC_ZONE
    )
    days = {k for k, reasons in kept.items() if "daily" in reasons}
    assert days == {f"b{i:03d}" for i in range(7)}
    weeks = sorted(k for k, reasons in kept.items() if "weekly" in reasons)
    assert len(weeks) == 4
    assert "b000" in weeks  # Saturday 2026-11-28 is the newest of its ISO week
    months = [k for k, reasons in kept.items() if "monthly" in reasons]
    assert len(months) == 12
    assert "b028" in months  # 2026-10-31, the newest backup of October
    years = {k for k, reasons in kept.items() if "yearly" in reasons}
    assert years == {"b000", "b332"}  # newest of 2026, newest of 2025 (2025-12-31)


def test_several_backups_a_day_keep_the_newest_of_the_day() -> None:
    base = datetime(2026, 11, 28, tzinfo=UTC)
    backups = [Candidate(f"h{h:02d}", base + timedelta(hours=h)) for h in range(0, 24, 6)]
    kept = select_kept(backups, Retention(keep_daily=1), UTC_ZONE)
    assert sorted(kept) == ["h18"]


def test_days_follow_the_jobs_time_zone() -> None:
    # 22:30 and 23:30 UTC on the 27th: one UTC day, but 23:30 on the 27th and 00:30 on
    # the 28th in Paris, so two Paris days.
    backups = [
        Candidate("late", datetime(2026, 11, 27, 23, 30, tzinfo=UTC)),
        Candidate("early", datetime(2026, 11, 27, 22, 30, tzinfo=UTC)),
    ]
    assert sorted(select_kept(backups, Retention(keep_daily=2), UTC_ZONE)) == ["late"]
    assert sorted(select_kept(backups, Retention(keep_daily=2), ZoneInfo("Europe/Paris"))) == [
        "early",
        "late",
    ]


def test_the_newest_backup_is_always_kept() -> None:
    kept = select_kept(daily(5), Retention(), UTC_ZONE)
    assert kept == {"b000": ["newest"]}
    assert select_kept([], Retention(keep_last=3), UTC_ZONE) == {}
