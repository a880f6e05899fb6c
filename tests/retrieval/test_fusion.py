import pytest

from citewell.retrieval.fusion import reciprocal_rank_fusion, weighted_fusion


def test_rrf_matches_hand_computed_scores():
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert scores["d"] == pytest.approx(1 / 62)
    assert max(scores, key=scores.__getitem__) == "b"


def test_rrf_rejects_bad_k():
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], k=0)


def test_weighted_fusion_normalises_each_leg():
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    lexical = [("c", 30.0), ("a", 10.0)]
    scores = weighted_fusion(dense, lexical, dense_weight=0.25)
    assert scores["a"] == pytest.approx(0.25 * 1.0 + 0.75 * 0.0)
    assert scores["b"] == pytest.approx(0.25 * 0.5)
    assert scores["c"] == pytest.approx(0.25 * 0.0 + 0.75 * 1.0)


def test_weighted_fusion_single_value_leg_and_empty_leg():
    assert weighted_fusion([("a", 0.3)], [], dense_weight=0.5) == {"a": 0.5}
    with pytest.raises(ValueError):
        weighted_fusion([], [], dense_weight=1.5)


def test_fusion_choice_applies_its_method():
    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FusionChoice

    dense, lexical = [("a", 0.9), ("b", 0.1)], [("b", 5.0), ("c", 1.0)]
    rrf = FusionChoice(method=FusionMethod.RRF, rrf_k=10)
    assert rrf.fuse(dense, lexical) == reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=10)
    weighted = FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.3)
    assert weighted.fuse(dense, lexical) == weighted_fusion(dense, lexical, 0.3)
    assert rrf.describe() == "rrf k=10"
    assert weighted.describe() == "weighted dense=0.3"


def _tuned(choice):
    from datetime import UTC, datetime

    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FusionChoice, TunedFusion

    baseline = FusionChoice(method=FusionMethod.RRF)
    return TunedFusion(
        choice=choice,
        reason="test",
        metric="ndcg@10",
        baseline=baseline,
        baseline_score=0.5,
        chosen_score=0.6,
        min_gain=0.005,
        candidates={"rrf k=60": 0.5, choice.describe(): 0.6},
        judgements="unit test",
        decided_at=datetime.now(UTC),
    )


def test_tuned_fusion_round_trips_and_a_corrupt_record_is_an_error(tmp_path):
    from citewell.core.errors import ConfigurationError
    from citewell.core.models import FusionMethod
    from citewell.core.settings import Settings
    from citewell.retrieval.fusion import (
        FUSION_FILE,
        FusionChoice,
        describe_fusion,
        load_tuned_fusion,
        save_tuned_fusion,
    )

    assert load_tuned_fusion(tmp_path) is None
    tuned = _tuned(FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.4))
    save_tuned_fusion(tmp_path, tuned)
    assert load_tuned_fusion(tmp_path) == tuned
    settings = Settings(data_dir=tmp_path)
    assert describe_fusion(settings, tmp_path) == "weighted dense=0.4 (tuned on unit test)"
    off = Settings(data_dir=tmp_path, use_tuned_fusion=False)
    assert describe_fusion(off, tmp_path) == "weighted dense=0.5 doc=0.5"
    (tmp_path / FUSION_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_tuned_fusion(tmp_path)
    assert "serving ignores it" in describe_fusion(settings, tmp_path)


def test_document_leg_maps_chunks_to_their_documents_rank_and_score():
    from citewell.retrieval.fusion import document_leg

    documents = [("D1", 9.0), ("D2", 5.0), ("D3", 1.0)]
    document_of = {"a": "D2", "b": "D1", "c": "D9", "d": "D3"}
    leg = document_leg(["a", "b", "c", "d", "e"], documents, document_of)
    # "c" belongs to a document outside the ranking, "e" to no known document: no entry.
    assert leg == [("a", 2, pytest.approx(0.5)), ("b", 1, 1.0), ("d", 3, 0.0)]
    assert document_leg(["a"], [], document_of) == []


def test_document_share_moves_lexical_evidence_to_the_document_in_both_methods():
    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FusionChoice

    dense, lexical = [("a", 0.9), ("b", 0.1)], [("b", 5.0), ("c", 1.0)]
    documents = [("D2", 4.0), ("D1", 2.0)]
    document_of = {"a": "D1", "b": "D1", "c": "D2"}
    rrf = FusionChoice(method=FusionMethod.RRF, rrf_k=10, document_share=0.25)
    fused = rrf.fuse(dense, lexical, documents, document_of)
    # dense 1/(k+rank) + lexical 0.75/(k+rank) + document 0.25/(k+document rank)
    assert fused["a"] == pytest.approx(1 / 11 + 0.25 / 12)
    assert fused["b"] == pytest.approx(1 / 12 + 0.75 / 11 + 0.25 / 12)
    assert fused["c"] == pytest.approx(0.75 / 12 + 0.25 / 11)
    weighted = FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.3, document_share=0.5)
    fused = weighted.fuse(dense, lexical, documents, document_of)
    # Min-max normalised: dense a 1, b 0; lexical b 1, c 0; documents D2 1, D1 0.
    assert fused == pytest.approx({"a": 0.3, "b": 0.7 * 0.5, "c": 0.7 * 0.5})
    # The leg only re-scores candidates of the chunk legs, and share 0 ignores it.
    assert fused.keys() == {"a", "b", "c"}
    off = FusionChoice(method=FusionMethod.RRF, rrf_k=10)
    assert off.fuse(dense, lexical, documents, document_of) == pytest.approx(
        reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=10)
    )
    assert weighted.describe() == "weighted dense=0.3 doc=0.5"
    assert off.describe() == "rrf k=10"


def test_where_each_document_is_one_chunk_the_share_changes_nothing():
    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FusionChoice

    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    lexical = [("c", 7.0), ("a", 3.0), ("b", 1.0)]
    documents = [("C", 7.5), ("A", 3.2), ("B", 1.0)]  # one chunk each, the same order
    document_of = {"a": "A", "b": "B", "c": "C"}
    for method in FusionMethod:
        plain = FusionChoice(method=method, rrf_k=10, dense_weight=0.4)
        shared = plain.model_copy(update={"document_share": 0.5})
        got = shared.fuse(dense, lexical, documents, document_of)
        want = plain.fuse(dense, lexical)
        assert sorted(got, key=lambda c: -got[c]) == sorted(want, key=lambda c: -want[c])
        if method == FusionMethod.RRF:
            assert got == pytest.approx(want)


def test_records_with_the_former_additive_document_weight_load_as_a_share():
    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FusionChoice

    dense, lexical = [("a", 0.9), ("b", 0.4), ("c", 0.1)], [("b", 5.0), ("c", 4.0), ("a", 1.0)]
    documents = [("D2", 4.0), ("D1", 2.0), ("D3", 1.0)]
    document_of = {"a": "D1", "b": "D2", "c": "D3"}
    old = FusionChoice.model_validate(
        {"method": "weighted", "rrf_k": 60, "dense_weight": 0.6, "document_weight": 0.5}
    )
    assert old.dense_weight == pytest.approx(0.4)
    assert old.document_share == pytest.approx(0.5 / 0.9)
    # The same ranking as 0.6 * dense + 0.4 * lexical + 0.5 * document, rescaled by 1 / 1.5.
    fused = old.fuse(dense, lexical, documents, document_of)
    assert fused["a"] == pytest.approx((0.6 * 1.0 + 0.4 * 0.0 + 0.5 * 1 / 3) / 1.5)
    assert fused["b"] == pytest.approx((0.6 * 0.375 + 0.4 * 1.0 + 0.5 * 1.0) / 1.5)
    rrf = FusionChoice.model_validate({"method": "rrf", "rrf_k": 60, "document_weight": 1.0})
    assert rrf == FusionChoice(method=FusionMethod.RRF, document_share=0.5)
    assert FusionChoice.model_validate({"method": "rrf", "document_weight": 0.0}) == (
        FusionChoice(method=FusionMethod.RRF)
    )


def test_fusion_records_without_a_document_weight_still_load(tmp_path):
    import json

    from citewell.core.models import FusionMethod
    from citewell.retrieval.fusion import FUSION_FILE, FusionChoice, load_tuned_fusion

    old = {
        "choice": {"method": "weighted", "rrf_k": 60, "dense_weight": 0.4},
        "reason": "weighted dense=0.4 beats rrf",
        "metric": "ndcg@10",
        "baseline": {"method": "rrf", "rrf_k": 60, "dense_weight": 0.5},
        "baseline_score": 0.75,
        "chosen_score": 0.77,
        "min_gain": 0.005,
        "candidates": {"rrf k=60": 0.75, "weighted dense=0.4": 0.77},
        "judgements": "scifact train holdout",
        "decided_at": "2026-11-26T13:08:10.757781Z",
    }
    (tmp_path / FUSION_FILE).write_text(json.dumps(old), encoding="utf-8")
    tuned = load_tuned_fusion(tmp_path)
    assert tuned is not None
    assert tuned.choice == FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.4)
    assert tuned.choice.document_share == 0.0


def test_settings_fusion_carries_the_document_share():
    from citewell.core.settings import Settings
    from citewell.retrieval.fusion import settings_fusion

    assert settings_fusion(Settings(fusion_document_share=0.7)).document_share == 0.7
