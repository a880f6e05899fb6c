"""A reranker trained elsewhere (``benchmarks/gpu_reranker.py``), installed and gated per index,
then SciFact and Cranfield test nDCG@10 for hybrid and hybrid+rerank, and rerank latency:

    python -m benchmarks.reranker_quality --model .devcarry/models/ce-minilm6-20261204 \\
        [--data-dir .citewell-bench] [--latency-only]

Gate judgements: SciFact's train holdout (162 queries, seed 13; the model never trained on
them). Cranfield has test judgements only, so its gate uses a 20 % holdout of them (45
queries, seed 13) and its test rows report the other 180 queries; the holdout and the rest are
written as `dev` and `test` qrels of a BEIR folder beside the real corpus (the same corpus, so
the same index). Rows: ``hybrid+rerank`` is what serving does (the gate's decision);
``rerank ungated`` forces the model on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import SHARED_DATA, cpu_line
from benchmarks.inference import bench_reranker, load_corpus, load_queries
from citewell.cli.evaluate import format_table
from citewell.core.logging import configure_logging
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir, load_qrels, split_holdout
from citewell.evaluation.reranker_gate import holdout_judgements
from citewell.evaluation.retrieval_eval import evaluate_retrieval
from citewell.retrieval.factory import model_export_dir, model_threads
from citewell.retrieval.rerank import CrossEncoderReranker
from citewell.retrieval.service import ServingIndex
from citewell.training.reranker import install_reranker

GATE_FRACTION = 0.2
SEED = 13


def cranfield_split(source: Path, root: Path) -> Path:
    """``root/cranfield/beir`` with the real corpus and queries and the test qrels split into
    ``dev`` (the gate's holdout) and ``test`` (the rest)."""
    target = root / "cranfield" / "beir"
    (target / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (target / name).symlink_to((source / name).resolve())
    qrels = load_qrels(source / "qrels" / "test.tsv")
    rest, holdout = split_holdout(qrels, GATE_FRACTION, SEED)
    for split, ids in (("dev", holdout), ("test", rest)):
        rows = [f"{q}\t{doc}\t{grade}" for q in ids for doc, grade in qrels[q].items()]
        (target / "qrels" / f"{split}.tsv").write_text(
            "\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n", encoding="utf-8"
        )
    return target


def quality(settings: Settings, dataset: Path, model: Path, gate_split: str) -> None:
    report = evaluate_retrieval(settings, dataset, "test", ["hybrid"], progress=True)
    if gate_split == "dev":
        dev = load_beir(dataset, "dev")
        holdout = (list(dev.queries), {k: dict(v) for k, v in dev.qrels.items()})
        judgements = f"{dev.name} dev ({len(dev.queries)} queries)"
    else:
        queries, qrels = holdout_judgements(dataset, GATE_FRACTION, SEED, part="gate")
        holdout = (list(queries), {k: dict(v) for k, v in qrels.items()})
        judgements = f"{report.dataset} train holdout, gate half ({len(queries)} queries)"
    _, decision = install_reranker(settings, report.index, model, holdout, judgements=judgements)
    sys.stdout.write(f"\ngate on {judgements}: {decision.reason if decision else 'not run'}\n")
    served = evaluate_retrieval(settings, dataset, "test", ["hybrid+rerank"], progress=True)
    reranker = CrossEncoderReranker(
        str(model), backend=settings.reranker_backend, max_length=settings.reranker_max_length
    )
    ungated = evaluate_retrieval(
        settings,
        dataset,
        "test",
        ["hybrid+rerank"],
        opener=lambda index: ServingIndex(settings, index, reranker=reranker),
    )
    modes = dict(report.modes)
    skipped = dict(served.skipped)
    modes.update(served.modes)
    modes["rerank ungated"] = ungated.modes["hybrid+rerank"]
    table = report.model_copy(update={"modes": modes, "skipped": skipped})
    sys.stdout.write(format_table(table) + "\n")


def latency(settings: Settings, model: Path, backends: list[str], queries: int) -> None:
    """p50/p95 of one rerank call (the model alone) over SciFact abstracts, per backend, pair
    length and candidate count."""
    docs = load_corpus(1000)
    texts = load_queries(queries)
    sys.stdout.write(
        "\n| backend | tokens | rerank 20 p50 / p95 ms | rerank 50 p50 / p95 ms |\n"
        "|---|---|---|---|\n"
    )
    for backend in backends:
        for length in (256, 128):
            reranker = CrossEncoderReranker(
                str(model),
                backend=backend,
                max_length=length,
                threads=model_threads(settings),
                export_dir=model_export_dir(settings),
            )
            timed = bench_reranker(reranker, docs, texts, (20, 50))
            cells = [
                f"{timed[f'rerank{n}_p50']:.0f} / {timed[f'rerank{n}_p95']:.0f}" for n in (20, 50)
            ]
            sys.stdout.write(f"| {backend} | {length} | {cells[0]} | {cells[1]} |\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="trained model folder")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--data-dir", type=Path, default=Path(".citewell-bench"))
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument(
        "--collections",
        nargs="+",
        choices=["scifact", "cranfield"],
        default=["scifact", "cranfield"],
    )
    parser.add_argument("--backends", nargs="+", default=["torch", "openvino-int8"])
    parser.add_argument("--queries", type=int, default=30, help="timed rerank calls")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    sys.stdout.write(cpu_line() + "\n")
    settings = Settings(data_dir=args.data_dir)
    if not args.latency_only:
        ir = args.data_root / "ir"
        if "scifact" in args.collections:
            quality(settings, ir / "scifact", args.model, "train-holdout")
        if "cranfield" in args.collections:
            with tempfile.TemporaryDirectory() as tmp:
                split = cranfield_split(ir / "cranfield" / "beir", Path(tmp))
                quality(settings, split, args.model, "dev")
    latency(settings, args.model, args.backends, args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
