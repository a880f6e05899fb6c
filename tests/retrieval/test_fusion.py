import pytest

from retrieval.fusion import reciprocal_rank_fusion, weighted_fusion


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
    from core.models import FusionMethod
    from retrieval.fusion import FusionChoice

    dense, lexical = [("a", 0.9), ("b", 0.1)], [("b", 5.0), ("c", 1.0)]
    rrf = FusionChoice(method=FusionMethod.RRF, rrf_k=10)
    assert rrf.fuse(dense, lexical) == reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=10)
    weighted = FusionChoice(method=FusionMethod.WEIGHTED, dense_weight=0.3)
    assert weighted.fuse(dense, lexical) == weighted_fusion(dense, lexical, 0.3)
    assert rrf.describe() == "rrf k=10"
    assert weighted.describe() == "weighted dense=0.3"


def _tuned(choice):
    from datetime import UTC, datetime

    from core.models import FusionMethod
    from retrieval.fusion import FusionChoice, TunedFusion

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
    from core.errors import ConfigurationError
    from core.models import FusionMethod
    from core.settings import Settings
    from retrieval.fusion import (
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
    assert describe_fusion(off, tmp_path) == "rrf k=60"
    (tmp_path / FUSION_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_tuned_fusion(tmp_path)
    assert "serving ignores it" in describe_fusion(settings, tmp_path)
