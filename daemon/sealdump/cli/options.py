"""Global options (``--config``, ``--json``, ``-v``, ``-q``), before or after the verb.

An operator types ``sealdump list --json`` as readily as ``sealdump --json list``; both
work, for every verb and every subcommand of a group, because ``GlobalOptionsGroup`` gives
each command it holds (and each command of a group it holds, at any depth) its own copy of
the global options. A verb added later gets them by being added: nothing to repeat in its
module.

Every copy writes into the one ``State``. Click parses the options before the verb first,
then those after it, so a value given in both places ends as the one after the verb:
``--config`` after the verb wins; ``--json`` is on if given anywhere; ``-v`` and ``-q``
count wherever they are given (``sealdump -v backup db1 -v`` is ``-vv``).

Logging is set up once all of them are known: just before the verb's own code runs, never
in the root group's callback (which runs before the verb's options are parsed).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import click
from click.core import ParameterSource

from sealdump.cli.context import State
from sealdump.config import DEFAULT_CONFIG
from sealdump.log import setup_logging


class GlobalOption(click.Option):
    """One of the global options (its class marks a command that already has them)."""


def _state(ctx: click.Context) -> State:
    return ctx.ensure_object(State)


def _set_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Before the verb: the default or $SEALDUMP_CONFIG count too. After it: only a value
    # actually typed, which then overrides the one before.
    root = ctx.parent is None
    given = ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE
    if value is not None and (root or given):
        _state(ctx).config_path = value


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool | None) -> None:
    if value:
        _state(ctx).as_json = True


def _add_verbose(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    _state(ctx).verbosity += value or 0


def _add_quiet(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    _state(ctx).verbosity -= value or 0


def global_options(root: bool) -> list[click.Option]:
    """Fresh copies of the global options: the root's (default, env) or a verb's."""
    return [
        GlobalOption(
            ["--config", "global_config"],
            envvar="SEALDUMP_CONFIG" if root else None,
            default=str(DEFAULT_CONFIG) if root else None,
            show_default=root,
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_set_config,
            help="Daemon-wide config file (env SEALDUMP_CONFIG)."
            if root
            else "Daemon-wide config file (overrides one given before the verb).",
        ),
        GlobalOption(
            ["--json", "global_json"],
            is_flag=True,
            expose_value=False,
            callback=_set_json,
            help="Print data (and errors) as JSON.",
        ),
        GlobalOption(
            ["-v", "--verbose", "global_verbose"],
            count=True,
            expose_value=False,
            callback=_add_verbose,
            help="More log detail; -vv for libraries too.",
        ),
        GlobalOption(
            ["-q", "--quiet", "global_quiet"],
            count=True,
            expose_value=False,
            callback=_add_quiet,
            help="Warnings and errors only (and no progress display).",
        ),
    ]


def _has_global_options(command: click.Command) -> bool:
    return any(isinstance(param, GlobalOption) for param in command.params)


def _logging_first(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` preceded by the logging set-up, now that every option is parsed."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        setup_logging(_state(click.get_current_context()).verbosity)
        return callback(*args, **kwargs)

    return run


def add_global_options(command: click.Command) -> None:
    """Give ``command`` and every command under it the global options (once each)."""
    if not _has_global_options(command):
        command.params.extend(global_options(root=False))
        if not isinstance(command, click.Group) and command.callback is not None:
            command.callback = _logging_first(command.callback)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)


class GlobalOptionsGroup(click.Group):
    """The root group: owns the global options and hands them to every command it holds.

    ``lazy_commands`` maps a verb to ``"module:attribute"``: the module is imported the
    first time the verb is looked up, so a run pays only for its own verb's imports.
    """

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.params[:0] = global_options(root=True)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every verb, loaded or not (help lists them; a mistyped one is matched)."""
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The verb's command, importing its module on first use."""
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module, _, attribute = self.lazy_commands[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module}:{attribute} is not a click command")
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register ``cmd`` with the global options added to it and its subcommands."""
        add_global_options(cmd)
        super().add_command(cmd, name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Also cover a subcommand added to a group after that group was registered.

        A mistyped verb is suggested from every verb, not only those loaded so far.
        """
        try:
            name, command, rest = super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            raise click.exceptions.NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None
        if command is not None:
            add_global_options(command)
        return name, command, rest
