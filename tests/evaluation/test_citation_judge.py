"""The citation-precision judge is the model factory's reranker for the index, gated, with the
reranker's own settings; a reranker that failed its gate never judges."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from citewell.evaluation.answers_eval import CrossEncoderJudge, EmbeddingJudge, default_judge
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.reranker_decision import GateDecision, save_gate
from tests.agent.fakes import HashingEmbedder


def _trained_reranker(settings) -> Path:
    rerankers = IndexLayout(settings, "kb").rerankers_dir
    current = rerankers / "current"
    current.mkdir(parents=True)
    (current / "config.json").write_text("{}")
    (current / "model.safetensors").write_bytes(b"weights")  # loaded lazily, never here
    return rerankers


def _gate(rerankers: Path, model: str, enabled: bool) -> None:
    save_gate(
        rerankers,
        GateDecision(
            model=model,
            enabled=enabled,
            reason="hybrid 0.700 vs reranked 0.650" if not enabled else "gain 0.030",
            metric="ndcg@10",
            baseline=0.70,
            reranked=0.65 if not enabled else 0.73,
            min_gain=0.005,
            judgements="test",
            decided_at=datetime.now(UTC),
        ),
    )


def test_a_reranker_that_failed_its_gate_does_not_judge(make_settings) -> None:
    settings = make_settings()
    rerankers = _trained_reranker(settings)
    _gate(rerankers, str(rerankers / "current"), enabled=False)
    judge = default_judge(settings, "kb", HashingEmbedder())
    assert isinstance(judge, EmbeddingJudge)


def test_a_gated_in_reranker_judges_with_the_reranker_settings(make_settings) -> None:
    settings = make_settings(reranker_backend="onnx", reranker_max_length=128)
    rerankers = _trained_reranker(settings)
    _gate(rerankers, str(rerankers / "current"), enabled=True)
    judge = default_judge(settings, "kb", HashingEmbedder())
    assert isinstance(judge, CrossEncoderJudge)
    assert judge._reranker._requested_backend == "onnx"
    assert judge.name.startswith("cross-encoder:")
