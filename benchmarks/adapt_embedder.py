"""Embedder adaptation on SciFact: per-mode nDCG@10 on the test split with the bundled MiniLM
and with MiniLM adapted by ``citewell embedder train`` on SciFact *train*, each with the fusion
chosen for its index on the train holdout.

    .venv/bin/python -m benchmarks.adapt_embedder [--data-dir .citewell-bench] [--train]
        [--model DIR] [--epochs 2] [--hard-negatives 0] [--time-budget S]

The adapted model is the newest ``<data-dir>/models/embedder-scifact-*`` folder unless
``--model`` names one or ``--train`` asks for a new one. Building the adapted index embeds the
corpus once (~7 min on 2 cores with torch); re-runs reuse it. Test judgements are only scored,
never used to train or choose anything.
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
from citewell.evaluation.fusion_tuning import tune_fusion
from citewell.evaluation.reranker_gate import holdout_judgements
from citewell.evaluation.retrieval_eval import evaluate_retrieval

SCIFACT = SHARED_DATA / "ir" / "scifact"
MODES = ["bm25", "dense", "hybrid"]


def _newest_model(data_dir: Path) -> Path | None:
    models = sorted((data_dir / "models").glob("embedder-scifact-*"))
    return models[-1] if models else None


def _evaluate(settings: Settings, label: str) -> str:
    """Print the per-mode table for ``settings``' embedder; return the evaluation index."""
    report = evaluate_retrieval(settings, SCIFACT, "test", MODES, progress=True)
    queries, qrels = holdout_judgements(SCIFACT)
    tuned = tune_fusion(settings, report.index, queries, qrels, judgements="scifact train holdout")
    sys.stdout.write(f"\n## {label}\nfusion on the train holdout: {tuned.reason}\n")
    # Re-run hybrid so the table shows the fusion serving now applies.
    hybrid = evaluate_retrieval(settings, SCIFACT, "test", ["hybrid"])
    modes = dict(report.modes) | {"hybrid": hybrid.modes["hybrid"]}
    final = report.model_copy(update={"modes": modes, "fusion": hybrid.fusion})
    sys.stdout.write(format_table(final) + "\n")
    return report.index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".citewell-bench"))
    parser.add_argument("--train", action="store_true", help="train a new adapted model")
    parser.add_argument("--model", type=Path, help="an adapted model folder to evaluate")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hard-negatives", type=int, default=0)
    parser.add_argument("--time-budget", type=float)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    settings = Settings(data_dir=args.data_dir)
    sys.stdout.write(f"load average {os.getloadavg()[0]:.1f}\n")
    base_index = _evaluate(settings, "bundled all-MiniLM-L6-v2")

    model = args.model or (None if args.train else _newest_model(args.data_dir))
    if model is None:
        from citewell.training.embedder import train_embedder

        trained = train_embedder(
            settings,
            base_index,
            SCIFACT,
            epochs=args.epochs,
            hard_negatives=args.hard_negatives,
            time_budget_s=args.time_budget,
        )
        card = trained.card
        report_trained(
            trained.model_dir, card, "of dense rescoring, base → adapted", card.base_ndcg_at_10
        )
        model = trained.model_dir
    _evaluate(settings.model_copy(update={"embedding_model": str(model)}), f"adapted: {model}")
    sys.stdout.write(f"load average {os.getloadavg()[0]:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
