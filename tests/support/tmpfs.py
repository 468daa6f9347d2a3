"""Real filesystem faults: a small tmpfs that can be filled up or remounted read-only.

Mounting needs root (CAP_SYS_ADMIN); tests skip with the reason otherwise.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextmanager
def tmpfs(path: Path, size: str = "64m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``path`` for the block; unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to inject filesystem faults needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        _mount("-o", "remount,rw", str(path))
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount_read_only(path: Path, within: float = 60.0) -> None:
    """Remount ``path`` read-only, retrying while a writer holds a file open (EBUSY).

    The kernel refuses to remount read-only while a file is open for writing, so a backup in
    progress is caught between two objects: the moment an operator's or the system's remount
    (errors=remount-ro) would succeed.
    """
    deadline = time.monotonic() + within
    while True:
        result = _mount("-o", "remount,ro", str(path))
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"cannot remount {path} read-only: {result.stderr.strip()}")
        time.sleep(0.01)


def remount_read_write(path: Path) -> None:
    """Make ``path`` writable again."""
    result = _mount("-o", "remount,rw", str(path))
    if result.returncode != 0:
        raise RuntimeError(f"cannot remount {path} read-write: {result.stderr.strip()}")


def fill(path: Path, leave: int = 0) -> Path:
    """Fill the filesystem holding ``path`` with one file, leaving about ``leave`` bytes free."""
    filler = path / "filler"
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize - leave
    with open(filler, "wb", buffering=0) as handle:
        block = b"\0" * (1 << 20)
        while free > 0:
            try:
                free -= handle.write(block[: min(len(block), free)])
            except OSError:
                break
    return filler
