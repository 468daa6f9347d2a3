"""Shell completion of servers, jobs and backups, from the config.

Click's own mechanism does the shell side (``_SEALDUMP_COMPLETE=bash_source sealdump``,
``zsh_source``, ``fish_source``); these callbacks supply the values only the config knows:
server names, ``SERVER/JOB`` targets, job names, and backup ids (``latest``, plus the
backups of filesystem storages, which a directory listing finds; a cloud storage would
need a network round trip on every TAB, so its ids are not offered).

A completion runs inside the operator's shell on every TAB: it must be quick and silent.
A config that cannot be read, a storage directory that is not readable, anything at all
going wrong, gives no candidates rather than an error or a traceback on the terminal.
"""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from sealdump.archive.backup import MANIFEST
from sealdump.cli.context import State
from sealdump.config import DEFAULT_CONFIG, Config, load_config
from sealdump.config.model import FilesystemStorage

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """No log line, warning or stray print reaches the shell while completing."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _config(ctx: click.Context) -> Config:
    """The config named by --config (before or after the verb), $SEALDUMP_CONFIG or the default."""
    state = ctx.find_object(State)
    path = state.config_path if state is not None else None
    return load_config(Path(path or os.environ.get("SEALDUMP_CONFIG") or DEFAULT_CONFIG))


def _safely(values: Callable[[click.Context, str], list[str]]) -> Completer:
    """A click ``shell_complete`` callback from ``values``: quiet, and empty on any failure."""

    def complete(
        ctx: click.Context, _param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        try:
            with _silenced():
                found = values(ctx, incomplete)
        except Exception:  # noqa: BLE001 - a completion must never fail in the shell
            return []
        return [CompletionItem(value) for value in found if value.startswith(incomplete)]

    return complete


def _servers(ctx: click.Context, _incomplete: str) -> list[str]:
    return sorted(_config(ctx).servers)


def _targets(ctx: click.Context, incomplete: str) -> list[str]:
    """``SERVER`` and ``SERVER/JOB``; only the jobs once a server and a slash are typed."""
    servers = _config(ctx).servers
    if "/" in incomplete:
        server = servers.get(incomplete.partition("/")[0])
        return [f"{server.name}/{job}" for job in sorted(server.jobs)] if server else []
    targets: list[str] = []
    for name in sorted(servers):
        targets.append(name)
        targets += [f"{name}/{job}" for job in sorted(servers[name].jobs)]
    return targets


def _jobs(ctx: click.Context, _incomplete: str) -> list[str]:
    """Job names, of the --server already given if any."""
    servers = _config(ctx).servers
    server = ctx.params.get("server")
    chosen = (
        [servers[server]] if isinstance(server, str) and server in servers else servers.values()
    )
    return sorted({job for item in chosen for job in item.jobs})


def _backups(ctx: click.Context, _incomplete: str) -> list[str]:
    """``latest``, then the ids of filesystem storages' backups, newest first.

    A backup is complete once its manifest exists (``SERVER/JOB/ID/manifest``, see
    docs/format.md): one directory level per part, so a glob finds them without walking
    the data objects.
    """
    config = _config(ctx)
    pattern = f"{_part(ctx, 'server')}/{_part(ctx, 'job')}/*/{MANIFEST}"
    ids: set[str] = set()
    for storage in config.storages.values():
        if isinstance(storage, FilesystemStorage):
            ids.update(path.parent.name for path in storage.path.glob(pattern))
    return ["latest", *sorted(ids, reverse=True)]


def _part(ctx: click.Context, name: str) -> str:
    """The glob for one level: the --server/--job given (literally), else any."""
    value = ctx.params.get(name)
    if not isinstance(value, str) or not value or "/" in value:
        return "*"
    return glob.escape(value)


complete_server: Completer = _safely(_servers)
complete_target: Completer = _safely(_targets)
complete_job: Completer = _safely(_jobs)
complete_backup: Completer = _safely(_backups)
