"""``citewell eval tune-fusion``: choose an index's fusion on validation judgements."""

from __future__ import annotations

import argparse
import sys

from citewell.cli.common import add_index_options, load_settings, print_json, reporting_errors
from citewell.cli.reranker import (
    add_dataset_option,
    add_validation_options,
    index_for_dataset,
    validation_judgements,
)


def register(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "tune-fusion",
        help="pick RRF or a weighted fusion for an index on validation judgements and record it",
        description=(
            "Score hybrid search with RRF and with weighted fusion over a grid of dense weights "
            "on validation judgements (never the test split); record the winner in "
            "<index>/fusion.json, which serving applies unless CITEWELL_USE_TUNED_FUSION=false. "
            "The settings' fusion is kept unless another beats it by --min-gain."
        ),
    )
    add_dataset_option(parser)
    add_validation_options(parser)
    add_index_options(parser)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=reporting_errors(run_tune_fusion))


def run_tune_fusion(args: argparse.Namespace) -> int:
    from citewell.evaluation.fusion_tuning import tune_fusion

    settings = load_settings(args)
    queries, qrels, judgements = validation_judgements(args)
    tuned = tune_fusion(
        settings,
        index_for_dataset(args, settings),
        queries,
        qrels,
        judgements=judgements,
        min_gain=args.min_gain,
    )
    if args.json:
        print_json(tuned)
        return 0
    lines = [f"{name:<22} {score:.4f}" for name, score in tuned.candidates.items()]
    sys.stdout.write(
        "\n".join([f"nDCG@10 on {tuned.judgements}:", *lines, f"fusion: {tuned.reason}"]) + "\n"
    )
    return 0
