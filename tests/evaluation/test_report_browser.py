"""The HTML report in a real headless browser (Chromium): its plots render and it makes no
request to anywhere (issue 18.8). Every request Chromium makes goes through a recording proxy
started here; the report must cause none beyond what Chromium requests for a blank page (its
own background services, which the flags do not silence entirely)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypedDict

import pytest

from citewell.evaluation.answers_eval import AnswersEvalReport, LatencyStats, QuestionResult
from citewell.evaluation.coverage import CoverageGroup, CoverageReport, DocumentRef, FailedDocument
from citewell.evaluation.models import LatencySummary, ModeMetrics, RetrievalEvalReport
from citewell.evaluation.report import EvaluationBundle, make_bundle, write_report
from tests.browser import chromium_or_skip, run_chromium

pytestmark = pytest.mark.slow
NOW = datetime(2025, 10, 1, tzinfo=UTC)
BAR_BLUE = (0x2F, 0x6D, 0xB5)  # the first series colour of evaluation/report.py


class _Owner(TypedDict):
    index: str
    index_version: str
    principal: str
    clearance: str


# A bundle joins only parts made for one owner and index version.
OWNER = _Owner(index="kb", index_version="v000001", principal="carol", clearance="confidential")


def _question(n: int, *, answerable: bool = True, for_user: bool = True) -> QuestionResult:
    return QuestionResult(
        question=f"question {n}",
        answerable=answerable,
        refused=not (answerable and for_user),
        generated=True,
        cited_expected=True if answerable and for_user else None,
        sentences=2,
        cited_sentences=2,
        citations_judged=2,
        citations_supported=1,
        latency_ms=40.0 + 10 * n,
        retrieved_doc_ids=("faq",),
        cited_doc_ids=("faq",),
        cited_titles=("FAQ",),
        answerable_for_user=for_user,
    )


def _bundle() -> EvaluationBundle:
    answers = AnswersEvalReport(
        **OWNER,
        golden_set="examples/questions.jsonl",
        n_questions=5,
        n_answerable=3,
        n_unanswerable=1,
        n_skipped=0,
        n_not_answerable_for_user=1,
        not_answerable_refused_rate=1.0,
        correct_source_rate=1.0,
        citation_coverage=1.0,
        citation_precision=0.5,
        refusal_rate=1.0,
        false_refusal_rate=0.0,
        judge="keyword",
        judge_threshold=1.0,
        backend="extractive",
        latency_ms=LatencyStats(p50=60, p95=80, mean=60),
        questions=(
            _question(1),
            _question(2),
            _question(3),
            _question(4, answerable=False),
            _question(5, for_user=False),
        ),
        finished_at=NOW,
    )
    metrics = ModeMetrics(
        ndcg_at_10=0.7,
        recall_at_10=0.8,
        recall_at_100=0.95,
        mrr_at_10=0.65,
        latency_ms=LatencySummary(p50=12.0, p95=30.0),
        queries=10,
        recall_curve={1: 0.4, 10: 0.8, 100: 0.95},
    )
    retrieval = RetrievalEvalReport(
        dataset="scifact",
        split="test",
        index=OWNER["index"],
        index_version=OWNER["index_version"],
        documents=100,
        queries=10,
        gain="exponential",
        depth=100,
        modes={"bm25": metrics, "hybrid": metrics},
        index_reused=True,
        finished_at=NOW,
    )
    ref = DocumentRef(doc_id="old", title="Old FAQ", path="old.md", refreshed_at=NOW)
    coverage = CoverageReport(
        **OWNER,
        questions=5,
        stale_days=90,
        documents=3,
        groups=(
            CoverageGroup(
                source="kb",
                classification="public",
                documents=3,
                never_retrieved=(ref,),
                never_cited=(ref,),
                stale=(),
            ),
        ),
        failures=(
            FailedDocument(
                source="kb",
                source_uri="file:///kb/finance/broken.pdf",
                reason="corrupt PDF",
                failed_at=NOW,
            ),
        ),
        generated_at=NOW,
    )
    return make_bundle(
        OWNER["principal"],
        OWNER["clearance"],
        OWNER["index"],
        answers=answers,
        retrieval=retrieval,
        coverage=coverage,
    )


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def _record(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_CONNECT = _record

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    chromium_or_skip()
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_report_renders_its_plots_and_requests_nothing(
    tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    from PIL import Image

    html_path, _ = write_report(_bundle(), tmp_path / "report.html")
    address, seen = proxy
    dom = run_chromium(tmp_path / "profile", address, "--dump-dom", html_path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Parsed by the browser: every chart is an SVG element with drawn shapes.
    assert dom.stdout.count("<svg") >= 5  # answers, latency, metric bars, recall curve, coverage
    assert "<rect" in dom.stdout and "<polyline" in dom.stdout
    assert "not answerable for you" in dom.stdout
    assert "failed parsing" in dom.stdout and "broken.pdf" in dom.stdout
    shot = tmp_path / "report.png"
    done = run_chromium(
        tmp_path / "profile",
        address,
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        html_path.as_uri(),
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = Image.open(shot).convert("RGB")
    blue = sum(1 for p in pixels.getdata() if p == BAR_BLUE)  # type: ignore[attr-defined,misc]
    assert blue > 500, f"charts did not render: {blue} bar-coloured pixels"
    report_hosts = {_host(request) for request in seen}
    seen.clear()
    run_chromium(tmp_path / "profile", address, "--dump-dom", "about:blank")
    browser_hosts = {_host(request) for request in seen}
    assert report_hosts <= browser_hosts, (
        f"the report made requests: {report_hosts - browser_hosts}"
    )


def _host(request: str) -> str:
    target = request.split(" ", 1)[1]
    return target.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def test_the_proxy_would_see_an_external_request(
    tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    """The check above can fail: a page that loads an external image is seen by the proxy."""
    page = tmp_path / "leaky.html"
    page.write_text('<img src="http://cdn.example.com/x.png">', encoding="utf-8")
    address, seen = proxy
    run_chromium(tmp_path / "profile", address, "--dump-dom", page.as_uri())
    assert any("cdn.example.com" in request for request in seen), seen
