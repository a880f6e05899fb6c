"""The BM25 scoring loops are compiled by numba and cached on disk; an install where numba
finds no writable cache location (read-only site-packages and home) must still import and
search, compiling in each process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import numba

real_njit = numba.njit


def njit_without_cache(*args, **kwargs):
    if kwargs.get("cache"):
        raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
    return real_njit(*args, **kwargs)


numba.njit = njit_without_cache

from citewell.retrieval.lexical import BM25Index
from tests.retrieval.contracts.lexical_index_contract import CORPUS, EVERYONE, NO_FILTERS

index = BM25Index()
index.add(list(CORPUS))
print([chunk_id for chunk_id, _ in index.search("falcon", EVERYONE, NO_FILTERS, 2)])
print([doc for doc, _ in index.document_search("falcon", EVERYONE, NO_FILTERS, 1)])
"""


def test_scoring_works_where_numba_cannot_cache() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        # tests/ by name, not through the working directory (the session sets PYTHONSAFEPATH).
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['e', 'c']", "['doc-e']"]
