"""Durable file writes: the one place that fsyncs (files and the directories that name them).

A rename is only durable once the directory holding the new name is synced; a file's bytes only
once the file is. Every atomic replace in Citewell goes through :func:`write_atomic` or
:func:`fsync_dir`, so there is one implementation of the rule to get right. Versions are
copied with :func:`copy_tree`, which keeps sparse files sparse.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
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


def copy_tree(source: Path, target: Path) -> None:
    """``shutil.copytree`` that keeps files sparse.

    qdrant-edge preallocates its segment files and leaves most of them holes (the bundled
    sample index: 172 MB of file size on 75 MB of disk). ``shutil.copyfile`` reads holes as
    zeros and writes them out, so every refresh's staged copy, and every version after it, took
    the full size on disk; copying only the data ranges keeps each copy as small as its source
    (and the kernel may share the blocks where the file system supports it).
    """
    shutil.copytree(source, target, copy_function=_copy_file_sparse)


def _copy_file_sparse(source: str, target: str) -> str:
    # Opened without blocking and checked before reading, as shutil.copyfile refuses them: a
    # FIFO in a version folder would otherwise hang the copy.
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise shutil.SpecialFileError(f"{source} is not a regular file")
    os.set_blocking(fd, True)
    size = info.st_size
    with os.fdopen(fd, "rb") as src, open(target, "wb") as dst:
        try:
            for start, end in _data_ranges(src.fileno(), size):
                _copy_range(src.fileno(), dst.fileno(), start, end)
        except OSError as exc:
            if exc.errno not in _NO_SPARSE_SUPPORT:
                raise
            # A file system without SEEK_DATA or copy_file_range: a plain copy.
            src.seek(0)
            dst.seek(0)
            dst.truncate(0)
            shutil.copyfileobj(src, dst, 1 << 20)
        dst.truncate(size)  # a trailing hole
    shutil.copystat(source, target)
    return target


_NO_SPARSE_SUPPORT = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The [start, end) byte ranges of ``fd`` that hold data (not holes)."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here to the end
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        position = end


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    offset = start
    in_kernel = True
    while offset < end:
        count = min(end - offset, 1 << 24)
        if in_kernel:
            try:
                copied = os.copy_file_range(src, dst, count, offset, offset)
            except OSError as exc:
                # Across file systems (a private copy into /tmp) the kernel may refuse: copy
                # the range through user space, still leaving the holes out.
                if exc.errno not in _NO_SPARSE_SUPPORT:
                    raise
                in_kernel = False
                continue
        else:
            block = os.pread(src, count, offset)
            copied = os.pwrite(dst, block, offset)
        if copied == 0:  # the source shrank under us: it is not a published version
            raise OSError(errno.EIO, "file changed while it was copied")
        offset += copied
