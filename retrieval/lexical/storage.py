"""Persistence of a BM25 index: versioned snapshot directories behind a ``CURRENT`` pointer.

A save writes a complete new ``v-<uuid>/`` (``arrays.npz`` without pickles, ``meta.json`` with
the arrays' SHA-256), fsyncs it, renames it into place and swaps the pointer with
``os.replace``; a crash at any point leaves the previously saved snapshot loadable. A load checks
the pointer, the checksum and (in :mod:`retrieval.lexical.bm25`) the arrays' consistency.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from citewell.core.errors import StoreUnavailableError
from citewell.retrieval.durable import fsync_dir, write_synced

FORMAT_VERSION = 1
POINTER = "CURRENT"
ARRAYS = "arrays.npz"
META = "meta.json"
_VERSION_DIR = re.compile(r"^v-[0-9a-f]{32}$")

Arrays = dict[str, npt.NDArray[Any]]


def save_snapshot(directory: Path, arrays: Arrays, meta: dict[str, Any]) -> str:
    """Write ``arrays`` and ``meta`` as a new snapshot of ``directory`` and point ``CURRENT`` at
    it; returns the snapshot's name. Raises ``OSError`` (the previous snapshot stays)."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale(directory)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    with open(tmp / ARRAYS, "wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    meta = {**meta, "arrays_sha256": sha256_of(tmp / ARRAYS)}
    write_synced(tmp / META, json.dumps(meta).encode("utf-8"))
    fsync_dir(tmp)
    version = f"v-{uuid.uuid4().hex}"
    os.rename(tmp, directory / version)
    fsync_dir(directory)
    swap_pointer(directory, version)
    remove_stale(directory)
    return version


def load_snapshot(directory: Path) -> tuple[dict[str, Any], Arrays]:
    """(meta, arrays) of the snapshot ``CURRENT`` names. Raises ``OSError``/``ValueError`` for
    unreadable files and ``StoreUnavailableError`` for a bad pointer or checksum."""
    version = read_pointer(directory)
    try:
        return read_version(directory / version)
    except OSError:
        # A concurrent save may have swapped the pointer and removed this snapshot.
        if read_pointer(directory) == version:
            raise
        return read_version(directory / read_pointer(directory))


def read_pointer(directory: Path) -> str:
    version = (directory / POINTER).read_text(encoding="utf-8").strip()
    if not _VERSION_DIR.match(version):
        raise StoreUnavailableError(f"{directory}: malformed {POINTER} pointer")
    return version


def read_version(path: Path) -> tuple[dict[str, Any], Arrays]:
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or sha256_of(path / ARRAYS) != meta.get("arrays_sha256"):
        raise StoreUnavailableError(f"{path}: arrays checksum mismatch")
    with np.load(path / ARRAYS, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return meta, arrays


def pack_strings(values: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def unpack_strings(data: npt.NDArray[Any], offsets: npt.NDArray[Any]) -> list[str]:
    if data.dtype != np.uint8 or offsets.ndim != 1 or offsets.size < 1:
        raise StoreUnavailableError("malformed string table")
    raw = data.tobytes()
    bounds = offsets.tolist()
    ordered = all(a <= b for a, b in itertools.pairwise(bounds))
    if bounds[0] != 0 or bounds[-1] != len(raw) or not ordered:
        raise StoreUnavailableError("malformed string table")
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def swap_pointer(directory: Path, version: str) -> None:
    tmp = directory / f".{POINTER}.{uuid.uuid4().hex}"
    write_synced(tmp, version.encode("ascii"))
    os.replace(tmp, directory / POINTER)
    fsync_dir(directory)


def remove_stale(directory: Path) -> None:
    """Delete leftovers of interrupted saves and snapshots no longer named by the pointer."""
    try:
        current = (directory / POINTER).read_text(encoding="utf-8").strip()
    except OSError:
        current = None
    for entry in directory.iterdir():
        stale_version = _VERSION_DIR.match(entry.name) and entry.name != current
        if entry.name.startswith(".tmp-") or stale_version:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f".{POINTER}."):
            entry.unlink(missing_ok=True)
