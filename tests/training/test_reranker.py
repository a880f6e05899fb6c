"""Reranker training on a tiny SciFact train slice: a loadable model with its card, installed as
the index's ``rerankers/current`` and used by serving; the reranker selection order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citewell.core.models import Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.retrieval_eval import eval_principal
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex
from citewell.training.reranker import TrainedReranker, train_reranker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny: tuple[Settings, str, Path]) -> TrainedReranker:
    settings, index, dataset = tiny
    return train_reranker(
        settings,
        index,
        dataset,
        layers=1,
        epochs=1,
        batch_size=4,
        max_length=64,
        max_pseudo=8,
        device="cpu",
        run_gate=False,
    )


def _search(service: ServingIndex, settings: Settings) -> tuple[bool, str | None]:
    principal: Principal = eval_principal(settings)
    request = SearchRequest(query="vitamin D and bone health", k=5, mode=SearchMode.HYBRID)
    result = service.search(principal, request)
    return result.reranked, result.rerank_note


def test_tiny_training_writes_a_loadable_model_with_its_card(
    tiny: tuple[Settings, str, Path], trained: TrainedReranker
) -> None:
    settings, index, _ = tiny
    model_dir = trained.model_dir
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    assert card["parameters"]["layers"] == 1 and card["index"] == index
    assert (
        card["data"]["judged"] > 0
        and card["data"].get("pseudo-title", 0) + card["data"].get("pseudo-sentence", 0) > 0
    )
    assert card["validation_queries"] >= 1 and card["history"]
    assert "## Validation" in (model_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 1
    current = IndexLayout(settings, index).rerankers_dir / "current"
    assert current.is_symlink() and current.resolve() == model_dir.resolve()


def test_serving_uses_the_trained_model(
    tiny: tuple[Settings, str, Path], trained: TrainedReranker
) -> None:
    settings, index, _ = tiny
    service = ServingIndex(settings, index)
    try:
        reranked, note = _search(service, settings)
        assert reranked and note is None
        status = service.status()
        assert status.reranker == str(IndexLayout(settings, index).rerankers_dir / "current")
        assert status.reranker_note is not None and "trained for this index" in status.reranker_note
    finally:
        service.close()


def test_selection_order_configured_then_trained_then_none(
    tiny: tuple[Settings, str, Path], trained: TrainedReranker, tmp_path: Path
) -> None:
    settings, index, _ = tiny
    configured = settings.model_copy(update={"reranker_model": str(trained.model_dir)})
    service = ServingIndex(configured, index)
    try:
        assert _search(service, configured)[0]
        assert service.status().reranker == str(trained.model_dir)
        assert "configured" in (service.status().reranker_note or "")
    finally:
        service.close()

    # Same index contents, no trained model: reranking is off, and the result says why.
    rerankers = IndexLayout(settings, index).rerankers_dir
    moved = tmp_path / "rerankers"
    rerankers.rename(moved)
    try:
        service = ServingIndex(settings, index)
        try:
            reranked, note = _search(service, settings)
            assert not reranked
            assert note is not None and "no reranker configured or trained" in note
        finally:
            service.close()
    finally:
        moved.rename(rerankers)


def test_training_refuses_an_index_that_does_not_exist(tiny: tuple[Settings, str, Path]) -> None:
    from citewell.core.errors import CitewellError

    settings, _, dataset = tiny
    with pytest.raises(CitewellError):
        train_reranker(settings, "no-such-index", dataset, layers=1, epochs=1, device="cpu")
