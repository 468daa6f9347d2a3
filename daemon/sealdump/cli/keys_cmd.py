"""``sealdump keys generate`` and ``sealdump keys rewrap``; ``sealdump decrypt``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from sealdump.actions.rewrap import rewrap as rewrap_action
from sealdump.archive import format as fmt
from sealdump.archive.backup import unwrap_envelope
from sealdump.archive.envelope import Envelope
from sealdump.cli.backups_cmd import scoped
from sealdump.cli.complete import complete_backup
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.errors import UsageError
from sealdump.keys import KeyProvider, providers
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.storage.filesystem import FilesystemStore


@click.group()
def keys() -> None:
    """Make local keys; re-wrap backups' data keys after a KEK rotation."""


@keys.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
def generate(state: State, file: Path) -> None:
    """Write a new random 256-bit key to FILE (mode 0600; never overwrites)."""
    key_id = generate_key_file(file)
    if state.as_json:
        emit_json({"file": str(file), "key_id": key_id})
    else:
        click.echo(f"{file}: new key {key_id}")


@keys.command()
@click.argument("backup_id", metavar="[BACKUP]", required=False, shell_complete=complete_backup)
@click.option("--all", "every", is_flag=True, help="Every backup (within --server/--job).")
@scoped
@click.option("--to-key", help="Wrap under this configured key instead of the backup's own.")
@pass_state
def rewrap(
    state: State,
    backup_id: str | None,
    every: bool,
    server: str | None,
    job: str | None,
    to_key: str | None,
) -> None:
    """Re-wrap data keys under the newest KEK version; data objects are not touched.

    Each backup's signature is checked first (a backup that fails it is refused, never
    re-signed), and a signed backup is re-signed by the new key before its old wrapping is
    dropped. An unsigned (format 1) backup is re-wrapped and stays unsigned. --all without
    --job also re-wraps and re-signs the binlog epochs of the servers in scope.
    """
    if bool(backup_id) == every:
        raise UsageError("give one BACKUP or --all")
    results = rewrap_action(
        state.config(), None if every else backup_id, server=server, job=job, to_key=to_key
    )
    if state.as_json:
        emit_json(results)
        return
    for result in results:
        label = result["backup_id"]
        if result.get("binlog_epoch"):
            label = f"{result['server']} binlog epoch {label}"
        if "skipped" in result:
            click.echo(f"{label}: passed over: {result['skipped']}")
            continue
        change = "re-wrapped under" if result["changed"] else "already under"
        unsigned = " (unsigned, format 1: left unsigned)" if result.get("signed") is False else ""
        click.echo(f"{label}: {change} {result['key_id']}{unsigned}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (default stdout).",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A local key to use.",
)
@pass_state
def decrypt(state: State, file: Path, output: Path | None, key_file: Path | None) -> None:
    """Decrypt one stored object (from a filesystem storage or a download) to plaintext.

    The backup's keys.json is looked up beside the object's backup directory.
    """
    with open(file, "rb") as handle:
        head = handle.read(fmt.HEADER_PROBE)  # the header only, not the whole object
    header = fmt.parse_header(head, str(file))
    backup_dir = file.parent if header.name == "manifest" else file.parent.parent
    envelope_path = backup_dir / "keys.json"
    if not envelope_path.exists():
        raise UsageError(
            f"{envelope_path} not found: decrypt needs the backup's keys.json beside its objects"
        )
    envelope = Envelope.from_json(envelope_path.read_bytes(), str(envelope_path))
    available: list[KeyProvider] = (
        [LocalKeyProvider("key-file", key_file)] if key_file else providers(state.config())
    )
    dek = unwrap_envelope(envelope, available)

    def chunks() -> Iterator[bytes]:
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                yield block

    plaintext = fmt.decrypt(
        chunks(),
        dek,
        header.backup_id,
        header.name,
        ", ".join(w.key_id for w in envelope.wrappings),
    )
    if output is None:
        for piece in plaintext:
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
        return
    # Atomic, and 0600 from the temporary file's creation: plaintext is never readable by
    # others, and a failed decrypt leaves no file (a killed one at most a 0600 .tmp- file).
    FilesystemStore(output.resolve().parent).write(output.name, plaintext, mode=0o600)
