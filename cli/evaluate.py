"""``citewell eval <kind>``: evaluation commands. ``eval retrieval`` scores every search mode on
a BEIR-format collection; further kinds (e.g. ``answers``) register beside it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.common import add_index_options, fail, load_settings, print_json
from core.errors import CitewellError
from evaluation.models import RETRIEVAL_MODES, RetrievalEvalReport
from evaluation.retrieval_eval import evaluate_retrieval


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("eval", help="evaluate retrieval quality (and more)")
    kinds = parser.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    register_retrieval(kinds)


def register_retrieval(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "retrieval",
        help="nDCG@10, recall@10/100, MRR@10 and latency per mode on a BEIR folder",
        description=(
            "Ingest a BEIR-format corpus into a throwaway index (reused on re-runs) and evaluate "
            "every retrieval mode on one qrels split."
        ),
    )
    parser.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="folder with corpus.jsonl[.gz], queries.jsonl and qrels/<split>.tsv",
    )
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument(
        "--modes",
        nargs="+",
        metavar="MODE",
        help=f"space- or comma-separated (default: all of {', '.join(RETRIEVAL_MODES)})",
    )
    parser.add_argument(
        "--gain",
        choices=["exponential", "linear"],
        default="exponential",
        help="nDCG gain for graded qrels: 2^rel-1 (default) or rel (trec_eval); same when binary",
    )
    add_index_options(parser)  # --index names the evaluation index (default: derived)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_retrieval)


def _modes(raw: list[str] | None) -> list[str] | None:
    if not raw:
        return None
    return [mode.strip() for item in raw for mode in item.split(",") if mode.strip()]


def report_json(report: RetrievalEvalReport) -> dict[str, Any]:
    """The JSON contract: ``{"modes": {mode: {"ndcg@10", "recall@10", "recall@100", "mrr@10",
    "latency_ms": {"p50", "p95"}}}}`` plus the run's context (dataset, index, skipped modes)."""
    payload: dict[str, Any] = report.model_dump(mode="json", by_alias=True)
    return payload


def format_table(report: RetrievalEvalReport) -> str:
    header = (
        f"{'mode':<14}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>9}{'p95 ms':>9}"
    )
    reused = " (reused)" if report.index_reused else ""
    lines = [
        f"{report.dataset} ({report.split}): {report.queries} queries, "
        f"{report.documents} documents, index {report.index}{reused}, {report.gain} gain",
        header,
        "-" * len(header),
    ]
    for mode, metrics in report.modes.items():
        lines.append(
            f"{mode:<14}{metrics.ndcg_at_10:>9.3f}{metrics.recall_at_10:>8.3f}"
            f"{metrics.recall_at_100:>8.3f}{metrics.mrr_at_10:>8.3f}"
            f"{metrics.latency_ms.p50:>9.1f}{metrics.latency_ms.p95:>9.1f}"
        )
    for mode, reason in report.skipped.items():
        lines.append(f"{mode:<14}skipped: {reason}")
    return "\n".join(lines) + "\n"


def run_retrieval(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
        report = evaluate_retrieval(
            settings,
            args.dataset,
            args.split,
            _modes(args.modes),
            index_name=args.index,
            progress=not args.json,
            gain=args.gain,
        )
    except CitewellError as exc:
        return fail(str(exc))
    if args.json:
        print_json(report_json(report))
    else:
        sys.stdout.write(format_table(report))
    return 0
