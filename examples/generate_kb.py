"""Generate the bundled sample knowledge base under ``examples/kb/``.

Lumen Harbor Logistics is a fictional company; every name, number and event below is invented.
Run with ``.venv/bin/python examples/generate_kb.py``. Output is deterministic (fixed document
dates, fixed ZIP timestamps, fixed PDF creation dates) so regenerating produces no git diff.

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
# Plain-text documents (Markdown, HTML, TXT) and label files
# ---------------------------------------------------------------------------------------------

LABELS_YAML = """\
# Labels for the Lumen Harbor Logistics sample knowledge base.
# Precedence: <file>.labels.yaml sidecar > first matching rule > default.
# Levels: public < internal < confidential < restricted.
#
# There is deliberately NO top-level `default:` and NO rule for drafts/: a file that nothing
# matches (drafts/kestrel-acquisition-term-sheet.md) is ingested fail-closed, visible to nobody,
# and listed as unlabelled in the ingest report.
#
# A classification banner in the text ("CONFIDENTIAL" on the first line) can only raise a label:
# company/leadership-offsite-notes.md matches company/** (internal) but is indexed as
# confidential because of its banner.
#
# press/2025-09-15-gdansk-hub-announcement.md is under press/** (public) but its sidecar
# press/2025-09-15-gdansk-hub-announcement.md.labels.yaml keeps it confidential until release.
rules:
  - {match: "press/**", classification: public, groups: [everyone]}
  - {match: "product/**", classification: public, groups: [everyone]}
  - {match: "engineering/**", classification: internal, groups: [engineering]}
  - {match: "company/**", classification: internal, groups: [everyone]}
  - {match: "hr/**", classification: confidential, groups: [hr]}
  - {match: "finance/**", classification: confidential, groups: [finance]}
  - {match: "security/**", classification: restricted, groups: [security]}
"""

GDANSK_SIDECAR = """\
# Embargoed until 2025-09-15 09:00 CET: overrides the public press/** rule.
# Finance and the executive team prepare the announcement; nobody else may see it yet.
classification: confidential
groups: [finance]
"""

HARBORTRACK_LAUNCH_MD = """\
# Lumen Harbor Logistics launches HarborTrack 3.0 with predictive ETAs

**Rotterdam, 10 February 2025** — Lumen Harbor Logistics B.V. today announced HarborTrack 3.0,
the third generation of its shipment visibility platform. HarborTrack 3.0 becomes generally
available on **3 March 2025** for all new and existing customers in the European Union.

## What is new

HarborTrack 3.0 adds predictive estimated times of arrival (ETAs) for road, rail and short-sea
shipments. The prediction model is trained on 2.1 billion tracking events per month from
42 integrated carriers and updates every five minutes. In a pilot with 18 shippers between
September and December 2024, 90 percent of road shipments arrived within two hours of the
predicted ETA.

The release also introduces the v3 REST API with webhooks for milestone events, SAML single
sign-on for every plan, and a redesigned exceptions inbox that groups late, damaged and
held-at-customs shipments.

## Pricing and availability

- **Standard plan:** EUR 1,450 per month, up to 5,000 active shipments and 25 users.
- **Enterprise plan:** from EUR 4,900 per month, unlimited users, a 99.95% availability SLA and
  24/7 support for severity-one issues.
- Existing HarborTrack 2 customers are upgraded at no extra cost; the legacy Beacon v1 API
  remains available during a migration period.

## About Lumen Harbor Logistics

Lumen Harbor Logistics is a logistics software company headquartered in Rotterdam with offices
in Hamburg and Antwerp. More than 310 shippers and forwarders use HarborTrack and DockPilot to
plan, track and hand over freight.

Press contact: Femke de Wit, press@lumenharbor.example
"""

DISRUPTION_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Update on the HarborTrack service disruption of 12 March 2025</title>
</head>
<body>
<article>
<h1>Update on the HarborTrack service disruption of 12 March 2025</h1>
<p><em>Rotterdam, 14 March 2025</em></p>

<p>On Wednesday 12 March 2025 HarborTrack was unavailable for <strong>47 minutes</strong>,
from 14:05 to 14:52 CET. During this time customers could not sign in, the web application
returned errors and shipment label downloads failed. Tracking events sent by carriers were
queued and processed after service was restored; no tracking events were lost.</p>

<h2>What happened</h2>
<p>The disruption was caused by a configuration issue in a document rendering component that
produces shipping labels. Our engineers isolated the component, restored service and released
a corrected version, HarborTrack 3.0.4, on 13 March 2025.</p>

<h2>What we are doing</h2>
<p>We are reviewing how configuration changes are rolled out to rendering services and adding
automated checks before such changes reach production. Customers whose data may have been
affected are being contacted directly by our customer success team.</p>

<h2>Service credits</h2>
<p>Enterprise customers will receive a service credit of 10 percent of their March 2025
subscription fee, applied automatically to the April invoice. Standard plan customers can
request a credit through the support portal until 30 April 2025.</p>

<p>We apologise for the disruption. Questions can be sent to
support@lumenharbor.example.</p>
</article>
</body>
</html>
"""

ANTWERP_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Lumen Harbor opens Antwerp office and is named Benelux Logistics Employer of the Year</title>
</head>
<body>
<article>
<h1>Lumen Harbor opens Antwerp office and is named Benelux Logistics Employer of the Year</h1>
<p><em>Antwerp, 2 June 2025</em></p>

<p>Lumen Harbor Logistics today opened its third office, at Kattendijkdok-Westkaai 14 in
Antwerp. The office has room for 60 people and will house customer success, the DockPilot
product team and a training centre for terminal operators.</p>

<p>"Antwerp is where many of our DockPilot customers run their yards," said chief executive
Maren Vos. "Being ten minutes from their gates makes us a better partner."</p>

<h2>Employer of the Year</h2>
<p>The company was also named Benelux Logistics Employer of the Year 2025 by the (fictional)
Benelux Supply Chain Council. The jury highlighted the four-day on-site training programme for
new engineers, the employee-elected works council and a significantly extended parental leave
policy that takes effect in July 2025.</p>

<h2>Open positions</h2>
<p>Lumen Harbor is hiring site reliability engineers, data scientists and customer success
managers in Rotterdam and Antwerp. Vacancies are listed at careers.lumenharbor.example.</p>
</article>
</body>
</html>
"""

GDANSK_MD = """\
**EMBARGOED UNTIL 15 SEPTEMBER 2025, 09:00 CET**

# Lumen Harbor Logistics opens Gdańsk operations hub

**Gdańsk, 15 September 2025** — Lumen Harbor Logistics will open an operations hub in Gdańsk,
Poland, on **1 December 2025** to support HarborTrack and DockPilot customers in the Baltic
region.

The hub will create **85 jobs** by the end of 2026: 40 in 24/7 customer operations, 30 in
software engineering and 15 in carrier onboarding. Lumen Harbor is investing EUR 3.4 million
in the site at Olivia Business Centre, including a network operations room that mirrors the one
in Rotterdam.

"Baltic ports handled record container volumes last year and our customers asked us to be
closer to them," said chief operating officer Anouk Bakker. "Gdańsk gives us a second
follow-the-sun operations centre inside the European Union."

Recruitment starts on 15 September 2025. The hub will be led by Paweł Nowicki, currently head
of carrier integrations in Rotterdam.

Press contact: Femke de Wit, press@lumenharbor.example
"""

FAQ_TXT = """\
HarborTrack - Frequently Asked Questions
Lumen Harbor Logistics, last updated 1 April 2025

Q: What is HarborTrack?
A: HarborTrack is a shipment visibility platform for shippers and freight forwarders. It
collects tracking events from 42 carriers, predicts arrival times and alerts you when a
shipment is late, damaged or held at customs.

Q: What are the API rate limits?
A: The v3 REST API allows 600 requests per minute on the Standard plan and 3,000 requests per
minute on the Enterprise plan, per organisation. Requests above the limit receive HTTP 429 with
a Retry-After header. Webhook deliveries do not count towards the limit.

Q: How long do you keep my shipment data?
A: Tracking events and documents are retained for 24 months after a shipment is closed and
then deleted. Enterprise customers can shorten retention to 6 or 12 months in the admin
settings.

Q: Where is my data stored?
A: All customer data is stored in the European Union, in data centres in Frankfurt and
Amsterdam. Backups are encrypted and kept for 35 days.

Q: What availability do you guarantee?
A: The Standard plan has a 99.9% monthly availability SLA and the Enterprise plan 99.95%.
Service credits are described in your subscription agreement.

Q: When can I reach support?
A: Support is available Monday to Friday from 07:00 to 19:00 CET by e-mail and phone.
Enterprise customers can reach the on-call team 24/7 for severity-one issues through the
emergency number in their welcome pack.

Q: Is the Beacon v1 API still supported?
A: Beacon v1 is deprecated and will be retired in late 2025. Please migrate to the v3 REST
API; the migration guide maps every Beacon endpoint to its v3 equivalent.

Q: Do you support single sign-on?
A: Yes. SAML 2.0 single sign-on is included in every plan since HarborTrack 3.0. SCIM user
provisioning is available on the Enterprise plan.
"""

DOCKPILOT_MD = """\
# DockPilot datasheet

DockPilot is Lumen Harbor's yard and dock management application for warehouses, cross-docks
and container terminals. It is sold separately from HarborTrack and shares its single sign-on.

## Gate check-in

Drivers check in at the gate with a QR code from their booking confirmation or by entering the
licence plate on a kiosk. DockPilot matches the truck to its appointment, prints a yard ticket
and assigns a parking bay within 15 seconds. Trucks without an appointment are queued for the
yard supervisor.

## Dock scheduling

Dock doors are scheduled in 15-minute slots. Carriers book slots through the carrier portal up
to 14 days ahead; DockPilot re-plans automatically when a HarborTrack ETA moves by more than
30 minutes.

## Requirements and pricing

DockPilot runs in the browser and on Android handhelds (Android 12 or newer). Pricing is
EUR 390 per dock door per month with a minimum of 4 doors; kiosks are leased at EUR 85 per
month each.
"""

INCIDENT_RESPONSE_MD = """\
# Runbook: incident response

Owner: Site Reliability Engineering · Last reviewed: 2 May 2025

This runbook applies to every production incident in HarborTrack and DockPilot. If you are
unsure whether something is an incident, treat it as one and declare it.

## Severity levels

| Severity | Definition | Example |
|---|---|---|
| SEV1 | Full outage, data exposure or data loss for any customer | Sign-in fails for everyone |
| SEV2 | Major feature degraded for many customers | ETAs more than 1 hour stale |
| SEV3 | Minor feature degraded or one customer affected | One carrier feed delayed |
| SEV4 | Cosmetic issue, no customer impact | Wrong icon in the exceptions inbox |

## Declaring an incident

1. Any engineer may declare an incident with `/incident declare` in Slack; it opens a channel
   named `#inc-<date>-<slug>` and pages the primary on-call engineer.
2. For SEV1 and SEV2 the primary on-call engineer becomes **incident commander** (IC) until
   they hand over explicitly. The IC does not debug; they coordinate, decide and communicate.
3. The IC assigns a **communications lead** who posts a status update in the incident channel
   and on the status page every **30 minutes** for SEV1 and every 60 minutes for SEV2.
4. Customer-facing status page updates must be published within **15 minutes** of declaring a
   SEV1.

## Security incidents

If the incident may involve unauthorised access or data exposure, the IC pages the security
on-call through `#sec-incident` and follows the restricted security track: details of the
vulnerability stay in the security team's post-mortem, and the incident channel records only
the timeline and customer impact.

Example: the SEV1 of 12 March 2025 (47-minute HarborTrack outage, incident
INC-2025-0312-labels) was caused by the emergency egress block that security placed on the
label-rendering cluster. Internal summary: the outage was a side effect of containment, not of
a deployment. The root-cause analysis is in the security post-mortem SEC-2025-014.

## Closing an incident

An incident is resolved when customer impact has ended and closed when the post-mortem is
published. Post-mortems are blameless, due within **5 working days** for SEV1 and SEV2, and
reviewed in the Thursday reliability review.
"""

ON_CALL_MD = """\
# Runbook: on-call rotation

Owner: Site Reliability Engineering · Last reviewed: 14 April 2025

## Rotation

- The rotation is weekly and hands over on **Monday at 10:00 CET**.
- Every week has a primary and a secondary on-call engineer from the platform, tracking and
  DockPilot teams; the secondary becomes primary the following week.
- Engineers join the rotation after three months of employment and two shadow weeks.
- Swaps are arranged between engineers and recorded in the paging schedule before the handover.

## Response times

| Page | Acknowledge within | Engineer at keyboard within |
|---|---|---|
| SEV1 | 5 minutes | 15 minutes |
| SEV2 | 15 minutes | 30 minutes |
| SEV3/SEV4 | next business day | next business day |

If the primary does not acknowledge a SEV1 page within 5 minutes, the page escalates to the
secondary, and after another 10 minutes to the engineering manager on duty.

## Compensation

On-call engineers receive a stipend of EUR 350 per on-call week as primary and EUR 150 as
secondary. Incident work outside business hours is paid at EUR 60 per hour, or taken as time
off in lieu within the next month.

## Handover checklist

1. Review open incidents and their owners.
2. Check the error-budget dashboard for services below 50% remaining budget.
3. Confirm scheduled maintenance windows and database migrations for the week.
4. Make sure your laptop, VPN token and phone are charged and the paging app is logged in.
"""

OFFSITE_NOTES_MD = """\
CONFIDENTIAL

# Leadership offsite, 17 June 2025 — decisions

Attendees: Maren Vos (CEO), Joost Hendriks (CFO), Anouk Bakker (COO), Tobias Lindqvist (CTO),
Priya Raman (Head of People), Elena Marchetti (CISO).

## Office footprint

The leadership team decided to **consolidate the Hamburg office into Antwerp by
31 March 2026**. The Hamburg lease ends on that date and will not be renewed. The 22 people
based in Hamburg will be offered relocation to Antwerp or Rotterdam with a relocation package
of up to EUR 12,000, or a fully remote contract. Employees will be informed on
15 September 2025, after the works council has been consulted.

## Hiring

General and administrative roles are frozen until the fourth quarter of 2025. Engineering and
customer operations hiring continues as planned, including the new operations hub announced in
September.

## Product

Beacon v1 will be switched off as planned on 30 November 2025 despite customer pressure; the
sales team may offer up to three months of free v3 migration support to the 14 remaining
Beacon customers.
"""

TERM_SHEET_MD = """\
CONFIDENTIAL

# Draft term sheet — proposed acquisition of Kestrel Route Systems

Draft 3, 2 July 2025. Not for circulation. Prepared by the CFO office with external counsel.

Lumen Harbor Logistics B.V. proposes to acquire 100% of the shares of Kestrel Route Systems
GmbH, a route-optimisation start-up based in Leipzig with 27 employees.

- Purchase price: EUR 12.5 million, of which EUR 9.0 million in cash at closing and
  EUR 3.5 million as an earn-out tied to 2026 recurring revenue.
- Exclusivity: until 31 October 2025.
- Key employees: both founders commit to stay for at least 24 months after closing.
- Conditions: satisfactory due diligence, in particular of Kestrel's open-source licence
  compliance and its contracts with two German grocery chains.

Target signing date: 15 November 2025.
"""

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


def _write_text(relative: str, text: str) -> None:
    path = KB / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


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
    text_documents = {
        "citewell.labels.yaml": LABELS_YAML,
        "press/2025-02-10-harbortrack-3-launch.md": HARBORTRACK_LAUNCH_MD,
        "press/2025-03-14-service-disruption-update.html": DISRUPTION_HTML,
        "press/2025-06-02-antwerp-office-opening.html": ANTWERP_HTML,
        "press/2025-09-15-gdansk-hub-announcement.md": GDANSK_MD,
        "press/2025-09-15-gdansk-hub-announcement.md.labels.yaml": GDANSK_SIDECAR,
        "product/harbortrack-faq.txt": FAQ_TXT,
        "product/dockpilot-datasheet.md": DOCKPILOT_MD,
        "engineering/runbooks/incident-response.md": INCIDENT_RESPONSE_MD,
        "engineering/runbooks/on-call.md": ON_CALL_MD,
        "company/leadership-offsite-notes.md": OFFSITE_NOTES_MD,
        "drafts/kestrel-acquisition-term-sheet.md": TERM_SHEET_MD,
    }
    for relative, text in text_documents.items():
        _write_text(relative, text)
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
