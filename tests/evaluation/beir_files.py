"""Writes small BEIR folders for tests (never copies of the shared data into the repo)."""

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path


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
