"""One self-contained HTML report (inline SVG charts, inline CSS, no scripts or external assets)
plus its JSON, for knowledge-base owners who do not use a terminal.

The report shows only what its parts contain; the parts are computed under the owner's principal
(answers ran as that principal, coverage is filtered by its scope). :func:`render_html` refuses
parts made for a different principal, so a report never mixes in another owner's view.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from citewell.core.errors import EvaluationError
from citewell.core.models import Frozen
from citewell.evaluation.answers_eval import AnswersEvalReport
from citewell.evaluation.coverage import CoverageReport, DocumentRef
from citewell.evaluation.models import RetrievalEvalReport

_PALETTE = ("#2f6db5", "#e0803a", "#3a9a5b", "#b5443b", "#7b5ea7", "#8c6d3f")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d232b;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccd;
padding-bottom:.2rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ccd;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555}.note{color:#6a4b00;background:#fff6df;padding:.3rem .6rem;border-radius:4px}
.bad{color:#b5443b;font-weight:600}.good{color:#2f7a45}svg{margin:.5rem 0}
details{margin:.4rem 0}pre{background:#f5f6f8;padding:.8rem;overflow:auto;font-size:.8rem}
"""


class EvaluationBundle(Frozen):
    """Everything one report shows, for one principal."""

    principal: str
    clearance: str
    index: str
    answers: AnswersEvalReport | None = None
    retrieval: RetrievalEvalReport | None = None
    coverage: CoverageReport | None = None
    generated_at: datetime


def make_bundle(
    principal: str,
    clearance: str,
    index: str,
    *,
    answers: AnswersEvalReport | None = None,
    retrieval: RetrievalEvalReport | None = None,
    coverage: CoverageReport | None = None,
) -> EvaluationBundle:
    """A bundle whose answers and coverage were all made for ``principal`` on ``index``
    (raises otherwise; retrieval is scored on its own evaluation index)."""
    for part in (answers, coverage):
        if part is not None and (part.principal, part.clearance) != (principal, clearance):
            raise EvaluationError(
                f"a report for {principal!r} cannot include a part evaluated as {part.principal!r}"
            )
        if part is not None and part.index != index:
            raise EvaluationError(
                f"a report on index {index!r} cannot include a part evaluated on {part.index!r}"
            )
    return EvaluationBundle(
        principal=principal,
        clearance=clearance,
        index=index,
        answers=answers,
        retrieval=retrieval,
        coverage=coverage,
        generated_at=datetime.now(UTC),
    )


def bundle_json(bundle: EvaluationBundle) -> dict[str, Any]:
    payload: dict[str, Any] = bundle.model_dump(mode="json", by_alias=True)
    return payload


# --- SVG charts ------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def bar_chart(
    title: str, categories: Sequence[str], series: dict[str, Sequence[float]], max_value: float = 1
) -> str:
    """Grouped vertical bars: one group per category, one bar per series."""
    width, height, left, bottom, top = 720, 260, 48, 40, 28
    plot_w, plot_h = width - left - 150, height - bottom - top
    top_value = max([max_value, *(v for vs in series.values() for v in vs)]) or 1.0
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    parts = [_svg_open(width, height, title), _axis_y(left, top, plot_w, plot_h, top_value)]
    for i, category in enumerate(categories):
        x0 = left + i * group_w + group_w * 0.1
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            h = plot_h * value / top_value
            x = x0 + j * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{h:.1f}" fill="{_PALETTE[j % len(_PALETTE)]}">'
                f"<title>{escape(name)} {escape(category)}: {_fmt(value)}</title></rect>"
            )
        parts.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - bottom + 16}" font-size="11" '
            f'text-anchor="middle">{escape(category)}</text>'
        )
    parts.append(_legend(list(series), left + plot_w + 12, top))
    return "".join(parts) + "</svg>"


def line_chart(title: str, xs: Sequence[float], series: dict[str, Sequence[float]]) -> str:
    """Lines over a log-scaled x axis (recall@k for k = 10, 100, ...)."""
    width, height, left, bottom, top = 720, 260, 48, 40, 28
    plot_w, plot_h = width - left - 150, height - bottom - top
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    span = (hi - lo) or 1.0

    def px(x: float) -> float:
        return left + plot_w * (math.log10(x) - lo) / span

    parts = [_svg_open(width, height, title), _axis_y(left, top, plot_w, plot_h, 1.0)]
    for x in xs:
        parts.append(
            f'<text x="{px(x):.1f}" y="{height - bottom + 16}" font-size="11" '
            f'text-anchor="middle">k={_fmt(x)}</text>'
        )
    for j, (name, values) in enumerate(series.items()):
        colour = _PALETTE[j % len(_PALETTE)]
        points = " ".join(
            f"{px(x):.1f},{top + plot_h * (1 - v):.1f}" for x, v in zip(xs, values, strict=True)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for x, v in zip(xs, values, strict=True):
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{top + plot_h * (1 - v):.1f}" r="3" '
                f'fill="{colour}"><title>{escape(name)} recall@{_fmt(x)}: {v:.3f}</title></circle>'
            )
    parts.append(_legend(list(series), left + plot_w + 12, top))
    return "".join(parts) + "</svg>"


def histogram(title: str, values: Sequence[float], bins: int = 12, unit: str = "ms") -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    step = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    labels = [f"{_fmt(lo + i * step)}" for i in range(bins)]
    return bar_chart(
        title, labels, {f"questions per {unit} bin": [float(c) for c in counts]}, max_value=1
    )


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><text x="8" y="16" font-size="13" '
        f'font-weight="600">{escape(title)}</text>'
    )


def _axis_y(left: int, top: int, plot_w: float, plot_h: float, top_value: float) -> str:
    parts = []
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h * (1 - i / 4)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#dde"/><text x="{left - 6}" y="{y + 4:.1f}" font-size="10" '
            f'text-anchor="end">{_fmt(value)}</text>'
        )
    return "".join(parts)


def _legend(names: Sequence[str], x: float, y: float) -> str:
    return "".join(
        f'<rect x="{x:.1f}" y="{y + i * 18:.1f}" width="10" height="10" '
        f'fill="{_PALETTE[i % len(_PALETTE)]}"/><text x="{x + 15:.1f}" y="{y + i * 18 + 9:.1f}" '
        f'font-size="11">{escape(name)}</text>'
        for i, name in enumerate(names)
    )


# --- HTML sections ---------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(_cell(c))}</td>'
            if isinstance(c, int | float)
            else f"<td>{escape(_cell(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _answers_section(report: AnswersEvalReport) -> str:
    m = report
    summary = _table(
        ["metric", "value", "what it means"],
        [
            ["correct source rate", _pct(m.correct_source_rate), "answers citing an expected doc"],
            ["citation coverage", _pct(m.citation_coverage), "answer sentences with a citation"],
            ["citation precision", _pct(m.citation_precision), "citations that support the text"],
            ["refusal rate", _pct(m.refusal_rate), "unanswerable questions refused"],
            ["false refusal rate", _pct(m.false_refusal_rate), "answerable questions refused"],
            *(
                [
                    [
                        "not answerable for you",
                        f"{m.n_not_answerable_for_user} questions, "
                        f"{_pct(m.not_answerable_refused_rate)} refused",
                        "no expected document is visible to you; never answered from others' "
                        "documents, so not counted as false refusals",
                    ]
                ]
                if m.n_not_answerable_for_user
                else []
            ),
            ["latency p50 / p95", f"{m.latency_ms.p50:.0f} / {m.latency_ms.p95:.0f} ms", ""],
        ],
    )
    chart = bar_chart(
        "Answer quality",
        ["correct source", "cit. coverage", "cit. precision", "refusal", "false refusal"],
        {
            "share": [
                m.correct_source_rate or 0.0,
                m.citation_coverage or 0.0,
                m.citation_precision or 0.0,
                m.refusal_rate or 0.0,
                m.false_refusal_rate or 0.0,
            ]
        },
    )
    rows = [
        [
            q.question,
            _kind(q.answerable, q.answerable_for_user),
            "refused" if q.refused else ("sources only" if not q.generated else "answered"),
            "n/a" if q.cited_expected is None else ("yes" if q.cited_expected else "NO"),
            f"{q.cited_sentences}/{q.sentences}",
            f"{q.citations_supported}/{q.citations_judged}",
            "; ".join(q.cited_titles),
            round(q.latency_ms),
        ]
        for q in report.questions
    ]
    per_question = _table(
        [
            "question",
            "kind",
            "outcome",
            "cites expected",
            "cited sentences",
            "supported citations",
            "cited documents",
            "ms",
        ],
        rows,
    )
    not_for_user = (
        f", {report.n_not_answerable_for_user} not answerable for this owner"
        if report.n_not_answerable_for_user
        else ""
    )
    skipped = (
        f"; {report.n_skipped} skipped as above this owner's clearance" if report.n_skipped else ""
    )
    return (
        "<h2>Answers and citations</h2>"
        f'<p class="meta">Golden set {escape(report.golden_set or "(unnamed)")}: '
        f"{report.n_questions} questions ({report.n_answerable} answerable, "
        f"{report.n_unanswerable} unanswerable{not_for_user}){skipped}. "
        f"Backend {escape(report.backend)}. Citation support judged by "
        f"<b>{escape(report.judge)}</b> (threshold {report.judge_threshold:g}).</p>"
        + summary
        + chart
        + histogram("Answer latency (ms)", [q.latency_ms for q in report.questions])
        + f"<details><summary>Every question ({len(rows)})</summary>{per_question}</details>"
    )


def _kind(answerable: bool, answerable_for_user: bool) -> str:
    if not answerable:
        return "unanswerable"
    return "answerable" if answerable_for_user else "not answerable for you"


def _retrieval_section(report: RetrievalEvalReport) -> str:
    modes = list(report.modes)
    rows = [
        [
            mode,
            m.ndcg_at_10,
            m.recall_at_10,
            m.recall_at_100,
            m.mrr_at_10,
            m.latency_ms.p50,
            m.latency_ms.p95,
        ]
        for mode, m in report.modes.items()
    ]
    table = _table(
        ["mode", "nDCG@10", "recall@10", "recall@100", "MRR@10", "p50 ms", "p95 ms"], rows
    )
    bars = bar_chart(
        "Metric per mode",
        ["nDCG@10", "recall@10", "MRR@10"],
        {mode: [m.ndcg_at_10, m.recall_at_10, m.mrr_at_10] for mode, m in report.modes.items()},
    )
    ks = sorted({k for m in report.modes.values() for k in m.recall_curve}) or [10, 100]
    curves = line_chart(
        "Recall@k",
        ks,
        {
            mode: [
                m.recall_curve.get(k, {10: m.recall_at_10, 100: m.recall_at_100}.get(k, 0.0))
                for k in ks
            ]
            for mode, m in report.modes.items()
        },
    )
    skipped = "".join(
        f'<p class="note">{escape(mode)} skipped: {escape(why)}</p>'
        for mode, why in report.skipped.items()
    )
    return (
        "<h2>Retrieval</h2>"
        f'<p class="meta">{escape(report.dataset)} ({escape(report.split)}): {report.queries} '
        f"queries over {report.documents} documents; modes {escape(', '.join(modes))}.</p>"
        + table
        + skipped
        + bars
        + curves
    )


def _doc_list(docs: Sequence[DocumentRef], limit: int = 200) -> str:
    items = "".join(
        f"<li>{escape(d.title)} <span class='meta'>({escape(d.path)})</span></li>"
        for d in docs[:limit]
    )
    more = f"<li>… and {len(docs) - limit} more</li>" if len(docs) > limit else ""
    return f"<ul>{items}{more}</ul>"


def _coverage_section(report: CoverageReport) -> str:
    cells = [f"{g.source} / {g.classification}" for g in report.groups]
    chart = (
        bar_chart(
            "Coverage by source / classification (documents)",
            cells,
            {
                "documents": [float(g.documents) for g in report.groups],
                "never retrieved": [float(len(g.never_retrieved)) for g in report.groups],
                "never cited": [float(len(g.never_cited)) for g in report.groups],
                "stale": [float(len(g.stale)) for g in report.groups],
            },
        )
        if report.groups
        else ""
    )
    rows = [
        [
            g.source,
            g.classification,
            g.documents,
            len(g.never_retrieved),
            len(g.never_cited),
            len(g.stale),
        ]
        for g in report.groups
    ]
    table = _table(
        ["source", "classification", "documents", "never retrieved", "never cited", "stale"], rows
    )
    details = "".join(
        f"<details><summary>{escape(g.source)} / {escape(g.classification)}</summary>"
        + _doc_subsection("Never in the top 10 for any question", g.never_retrieved)
        + _doc_subsection("Never cited", g.never_cited)
        + _doc_subsection(f"Not refreshed for {report.stale_days} days", g.stale)
        + "</details>"
        for g in report.groups
        if g.never_retrieved or g.never_cited or g.stale
    )
    # Only failures this owner may see are in the report; no heading without any.
    failures = (
        "<h3>Documents that failed parsing</h3>"
        + _table(
            ["source", "document", "why it failed", "when"],
            [[f.source, f.source_uri, f.reason, f.failed_at.isoformat()] for f in report.failures],
        )
        if report.failures
        else ""
    )
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in report.notes)
    return (
        "<h2>Corpus coverage</h2>"
        f'<p class="meta">{report.documents} documents visible to this owner, checked against '
        f"{report.questions} evaluation questions.</p>"
        + notes
        + (table + chart if report.groups else "")
        + details
        + failures
    )


def _doc_subsection(title: str, docs: Sequence[DocumentRef]) -> str:
    return f"<h4>{escape(title)}</h4>{_doc_list(docs)}" if docs else ""


def render_html(bundle: EvaluationBundle) -> str:
    """The report as one HTML document; every piece of text is escaped."""
    for part in (bundle.answers, bundle.coverage):
        if part is not None and part.principal != bundle.principal:
            raise EvaluationError("report parts were evaluated for a different principal")
    sections = []
    if bundle.answers is not None:
        sections.append(_answers_section(bundle.answers))
    if bundle.retrieval is not None:
        sections.append(_retrieval_section(bundle.retrieval))
    if bundle.coverage is not None:
        sections.append(_coverage_section(bundle.coverage))
    if not sections:
        sections.append("<p>No evaluation results were given.</p>")
    raw = json.dumps(bundle_json(bundle), indent=2, ensure_ascii=False)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Citewell evaluation: {escape(bundle.index)}</title><style>{_CSS}</style>"
        "</head><body>"
        f"<h1>Knowledge base evaluation: {escape(bundle.index)}</h1>"
        f'<p class="meta">For {escape(bundle.principal)} (clearance '
        f"{escape(bundle.clearance)}); generated {escape(bundle.generated_at.isoformat())}. "
        "Only documents this owner may see are listed or counted.</p>"
        + "".join(sections)
        + f"<h2>Raw results</h2><details><summary>JSON</summary><pre>{escape(raw)}</pre>"
        "</details></body></html>\n"
    )


def write_report(
    bundle: EvaluationBundle, html_path: Path, inputs: Sequence[Path] = ()
) -> tuple[Path, Path]:
    """Write ``html_path`` and the JSON beside it (same name, ``.json``); refuses to write over
    either of them twice or over one of the ``inputs`` the report was made from."""
    json_path = html_path.with_suffix(".json")
    # The .json beside `answers.html` is often the saved `answers.json` the report reads.
    written = {html_path.resolve(), json_path.resolve()}
    if len(written) < 2 or written & {path.resolve() for path in inputs}:
        raise EvaluationError(
            f"cannot write the report to {html_path}: it and its data ({json_path}) must be two "
            "files other than the report's inputs; choose another name ending in .html"
        )
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(bundle), encoding="utf-8")
        json_path.write_text(
            json.dumps(bundle_json(bundle), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    except OSError as exc:
        raise EvaluationError(f"cannot write report {html_path}: {exc}") from exc
    return html_path, json_path
