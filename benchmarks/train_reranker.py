"""Train (or load) the SciFact reranker, then print the per-mode table on SciFact test and
Cranfield, with hybrid+rerank p95 latency at 20 and 50 candidates.

    .venv/bin/python -m benchmarks.train_reranker [--data-dir .citewell-bench] [--train]
        [--layers 2] [--time-budget 900] [--max-groups 4000] [--device auto]

The reranker is trained on SciFact *train* only (minus a validation holdout used for early
stopping and the gate); SciFact test and Cranfield are evaluation only. Rows:

- ``hybrid+rerank``: what serving does, i.e. gated (skipped where the gate said no);
- ``hybrid+rerank (ungated)``: the same model forced on, to show what the gate protected from;
- latency rows: p50/p95 of a whole hybrid+rerank search at 20 and 50 candidates.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.common import SHARED_DATA, report_trained
from citewell.cli.evaluate import format_table
from citewell.core.logging import configure_logging
from citewell.core.settings import Settings
from citewell.evaluation.models import RetrievalEvalReport
from citewell.evaluation.retrieval_eval import EvalSearchIndex, IndexOpener, evaluate_retrieval

SCIFACT = "scifact"
CRANFIELD = "cranfield/beir"


def _opener(settings: Settings, model: str) -> IndexOpener:
    from citewell.retrieval.rerank import CrossEncoderReranker
    from citewell.retrieval.service import ServingIndex

    reranker = CrossEncoderReranker(model, max_length=settings.reranker_max_length)

    def open_index(index: str) -> EvalSearchIndex:
        return ServingIndex(settings, index, reranker=reranker)

    return open_index


def _reranked_by(model: str, settings: Settings, dataset: Path) -> RetrievalEvalReport:
    """hybrid+rerank on the dataset's test split, reranked by ``model`` whatever its gate said."""
    return evaluate_retrieval(
        settings, dataset, "test", ["hybrid+rerank"], opener=_opener(settings, model)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--data-dir", type=Path, default=Path(".citewell-bench"))
    parser.add_argument("--train", action="store_true", help="train even if a model is installed")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--max-groups", type=int, default=None)
    parser.add_argument("--max-pseudo", type=int, default=3000)
    parser.add_argument("--time-budget", type=float, default=900.0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("INFO")
    settings = Settings(data_dir=args.data_dir)
    ir = args.data_root / "ir"

    # Building (or reusing) the evaluation indexes also gives the non-rerank rows.
    base: dict[str, RetrievalEvalReport] = {}
    for name in (SCIFACT, CRANFIELD):
        base[name] = evaluate_retrieval(
            settings, ir / name, "test", ["bm25", "dense", "hybrid"], progress=True
        )

    from citewell.retrieval.index import IndexLayout
    from citewell.training.reranker import train_reranker

    scifact_index = base[SCIFACT].index
    current = IndexLayout(settings, scifact_index).rerankers_dir / "current"
    if args.train or not (current / "config.json").is_file():
        trained = train_reranker(
            settings,
            scifact_index,
            ir / SCIFACT,
            layers=args.layers,
            epochs=args.epochs,
            max_length=args.max_length,
            max_groups=args.max_groups,
            max_pseudo=args.max_pseudo,
            time_budget_s=args.time_budget,
            device=args.device,
            external_dir=args.data_root,
        )
        card = trained.card
        report_trained(trained.model_dir, card, "hybrid → reranked", card.hybrid_ndcg_at_10)
        sys.stdout.write(f"gate: {card.gate}\n\n")
    model = str(current)

    for name in (SCIFACT, CRANFIELD):
        # Cranfield's index has no trained model of its own: serving would not rerank it unless
        # configured, so the SciFact model is configured for it (out of domain, gate not run).
        gated_settings = settings
        if name == CRANFIELD:
            gated_settings = settings.model_copy(update={"reranker_model": model})
        gated = evaluate_retrieval(gated_settings, ir / name, "test", ["hybrid+rerank"])
        ungated = _reranked_by(model, settings, ir / name)
        report = base[name]
        modes = dict(report.modes)
        skipped = dict(report.skipped)
        if "hybrid+rerank" in gated.modes:
            modes["hybrid+rerank"] = gated.modes["hybrid+rerank"]
        else:
            skipped["hybrid+rerank"] = gated.skipped.get("hybrid+rerank", "skipped")
        modes["rerank ungated"] = ungated.modes["hybrid+rerank"]
        sys.stdout.write(
            format_table(report.model_copy(update={"modes": modes, "skipped": skipped})) + "\n"
        )

    # Latency of the whole hybrid+rerank search, at 20 and 50 candidates, on SciFact queries.
    for candidates in (20, 50):
        timed = settings.model_copy(update={"rerank_candidates": candidates})
        lat = _reranked_by(model, timed, ir / SCIFACT).modes["hybrid+rerank"]
        sys.stdout.write(
            f"hybrid+rerank @{candidates} candidates: nDCG@10 {lat.ndcg_at_10:.3f}, "
            f"p50 {lat.latency_ms.p50:.0f} ms, p95 {lat.latency_ms.p95:.0f} ms\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
