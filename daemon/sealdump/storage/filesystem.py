"""Backups in a local directory (a disk, an NFS or SMB mount).

Writes go to a temporary file in the destination directory, are fsynced, then renamed
into place and the directory fsynced: after a crash an object is either complete or absent.
Temporary files start with ``.tmp-`` and are never listed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from sealdump.errors import StorageError

_BLOCK = 1 << 20
_TMP = ".tmp-"


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
            raise StorageError(f"cannot create {path.parent}: {exc.strerror}") from exc
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
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            temporary.unlink(missing_ok=True)
        return size

    def read(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream the file, or a byte range of it."""
        path = self._path(name)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except FileNotFoundError:
            raise StorageError(f"{name} is not in storage {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        return _stream(handle, offset, length)

    def size(self, name: str) -> int:
        """The file's size."""
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise StorageError(f"{name} is not in storage {self.root}") from None

    def exists(self, name: str) -> bool:
        """Whether the file exists."""
        return self._path(name).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every file below the prefix (temporary files excluded)."""
        if not self.root.is_dir():
            return
        for directory, _dirs, files in os.walk(self.root):
            for file in files:
                if file.startswith(_TMP):
                    continue
                name = Path(directory, file).relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    yield name

    def delete(self, name: str) -> None:
        """Remove the file and any directories it leaves empty."""
        path = self._path(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror}") from exc
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _stream(handle: BinaryIO, offset: int, length: int | None) -> Iterator[bytes]:
    with handle:
        handle.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            block = handle.read(_BLOCK if remaining is None else min(_BLOCK, remaining))
            if not block:
                return
            if remaining is not None:
                remaining -= len(block)
            yield block


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
