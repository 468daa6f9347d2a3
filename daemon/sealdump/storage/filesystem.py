"""Backups in a local directory (a disk, an NFS or SMB mount).

Writes go to a temporary file in the destination directory, are fsynced, then renamed
into place and the directory fsynced: after a crash an object is either complete or absent.
Temporary files start with ``.tmp-`` and are never listed.

Every ``OSError`` becomes a ``StorageError`` naming the path and the system's reason
("cannot write /x/y: Read-only file system"). Cleanup after a failure (the temporary
file, directories a delete leaves empty) never replaces that error: a cleanup failure is
logged as a secondary warning. Errors a network filesystem recovers from (EIO, ESTALE,
timeouts) are transient; a full, read-only or forbidden target is not.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sealdump.errors import StorageError
from sealdump.log import get_logger

log = get_logger(__name__)

_BLOCK = 1 << 20
_TMP = ".tmp-"
# Failures a retry later may not meet again: I/O errors and lost NFS/SMB connections.
_TRANSIENT = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ESTALE,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)


def _reason(exc: OSError) -> str:
    """The system's words for ``exc`` ("No space left on device"), never a bare class name."""
    return exc.strerror or str(exc) or type(exc).__name__


def _error(action: str, path: Path, exc: OSError) -> StorageError:
    """``cannot ACTION PATH: REASON``, transient when the cause may go away by itself."""
    return StorageError(
        f"cannot {action} {path}: {_reason(exc)}", transient=exc.errno in _TRANSIENT
    )


class FilesystemStore:
    """A directory of objects; names map to relative paths below it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        """The directory."""
        return str(self.root)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") or p.startswith(_TMP) for p in parts):
            raise StorageError(f"invalid object name {name!r}")
        return self.root.joinpath(*parts)

    def write(self, name: str, chunks: Iterable[bytes]) -> int:
        """Write atomically: temp file, fsync, rename, fsync the directory."""
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _error("create", path.parent, exc) from exc
        temporary = path.with_name(f"{_TMP}{path.name}.{secrets.token_hex(4)}")
        size = 0
        try:
            with open(temporary, "xb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _error("write", path, exc) from exc
        finally:
            _discard(temporary)
        return size

    def read(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream the file, or a byte range of it."""
        path = self._path(name)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except FileNotFoundError:
            raise StorageError(f"{name} is not in storage {self.root}") from None
        except OSError as exc:
            raise _error("read", path, exc) from exc
        return _stream(handle, path, offset, length)

    def size(self, name: str) -> int:
        """The file's size."""
        path = self._path(name)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise StorageError(f"{name} is not in storage {self.root}") from None
        except OSError as exc:
            raise _error("read the size of", path, exc) from exc

    def exists(self, name: str) -> bool:
        """Whether the file exists."""
        path = self._path(name)
        try:
            return path.is_file()
        except OSError as exc:
            raise _error("look up", path, exc) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every file below the prefix (temporary files excluded)."""
        for name, _path in self._walk(prefix):
            yield name

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Every file below the prefix with its size, from one walk of the prefix's directory."""
        found: dict[str, int] = {}
        for name, path in self._walk(prefix):
            try:
                found[name] = path.stat().st_size
            except FileNotFoundError:
                continue  # deleted since the walk saw it: absent, as a listing would say
            except OSError as exc:
                raise _error("read the size of", path, exc) from exc
        return found

    def _walk(self, prefix: str) -> Iterator[tuple[str, Path]]:
        """(name, path) of every stored file whose name starts with ``prefix``.

        The walk starts at the deepest directory the prefix names, so listing one backup
        does not read the whole tree. A directory that cannot be read is an error, never
        silently skipped: a listing that leaves objects out looks like lost data.
        """
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root

        def fail(exc: OSError) -> None:
            if isinstance(exc, FileNotFoundError):
                return  # removed while walking (a concurrent delete): nothing to list there
            raise _error("list", Path(exc.filename or start), exc) from exc

        try:
            if not start.is_dir():
                return
        except OSError as exc:
            raise _error("list", start, exc) from exc
        for directory, _dirs, files in os.walk(start, onerror=fail):
            for file in files:
                if file.startswith(_TMP):
                    continue
                path = Path(directory, file)
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    yield name, path

    def delete(self, name: str) -> None:
        """Remove the file and any directories it leaves empty.

        Removing the now-empty directories is tidying, not part of the delete: a failure
        there is logged and the delete still succeeds.
        """
        path = self._path(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _error("delete", path, exc) from exc
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError as exc:
                # Not empty (the usual case), or already gone: nothing more to tidy.
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    log.warning(
                        "could not remove an empty directory (secondary: the delete succeeded)",
                        directory=str(parent),
                        reason=_reason(exc),
                    )
                return
            parent = parent.parent


def _discard(temporary: Path) -> None:
    """Remove a temporary file, if there is one; a failure is logged, never raised.

    Runs in ``finally``: raising here would replace the error that made the write fail.
    """
    try:
        temporary.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning(
            "could not remove a temporary file (secondary: the write's own error is reported)",
            file=str(temporary),
            reason=_reason(exc),
        )


def _stream(handle: BinaryIO, path: Path, offset: int, length: int | None) -> Iterator[bytes]:
    with handle:
        try:
            handle.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                block = handle.read(_BLOCK if remaining is None else min(_BLOCK, remaining))
                if not block:
                    return
                if remaining is not None:
                    remaining -= len(block)
                yield block
        except OSError as exc:
            raise _error("read", path, exc) from exc


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
