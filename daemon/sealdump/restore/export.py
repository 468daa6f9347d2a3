"""Plain SQL of selected objects of a backup, readable by the ``mysql``/``mariadb`` client.

No server is involved: the output is what a restore would execute, in one script. Every
data batch is checked to be literals only (``restore.literals``) before it is written; a
refused batch ends the export with an IntegrityError (with ``--output``, no file is left).
"""

from __future__ import annotations

from collections.abc import Iterator

from sealdump.archive.backup import BackupReader
from sealdump.progress import NO_PROGRESS, Progress
from sealdump.restore import ddl
from sealdump.restore.literals import checked_batches
from sealdump.restore.plan import RestorePlan
from sealdump.source.catalog import quote_ident

_PROLOGUE = """-- sealdump export of backup {backup} ({server}/{job}), taken {taken}
SET NAMES utf8mb4;
SET @OLD_SQL_MODE = @@SESSION.sql_mode,
    SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';
SET @OLD_TIME_ZONE = @@SESSION.time_zone, SESSION time_zone = '+00:00';
SET @OLD_FK_CHECKS = @@SESSION.foreign_key_checks, SESSION foreign_key_checks = 0;
"""
_EPILOGUE = """SET SESSION foreign_key_checks = @OLD_FK_CHECKS;
SET SESSION time_zone = @OLD_TIME_ZONE;
SET SESSION sql_mode = @OLD_SQL_MODE;
"""


def _one_line(batch: bytes) -> bytes:
    """Escape raw CR and LF, which only occur inside quoted strings of a batch.

    QUOTE() leaves them raw; the mysql/mariadb client rewrites CR LF line ends in its
    input, which would change the data. As escapes they reach the server intact.
    """
    return batch.replace(b"\r", b"\\r").replace(b"\n", b"\\n")


def export_sql(
    reader: BackupReader,
    plan: RestorePlan,
    keep_definers: bool = False,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """Stream the SQL script for ``plan``.

    ``progress`` hears of the stored bytes of each chunk written out and of each table.
    """
    progress = progress or NO_PROGRESS
    manifest = reader.manifest()
    chunks = [chunk for table in plan.tables for chunk in table.entry.chunks]
    progress.begin(len(plan.tables), sum(chunk.stored_bytes for chunk in chunks))
    yield _PROLOGUE.format(
        backup=reader.ref.backup_id,
        server=manifest.server,
        job=manifest.job,
        taken=manifest.started_at.isoformat(),
    ).encode()
    for database in plan.databases:
        schema = reader.read_json(database.entry.schema)
        create_database = ddl.rename_database(schema["create"], database.target)
        yield f"\n{create_database};\nUSE {quote_ident(database.target)};\n".encode()
        for table in database.tables:
            create = ddl.rename_table(schema["tables"][table.name], table.target_name)
            yield f"\n{create};\n".encode()
            if table.entry.kind == "SEQUENCE" and table.name in schema.get("sequences", {}):
                state = schema["sequences"][table.name]
                yield (
                    ddl.set_sequence(quote_ident(table.target_name), state, table.source) + ";\n"
                ).encode()
            if table.name in schema.get("history", {}):
                # Row versions keep their own row start/end (MariaDB 10.11+, docs/operations.md).
                yield b"SET SESSION system_versioning_insert_history = 1;\n"
            columns = ", ".join(quote_ident(c) for c in table.entry.columns)
            prefix = f"INSERT INTO {quote_ident(table.target_name)} ({columns}) VALUES ".encode()
            width = len(table.entry.columns)
            for chunk in table.entry.chunks:
                # Each batch is checked to be literals only before it is written.
                batches = checked_batches(
                    reader.open(chunk), width, table=table.source, object_name=chunk.object_id
                )
                for batch in batches:
                    yield prefix + _one_line(batch) + b";\n"
                progress.advance(chunk.stored_bytes)
            progress.table_done(table.source)
        objects: list[str] = []
        names = {t.name for t in database.tables}
        objects += [t["create"] for t in schema.get("triggers", []) if t["table"] in names]
        if database.whole:
            objects += [schema["views"][name] for name in schema.get("view_order", [])]
            objects += [r["create"] for r in schema.get("routines", [])]
            objects += [e["create"] for e in schema.get("events", [])]
        if objects:
            yield b"\nDELIMITER ;;\n"
            for sql in objects:
                sql = sql if keep_definers else ddl.strip_definer(sql)
                yield (
                    ddl.move_database_references(sql, database.source, database.target) + ";;\n"
                ).encode()
            yield b"DELIMITER ;\n"
    yield b"\n" + _EPILOGUE.encode()
