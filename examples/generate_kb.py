"""Generate the binary documents of the bundled sample knowledge base under ``examples/kb/``:
the DOCX, PPTX, XLSX and PDF files and the e-mail.

Lumen Harbor Logistics is a fictional company; every name, number and event below is invented.
The text documents (Markdown, HTML, TXT) and the label files in ``examples/kb/`` are their own
source: edit them in place. Run with ``.venv/bin/python examples/generate_kb.py``. Output is
deterministic (fixed document dates, fixed ZIP timestamps, fixed PDF creation dates) so
regenerating produces no git diff.

Generation-only dependencies: python-docx, python-pptx, openpyxl (already in the venv) and
fpdf2 (``pip install fpdf2``); none of them is needed at runtime.
"""

from __future__ import annotations

import io
import re
import textwrap
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as email_policy
from email.utils import format_datetime
from pathlib import Path

from docx import Document
from docx.shared import Pt
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from openpyxl import Workbook
from openpyxl.styles import Font
from pptx import Presentation
from pptx.util import Inches
from pptx.util import Pt as PptPt

KB = Path(__file__).resolve().parent / "kb"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# ---------------------------------------------------------------------------------------------
# Helpers: deterministic ZIP-based Office files
# ---------------------------------------------------------------------------------------------

_CORE_DATE = re.compile(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)")


def _normalise_zip(path: Path, stamp: datetime) -> None:
    """Rewrite an OOXML file with fixed ZIP timestamps and fixed core-property dates.

    python-docx, python-pptx and openpyxl stamp the current time into the ZIP entries (and
    openpyxl into docProps/core.xml on every save), which would make each run differ.
    """
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in entries:
            if name == "docProps/core.xml":
                data = _CORE_DATE.sub(rb"\g<1>" + iso + rb"\g<2>", data)
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, data)
    path.write_bytes(buffer.getvalue())


def _docx(
    relative: str,
    title: str,
    blocks: Sequence[tuple[str, str | Sequence[Sequence[str]]]],
    stamp: datetime,
    author: str,
) -> None:
    """``blocks`` are ("h", text) headings, ("p", text) paragraphs, ("li", text) list items and
    ("table", rows) tables whose first row is the header."""
    document = Document()
    document.core_properties.title = title
    document.core_properties.author = author
    document.core_properties.created = stamp
    document.core_properties.modified = stamp
    document.styles["Normal"].font.size = Pt(11)
    document.add_heading(title, level=0)
    for kind, content in blocks:
        if kind == "table":
            rows = list(content)
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            table.style = "Table Grid"
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
            continue
        if not isinstance(content, str):
            raise TypeError(f"{kind} block needs text")
        if kind == "h":
            document.add_heading(content, level=1)
        elif kind == "li":
            document.add_paragraph(content, style="List Number")
        else:
            document.add_paragraph(content)
    path = KB / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    _normalise_zip(path, stamp)


def _pdf(
    relative: str,
    title: str,
    pages: Sequence[Sequence[tuple[str, str]]],
    stamp: datetime,
    author: str,
    banner: str | None = None,
) -> None:
    """One list of ("h" | "p", text) blocks per page. Core fonts are Latin-1 only, so the text
    is kept ASCII (EUR, not the euro sign)."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(stamp)
    pdf.set_title(title)
    pdf.set_author(author)
    pdf.set_auto_page_break(auto=True, margin=18)
    for number, blocks in enumerate(pages, start=1):
        pdf.add_page()
        if banner:
            pdf.set_font("Helvetica", "B", 12)
            pdf.cell(0, 8, banner, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if number == 1:
            pdf.set_font("Helvetica", "B", 16)
            pdf.multi_cell(0, 8, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(3)
        for kind, text in blocks:
            if kind == "h":
                pdf.set_font("Helvetica", "B", 12)
                pdf.ln(2)
                pdf.multi_cell(0, 7, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            else:
                pdf.set_font("Helvetica", "", 10.5)
                pdf.multi_cell(0, 5.5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                pdf.ln(2)
    path = KB / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


# ---------------------------------------------------------------------------------------------
# Documents in binary formats
# ---------------------------------------------------------------------------------------------


def _deployment_docx() -> None:
    _docx(
        "engineering/runbooks/deployment.docx",
        "Runbook: production deployments",
        [
            ("p", "Owner: Release Engineering. Last reviewed: 22 April 2025."),
            ("h", "Deployment windows"),
            (
                "p",
                "Production deployments of HarborTrack and DockPilot are allowed Tuesday to "
                "Thursday between 09:00 and 15:00 CET. There are no production deployments on "
                "Mondays, Fridays, weekends or Dutch public holidays, so that a bad release is "
                "never left running overnight without the team that shipped it.",
            ),
            (
                "p",
                "The year-end change freeze runs from 15 December 2025 to 5 January 2026. "
                "During a freeze only SEV1 fixes may be deployed, with approval from the VP of "
                "Engineering, Samuel Okafor, or his deputy.",
            ),
            ("h", "Release procedure"),
            ("li", "Create the release with `hbctl release create --service <name>`."),
            ("li", "Two reviewers approve the change; one of them must own the service."),
            (
                "li",
                "The pipeline deploys a canary that receives 5% of traffic for 30 minutes.",
            ),
            (
                "li",
                "The canary is rolled back automatically if the error rate exceeds 1% or the "
                "p95 latency exceeds 800 ms during the canary period.",
            ),
            ("li", "Promote with `hbctl release promote` and watch dashboards for 15 minutes."),
            ("h", "Rollback"),
            (
                "p",
                "Roll back with `hbctl rollback --to <release-id>`; the previous three "
                "releases are kept warm so a rollback completes in under two minutes. Announce "
                "every production rollback in #releases and open a SEV3 incident if customers "
                "saw errors.",
            ),
            ("h", "Database migrations"),
            (
                "p",
                "Migrations follow expand and contract: a release may only add columns or "
                "tables; removals ship at least one release later, after no running version "
                "reads them. Migrations on tables above 50 million rows run in the Tuesday "
                "maintenance window and need a DBA review.",
            ),
            (
                "table",
                [
                    ["Check", "Threshold", "Action"],
                    ["Canary error rate", "> 1%", "Automatic rollback"],
                    ["Canary p95 latency", "> 800 ms", "Automatic rollback"],
                    ["Post-promotion error rate", "> 0.5% for 10 min", "Manual rollback"],
                ],
            ),
        ],
        datetime(2025, 4, 22, 9, 0, tzinfo=UTC),
        "Release Engineering",
    )


def _salary_bands_docx() -> None:
    _docx(
        "hr/salary-bands-2025.docx",
        "Salary bands 2025",
        [
            (
                "p",
                "Owner: People team (Priya Raman). Effective 1 April 2025. Bands are annual "
                "gross base salaries in EUR for Rotterdam; location factors apply elsewhere.",
            ),
            ("h", "Engineering"),
            (
                "table",
                [
                    ["Level", "Title", "Minimum", "Midpoint", "Maximum"],
                    ["E1", "Associate Engineer", "46,000", "51,000", "56,000"],
                    ["E2", "Engineer", "54,000", "60,000", "66,000"],
                    ["E3", "Senior Engineer", "64,000", "72,000", "80,000"],
                    ["E4", "Staff Engineer", "78,000", "87,000", "96,000"],
                    ["E5", "Senior Staff Engineer", "94,000", "106,000", "118,000"],
                    ["E6", "Principal Engineer", "115,000", "127,500", "140,000"],
                ],
            ),
            ("h", "Operations and customer success"),
            (
                "table",
                [
                    ["Level", "Title", "Minimum", "Midpoint", "Maximum"],
                    ["O1", "Operations Associate", "36,000", "40,000", "44,000"],
                    ["O2", "Operations Specialist", "42,000", "47,500", "53,000"],
                    ["O3", "Senior Specialist", "51,000", "58,000", "65,000"],
                    ["O4", "Operations Lead", "62,000", "71,000", "80,000"],
                ],
            ),
            ("h", "Location factors and review cycle"),
            (
                "p",
                "Location factors: Rotterdam 1.00, Hamburg 1.03, Antwerp 0.98, remote within "
                "the EU 0.95. The annual salary review takes place in April with a merit "
                "budget of 4.5% of base payroll for 2025; promotions are effective on 1 April "
                "or 1 October.",
            ),
            (
                "p",
                "New hires are offered at most the band midpoint unless the VP and the People "
                "team approve an exception. Nobody is paid below the minimum of their band; "
                "gaps are closed at the next review.",
            ),
        ],
        datetime(2025, 4, 1, 8, 0, tzinfo=UTC),
        "People team",
    )


def _roadmap_pptx() -> None:
    presentation = Presentation()
    presentation.core_properties.title = "Platform engineering roadmap H2 2025"
    presentation.core_properties.author = "Tobias Lindqvist"
    stamp = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)
    presentation.core_properties.created = stamp
    presentation.core_properties.modified = stamp

    title_slide = presentation.slides.add_slide(presentation.slide_layouts[0])
    title_slide.shapes.title.text = "Platform engineering roadmap H2 2025"
    title_slide.placeholders[1].text = "Tobias Lindqvist, CTO — engineering all-hands, 30 June 2025"

    slides: list[tuple[str, list[str], str]] = [
        (
            "Where we are",
            [
                "38 production services, 2.1 billion tracking events per month",
                "HarborTrack availability Jan-May 2025: 99.93% (target 99.95%)",
                "Mean time to recovery: 52 minutes (goal: 30 minutes by December)",
                "Largest outage: 12 March, 47 minutes (label rendering)",
            ],
            "Availability missed target mainly because of the March outage.",
        ),
        (
            "Postgres 16 migration",
            [
                "Move the tracking database from Postgres 12 to Postgres 16",
                "Logical replication running since 2 June",
                "Cutover on Saturday 18 October 2025, 02:00-04:00 CET",
                "Rollback plan: reverse replication kept for 14 days",
            ],
            "Postgres 12 is out of community support; cutover needs a weekend window.",
        ),
        (
            "Retire Beacon v1 API",
            [
                "Beacon v1 switched off on 30 November 2025",
                "14 customers still send traffic to Beacon (down from 61 in January)",
                "Brownouts: 1-hour shutdowns on 14 October and 4 November",
                "Saves about EUR 180,000 per year in hosting and support",
            ],
            "Customer success owns the outreach; engineering owns the brownouts.",
        ),
        (
            "Reliability goals",
            [
                "SLO 99.95% for the ETA API and the web app",
                "Error budgets enforced: feature freeze when budget is exhausted",
                "Egress allow-lists for every rendering and import service",
                "Game days every quarter, next one on 9 September",
            ],
            "The egress allow-lists come out of the March security post-mortem.",
        ),
        (
            "Team and hiring",
            [
                "Four new site reliability engineers (two Rotterdam, two Antwerp)",
                "Platform team splits into Runtime and Data Infrastructure on 1 September",
                "On-call rotation grows from 9 to 14 engineers",
            ],
            "Hiring approved in the FY2025 budget.",
        ),
    ]
    for heading, bullets, notes in slides:
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = heading
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for bullet in bullets[1:]:
            body.add_paragraph().text = bullet
        for paragraph in body.paragraphs:
            for run in paragraph.runs:
                run.font.size = PptPt(20)
        slide.notes_slide.notes_text_frame.text = notes

    # A final slide with a plain text box, which parsers handle differently from placeholders.
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])
    slide.shapes.title.text = "Questions"
    box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(8), Inches(1.5))
    box.text_frame.text = "Roadmap questions go to #platform-roadmap or to the CTO office."

    path = KB / "engineering/platform-roadmap-h2-2025.pptx"
    path.parent.mkdir(parents=True, exist_ok=True)
    presentation.save(str(path))
    _normalise_zip(path, stamp)


def _budget_xlsx() -> None:
    workbook = Workbook()
    bold = Font(bold=True)
    stamp = datetime(2024, 12, 12, 10, 0)
    workbook.properties.creator = "Finance (Joost Hendriks)"
    workbook.properties.title = "FY2025 budget"
    workbook.properties.created = stamp
    workbook.properties.modified = stamp

    opex = workbook.active
    if opex is None:
        raise RuntimeError("openpyxl workbook without an active sheet")
    opex.title = "Opex by department"
    # Totals are written as values, not formulas: openpyxl does not compute formulas, and a
    # parser reading cached values would otherwise see empty cells.
    rows: list[list[str | int]] = [
        ["Department", "Q1 (kEUR)", "Q2 (kEUR)", "Q3 (kEUR)", "Q4 (kEUR)", "FY2025 (kEUR)"],
        ["Engineering", 2300, 2350, 2450, 2500, 9600],
        ["Customer operations", 1100, 1150, 1250, 1300, 4800],
        ["Sales and marketing", 900, 1000, 950, 1050, 3900],
        ["General and administrative", 700, 700, 650, 650, 2700],
        ["Gdansk hub (from Q4)", 0, 0, 0, 400, 400],
        ["Total", 5000, 5200, 5300, 5900, 21400],
    ]
    for row in rows:
        opex.append(row)
    for cell in opex[1]:
        cell.font = bold
    opex.column_dimensions["A"].width = 30

    headcount = workbook.create_sheet("Headcount plan")
    headcount_rows: list[list[str | int]] = [
        ["Department", "Headcount 1 Jan 2025", "Planned hires", "Planned leavers", "31 Dec 2025"],
        ["Engineering", 74, 16, 4, 86],
        ["Customer operations", 41, 12, 3, 50],
        ["Sales and marketing", 23, 4, 2, 25],
        ["General and administrative", 18, 0, 1, 17],
        ["Total", 156, 32, 10, 178],
    ]
    for row in headcount_rows:
        headcount.append(row)
    for cell in headcount[1]:
        cell.font = bold
    headcount.column_dimensions["A"].width = 30

    assumptions = workbook.create_sheet("Assumptions")
    assumption_rows: list[list[str | int]] = [
        ["Assumption", "Value"],
        ["Salary increase (merit budget)", "4.5%"],
        ["Cloud hosting growth", "12% year on year"],
        ["EUR/PLN rate for Gdansk costs", "4.30"],
        ["Budget approved by the board", "12 December 2024"],
    ]
    for row in assumption_rows:
        assumptions.append(row)
    for cell in assumptions[1]:
        cell.font = bold

    path = KB / "finance/budget-fy2025.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(str(path))
    _normalise_zip(path, datetime(2024, 12, 12, 10, 0, tzinfo=UTC))


def _parental_leave_pdf() -> None:
    _pdf(
        "hr/parental-leave-policy.pdf",
        "Parental leave policy (effective 1 July 2025)",
        [
            [
                (
                    "p",
                    "Owner: People team. Approved by the management board on 20 May 2025 and "
                    "agreed with the works council on 3 June 2025. Applies to all employees of "
                    "Lumen Harbor Logistics in the Netherlands, Germany and Belgium.",
                ),
                ("h", "1. Leave entitlement"),
                (
                    "p",
                    "Birth parents receive 20 weeks of parental leave at 100% of base salary. "
                    "Lumen Harbor tops up statutory benefits to full pay for the whole period.",
                ),
                (
                    "p",
                    "Non-birth parents, including partners and co-parents, receive 10 weeks at "
                    "100% of base salary, to be taken within the first 12 months after the "
                    "birth. The same entitlements apply to adoption and long-term foster care, "
                    "counted from the date the child joins the family.",
                ),
                ("h", "2. Eligibility"),
                (
                    "p",
                    "Employees are eligible after 6 months of service. Employees with less "
                    "service receive the statutory entitlement and the company top-up pro rata.",
                ),
                ("h", "3. Returning to work"),
                (
                    "p",
                    "After leave, employees may work a phased return of up to 4 weeks at 80% "
                    "of their contracted hours with full pay. On-call duties resume no earlier "
                    "than 4 weeks after return.",
                ),
                ("h", "4. How to apply"),
                (
                    "p",
                    "Notify the People team at least 12 weeks before the expected start of "
                    "leave using the leave form in the HR portal. Questions go to Priya Raman, "
                    "Head of People.",
                ),
            ]
        ],
        datetime(2025, 6, 3, 12, 0, tzinfo=UTC),
        "People team",
    )


def _forecast_pdf() -> None:
    _pdf(
        "finance/q3-2025-forecast.pdf",
        "Quarterly forecast: Q3 2025",
        [
            [
                (
                    "p",
                    "Prepared by Finance (Joost Hendriks, CFO) on 8 July 2025 for the "
                    "management board. All amounts in EUR.",
                ),
                ("h", "Summary"),
                (
                    "p",
                    "We forecast Q3 2025 revenue of EUR 18.4 million, up 8.9% from Q2 2025 "
                    "actual revenue of EUR 16.9 million. HarborTrack contributes EUR 13.1 "
                    "million and DockPilot EUR 5.3 million.",
                ),
                (
                    "p",
                    "Gross margin is forecast at 71% (Q2: 69%), helped by lower hosting cost "
                    "per shipment after the storage tiering project. EBITDA is forecast at "
                    "EUR 2.2 million, an EBITDA margin of 12%.",
                ),
                ("h", "Cash"),
                (
                    "p",
                    "Cash at the end of Q3 is forecast at EUR 31.7 million. The Gdansk "
                    "operations hub requires capital expenditure of EUR 3.4 million, of which "
                    "EUR 1.1 million falls in Q3 and EUR 2.3 million in Q4.",
                ),
            ],
            [
                ("h", "Risks and opportunities"),
                (
                    "p",
                    "Risk: churn of Beacon v1 customers when the API is switched off on "
                    "30 November 2025. Of the 14 remaining Beacon customers, 5 with a combined "
                    "annual recurring revenue of EUR 0.9 million have not started migrating.",
                ),
                (
                    "p",
                    "Risk: service credits after the 12 March outage cost EUR 140,000 in Q2; "
                    "no further credits are expected in Q3.",
                ),
                (
                    "p",
                    "Opportunity: three Enterprise deals in the Baltic region worth EUR 1.6 "
                    "million in annual recurring revenue depend on the Gdansk hub opening on "
                    "1 December 2025.",
                ),
                ("h", "Full-year outlook"),
                (
                    "p",
                    "Full-year 2025 revenue is forecast at EUR 70.5 million against a budget "
                    "of EUR 69.0 million. Operating expenses remain within the FY2025 budget "
                    "of EUR 21.4 million.",
                ),
            ],
        ],
        datetime(2025, 7, 8, 15, 0, tzinfo=UTC),
        "Finance",
    )


def _postmortem_pdf() -> None:
    _pdf(
        "security/postmortem-sec-2025-014.pdf",
        "Security post-mortem SEC-2025-014: SSRF in the label renderer",
        [
            [
                (
                    "p",
                    "Author: Elena Marchetti (CISO) with the security and SRE teams. "
                    "Published 19 March 2025. Related incident: INC-2025-0312-labels (SEV1). "
                    "Vulnerability: LHL-VULN-2025-003, CVSS 3.1 base score 8.6 (High).",
                ),
                ("h", "Summary"),
                (
                    "p",
                    "An attacker exploited a server-side request forgery (SSRF) vulnerability "
                    "in labelforge, the service that renders shipping label PDFs. labelforge "
                    "fetched customer logo images from any URL supplied in the label template "
                    "without an allow-list. By pointing the logo URL at the cloud instance "
                    "metadata endpoint (169.254.169.254), the attacker obtained a short-lived "
                    "credential for the role labelforge-prod.",
                ),
                (
                    "p",
                    "The role had read access to the bucket lhl-prod-label-archive. Between "
                    "13:41 and 13:58 CET on 12 March 2025 the attacker downloaded 1,212 "
                    "shipping label PDFs belonging to 37 customers. Labels contain consignee "
                    "names, delivery addresses and phone numbers. No other data was accessed.",
                ),
                ("h", "Timeline (12 March 2025, CET)"),
                (
                    "p",
                    "13:41 first metadata request from labelforge. 13:58 anomaly alert on "
                    "unusual bucket reads. 14:05 security on-call blocks all egress from the "
                    "rendering cluster; sign-in and label downloads fail because the session "
                    "service shares that cluster (start of the 47-minute outage). 14:30 "
                    "credential revoked and role permissions reduced. 14:52 service restored "
                    "with logo fetching disabled.",
                ),
                ("h", "Root cause"),
                (
                    "p",
                    "User-controlled URLs were fetched from inside the production network, the "
                    "instance metadata service accepted unauthenticated IMDSv1 requests, and "
                    "the labelforge role could read the whole label archive instead of only "
                    "the labels it had just written.",
                ),
            ],
            [
                ("h", "Remediation"),
                (
                    "p",
                    "HarborTrack 3.0.4, released on 13 March 2025, fetches logos only from "
                    "the customer asset CDN through an allow-list. IMDSv2 is enforced on all "
                    "instances since 14 March. The labelforge role can now write but not read "
                    "the archive. Sessions moved to a separate cluster on 17 March.",
                ),
                ("h", "Notifications"),
                (
                    "p",
                    "The Dutch Data Protection Authority was notified on 14 March 2025 at "
                    "11:20 CET, within 72 hours. The 37 affected customers were notified by "
                    "15 March 2025. The public statement of 14 March describes the outage as a "
                    "configuration issue in a rendering component; legal approved that wording "
                    "while notifications were in progress.",
                ),
                ("h", "Action items"),
                (
                    "p",
                    "1. Egress allow-lists for every rendering and import service - owner "
                    "Platform (Tobias Lindqvist), due 30 September 2025. "
                    "2. Scoped credentials for all service roles - owner Security, due "
                    "30 June 2025. "
                    "3. Add SSRF test cases to the CI security suite - owner AppSec, due "
                    "30 April 2025. "
                    "4. Separate session service from batch rendering - owner SRE, done "
                    "17 March 2025.",
                ),
            ],
        ],
        datetime(2025, 3, 19, 16, 0, tzinfo=UTC),
        "Security team",
        banner="RESTRICTED - SECURITY TEAM ONLY",
    )


ALL_HANDS_BODY = """\
Hi everyone,

Three pieces of news before the long weekend.

1. Spring all-hands. Our spring all-hands meeting is on Thursday 8 May 2025 from 15:00 to
16:30 CET in the Maashaven auditorium in Rotterdam, followed by drinks on the roof terrace.
Colleagues in Hamburg and Antwerp can join the live stream; the link is in the calendar
invitation. Please send questions for the Q&A to Priya by 5 May.

2. Antwerp office. The Antwerp office at Kattendijkdok-Westkaai 14 opens on Monday
2 June 2025. The DockPilot team and customer success Belgium move in that week; desks for
visitors can be booked in the workplace app from 26 May.

3. Benefits. From 1 July 2025 we switch our benefits platform to a new provider, and a new
parental leave policy takes effect on the same day. The People team will publish the policy
in the HR portal in June and hold two information sessions; until then, please direct
questions about your own situation to Priya Raman.

Thank you all for a strong first quarter: we passed 310 customers in March.

Maren
"""


def _reflow(text: str, width: int = 72) -> str:
    """Wrap each paragraph to ``width`` so the message stays plain 7-bit with short lines."""
    paragraphs = [" ".join(block.split()) for block in text.strip().split("\n\n")]
    return "\n\n".join(textwrap.fill(p, width) for p in paragraphs) + "\n"


def _all_hands_eml() -> None:
    message = EmailMessage()
    message["From"] = "Maren Vos <maren.vos@lumenharbor.example>"
    message["To"] = "All staff <all@lumenharbor.example>"
    message["Subject"] = "Spring all-hands on 8 May, Antwerp opening and new benefits"
    message["Date"] = format_datetime(datetime(2025, 4, 22, 8, 30, tzinfo=UTC))
    message["Message-ID"] = "<20250422083000.all-hands@lumenharbor.example>"
    message.set_content(_reflow(ALL_HANDS_BODY), cte="7bit")
    path = KB / "company/2025-04-22-all-hands-announcement.eml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(message.as_bytes(policy=email_policy))


def main() -> None:
    _deployment_docx()
    _salary_bands_docx()
    _roadmap_pptx()
    _budget_xlsx()
    _parental_leave_pdf()
    _forecast_pdf()
    _postmortem_pdf()
    _all_hands_eml()


if __name__ == "__main__":
    main()
