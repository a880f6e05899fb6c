"""Retrieval quality per mode on SciFact (test) and Cranfield, through the real ingestion and
serving index (``evaluation.retrieval_eval``), printed as one table.

    .venv/bin/python -m benchmarks.retrieval_quality [--data-root ../shared/data/ir]
        [--data-dir .citewell-bench] [--modes bm25 dense hybrid hybrid+rerank] [--json]
        [--datasets scifact cranfield] [--embedding-model DIR]

``--embedding-model`` evaluates with another embedder (e.g. one adapted to SciFact by
``citewell embedder train``): its own evaluation index, embedded once, and the fusion recorded
for that index by ``citewell eval tune-fusion``, if any.

The first run embeds both corpora (SciFact ~7 min on 2 cores); later runs reuse the evaluation
indexes built under ``--data-dir`` and only run the queries. Reference on this machine kind
(MiniLM-L6, BM25 k1=0.9 b=0.4, RRF k=60), nDCG@10: SciFact 0.666 / 0.645 / 0.697, Cranfield
0.333 / 0.368 / 0.383 (BM25 / dense / hybrid). Cranfield's graded qrels use exponential gain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.common import SHARED_DATA
from citewell.cli.evaluate import format_table, report_json
from citewell.core.logging import configure_logging
from citewell.core.settings import Settings
from citewell.evaluation.models import RETRIEVAL_MODES
from citewell.evaluation.retrieval_eval import evaluate_retrieval

DATASETS: tuple[tuple[str, str, str], ...] = (
    ("scifact", "scifact", "test"),
    ("cranfield", "cranfield/beir", "test"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA / "ir")
    parser.add_argument("--data-dir", type=Path, default=Path(".citewell-bench"))
    parser.add_argument("--datasets", nargs="+", default=[name for name, _, _ in DATASETS])
    parser.add_argument("--modes", nargs="+", default=list(RETRIEVAL_MODES))
    parser.add_argument("--json", action="store_true", help="print every report as JSON")
    parser.add_argument("--embedding-model", help="embedding model id or folder (default: bundled)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    settings = Settings(data_dir=args.data_dir, embedding_model=args.embedding_model)
    if not args.json:
        sys.stdout.write(f"load average {os.getloadavg()[0]:.1f}\n")
    reports = {}
    for name, relative, split in DATASETS:
        if name not in args.datasets:
            continue
        report = evaluate_retrieval(
            settings, args.data_root / relative, split, args.modes, progress=True
        )
        reports[name] = report
        if not args.json:
            sys.stdout.write(format_table(report) + "\n")
    if args.json:
        sys.stdout.write(
            json.dumps({name: report_json(r) for name, r in reports.items()}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
