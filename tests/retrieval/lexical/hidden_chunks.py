"""Chunks a principal may not see must not change what it finds: the BM25 index of the visible
chunks alone, next to one that also holds the hidden chunks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import strategies as st

from citewell.core.models import Chunk
from citewell.retrieval.lexical import BM25Index

# Chunk texts from a small vocabulary, and labels (a rank and up to two groups) to draw from.
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
GROUPS = ["everyone", "hr", "eng"]
texts_st = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)
label_st = st.tuples(
    st.integers(min_value=0, max_value=3),
    st.lists(st.sampled_from(GROUPS), max_size=2, unique=True).map(tuple),
)


def alone_and_mixed(
    visible: Sequence[Chunk], hidden: Sequence[Chunk], interleave: bool
) -> tuple[BM25Index, BM25Index]:
    """An index of ``visible`` alone, and one of ``visible`` and ``hidden``: interleaved in one
    ``add``, or hidden ones added after."""
    alone = BM25Index()
    alone.add(list(visible))
    mixed = BM25Index()
    if interleave:
        pairs = itertools.zip_longest(hidden, visible)
        mixed.add([c for pair in pairs for c in pair if c is not None])
    else:
        mixed.add(list(visible))
        mixed.add(list(hidden))
    return alone, mixed
