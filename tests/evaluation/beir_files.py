"""Writes small BEIR folders for tests (never copies of the shared data into the repo)."""

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from citewell.core.settings import Settings


def write_beir(
    root: Path,
    docs: Sequence[Mapping[str, object]],
    queries: Sequence[Mapping[str, object]],
    qrels: str,
    gz: bool = False,
    split: str = "test",
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(doc) + "\n" for doc in docs)
    if gz:
        with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.write(body)
    else:
        (root / "corpus.jsonl").write_text(body, encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8"
    )
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return root


def write_slice(source: Path, dest: Path, n_queries: int, n_docs: int, split: str = "test") -> Path:
    """A small BEIR folder from a real one: the first ``n_queries`` judged queries, every
    document they judge, and the corpus's first documents as distractors up to ``n_docs``."""
    from citewell.evaluation.beir import load_beir

    dataset = load_beir(source, split)
    queries = dataset.queries[:n_queries]
    judged = {doc for q in queries for doc in dataset.qrels[q.query_id]}
    keep = [d for d in dataset.corpus if d.doc_id in judged]
    for doc in dataset.corpus:
        if len(keep) >= n_docs:
            break
        if doc.doc_id not in judged:
            keep.append(doc)
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q.query_id}\t{doc}\t{grade}\n"
        for q in queries
        for doc, grade in dataset.qrels[q.query_id].items()
    )
    return write_beir(
        dest,
        [{"_id": d.doc_id, "title": d.title, "text": d.text} for d in keep],
        [{"_id": q.query_id, "text": q.text} for q in queries],
        qrels,
        split=split,
    )


def tiny_train_index(root: Path, shared_data: Path) -> tuple[Settings, str, Path]:
    """A 20-query, 60-document SciFact train slice (of ``shared_data``, the fixture: it skips
    where the data is absent) ingested as an evaluation index (bm25 run only, to build it)."""
    from citewell.evaluation.retrieval_eval import evaluate_retrieval

    dataset = write_slice(
        shared_data / "ir" / "scifact", root / "scifact", n_queries=20, n_docs=60, split="train"
    )
    settings = Settings(data_dir=root / "data")
    report = evaluate_retrieval(settings, dataset, "train", ["bm25"])
    return settings, report.index, dataset
