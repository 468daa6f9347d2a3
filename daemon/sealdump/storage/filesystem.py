"""Backups in a local directory (a disk, an NFS or SMB mount).

Writes go to a temporary file in the destination directory, are fsynced, then renamed
into place and the directory fsynced: after a crash an object is either complete or absent.
Temporary files start with ``.tmp-`` and are never listed.

Every ``OSError`` becomes a ``StorageError`` naming the path and the system's reason
("cannot write /x/y: Read-only file system"). Cleanup after a failure (the temporary
file, directories a delete leaves empty) never replaces that error: a cleanup failure is
logged as a secondary warning. Errors a network filesystem recovers from (EIO, ESTALE,
timeouts) are transient; a full, read-only or forbidden target is not.

Whoever can write to the storage may plant anything in it, so below the root nothing is
trusted: every path is walked one component at a time from a descriptor of the root, with
``O_NOFOLLOW | O_DIRECTORY``, and files are opened, created, renamed and removed relative to
their directory's descriptor. A symbolic link or a special file (FIFO, socket, device)
anywhere in the tree was not made by sealdump: it is never followed, read, listed or
removed. Listings skip it with one warning per entry (see ``refused``); a read, size or
delete through it is a ``StorageError`` at once, never a hang on a FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, MutableSequence, Sequence
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
# A directory below the root: never through a link, never blocking (a FIFO is not opened:
# O_DIRECTORY refuses it before the open would wait for a writer).
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A file to read: O_NONBLOCK so that a FIFO opens at once (and is then refused by fstat).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_REFUSED = "left alone: sealdump never follows links or opens special files in storage"


def _reason(exc: OSError) -> str:
    """The system's words for ``exc`` ("No space left on device"), never a bare class name."""
    return exc.strerror or str(exc) or type(exc).__name__


def _error(action: str, path: Path, exc: OSError) -> StorageError:
    """``cannot ACTION PATH: REASON``, transient when the cause may go away by itself."""
    return StorageError(
        f"cannot {action} {path}: {_reason(exc)}", transient=exc.errno in _TRANSIENT
    )


def _kind(mode: int) -> str:
    """What a storage entry is, for messages."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def _foreign(mode: int) -> bool:
    """A link or a special file: nothing sealdump makes (it makes directories and files)."""
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


class _Foreign(Exception):
    """A link or special file where sealdump expected one of its directories or files."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name, kind)
        self.name = name
        self.kind = kind


class FilesystemStore:
    """A directory of objects; names map to relative paths below it.

    The root itself is the operator's configuration and may be (or lie below) a link;
    nothing below it is followed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Storage name -> what it is, for every link or special file met (each logged once).
        self.refused: dict[str, str] = {}

    def describe(self) -> str:
        """The directory."""
        return str(self.root)

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") or p.startswith(_TMP) for p in parts):
            raise StorageError(f"invalid object name {name!r}")
        return self.root.joinpath(*parts)

    # -- descriptors ---------------------------------------------------------------------

    def _descend(self, parts: Sequence[str], *, create: bool = False) -> list[int]:
        """Descriptors of the root and of each directory ``parts`` names, in order.

        Opened one component at a time, relative to the one before, never through a link
        (``_Foreign``); with ``create`` missing directories are made (0700) on the way.
        FileNotFoundError when one is missing (without ``create``). The caller closes all.
        """
        try:
            chain = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            chain = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        try:
            for index, part in enumerate(parts):
                chain.append(self._open_dir(chain[-1], part, "/".join(parts[: index + 1]), create))
        except BaseException:
            _close(chain)
            raise
        return chain

    def _open_dir(self, parent: int, part: str, name: str, create: bool) -> int:
        try:
            return os.open(part, _DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            self._check_entry(parent, part, name, exc)
            raise
        with contextlib.suppress(FileExistsError):  # made meanwhile: open it, then check it
            os.mkdir(part, 0o700, dir_fd=parent)
        try:
            return os.open(part, _DIRECTORY, dir_fd=parent)
        except OSError as exc:
            self._check_entry(parent, part, name, exc)
            raise

    def _check_entry(self, parent: int, part: str, name: str, exc: OSError) -> None:
        """After ELOOP or ENOTDIR: raise ``_Foreign`` if ``part`` is a link or special file."""
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            return
        try:
            mode = os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            return
        if _foreign(mode):
            raise _Foreign(name, _kind(mode)) from exc

    def _report(self, name: str, kind: str) -> None:
        """Log a link or special file once per entry, and remember it in ``refused``."""
        if name not in self.refused:
            self.refused[name] = kind
            log.warning(
                f"storage entry is {kind}, not a file sealdump made: {_REFUSED}",
                entry=str(self.root / name),
                kind=kind,
            )

    def _refuse(self, action: str, path: Path, foreign: _Foreign) -> StorageError:
        self._report(foreign.name, foreign.kind)
        return StorageError(
            f"cannot {action} {path}: {self.root / foreign.name} is {foreign.kind} ({_REFUSED})"
        )

    # -- the protocol --------------------------------------------------------------------

    def write(self, name: str, chunks: Iterable[bytes], *, mode: int = 0o600) -> int:
        """Write atomically: temp file, fsync, rename, fsync the directory.

        The temporary file is created with ``mode`` (owner-only by default: backup objects,
        and a decrypted export must never be readable by others, not even for a moment). The
        umask (or a default ACL) can only narrow a mode given to ``open``, never widen it, and
        the rename keeps it: no chmod afterwards (which a network mount may refuse).
        """
        path = self._path(name)
        *folders, leaf = name.split("/")
        try:
            chain = self._descend(folders, create=True)
        except _Foreign as foreign:
            raise self._refuse("create", path.parent, foreign) from None
        except OSError as exc:
            raise _error("create", path.parent, exc) from exc
        directory = chain[-1]
        temporary = f"{_TMP}{leaf}.{secrets.token_hex(4)}"
        size = 0
        try:
            self._replaceable(directory, leaf, name)
            descriptor = os.open(temporary, _CREATE, mode, dir_fd=directory)
            with os.fdopen(descriptor, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, leaf, src_dir_fd=directory, dst_dir_fd=directory)
            os.fsync(directory)
        except _Foreign as foreign:
            raise self._refuse("write", path, foreign) from None
        except OSError as exc:
            raise _error("write", path, exc) from exc
        finally:
            _discard(directory, temporary, path.parent)
            _close(chain)
        return size

    def _replaceable(self, directory: int, leaf: str, name: str) -> None:
        """``_Foreign`` if a link or special file holds the name: it is never replaced."""
        try:
            mode = os.stat(leaf, dir_fd=directory, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if _foreign(mode):
            raise _Foreign(name, _kind(mode))

    def read(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream the file, or a byte range of it; only a regular file, never through a link."""
        path = self._path(name)
        *folders, leaf = name.split("/")
        try:
            chain = self._descend(folders)
            try:
                descriptor = os.open(leaf, _READ, dir_fd=chain[-1])
            except OSError as exc:
                self._check_entry(chain[-1], leaf, name, exc)
                raise
            finally:
                _close(chain)
            try:
                mode = os.fstat(descriptor).st_mode
                if not stat.S_ISREG(mode):
                    if stat.S_ISDIR(mode):
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                    raise _Foreign(name, _kind(mode))
                os.set_blocking(descriptor, True)
            except BaseException:
                os.close(descriptor)
                raise
        except FileNotFoundError:
            raise StorageError(f"{name} is not in storage {self.root}") from None
        except _Foreign as foreign:
            raise self._refuse("read", path, foreign) from None
        except OSError as exc:
            raise _error("read", path, exc) from exc
        handle = os.fdopen(descriptor, "rb")
        return _stream(handle, path, offset, length)

    def _lstat(self, name: str) -> os.stat_result:
        """The entry ``name`` itself (never a link's target); FileNotFoundError if absent."""
        *folders, leaf = name.split("/")
        chain = self._descend(folders)
        try:
            return os.stat(leaf, dir_fd=chain[-1], follow_symlinks=False)
        finally:
            _close(chain)

    def size(self, name: str) -> int:
        """The file's size."""
        path = self._path(name)
        try:
            found = self._lstat(name)
            if _foreign(found.st_mode):
                raise _Foreign(name, _kind(found.st_mode))
            return found.st_size
        except FileNotFoundError:
            raise StorageError(f"{name} is not in storage {self.root}") from None
        except _Foreign as foreign:
            raise self._refuse("read the size of", path, foreign) from None
        except OSError as exc:
            raise _error("read the size of", path, exc) from exc

    def exists(self, name: str) -> bool:
        """Whether the file exists (a link or special file is not a stored object)."""
        path = self._path(name)
        try:
            return stat.S_ISREG(self._lstat(name).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except _Foreign as foreign:
            self._report(foreign.name, foreign.kind)
            return False
        except OSError as exc:
            raise _error("look up", path, exc) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every file below the prefix (temporary files, links, special files excluded)."""
        for name, _size in self._walk(prefix):
            yield name

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Every file below the prefix with its size, from one walk of the prefix's directory."""
        return dict(self._walk(prefix))

    def _walk(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(name, size) of every stored file whose name starts with ``prefix``.

        The walk starts at the deepest directory the prefix names, so listing one backup
        does not read the whole tree, and enters only directories that can hold such names.
        A directory that cannot be read is an error, never silently skipped: a listing that
        leaves objects out looks like lost data. Links and special files are skipped and
        reported (``refused``); directories are entered through descriptors, never a link.
        """
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        try:
            chain = self._descend(folder.split("/") if folder else [])
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing stored there (or removed by a concurrent delete)
        except _Foreign as foreign:
            self._report(foreign.name, foreign.kind)
            return
        except OSError as exc:
            raise _error("list", start, exc) from exc
        _close(chain[:-1])
        pending = [(chain[-1], folder)]
        try:
            while pending:
                directory, relative = pending.pop()
                try:
                    yield from self._scan(directory, relative, prefix, pending)
                finally:
                    os.close(directory)
        finally:
            _close([directory for directory, _ in pending])

    def _scan(
        self, directory: int, relative: str, prefix: str, pending: MutableSequence[tuple[int, str]]
    ) -> Iterator[tuple[str, int]]:
        """The files of one directory; its subdirectories that may match go to ``pending``."""
        here = self.root / relative if relative else self.root
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except FileNotFoundError:
            return  # removed while walking (a concurrent delete): nothing to list there
        except OSError as exc:
            raise _error("list", here, exc) from exc
        for entry in entries:
            name = f"{relative}/{entry.name}" if relative else entry.name
            try:
                found = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the scan saw it: absent, as a listing would say
            except OSError as exc:
                raise _error("list", self.root / name, exc) from exc
            if stat.S_ISDIR(found.st_mode):
                if not (f"{name}/".startswith(prefix) or prefix.startswith(f"{name}/")):
                    continue
                try:
                    pending.append((self._open_dir(directory, entry.name, name, False), name))
                except FileNotFoundError:
                    continue
                except _Foreign as foreign:  # swapped for a link since the scan
                    self._report(foreign.name, foreign.kind)
                except OSError as exc:
                    raise _error("list", self.root / name, exc) from exc
            elif not name.startswith(prefix):
                continue
            elif stat.S_ISREG(found.st_mode):
                if not entry.name.startswith(_TMP):
                    yield name, found.st_size
            else:
                self._report(name, _kind(found.st_mode))

    def delete(self, name: str) -> None:
        """Remove the file and any directories it leaves empty.

        Removing the now-empty directories is tidying, not part of the delete: a failure
        there is logged and the delete still succeeds. A link or special file at the name,
        or on the way to it, is never removed: that is a StorageError naming it.
        """
        path = self._path(name)
        *folders, leaf = name.split("/")
        try:
            chain = self._descend(folders)
        except FileNotFoundError:
            return  # absent: not an error
        except _Foreign as foreign:
            raise self._refuse("delete", path, foreign) from None
        except OSError as exc:
            raise _error("delete", path, exc) from exc
        try:
            try:
                self._replaceable(chain[-1], leaf, name)
                os.unlink(leaf, dir_fd=chain[-1])
            except FileNotFoundError:
                pass
            except _Foreign as foreign:
                raise self._refuse("delete", path, foreign) from None
            except OSError as exc:
                raise _error("delete", path, exc) from exc
            self._tidy(chain, folders)
        finally:
            _close(chain)

    def _tidy(self, chain: Sequence[int], folders: Sequence[str]) -> None:
        """Remove the directories a delete left empty, deepest first (never the root)."""
        for depth in range(len(folders), 0, -1):
            try:
                os.rmdir(folders[depth - 1], dir_fd=chain[depth - 1])
            except OSError as exc:
                # Not empty (the usual case), or already gone: nothing more to tidy.
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    log.warning(
                        "could not remove an empty directory (secondary: the delete succeeded)",
                        directory=str(self.root.joinpath(*folders[:depth])),
                        reason=_reason(exc),
                    )
                return


def _close(descriptors: Iterable[int]) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


def _discard(directory: int, temporary: str, folder: Path) -> None:
    """Remove a temporary file, if there is one; a failure is logged, never raised.

    Runs in ``finally``: raising here would replace the error that made the write fail.
    """
    try:
        os.unlink(temporary, dir_fd=directory)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning(
            "could not remove a temporary file (secondary: the write's own error is reported)",
            file=str(folder / temporary),
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
