"""Answer quality of the offline agent, and the refusal-threshold calibration.

python -m benchmarks.answers_docugami docugami [--limit N]
    Ingests ../shared/data/qa/docugami_sec10q/docs (20 SEC 10-Q PDFs, labelled public) through
    the real pipeline, asks every question of qna_data.csv, and prints the share of answers
    citing one of the expected source documents (goal >= 0.85) and the share of answer
    sentences carrying a valid citation (goal >= 0.98).

python -m benchmarks.answers_docugami calibrate-refusal
    Ingests the 87 SQuAD 2.0 paragraphs of squad2_dev_small.json as public documents, scores
    answerable and unanswerable questions, and prints the support-score threshold that
    maximises balanced accuracy (the default in agent/models.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from citewell.agent.calibration import calibrate_threshold
from citewell.agent.factory import build_agent
from citewell.agent.models import AgentConfig
from citewell.core.logging import configure_logging
from citewell.core.models import AccessLabel, Principal
from citewell.core.settings import Settings
from citewell.evaluation.golden_set import load_golden_set, matches_expected
from citewell.evaluation.squad import load_squad
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.service import open_search_service

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa"
# Calibration also reports the threshold that refuses at most this share of answerable
# questions: a false refusal costs a user an answer the knowledge base holds.
FALSE_REFUSAL_BUDGET = 0.1
READER = Principal(name="benchmark", clearance="public", groups=frozenset())


def _settings(data_dir: Path, index: str) -> Settings:
    return Settings(data_dir=data_dir, index=index)


def run_docugami(data_dir: Path, limit: int | None) -> int:
    settings = _settings(data_dir, "docugami")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docugami"
        shutil.copytree(DATA / "docugami_sec10q" / "docs", folder)
        (folder / "citewell.labels.yaml").write_text(
            "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
        )
        t0 = time.perf_counter()
        report = Ingestor(settings).ingest_folder(folder, index="docugami", source_name="docugami")
        print(
            f"ingested {len(report.added) + len(report.unchanged) + len(report.updated)} docs, "
            f"{report.chunks_written} chunks in {time.perf_counter() - t0:.0f}s",
            file=sys.stderr,
        )
    rows = load_golden_set(DATA / "docugami_sec10q" / "qna_data.csv", limit=limit)
    service = open_search_service(settings)
    try:
        agent = build_agent(settings, service, service.embedder)
        cited_expected = refused = sentences = cited_sentences = 0
        supports: list[float] = []
        started = time.perf_counter()
        for row in rows:
            answer = agent.answer(READER, row.question)
            if any(matches_expected(row, c.source_uri, c.title) for c in answer.citations):
                cited_expected += 1
            refused += answer.refused
            supports.append(answer.support_score or 0.0)
            n_sent = (
                len([s for s in answer.answer.splitlines() if s.strip()])
                if (answer.generated and not answer.refused)
                else 0
            )
            sentences += n_sent
            cited_sentences += n_sent - len(answer.unsupported_sentences)
        took = time.perf_counter() - started
    finally:
        service.close()
    result = {
        "questions": len(rows),
        "share_citing_expected_doc": round(cited_expected / len(rows), 4),
        "share_sentences_with_valid_citation": round(cited_sentences / max(sentences, 1), 4),
        "refused": refused,
        "seconds_per_question": round(took / len(rows), 3),
        "support_quantiles": _quantiles(supports),
    }
    print(json.dumps(result, indent=2))
    return 0


def run_calibration(data_dir: Path) -> int:
    settings = _settings(data_dir, "squad2")
    subset = load_squad(
        DATA / "squad2_dev_small.json",
        AccessLabel(classification="public", groups=frozenset({"everyone"})),
    )
    docs = list(subset.documents)
    # Even-numbered questions calibrate; the odd-numbered half is held out for
    # `python -m benchmarks.answers_eval squad` (refusal accuracy).
    questions = [(q.question, q.answerable) for i, q in enumerate(subset.questions) if i % 2 == 0]
    Ingestor(settings).ingest_texts(docs, index="squad2", source_name="squad2")
    service = open_search_service(settings)
    try:
        # Threshold 0 and one retrieval: the raw support (similarity) score of every question;
        # the answerability check that replaced this rule: benchmarks.answerability.
        agent = build_agent(
            settings,
            service,
            service.embedder,
            config=AgentConfig.from_settings(
                settings, refusal_threshold=0.0, max_retrievals=1, generation_enabled=False
            ),
        )
        answerable: list[float] = []
        unanswerable: list[float] = []
        for question, possible in questions:
            score = agent.answer(READER, question).support_score or 0.0
            (answerable if possible else unanswerable).append(score)
    finally:
        service.close()
    report = {
        "balanced_accuracy": calibrate_threshold(answerable, unanswerable).model_dump(),
        f"max_false_refusal_{FALSE_REFUSAL_BUDGET}": calibrate_threshold(
            answerable, unanswerable, max_false_refusal=FALSE_REFUSAL_BUDGET
        ).model_dump(),
        "support_quantiles": {
            "answerable": _quantiles(answerable),
            "unanswerable": _quantiles(unanswerable),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        f"p{q}": round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 4)
        for q in (10, 25, 50, 75, 90)
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=["docugami", "calibrate-refusal"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the index here (default: a temporary directory)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        if args.task == "docugami":
            return run_docugami(data_dir, args.limit)
        return run_calibration(data_dir)


if __name__ == "__main__":
    sys.exit(main())
