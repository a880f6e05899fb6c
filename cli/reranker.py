"""``citewell reranker train|gate``: train the index's cross-encoder; decide whether to use it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from citewell.cli.arguments import (
    MIN_GAIN,
    SEED,
    TIME_BUDGET_S,
    ExistingPath,
    IntRange,
    OutputPath,
)
from citewell.cli.common import add_index_options, load_settings, print_json, reporting_errors
from citewell.core.errors import EvaluationError
from citewell.core.settings import Settings
from citewell.evaluation.beir import HoldoutPart, load_beir
from citewell.evaluation.models import BeirQuery


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("reranker", help="train and gate the index's reranker")
    actions = parser.add_subparsers(dest="reranker_action", required=True, metavar="ACTION")

    train = actions.add_parser(
        "train",
        help="train a cross-encoder on a BEIR folder's train split and install it",
        description=(
            "Train on the train qrels (minus a validation holdout), corpus pseudo-queries and "
            "other non-evaluation judged sets; install as <index>/rerankers/current; run the gate."
        ),
    )
    add_dataset_option(train)
    train.add_argument(
        "--layers", type=IntRange(1, 48), default=2, help="student depth (default: 2 of 6)"
    )
    train.add_argument("--epochs", type=EPOCHS, default=3)
    train.add_argument("--batch-size", type=BATCH_SIZE, default=8, help="groups per step")
    train.add_argument("--max-length", type=MAX_LENGTH, default=160, help="tokens per pair")
    train.add_argument("--max-pseudo", type=MAX_PSEUDO, default=3000, help="corpus pseudo-queries")
    train.add_argument(
        "--max-groups", type=IntRange(1, 10_000_000), help="cap on training groups (CPU budget)"
    )
    train.add_argument("--time-budget", type=TIME_BUDGET_S, help="stop training after N seconds")
    train.add_argument("--loss", choices=["listwise", "bce"], default="listwise")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument("--seed", type=SEED, default=13)
    train.add_argument(
        "--external-data",
        type=ExistingPath("dir"),
        help="folder with qa/squad2_dev_small.json and qa/rgb/en_fact.json (extra pairs)",
    )
    add_index_options(train)
    train.add_argument("--json", action="store_true", help="print the model card as JSON")
    train.set_defaults(func=reporting_errors(run_train))

    data = actions.add_parser(
        "data",
        help="write a portable training-data file for training on another machine",
        description=(
            "Mine training groups from each --dataset's evaluation index (train judgements minus "
            "the validation holdout, corpus pseudo-queries, hard negatives from our retrievers) "
            "into one file that `python -m citewell.training.cross_encoder` trains on where "
            "only torch, transformers, sentence-transformers and pydantic are installed."
        ),
    )
    data.add_argument(
        "--dataset",
        required=True,
        action="append",
        type=ExistingPath("dir"),
        help="BEIR folder whose corpus is indexed (repeat for several)",
    )
    data.add_argument("--out", required=True, type=OutputPath(), help="file to write (.json.xz)")
    data.add_argument("--negatives", type=IntRange(1, 64), default=7, help="per group")
    data.add_argument("--max-pseudo", type=MAX_PSEUDO, default=20000, help="per corpus")
    data.add_argument(
        "--pseudo-per-document", type=IntRange(1, 3), default=3, help="pseudo-queries per document"
    )
    data.add_argument("--seed", type=SEED, default=13)
    data.add_argument(
        "--data-dir",
        type=OutputPath(directory=True),
        help="data directory (default: CITEWELL_DATA_DIR)",
    )
    data.set_defaults(func=reporting_errors(run_data))

    install = actions.add_parser(
        "install",
        help="install a model folder trained elsewhere as the index's reranker, then gate it",
    )
    install.add_argument("model", type=ExistingPath("dir"), help="trained model folder")
    add_dataset_option(install)
    add_validation_options(install)
    add_index_options(install)
    install.add_argument("--json", action="store_true")
    install.set_defaults(func=reporting_errors(run_install))

    gate = actions.add_parser(
        "gate",
        help="compare hybrid with hybrid+rerank on validation judgements and record the decision",
    )
    add_dataset_option(gate)
    add_validation_options(gate)
    add_index_options(gate)
    gate.add_argument("--json", action="store_true")
    gate.set_defaults(func=reporting_errors(run_gate))


EPOCHS = IntRange(1, 1000)
BATCH_SIZE = IntRange(1, 65_536)
MAX_LENGTH = IntRange(8, 8192)  # tokens per training text
MAX_PSEUDO = IntRange(0, 10_000_000)


def add_dataset_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        type=ExistingPath("dir"),
        help="BEIR folder (corpus, queries, qrels/)",
    )


def index_for_dataset(args: argparse.Namespace, settings: Settings) -> str:
    """--index, else the evaluation index ``citewell eval retrieval`` built for this corpus."""
    from citewell.training.reranker import dataset_index

    if args.index:
        return str(args.index)
    return dataset_index(settings, args.dataset)


def add_validation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        choices=["dev", "train-holdout"],
        default="train-holdout",
        help="dev qrels, or the holdout training carved out of train (default)",
    )
    parser.add_argument("--min-gain", type=MIN_GAIN, default=0.005, help="nDCG@10 margin required")
    parser.add_argument("--seed", type=SEED, default=13, help="holdout seed (as in training)")


def validation_judgements(
    args: argparse.Namespace, part: HoldoutPart = "all"
) -> tuple[Sequence[BeirQuery], dict[str, Mapping[str, int]], str]:
    """Queries, qrels and a description of the validation judgements --split names; never the
    test split, which evaluation reports on. ``part``: the train holdout's half to use (the
    reranker gate: ``gate``, the half training did not pick its checkpoint on)."""
    from citewell.evaluation.reranker_gate import holdout_judgements

    if args.split == "dev":
        dataset = load_beir(args.dataset, "dev")
        return (
            dataset.queries,
            dict(dataset.qrels),
            f"{dataset.name} dev ({len(dataset.queries)} queries)",
        )
    queries, qrels = holdout_judgements(args.dataset, seed=args.seed, part=part)
    which = "train holdout" if part == "all" else f"train holdout, {part} half"
    return queries, qrels, f"{args.dataset.name} {which} ({len(queries)} queries, seed {args.seed})"


def run_train(args: argparse.Namespace) -> int:
    from citewell.training.reranker import train_reranker

    settings = load_settings(args)
    trained = train_reranker(
        settings,
        index_for_dataset(args, settings),
        args.dataset,
        layers=args.layers,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_pseudo=args.max_pseudo,
        max_groups=args.max_groups,
        time_budget_s=args.time_budget,
        loss=args.loss,
        device=args.device,
        seed=args.seed,
        external_dir=args.external_data,
    )
    if args.json:
        print_json(trained.card)
        return 0
    card = trained.card
    sys.stdout.write(
        f"model: {trained.model_dir}\n"
        f"data: {card.data}\n"
        f"validation nDCG@10: hybrid {card.hybrid_ndcg_at_10:.4f}, "
        f"reranked {card.best_ndcg_at_10:.4f}\n"
    )
    if card.gate is not None:
        state = "enabled" if card.gate.enabled else "disabled"
        sys.stdout.write(f"gate: {state} ({card.gate.reason})\n")
    return 0


def run_data(args: argparse.Namespace) -> int:
    from citewell.training.reranker import export_training_data

    settings = load_settings(args)
    data = export_training_data(
        settings,
        args.dataset,
        args.out,
        negatives=args.negatives,
        max_pseudo=args.max_pseudo,
        pseudo_per_document=args.pseudo_per_document,
        seed=args.seed,
    )
    sys.stdout.write(
        f"wrote {args.out}: {len(data.groups)} groups {data.counts}, "
        f"{data.validation_queries} validation queries\n"
    )
    return 0


def run_install(args: argparse.Namespace) -> int:
    from citewell.training.reranker import install_reranker

    settings = load_settings(args)
    queries, qrels, judgements = validation_judgements(args, "gate")
    target, decision = install_reranker(
        settings,
        index_for_dataset(args, settings),
        args.model,
        (queries, {k: dict(v) for k, v in qrels.items()}),
        judgements=judgements,
        min_gain=args.min_gain,
    )
    if args.json:
        print_json(decision)
    elif decision is not None:
        state = "enabled" if decision.enabled else "disabled"
        sys.stdout.write(f"installed {target}\nreranker {decision.model}: {state}\n")
        sys.stdout.write(f"{decision.reason}\n")
    return 0


def run_gate(args: argparse.Namespace) -> int:
    from citewell.evaluation.reranker_gate import decide_gate
    from citewell.retrieval.factory import resolve_index_reranker
    from citewell.retrieval.index import IndexLayout

    settings = load_settings(args)
    index = index_for_dataset(args, settings)
    layout = IndexLayout(settings, index)
    # Resolved exactly as serving resolves it, so the decision's model name matches.
    reranker, note = resolve_index_reranker(settings, layout.rerankers_dir)
    if reranker is None:
        raise EvaluationError(note)
    queries, qrels, judgements = validation_judgements(args, "gate")
    decision = decide_gate(
        settings, index, reranker, queries, qrels, min_gain=args.min_gain, judgements=judgements
    )
    if args.json:
        print_json(decision)
    else:
        state = "enabled" if decision.enabled else "disabled"
        sys.stdout.write(f"reranker {decision.model}: {state}\n{decision.reason}\n")
    return 0
