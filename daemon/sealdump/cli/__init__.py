"""The ``sealdump`` command line: global options, error handling and exit codes.

Each verb lives in its own module, imported only when that verb runs (or when help lists
every verb): ``sealdump backup`` does not pay for the daemon's scheduler, the restore
engine or the Azure SDKs, and ``sealdump --version`` imports none of them.

Every error an operator can meet is a ``SealdumpError``: one clear line on stderr (or a
JSON error object with ``--json``) and the exit code of DESIGN §3; a traceback only with
``-v``.
"""

from __future__ import annotations

import signal
import sys
import traceback
from types import FrameType

import click

from sealdump import __version__
from sealdump.cli.context import State, emit_error
from sealdump.cli.options import GlobalOptionsGroup
from sealdump.errors import ExitCode, SealdumpError

# verb -> "module:attribute" of its click command, imported on first use.
VERBS = {
    "run": "sealdump.cli.daemon_cmd:run",
    "backup": "sealdump.cli.backup_cmd:backup",
    "list": "sealdump.cli.backups_cmd:list_",
    "show": "sealdump.cli.backups_cmd:show",
    "restore": "sealdump.cli.restore_cmd:restore",
    "export": "sealdump.cli.restore_cmd:export",
    "verify": "sealdump.cli.backups_cmd:verify",
    "prune": "sealdump.cli.prune_cmd:prune",
    "history": "sealdump.cli.history_cmd:history",
    "status": "sealdump.cli.daemon_cmd:status",
    "check": "sealdump.cli.check_cmd:check",
    "config": "sealdump.cli.config_cmd:config",
    "keys": "sealdump.cli.keys_cmd:keys",
    "decrypt": "sealdump.cli.keys_cmd:decrypt",
    "binlog": "sealdump.cli.binlog_cmd:binlog",
}


@click.group(
    cls=GlobalOptionsGroup,
    lazy_commands=VERBS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="--config, --json, -v and -q may also follow the verb: sealdump list --json.",
)
@click.version_option(__version__, prog_name="sealdump")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Encrypted, restorable MySQL backups over verified TLS."""
    # The global options fill the State as they are parsed (sealdump.cli.options), before
    # and after the verb; logging is set up once the verb's own options are known too.
    ctx.ensure_object(State)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM (systemd stop, Kubernetes pod shutdown) takes the same path as Ctrl-C: a
    # backup in progress removes what it wrote and is recorded as interrupted.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and turn the outcome into an exit status."""
    state = State()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # Without standalone mode click returns (not raises) the code of ctx.exit(code).
        code = cli.main(args=argv, prog_name="sealdump", standalone_mode=False, obj=state)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE if isinstance(exc, click.UsageError) else ExitCode.FAILURE)
    except (KeyboardInterrupt, click.Abort):
        emit_error(state, "interrupted", "Interrupted", ExitCode.INTERRUPTED)
        sys.exit(ExitCode.INTERRUPTED)
    except SealdumpError as exc:
        if state.verbosity > 0:
            traceback.print_exc()
        problems = getattr(exc, "problems", None)
        emit_error(state, str(exc), type(exc).__name__, exc.exit_code, problems)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported as one
        if state.verbosity > 0:
            traceback.print_exc()
        message = f"internal error ({type(exc).__name__}); run with -v for the traceback"
        emit_error(state, message, "InternalError", ExitCode.FAILURE)
        sys.exit(ExitCode.FAILURE)
    sys.exit(code if isinstance(code, int) and code else ExitCode.OK)
