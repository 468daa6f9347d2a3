"""The status action: per scheduled job and drill, the last outcome and what comes next;
per server with binlog capture, its last session and the covered windows of its chain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sealdump.actions.binlog import JOB as CAPTURE_JOB
from sealdump.actions.binlog import KIND as CAPTURE_KIND
from sealdump.actions.binlog import status_of
from sealdump.actions.locate import all_backups, reader_for
from sealdump.binlog.segment import Coordinate
from sealdump.config.model import Config, Server
from sealdump.errors import SealdumpError
from sealdump.history import History, RunStatus
from sealdump.timetable import plan_jobs


def _iso(seconds: int | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


def capture_windows(config: Config, server: Server) -> dict[str, Any]:
    """The covered windows of ``server``'s binlog chain, each with the oldest dump whose
    exact snapshot position lies in it (a point-in-time restore can reach any commit from
    that dump's snapshot to the window's last commit), and the gaps with their reasons."""
    chain = status_of(config, server)
    dumps: list[tuple[Coordinate, str, str]] = []
    for located in all_backups(config, server.name):
        try:
            manifest = reader_for(config, located).manifest()
        except SealdumpError:
            continue  # an unreadable backup opens no window; `sealdump verify` says why
        binlog = manifest.consistency.binlog
        if binlog is not None and manifest.consistency.binlog_exact:
            at = Coordinate(binlog.file, binlog.position)
            dumps.append((at, manifest.backup_id, manifest.started_at.isoformat()))
    windows = []
    for window in chain.windows:
        inside = sorted(d for d in dumps if window.start <= d[0] <= window.end)
        windows.append(
            {
                "start": str(window.start),
                "end": str(window.end),
                "first_commit": _iso(window.first_commit),
                "last_commit": _iso(window.last_commit),
                "transactions": window.transactions,
                "dump": inside[0][1] if inside else None,
                "dump_started_at": inside[0][2] if inside else None,
            }
        )
    gaps = [
        {"from": str(g.index.start), "to": str(g.index.end), "reason": g.index.reason}
        for g in chain.gaps
    ]
    return {"windows": windows, "gaps": gaps, "problems": list(chain.problems)}


def describe_windows(capture: dict[str, Any]) -> list[str]:
    """``capture_windows`` in words: "from dump X at T0 to T1, no gaps", or the gaps."""
    lines = []
    for window in capture.get("windows", []):
        end = window["last_commit"] or window["end"]
        if window["dump"]:
            lines.append(f"from dump {window['dump']} at {window['dump_started_at']} to {end}")
        else:
            lines.append(
                f"binlog {window['start']} .. {window['end']} to {end}, no dump inside "
                "(no point-in-time restore into it)"
            )
    if capture.get("gaps"):
        lines += [f"GAP {g['from']} .. {g['to']}: {g['reason']}" for g in capture["gaps"]]
    elif lines:
        lines[-1] += ", no gaps"
    lines += [f"PROBLEM: {p}" for p in capture.get("problems", [])]
    if "error" in capture:
        lines.append(f"chain not read: {capture['error']}")
    return lines or ["nothing captured yet"]


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
        for server in config.servers.values():
            if server.binlog is None or not server.binlog.enabled:
                continue
            last = history.runs(server.name, CAPTURE_JOB, limit=1, kind=CAPTURE_KIND)
            good = history.runs(
                server.name, CAPTURE_JOB, limit=1, kind=CAPTURE_KIND, status=RunStatus.SUCCESS
            )
            try:
                capture = capture_windows(config, server)
            except SealdumpError as exc:
                capture = {"windows": [], "gaps": [], "problems": [], "error": str(exc)}
            rows.append(
                {
                    "server": server.name,
                    "job": CAPTURE_JOB,
                    "kind": CAPTURE_KIND,
                    "schedule": "continuous",
                    "last_status": last[0].status if last else None,
                    "last_run": last[0].started_at.isoformat() if last else None,
                    "last_error": last[0].error if last else None,
                    "last_success": good[0].started_at.isoformat() if good else None,
                    "next_run": None,
                    "capture": capture,
                }
            )
    finally:
        history.close()
    return rows
