"""Build real documents carrying Microsoft Purview sensitivity labels, the way Office and its PDF
export store them: custom properties (docProps/custom.xml), the Sensitivity Label Information
part (docMetadata/LabelInfo.xml, referenced from the package relationships), PDF info + XMP, and
the e-mail msip_labels header."""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

TENANT = "9c1b5a5e-1234-4b9a-9d7e-0123456789ab"
OTHER_TENANT = "0d0d0d0d-aaaa-4bbb-8ccc-111111111111"
PUBLIC = "2096f6a2-d2f7-48be-b329-b73aaa526e5d"
CONFIDENTIAL = "f42aa342-8706-4288-bd11-ebb85995028c"
HIGHLY = "3a7c1f0e-5b2d-4e8f-9a6b-7c8d9e0f1a2b"
UNMAPPED = "77777777-7777-4777-8777-777777777777"

RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
CUSTOM_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties"
LABELINFO_REL = "http://schemas.microsoft.com/office/2020/02/relationships/classificationlabels"

POLICY_YAML = f"""
sensitivity_labels:
  "{PUBLIC}": {{classification: public, groups: [everyone]}}
  "{CONFIDENTIAL}": {{classification: confidential, groups: [finance]}}
  "{{{HIGHLY.upper()}}}": {{classification: restricted, groups: [legal]}}
sensitivity_label_policy:
  tenants: ["{TENANT}"]
"""


def msip_properties(
    label_id: str,
    *,
    enabled: str = "true",
    site: str | None = TENANT,
    name: str = "Label",
    method: str = "Standard",
) -> dict[str, str]:
    props = {
        f"MSIP_Label_{label_id}_Enabled": enabled,
        f"MSIP_Label_{label_id}_SetDate": "2025-05-01T10:00:00Z",
        f"MSIP_Label_{label_id}_Method": method,
        f"MSIP_Label_{label_id}_Name": name,
        f"MSIP_Label_{label_id}_ContentBits": "0",
    }
    if site is not None:
        props[f"MSIP_Label_{label_id}_SiteId"] = site
    return props


def custom_xml(props: dict[str, str]) -> str:
    rows = "".join(
        f'<property fmtid="{{D5CDD505-2E9C-101B-9397-08002B2CF9AE}}" pid="{pid}" '
        f"name={quoteattr(name)}><vt:lpwstr>{escape(value)}</vt:lpwstr></property>"
        for pid, (name, value) in enumerate(props.items(), start=2)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/'
        'custom-properties" '
        'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
        f"{rows}</Properties>"
    )


def label_info_xml(labels: list[dict[str, str]]) -> str:
    """labels: dicts with id, enabled, removed, siteId (and method), braces added as Office does."""
    rows = []
    for label in labels:
        attrs = {"method": "Standard", **label}
        for key in ("id", "siteId"):
            if key in attrs and not attrs[key].startswith("{"):
                attrs[key] = "{" + attrs[key] + "}"
        rows.append(
            "<clbl:label " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + "/>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<clbl:labelList xmlns:clbl="http://schemas.microsoft.com/office/2020/mipLabelMetadata">'
        f"{''.join(rows)}</clbl:labelList>"
    )


def _rewrite(path: Path, parts: dict[str, bytes]) -> Path:
    """Replace the package at ``path`` with one holding ``parts``, in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def add_label_parts(
    path: Path,
    *,
    custom: dict[str, str] | None = None,
    label_info: list[dict[str, str]] | None = None,
    relationship: bool = True,
) -> Path:
    """Rewrite an OOXML package with custom properties and/or a LabelInfo part (replacing any)."""
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    types = parts["[Content_Types].xml"].decode("utf-8")
    rels = parts["_rels/.rels"].decode("utf-8")
    extra_types: list[str] = []
    extra_rels: list[str] = []

    def add_part(name: str, xml: str, content_type: str, rel: tuple[str, str] | None) -> None:
        """Store part ``name``; declare its content type and, given ``rel`` (an id and a
        relationship type), relate it to the package unless the package already does."""
        parts[name] = xml.encode("utf-8")
        if f"/{name}" not in types:
            extra_types.append(f'<Override PartName="/{name}" ContentType="{content_type}"/>')
        if rel is not None and rel[1] not in rels:
            extra_rels.append(f'<Relationship Id="{rel[0]}" Type="{rel[1]}" Target="{name}"/>')

    if custom is not None:
        add_part(
            "docProps/custom.xml",
            custom_xml(custom),
            "application/vnd.openxmlformats-officedocument.custom-properties+xml",
            ("rIdCustom", CUSTOM_REL),
        )
    if label_info is not None:
        add_part(
            "docMetadata/LabelInfo.xml",
            label_info_xml(label_info),
            "application/vnd.ms-office.classificationlabels+xml",
            ("rIdLabel", LABELINFO_REL) if relationship else None,
        )
    parts["[Content_Types].xml"] = types.replace(
        "</Types>", "".join(extra_types) + "</Types>"
    ).encode()
    parts["_rels/.rels"] = rels.replace(
        "</Relationships>", "".join(extra_rels) + "</Relationships>"
    ).encode()
    return _rewrite(path, parts)


def remove_label_parts(path: Path) -> Path:
    """Strip custom.xml and LabelInfo.xml and their references (what a tamperer, or a tool that
    drops unknown parts, does); the document itself stays valid."""
    gone = ("docProps/custom.xml", "docMetadata/LabelInfo.xml")
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist() if name not in gone}
    types = parts["[Content_Types].xml"].decode("utf-8")
    rels = parts["_rels/.rels"].decode("utf-8")
    for part in gone:
        types = re.sub(rf'<Override PartName="/{re.escape(part)}"[^>]*/>', "", types)
        rels = re.sub(rf'<Relationship [^>]*Target="/?{re.escape(part)}"[^>]*/>', "", rels)
    parts["[Content_Types].xml"] = types.encode("utf-8")
    parts["_rels/.rels"] = rels.encode("utf-8")
    return _rewrite(path, parts)


def write_docx(path: Path, text: str) -> Path:
    import docx

    document = docx.Document()
    document.add_heading(text.split(".")[0], level=1)
    document.add_paragraph(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


def write_pptx(path: Path, text: str) -> Path:
    from pptx import Presentation

    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = text.split(".")[0]
    slide.placeholders[1].text = text
    path.parent.mkdir(parents=True, exist_ok=True)
    presentation.save(str(path))
    return path


def write_xlsx(path: Path, text: str, props: dict[str, str] | None = None) -> Path:
    """An XLSX whose custom properties openpyxl itself writes."""
    from openpyxl import Workbook
    from openpyxl.packaging.custom import StringProperty

    workbook = Workbook()
    sheet = workbook.active
    sheet["A1"] = "Topic"
    sheet["B1"] = "Detail"
    sheet["A2"] = text.split(".")[0]
    sheet["B2"] = text
    for name, value in (props or {}).items():
        workbook.custom_doc_props.append(StringProperty(name=name, value=value))
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(str(path))
    return path


def write_pdf(
    path: Path,
    text: str,
    *,
    info: dict[str, str] | None = None,
    xmp: dict[str, str] | None = None,
    catalog_array: int = 0,
) -> Path:
    """A PDF (fpdf2) whose info dictionary and/or XMP packet carry label keys (pypdf).
    ``catalog_array``: that many elements in an array of the catalog (a large structure tree,
    as tagged filings have), which a metadata reader must get past."""
    from fpdf import FPDF
    from pypdf import PdfReader, PdfWriter

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, text)
    base = io.BytesIO(pdf.output())
    writer = PdfWriter(clone_from=PdfReader(base))
    if info:
        writer.add_metadata({f"/{k}": v for k, v in info.items()})
    if xmp:
        props = "".join(f"<pdfx:{k}>{escape(v)}</pdfx:{k}>" for k, v in xmp.items())
        packet = (
            '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:pdfx="http://ns.adobe.com/pdfx/1.3/">'
            f"{props}</rdf:Description></rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>'
        )
        from pypdf.generic import DecodedStreamObject, NameObject

        stream = DecodedStreamObject()
        stream.set_data(packet.encode("utf-8"))
        stream[NameObject("/Type")] = NameObject("/Metadata")
        stream[NameObject("/Subtype")] = NameObject("/XML")
        writer._root_object[NameObject("/Metadata")] = writer._add_object(stream)
    if catalog_array:
        from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject

        tree = DictionaryObject({NameObject("/Type"): NameObject("/StructTreeRoot")})
        tree[NameObject("/K")] = ArrayObject([NumberObject(0)] * catalog_array)
        writer._root_object[NameObject("/StructTreeRoot")] = tree
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def write_eml(path: Path, text: str, msip_labels: str | None = None) -> Path:
    headers = [
        "From: Alice <alice@example.com>",
        "To: Bob <bob@example.com>",
        "Subject: " + text.split(".")[0],
        "Date: Tue, 06 May 2025 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if msip_labels is not None:
        headers.append("msip_labels: " + msip_labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join(headers) + "\r\n\r\n" + text + "\r\n", encoding="utf-8")
    return path


def msip_header(label_id: str, *, enabled: str = "True", site: str = TENANT) -> str:
    return (
        f"MSIP_Label_{label_id}_Enabled={enabled};\r\n "
        f"MSIP_Label_{label_id}_SetDate=2025-05-06T10:00:00Z;\r\n "
        f"MSIP_Label_{label_id}_Method=Privileged;\r\n "
        f"MSIP_Label_{label_id}_Name=Confidential;\r\n "
        f"MSIP_Label_{label_id}_SiteId={site};"
    )


def copy_sample(shared_data: Path, name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_data / "sample_docs" / name, target)
    return target


MSG_SAMPLE = "fake-email-attachment.msg"
_MSG_HEADERS = "__substg1.0_007D001F"  # PR_TRANSPORT_MESSAGE_HEADERS, UTF-16LE


def compact_msip_header(label_id: str, *, site: str = TENANT) -> str:
    """The two fields a label needs (what fits a sample message's header stream)."""
    return f"MSIP_Label_{label_id}_Enabled=True; MSIP_Label_{label_id}_SiteId={site};"


def write_msg(shared_data: Path, target: Path, msip_labels: str) -> Path:
    """A real Outlook message (the shared sample, an OLE compound file) whose transport headers
    carry ``msip_labels``, as Exchange stamps them. olefile rewrites a stream only at its size,
    so the new headers replace all but its date and subject and are padded."""
    import olefile

    copy_sample(shared_data, MSG_SAMPLE, target)
    with olefile.OleFileIO(str(target), write_mode=True) as ole:
        size = ole.get_size(_MSG_HEADERS)
        kept = [
            line
            for line in ole.openstream(_MSG_HEADERS).read().decode("utf-16-le").split("\r\n")
            if line.split(":", 1)[0] in ("MIME-Version", "Date", "Subject")
        ]
        headers = "\r\n".join([*kept, f"msip_labels: {msip_labels}", "X-Padding: "])
        room = size // 2 - len(headers) - 4  # the closing blank line
        if room < 0:
            raise ValueError("msip_labels too long for the sample's header stream")
        text = headers + "x" * room + "\r\n\r\n"
        ole.write_stream(_MSG_HEADERS, text.encode("utf-16-le"))
    return target


def forbid_label_reads_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any sensitivity-label read in the test's (the run's) own process fails. The parse
    workers are other processes, forked from multiprocessing's forkserver, which imported the
    real reader itself."""
    import citewell.ingestion.parse_workers as parse_workers
    import citewell.ingestion.pipeline as pipeline
    import citewell.ingestion.sensitivity as sensitivity

    def not_here(path: Path, doc_type: str) -> None:
        raise AssertionError("labels read in the run's process")

    for module in (pipeline, parse_workers, sensitivity):
        monkeypatch.setattr(module, "read_sensitivity", not_here, raising=False)
