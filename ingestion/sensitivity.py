"""Microsoft Purview (MIP) sensitivity labels read from the documents themselves.

Where the formats keep them:

- DOCX/XLSX/PPTX: custom document properties ``MSIP_Label_<GUID>_<Field>`` in
  ``docProps/custom.xml`` (``Enabled``, ``Name``, ``SiteId``, ``Method``, ``SetDate``) and the
  Sensitivity Label Information part (``docMetadata/LabelInfo.xml``: ``labelList``/``label``
  with ``id``, ``enabled``, ``method``, ``siteId``, ``removed``). When both hold metadata,
  [MS-OFFCRYPTO] 2.6.3 decides per tenant (``siteId``): a tenant with a ``label`` element in
  LabelInfo is read from LabelInfo only; custom properties count only for tenants LabelInfo
  does not mention.
- PDF: the same ``MSIP_Label_<GUID>_*`` keys in the document information dictionary and in
  the XMP packet (Office's "Save as PDF" writes both); both are read, and a tenant on which they
  disagree is ambiguous.
- E-mail (EML, MSG): the ``msip_labels`` header, ``MSIP_Label_<GUID>_<Field>=<value>;`` pairs.

:func:`read_sensitivity` returns what the file says (:class:`SensitivityReading`);
:func:`decide` maps it through the labels configuration (:class:`SensitivityPolicy`, the
``sensitivity_labels`` section of ``citewell.labels.yaml``) into an access label or a refusal.
Everything unclear fails closed: a label that is present but not mapped, enabled/removed
ambiguously, from a tenant not listed, or metadata that cannot be read, makes the document
visible to nobody. A label seen before and now removed or lowered keeps the earlier label unless
the policy allows downgrades (the pipeline keeps what was seen in the manifest).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Literal
from xml.etree import ElementTree as ET  # parts are size-capped and DTDs refused

from pydantic import Field, field_validator, model_validator

from citewell.core.models import AccessLabel, ClassificationScheme, Frozen

OFFICE_TYPES = frozenset({"docx", "docm", "dotx", "xlsx", "xlsm", "xltx", "pptx", "pptm", "potx"})
EMAIL_TYPES = frozenset({"eml", "msg"})
# Legacy binary Office files keep labels in OLE property sets, which are not read (SECURITY.md);
# a file of these names that is an Office Open XML package is read as one (parsing does too).
LEGACY_OFFICE_TYPES = frozenset({"doc", "xls", "ppt"})
LABEL_INFO_RELATIONSHIP = (
    "http://schemas.microsoft.com/office/2020/02/relationships/classificationlabels"
)
DEFAULT_LABEL_INFO_PART = "docMetadata/LabelInfo.xml"
_MAX_PART_BYTES = 1024 * 1024  # label metadata is a few kB; refuse to inflate anything bigger
_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# Any case: custom property names are case-insensitive, and a label missed for its spelling
# would leave the document to lower rules.
_KEY = re.compile(rf"^MSIP_Label_(?P<id>{_GUID})_(?P<field>[A-Za-z]+)$", re.IGNORECASE)
_GUID_VALUE = re.compile(rf"^\{{?(?P<id>{_GUID})\}}?$")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})

Where = Literal["LabelInfo", "custom.xml", "pdf-info", "pdf-xmp", "msip_labels"]


def normalise_guid(value: str) -> str | None:
    """``{F42AA342-…}`` → ``f42aa342-…``; None when ``value`` is not a GUID."""
    match = _GUID_VALUE.match(value.strip())
    return match.group("id").lower() if match else None


class MipLabel(Frozen):
    """One label entry as a file states it. ``state`` says whether it applies."""

    label_id: str  # lower-case GUID without braces
    site_id: str | None = None  # the Entra tenant (lower-case GUID), None when absent/invalid
    name: str | None = None
    method: str | None = None
    set_date: str | None = None
    state: Literal["applied", "removed", "ambiguous"]
    where: Where

    @field_validator("site_id", mode="before")
    @classmethod
    def _tenant_guid(cls, value: str | None) -> str | None:
        return normalise_guid(value) if value else None


class SensitivityReading(Frozen):
    """The labels a document carries after the format's precedence rules.

    ``labels``: entries that apply (at most one per tenant); ``problems``: reasons the
    metadata cannot be trusted (ambiguous or unreadable); ``notes``: disagreements resolved by
    the format's precedence, for the log.
    """

    labels: tuple[MipLabel, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.labels and not self.problems


# --- reading --------------------------------------------------------------------------------
def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _from_fields(fields: Mapping[str, Mapping[str, str]], where: Where) -> list[MipLabel]:
    """Label entries from ``{guid: {field (lower case): value}}`` (custom properties, PDF keys,
    e-mail header). ``Enabled=true`` applies, ``Enabled=false`` is a removed label, anything
    else (missing, "yes", two different values) is ambiguous."""
    out: list[MipLabel] = []
    for label_id, values in sorted(fields.items()):
        enabled = _bool(values.get("enabled"))
        state: Literal["applied", "removed", "ambiguous"] = (
            "ambiguous" if enabled is None else "applied" if enabled else "removed"
        )
        if values.get("enabled") == "\0conflict":
            state = "ambiguous"
        out.append(
            MipLabel(
                label_id=label_id,
                site_id=values.get("siteid"),
                name=values.get("name"),
                method=values.get("method"),
                set_date=values.get("setdate"),
                state=state,
                where=where,
            )
        )
    return out


def _collect(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Group ``MSIP_Label_<GUID>_<Field>`` pairs by GUID. A field given twice with different
    values is recorded as a conflict (the entry becomes ambiguous)."""
    fields: dict[str, dict[str, str]] = {}
    for key, value in pairs:
        match = _KEY.match(key.strip())
        if match is None:
            continue
        entry = fields.setdefault(match.group("id").lower(), {})
        name = match.group("field").lower()
        text = value.strip()
        if name in entry and entry[name] != text:
            entry["enabled"] = "\0conflict"
            continue
        entry[name] = text
    return fields


def _read_part(archive: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > _MAX_PART_BYTES:
        raise ValueError(f"{name} is larger than {_MAX_PART_BYTES} bytes")
    return archive.read(info)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes, part: str) -> ET.Element:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError(f"{part}: DTDs are not allowed in label metadata")
    return ET.fromstring(data)  # noqa: S314 - DTDs refused above, size capped


def _custom_properties(data: bytes) -> list[tuple[str, str]]:
    root = _parse_xml(data, "docProps/custom.xml")
    pairs: list[tuple[str, str]] = []
    for prop in root:
        if _local(prop.tag) != "property":
            continue
        name = prop.get("name", "")
        value = "".join("".join(child.itertext()) for child in prop)
        pairs.append((name, value))
    return pairs


def _label_info(data: bytes) -> list[MipLabel]:
    root = _parse_xml(data, "LabelInfo")
    if _local(root.tag) != "labelList":
        raise ValueError("LabelInfo root element is not labelList")
    out: list[MipLabel] = []
    for element in root:
        if _local(element.tag) != "label":
            continue
        label_id = normalise_guid(element.get("id", ""))
        if label_id is None:
            raise ValueError(f"LabelInfo label id {element.get('id')!r} is not a GUID")
        enabled = _bool(element.get("enabled"))
        removed = _bool(element.get("removed"))
        state: Literal["applied", "removed", "ambiguous"]
        if enabled is True and removed is False:
            state = "applied"
        elif enabled is False and removed is True:
            state = "removed"
        else:  # missing, unparseable, or contradictory (enabled and removed)
            state = "ambiguous"
        out.append(
            MipLabel(
                label_id=label_id,
                site_id=element.get("siteId"),
                method=element.get("method"),
                state=state,
                where="LabelInfo",
            )
        )
    return out


def _label_info_part(archive: zipfile.ZipFile) -> str | None:
    """The part the package relationship of type classificationlabels points at, else the
    default location when that holds a part (a hand-built file without the relationship)."""
    rels = _read_part(archive, "_rels/.rels")
    if rels is not None:
        for rel in _parse_xml(rels, "_rels/.rels"):
            if rel.get("Type") == LABEL_INFO_RELATIONSHIP and rel.get("TargetMode") != "External":
                target = PurePosixPath(rel.get("Target", "").lstrip("/"))
                return str(target)
    names = set(archive.namelist())
    return DEFAULT_LABEL_INFO_PART if DEFAULT_LABEL_INFO_PART in names else None


def _office(path: Path) -> SensitivityReading:
    with zipfile.ZipFile(path) as archive:
        custom_xml = _read_part(archive, "docProps/custom.xml")
        part = _label_info_part(archive)
        info_xml = _read_part(archive, part) if part else None
    custom = (
        _from_fields(_collect(_custom_properties(custom_xml)), "custom.xml") if custom_xml else []
    )
    info = _label_info(info_xml) if info_xml else []
    # [MS-OFFCRYPTO] 2.6.3, policy unknown: a tenant with any label element in LabelInfo is read
    # from LabelInfo; custom properties only for the tenants LabelInfo does not mention.
    info_tenants = {label.site_id for label in info}
    notes: list[str] = []
    kept = list(info)
    for label in custom:
        if label.site_id in info_tenants:
            if label.state == "applied" and not any(
                i.label_id == label.label_id and i.state == "applied" for i in info
            ):
                notes.append(
                    f"custom property label {label.label_id} superseded by LabelInfo for "
                    f"tenant {label.site_id}"
                )
            continue
        kept.append(label)
    return _finish(kept, notes)


# pypdf reads one object of an object stream by parsing all of them, each array capped at
# 100,000 elements: a tagged filing's structure tree beside the catalog exceeds that, and the
# reading would refuse a valid file. Arrays and dictionaries of up to 2M entries are read (a
# 75 MB stream cap bounds them anyway); every other pypdf limit stays as it is.
_PDF_ELEMENT_LIMIT = 2_000_000


def _pdf(path: Path) -> SensitivityReading:
    from pypdf import apply_configuration

    with apply_configuration(
        array_maximum_element_count=_PDF_ELEMENT_LIMIT,
        dictionary_maximum_element_count=_PDF_ELEMENT_LIMIT,
    ):
        return _pdf_labels(path)


def _pdf_labels(path: Path) -> SensitivityReading:
    from pypdf import PdfReader

    reader = PdfReader(path)
    info_pairs: list[tuple[str, str]] = []
    metadata: Mapping[str, object] = reader.metadata or {}
    for key, value in metadata.items():
        info_pairs.append((str(key).lstrip("/"), str(value)))
    xmp_pairs: list[tuple[str, str]] = []
    root = reader.trailer.get("/Root")
    xmp = root.get_object().get("/Metadata") if root is not None else None
    if xmp is not None:
        data = xmp.get_object().get_data()
        if len(data) > _MAX_PART_BYTES:
            raise ValueError("XMP packet is too large")
        for element in _parse_xml(data, "XMP").iter():
            name = _local(element.tag)
            if _KEY.match(name):
                xmp_pairs.append((name, "".join(element.itertext())))
            for attribute, value in element.attrib.items():
                if _KEY.match(_local(attribute)):
                    xmp_pairs.append((_local(attribute), value))
    labels = _from_fields(_collect(info_pairs), "pdf-info") + _from_fields(
        _collect(xmp_pairs), "pdf-xmp"
    )
    return _finish(labels, [])


def _parse_header(header: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in header.replace("\r", "").replace("\n", "").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _email(path: Path, doc_type: str) -> SensitivityReading:
    headers: list[str]
    if doc_type == "msg":
        from oxmsg import Message

        found = Message.load(str(path)).message_headers or {}
        headers = [str(v) for k, v in found.items() if k.lower() == "msip_labels"]
    else:
        with path.open("rb") as handle:
            message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parse(handle)
        headers = [str(value) for value in message.get_all("msip_labels") or []]
    pairs = [pair for header in headers for pair in _parse_header(header)]
    return _finish(_from_fields(_collect(pairs), "msip_labels"), [])


def _finish(labels: list[MipLabel], notes: list[str]) -> SensitivityReading:
    """Per tenant: entries must agree. Two different applied labels for one tenant, or an
    ambiguous entry, make the reading ambiguous (fail closed)."""
    problems: list[str] = []
    applied: dict[str | None, set[str]] = {}
    for label in labels:
        if label.state == "ambiguous":
            problems.append(
                f"sensitivity label {label.label_id} ({label.where}) is enabled/removed ambiguously"
            )
        elif label.state == "applied":
            applied.setdefault(label.site_id, set()).add(label.label_id)
    for site, ids in applied.items():
        if len(ids) > 1:
            problems.append(
                f"conflicting sensitivity labels {', '.join(sorted(ids))} for tenant {site}"
            )
    unique: dict[tuple[str, str | None], MipLabel] = {}
    for label in labels:
        if label.state == "applied":
            unique.setdefault((label.label_id, label.site_id), label)
    return SensitivityReading(
        labels=tuple(unique.values()), problems=tuple(problems), notes=tuple(notes)
    )


def carries_labels(doc_type: str) -> bool:
    """Whether files of this type can carry sensitivity-label metadata (the others read as
    empty without being opened)."""
    return (
        doc_type in OFFICE_TYPES
        or doc_type in LEGACY_OFFICE_TYPES
        or doc_type == "pdf"
        or doc_type in EMAIL_TYPES
    )


def read_sensitivity(path: Path, doc_type: str) -> SensitivityReading:
    """The sensitivity labels ``path`` carries. Formats without label metadata read as empty;
    metadata that cannot be read is a problem (fail closed), never an empty reading."""
    if not carries_labels(doc_type):
        return SensitivityReading()
    try:
        if doc_type in LEGACY_OFFICE_TYPES:
            # An .xlsx saved as .xls is parsed as what it is: its label applies as well.
            return _office(path) if zipfile.is_zipfile(path) else SensitivityReading()
        if doc_type in OFFICE_TYPES:
            return _office(path)
        if doc_type == "pdf":
            return _pdf(path)
        if doc_type in EMAIL_TYPES:
            return _email(path, doc_type)
    except Exception as exc:  # damaged files raise many types (zip, XML, pypdf, oxmsg)
        if doc_type in OFFICE_TYPES and isinstance(exc, zipfile.BadZipFile):
            # Not a package at all (e.g. an encrypted OLE container): parsing reports it.
            return SensitivityReading()
        return SensitivityReading(
            problems=(f"sensitivity label metadata unreadable: {type(exc).__name__}",)
        )
    return SensitivityReading()


# --- mapping --------------------------------------------------------------------------------
class SensitivityLabelMapping(Frozen):
    """What one Purview label means here."""

    classification: str
    groups: frozenset[str] = Field(min_length=1)

    @field_validator("classification")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class SensitivityPolicy(Frozen):
    """The ``sensitivity_labels`` / ``sensitivity_label_policy`` sections of a labels file.

    ``labels``: label GUID → mapping. ``tenants``: the Entra tenant ids (``SiteId``) whose labels
    are trusted; a label from any other tenant refuses the document. ``names``: label display
    name → mapping, consulted only for a GUID that is not mapped (names are not unique across
    tenants; configure them only where needed). ``allow_downgrade``: a label removed or lowered
    after indexing may lower the served label (off: the earlier label keeps applying).
    """

    labels: dict[str, SensitivityLabelMapping] = Field(default_factory=dict)
    names: dict[str, SensitivityLabelMapping] = Field(default_factory=dict)
    tenants: frozenset[str] = frozenset()
    allow_downgrade: bool = False

    @field_validator("labels")
    @classmethod
    def _guids(
        cls, labels: dict[str, SensitivityLabelMapping]
    ) -> dict[str, SensitivityLabelMapping]:
        out: dict[str, SensitivityLabelMapping] = {}
        for key, mapping in labels.items():
            guid = normalise_guid(key)
            if guid is None:
                raise ValueError(f"sensitivity label key {key!r} is not a label GUID")
            if guid in out:
                raise ValueError(f"sensitivity label {guid} is mapped twice")
            out[guid] = mapping
        return out

    @field_validator("tenants", mode="before")
    @classmethod
    def _tenant_guids(cls, tenants: object) -> frozenset[str]:
        if not isinstance(tenants, list | tuple | set | frozenset):
            raise ValueError("tenants must be a list of tenant GUIDs")
        out: set[str] = set()
        for tenant in tenants:
            guid = normalise_guid(str(tenant))
            if guid is None:
                raise ValueError(f"tenant {tenant!r} is not a GUID")
            out.add(guid)
        return frozenset(out)

    @model_validator(mode="after")
    def _needs_tenants(self) -> SensitivityPolicy:
        if (self.labels or self.names) and not self.tenants:
            raise ValueError(
                "sensitivity_label_policy.tenants must list the tenant id(s) whose labels "
                "are trusted"
            )
        return self

    def check_levels(self, scheme: ClassificationScheme) -> None:
        for mapping in (*self.labels.values(), *self.names.values()):
            scheme.rank(mapping.classification)

    def mapping_for(self, label: MipLabel) -> SensitivityLabelMapping | None:
        found = self.labels.get(label.label_id)
        if found is None and label.name is not None:
            found = self.names.get(label.name.strip())
        return found


class SensitivityRecord(Frozen):
    """What the manifest keeps per document: the reading of its current content and the label
    ids that applied (``effective``), so a later removal or downgrade can be refused and an
    unchanged object need not be downloaded again to know its label."""

    reading: SensitivityReading = SensitivityReading()
    effective: tuple[str, ...] = ()


class SensitivityDecision(Frozen):
    """``none``: no label in the document (other sources decide); ``mapped``: ``label`` applies
    (most restrictive with the other sources); ``refused``: visible to nobody, ``reason``."""

    status: Literal["none", "mapped", "refused"]
    label: AccessLabel | None = None
    reason: str | None = None
    retained: bool = False  # an earlier label was kept (removed or lowered since)
    record: SensitivityRecord = SensitivityRecord()


def _combine(labels: list[AccessLabel], scheme: ClassificationScheme) -> AccessLabel:
    level = scheme.max(*(label.classification for label in labels))
    groups = labels[0].groups
    for label in labels[1:]:
        groups = groups & label.groups
    return AccessLabel(classification=level, groups=groups)


def _map(
    ids: Iterable[str], reading: SensitivityReading, policy: SensitivityPolicy
) -> tuple[list[AccessLabel], str | None]:
    by_id = {label.label_id: label for label in reading.labels}
    out: list[AccessLabel] = []
    for label_id in ids:
        label = by_id.get(
            label_id, MipLabel(label_id=label_id, state="applied", where="custom.xml")
        )
        mapping = policy.mapping_for(label)
        if mapping is None:
            return [], f"sensitivity label {label_id} is not mapped in sensitivity_labels"
        out.append(AccessLabel(classification=mapping.classification, groups=mapping.groups))
    return out, None


def decide(
    reading: SensitivityReading,
    policy: SensitivityPolicy,
    scheme: ClassificationScheme,
    previous: SensitivityRecord | None = None,
) -> SensitivityDecision:
    """Map a reading to an access label, failing closed; ``previous`` is what applied when the
    document was last indexed (a removed or lowered label keeps it, unless allowed). A refusal
    keeps the earlier labels in its record: a refresh in between that cannot map the label
    must not let the next one lower it."""
    earlier_ids = previous.effective if previous is not None else ()
    if reading.problems:
        return SensitivityDecision(
            status="refused",
            reason=reading.problems[0],
            record=SensitivityRecord(reading=reading, effective=earlier_ids),
        )
    for label in reading.labels:
        if label.site_id is None or label.site_id not in policy.tenants:
            return SensitivityDecision(
                status="refused",
                reason=f"sensitivity label {label.label_id} is from an unknown tenant "
                f"{label.site_id or '(none)'}",
                record=SensitivityRecord(reading=reading, effective=earlier_ids),
            )
    ids = tuple(sorted(label.label_id for label in reading.labels))
    current, problem = _map(ids, reading, policy)
    if problem is not None:
        return SensitivityDecision(
            status="refused",
            reason=problem,
            record=SensitivityRecord(reading=reading, effective=earlier_ids),
        )
    if earlier_ids and not policy.allow_downgrade:
        earlier, problem = _map(earlier_ids, previous.reading if previous else reading, policy)
        if problem is not None:
            return SensitivityDecision(
                status="refused",
                reason=f"{problem} (seen when the document was last indexed)",
                record=SensitivityRecord(reading=reading, effective=earlier_ids),
            )
        earlier_label = _combine(earlier, scheme)
        current_label = _combine(current, scheme) if current else None
        # Lowered: removed, a lower level, or the same level shared with more groups. A higher
        # level is an upgrade and replaces the earlier label.
        lowered = current_label is None or (
            scheme.rank(current_label.classification) < scheme.rank(earlier_label.classification)
            or (
                current_label.classification == earlier_label.classification
                and not current_label.groups <= earlier_label.groups
            )
        )
        if lowered:
            labels = [earlier_label, *([current_label] if current_label else [])]
            return SensitivityDecision(
                status="mapped",
                label=_combine(labels, scheme),
                retained=True,
                record=SensitivityRecord(
                    reading=reading, effective=tuple(sorted({*earlier_ids, *ids}))
                ),
            )
    if not current:
        return SensitivityDecision(status="none", record=SensitivityRecord(reading=reading))
    return SensitivityDecision(
        status="mapped",
        label=_combine(current, scheme),
        record=SensitivityRecord(reading=reading, effective=ids),
    )
