"""Durable file writes: the one place that fsyncs (files and the directories that name them).

A rename is only durable once the directory holding the new name is synced; a file's bytes only
once the file is. Every atomic replace in Citewell goes through :func:`write_atomic` or
:func:`fsync_dir`, so there is one implementation of the rule to get right.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` and fsync the file (not its directory)."""
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` whole or not at all, durably: write a temporary file
    beside it, fsync, rename over ``path``, fsync the directory. A crash leaves the old file or
    the new one, never a mix (a stray temporary file at worst)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write_synced(tmp, payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
