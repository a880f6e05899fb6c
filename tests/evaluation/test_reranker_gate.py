"""The reranker gate on a tiny SciFact train slice: a reranker that does not help is disabled and
serving then says so; one that helps is enabled; the holdout is deterministic and disjoint."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from citewell.core.models import SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.beir import holdout_part, load_beir, split_holdout
from citewell.evaluation.reranker_gate import decide_gate, holdout_judgements
from citewell.evaluation.retrieval_eval import eval_principal
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.reranker_decision import load_gate
from citewell.retrieval.service import ServingIndex
from tests.evaluation.beir_files import tiny_train_index


class ScriptedReranker:
    """Scores passages by a fixed rule: ``reverse`` puts judged documents last (worse than
    hybrid by construction), ``oracle`` first (better), ``random`` uses a seeded shuffle."""

    def __init__(self, name: str, titles: dict[str, set[str]], rule: str) -> None:
        self._name = name
        self._titles = titles  # query text → titles of its judged documents
        self._rule = rule
        self._rng = random.Random(7)

    @property
    def name(self) -> str:
        return self._name

    def warm_up(self) -> None:
        return None

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        if self._rule == "random":
            return np.array([self._rng.random() for _ in passages], dtype=np.float32)
        hits = [
            float(any(t and p.startswith(t) for t in self._titles.get(query, ()))) for p in passages
        ]
        sign = 1.0 if self._rule == "oracle" else -1.0
        return np.array([sign * h for h in hits], dtype=np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Settings, str, Path]:
    return tiny_train_index(tmp_path_factory.mktemp("rerank-gate"), shared_data)


def _titles(dataset: Path) -> dict[str, set[str]]:
    data = load_beir(dataset, "train")
    title = {d.doc_id: d.title for d in data.corpus}
    return {
        q.text: {title[d] for d, g in data.qrels[q.query_id].items() if g > 0} for q in data.queries
    }


def test_split_holdout_is_deterministic_and_disjoint() -> None:
    ids = [str(i) for i in range(50)]
    train, held = split_holdout(ids, 0.2, seed=3)
    assert split_holdout(reversed(ids), 0.2, seed=3) == (train, held)
    assert len(held) == 10 and not set(train) & set(held) and set(train) | set(held) == set(ids)
    assert split_holdout(ids, 0.2, seed=4)[1] != held


def test_checkpoint_selection_and_the_gate_use_disjoint_halves_of_the_holdout() -> None:
    held = [str(i) for i in range(11)]
    selection = holdout_part(held, "selection", seed=3)
    gate = holdout_part(reversed(held), "gate", seed=3)
    assert not set(selection) & set(gate) and set(selection) | set(gate) == set(held)
    assert (len(selection), len(gate)) == (5, 6)
    assert holdout_part(held, "gate", seed=3) == gate
    assert holdout_part(held, "all", 3) == sorted(held)
    assert holdout_part(["only"], "gate", 3) == holdout_part(["only"], "selection", 3) == ["only"]


@pytest.mark.slow
def test_gate_disables_a_reranker_that_hurts_and_serving_reports_it(
    tiny: tuple[Settings, str, Path],
) -> None:
    settings, index, dataset = tiny
    # The scripted reranker spots judged documents by their first chunk (it starts with the
    # title); the document leg lifts their later chunks too, which it cannot see, so it runs off.
    settings = settings.model_copy(update={"fusion_document_share": 0.0})
    current = str(IndexLayout(settings, index).rerankers_dir / "current")
    bad = ScriptedReranker(current, _titles(dataset), "reverse")
    queries, qrels = holdout_judgements(dataset, fraction=0.5)
    decision = decide_gate(settings, index, bad, queries, qrels, judgements="tiny holdout")
    assert not decision.enabled
    assert decision.reranked < decision.baseline
    assert load_gate(IndexLayout(settings, index).rerankers_dir) == decision

    # Serving with that model (configured, same name) keeps reranking off and says why.
    configured = settings.model_copy(update={"reranker_model": current})
    service = ServingIndex(configured, index)
    try:
        request = SearchRequest(query=queries[0].text, k=5, mode=SearchMode.HYBRID, rerank=True)
        result = service.search(eval_principal(settings), request)
        assert not result.reranked
        assert result.rerank_note is not None and "evaluation gate" in result.rerank_note
        assert decision.reason in result.rerank_note
    finally:
        service.close()


@pytest.mark.slow
def test_gate_enables_a_reranker_that_helps(tiny: tuple[Settings, str, Path]) -> None:
    settings, index, dataset = tiny
    good = ScriptedReranker("oracle", _titles(dataset), "oracle")
    queries, qrels = holdout_judgements(dataset, fraction=0.5)
    decision = decide_gate(settings, index, good, queries, qrels, save=False)
    assert decision.reranked >= decision.baseline
    # An oracle can only tie hybrid when hybrid is already perfect on every query.
    assert decision.enabled == (decision.baseline < 1.0 - decision.min_gain)


@pytest.mark.slow
def test_gate_needs_a_margin_not_a_tie(tiny: tuple[Settings, str, Path]) -> None:
    settings, index, dataset = tiny
    queries, qrels = holdout_judgements(dataset, fraction=0.5)
    noisy = ScriptedReranker("random", {}, "random")
    decision = decide_gate(settings, index, noisy, queries, qrels, min_gain=1.0, save=False)
    assert not decision.enabled and "does not beat hybrid" in decision.reason
