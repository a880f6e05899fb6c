"""Contract every Reranker must meet. Subclass and provide a ``reranker`` fixture."""

from __future__ import annotations

import numpy as np
import pytest

from citewell.retrieval.protocols import Reranker

QUERY = "does aspirin prevent heart attacks"
PASSAGES = [
    "Aspirin reduces the risk of heart attack.",
    "The mitochondria is the powerhouse of the cell.",
    "Quarterly revenue grew by twelve percent in the third quarter of the fiscal year.",
    "Low-dose aspirin",
]


class RerankerContract:
    @pytest.fixture
    def reranker(self) -> Reranker:
        raise NotImplementedError

    @pytest.fixture
    def single_atol(self) -> float:
        """How far one pair scored alone may be from the same pair scored in a batch;
        dynamic int8 quantises activations per batch, so its subclass loosens this."""
        return 1e-3

    def test_is_reranker(self, reranker: Reranker) -> None:
        assert isinstance(reranker, Reranker)
        assert reranker.name

    def test_one_float32_score_per_passage(self, reranker: Reranker) -> None:
        scores = reranker.score(QUERY, PASSAGES)
        assert scores.shape == (len(PASSAGES),)
        assert scores.dtype == np.float32
        assert np.all(np.isfinite(scores))

    def test_order_preserved(self, reranker: Reranker, single_atol: float) -> None:
        forward = reranker.score(QUERY, PASSAGES)
        backward = reranker.score(QUERY, PASSAGES[::-1])
        np.testing.assert_allclose(forward, backward[::-1], atol=1e-4)
        single = np.array([reranker.score(QUERY, [p])[0] for p in PASSAGES])
        np.testing.assert_allclose(forward, single, atol=single_atol)

    def test_empty_input(self, reranker: Reranker) -> None:
        assert reranker.score(QUERY, []).shape == (0,)

    def test_deterministic(self, reranker: Reranker) -> None:
        np.testing.assert_array_equal(
            reranker.score(QUERY, PASSAGES), reranker.score(QUERY, PASSAGES)
        )
