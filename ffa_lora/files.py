"""Durable file writes: a crash leaves the old file or the new one, never a part of either.

The new content goes to a temporary file beside the target, is flushed to disk, renamed over
the target, and the folder is flushed so that the rename itself survives a power loss.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "replacing"]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the new content to (for writers that take a
    path); when the block ends normally it replaces ``path`` durably with permissions ``mode``,
    when it raises the temporary file is removed and ``path`` is untouched."""
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync_path(target.parent)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably (see :func:`replacing`)."""
    with replacing(path, mode=mode) as tmp:
        tmp.write_bytes(data)
