"""The exception hierarchy and the exit codes of DESIGN §3.

Every error an operator can cause or meet is a ``SealdumpError`` carrying a readable
message; the CLI turns it into one line on stderr and the exit code below. Anything else
reaching the CLI is a bug and is reported as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses, shared by every command (DESIGN §3)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    PARTIAL = 3
    INTEGRITY = 4
    INTERRUPTED = 130


class SealdumpError(Exception):
    """Base of every operator-facing error; ``str()`` is the message to show.

    ``transient`` marks failures worth retrying later (a server or service unreachable, a
    connection lost), as opposed to ones that will fail again (a wrong password, a refused
    certificate, missing privileges).
    """

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, *args: object, transient: bool = False) -> None:
        super().__init__(*args)
        self.transient = transient


class UsageError(SealdumpError):
    """The command line asks for something that does not exist or cannot be done."""

    exit_code = ExitCode.USAGE


class ConfigError(SealdumpError):
    """The configuration is invalid; carries every problem found, not just the first."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SourceError(SealdumpError):
    """The MySQL server could not be reached, authenticated or read."""


class StorageError(SealdumpError):
    """The backup storage could not be written, read or listed."""


class KeyProviderError(SealdumpError):
    """A key-encryption key could not be loaded, or a data key wrapped or unwrapped."""


class HistoryError(SealdumpError):
    """The history database could not be opened, migrated or written."""


class IntegrityError(SealdumpError):
    """Stored data failed authentication, decryption or a checksum."""

    exit_code = ExitCode.INTEGRITY


class PartialFailure(SealdumpError):
    """Some of the work succeeded and some failed."""

    exit_code = ExitCode.PARTIAL


class TimedOut(SealdumpError):
    """A run went past its deadline (the job's ``timeout``) and was stopped."""


class Interrupted(SealdumpError):
    """The work was stopped on request (SIGTERM grace period over, Ctrl-C)."""

    exit_code = ExitCode.INTERRUPTED
