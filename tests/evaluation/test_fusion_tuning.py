"""Fusion tuning on a tiny SciFact train slice: every candidate is scored, the decision keeps
the settings' fusion unless another beats it by the margin, and serving applies the record
without a restart (and ignores a broken one)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from citewell.core.models import FusionMethod, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.fusion_tuning import DENSE_WEIGHTS, DOCUMENT_SHARES, tune_fusion
from citewell.evaluation.reranker_gate import holdout_judgements
from citewell.evaluation.retrieval_eval import eval_principal
from citewell.retrieval.fusion import FUSION_FILE, FusionChoice, load_tuned_fusion, settings_fusion
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.service import ServingIndex
from tests.evaluation.beir_files import tiny_train_index

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Settings, str, Path]:
    return tiny_train_index(tmp_path_factory.mktemp("fusion-tuning"), shared_data)


def test_tuning_scores_every_candidate_and_keeps_the_baseline_without_a_margin(
    tiny: tuple[Settings, str, Path],
) -> None:
    settings, index, dataset = tiny
    queries, qrels = holdout_judgements(dataset)
    kept = tune_fusion(settings, index, queries, qrels, judgements="tiny", min_gain=1.0)
    # RRF k=60 and the weighted grid (the baseline among it), each with every document share.
    assert len(kept.candidates) == (1 + len(DENSE_WEIGHTS)) * len(DOCUMENT_SHARES)
    assert "rrf k=60" in kept.candidates
    # The settings' fusion: weighted, even split, half the lexical side from documents.
    baseline = FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.5, document_share=0.5)
    assert kept.choice == kept.baseline == baseline
    assert kept.chosen_score == kept.baseline_score == kept.candidates["weighted dense=0.5 doc=0.5"]
    assert load_tuned_fusion(IndexLayout(settings, index).root) == kept

    best = tune_fusion(settings, index, queries, qrels, judgements="tiny", min_gain=0.0)
    assert best.chosen_score == max(best.candidates.values())
    assert best.candidates[best.choice.describe()] == best.chosen_score


def test_serving_applies_the_record_without_restart_and_ignores_a_broken_one(
    tiny: tuple[Settings, str, Path],
) -> None:
    settings, index, _ = tiny
    root = IndexLayout(settings, index).root
    service = ServingIndex(settings, index)
    off = ServingIndex(settings.model_copy(update={"use_tuned_fusion": False}), index)
    try:
        record = json.loads((root / FUSION_FILE).read_text(encoding="utf-8"))
        record["choice"] = {"method": "weighted", "rrf_k": 60, "dense_weight": 0.7}
        (root / FUSION_FILE).write_text(json.dumps(record), encoding="utf-8")
        assert service.fusion() == FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.7)
        assert off.fusion() == settings_fusion(settings)

        record["choice"]["dense_weight"] = 0.2
        (root / FUSION_FILE).write_text(json.dumps(record), encoding="utf-8")
        stat = (root / FUSION_FILE).stat()
        os.utime(root / FUSION_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert service.fusion().dense_weight == 0.2

        (root / FUSION_FILE).write_text("{broken", encoding="utf-8")
        os.utime(root / FUSION_FILE, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
        assert service.fusion() == settings_fusion(settings)
        request = SearchRequest(query="cancer cells", k=5, mode=SearchMode.HYBRID, rerank=False)
        assert service.search(eval_principal(settings), request).results
    finally:
        service.close()
        off.close()
        (root / FUSION_FILE).unlink(missing_ok=True)


def test_cli_tune_fusion_prints_and_records_the_decision(
    tiny: tuple[Settings, str, Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from citewell.cli.main import main

    settings, index, dataset = tiny
    monkeypatch.setenv("CITEWELL_DATA_DIR", str(settings.data_dir))
    code = main(["eval", "tune-fusion", "--dataset", str(dataset), "--index", index, "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["judgements"].startswith("scifact train holdout")
    assert "rrf k=60" in payload["candidates"]
    assert load_tuned_fusion(IndexLayout(settings, index).root) is not None
