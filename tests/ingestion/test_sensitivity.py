"""Purview sensitivity labels read from real DOCX/XLSX/PPTX/PDF/EML files, the format's precedence,
and the fail-closed mapping through the labels configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.errors import LabelError
from citewell.core.models import AccessLabel, ClassificationScheme
from citewell.ingestion.labels import (
    LabelRules,
    apply_sensitivity,
    combine_resolved,
    refused_label,
)
from citewell.ingestion.models import ResolvedLabel
from citewell.ingestion.sensitivity import (
    SensitivityReading,
    SensitivityRecord,
    decide,
    read_sensitivity,
)
from tests.ingestion.mip_files import (
    CONFIDENTIAL,
    HIGHLY,
    OTHER_TENANT,
    POLICY_YAML,
    PUBLIC,
    TENANT,
    UNMAPPED,
    add_label_parts,
    compact_msip_header,
    copy_sample,
    msip_header,
    msip_properties,
    write_docx,
    write_eml,
    write_msg,
    write_pdf,
    write_pptx,
    write_xlsx,
)

SCHEME = ClassificationScheme()
TEXT = "Quarterly budget review. The travel budget grows by four percent."


def policy(tmp_path: Path, extra: str = ""):
    folder = tmp_path / "cfg"
    folder.mkdir(exist_ok=True)
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [everyone]}\n" + POLICY_YAML + extra
    )
    return LabelRules.load(folder, SCHEME).sensitivity


def label_ids(path: Path, doc_type: str) -> list[str]:
    return [label.label_id for label in read_sensitivity(path, doc_type).labels]


def test_docx_custom_properties(tmp_path):
    doc = add_label_parts(
        write_docx(tmp_path / "a.docx", TEXT), custom=msip_properties(CONFIDENTIAL)
    )
    reading = read_sensitivity(doc, "docx")
    assert [(x.label_id, x.site_id, x.where) for x in reading.labels] == [
        (CONFIDENTIAL, TENANT, "custom.xml")
    ]
    assert not reading.problems


def test_pptx_label_info_part(tmp_path):
    doc = add_label_parts(
        write_pptx(tmp_path / "a.pptx", TEXT),
        label_info=[{"id": HIGHLY, "enabled": "1", "removed": "0", "siteId": TENANT}],
    )
    reading = read_sensitivity(doc, "pptx")
    assert [(x.label_id, x.site_id, x.where) for x in reading.labels] == [
        (HIGHLY, TENANT, "LabelInfo")
    ]


def test_xlsx_custom_properties_written_by_openpyxl(tmp_path):
    doc = write_xlsx(tmp_path / "a.xlsx", TEXT, props=msip_properties(PUBLIC))
    assert label_ids(doc, "xlsx") == [PUBLIC]


def test_label_info_wins_per_tenant_over_custom_properties(tmp_path):
    """[MS-OFFCRYPTO] 2.6.3: a tenant present in LabelInfo is read from LabelInfo only; custom
    properties still count for tenants LabelInfo does not mention."""
    props = {**msip_properties(PUBLIC), **msip_properties(UNMAPPED, site=OTHER_TENANT)}
    doc = add_label_parts(
        write_docx(tmp_path / "a.docx", TEXT),
        custom=props,
        label_info=[{"id": CONFIDENTIAL, "enabled": "1", "removed": "0", "siteId": TENANT}],
    )
    reading = read_sensitivity(doc, "docx")
    assert sorted((x.label_id, x.where) for x in reading.labels) == sorted(
        [(CONFIDENTIAL, "LabelInfo"), (UNMAPPED, "custom.xml")]
    )
    assert reading.notes  # the superseded custom-property label is noted
    # ... and the other tenant's label refuses the document (unknown tenant).
    decision = decide(reading, policy(tmp_path), SCHEME)
    assert decision.status == "refused" and "unknown tenant" in (decision.reason or "")


def test_label_info_removed_label_means_no_label_for_that_tenant(tmp_path):
    doc = add_label_parts(
        write_docx(tmp_path / "a.docx", TEXT),
        custom=msip_properties(CONFIDENTIAL),
        label_info=[{"id": CONFIDENTIAL, "enabled": "0", "removed": "1", "siteId": TENANT}],
    )
    reading = read_sensitivity(doc, "docx")
    assert reading.labels == () and reading.problems == ()


def test_label_info_found_through_the_relationship_target(tmp_path):
    doc = write_docx(tmp_path / "a.docx", TEXT)
    add_label_parts(
        doc, label_info=[{"id": HIGHLY, "enabled": "1", "removed": "0", "siteId": TENANT}]
    )
    assert label_ids(doc, "docx") == [HIGHLY]
    unreferenced = add_label_parts(
        write_docx(tmp_path / "b.docx", TEXT),
        label_info=[{"id": HIGHLY, "enabled": "1", "removed": "0", "siteId": TENANT}],
        relationship=False,
    )
    assert label_ids(unreferenced, "docx") == [HIGHLY]  # default location still read


@pytest.mark.parametrize(
    "attrs",
    [
        {"enabled": "1", "removed": "1"},  # contradictory
        {"enabled": "0", "removed": "0"},  # disabled but not removed
        {"enabled": "maybe", "removed": "0"},
        {"removed": "0"},  # enabled missing
    ],
)
def test_ambiguous_label_info_fails_closed(tmp_path, attrs):
    doc = add_label_parts(
        write_docx(tmp_path / "a.docx", TEXT),
        label_info=[{"id": CONFIDENTIAL, "siteId": TENANT, **attrs}],
    )
    reading = read_sensitivity(doc, "docx")
    assert reading.problems
    decision = decide(reading, policy(tmp_path), SCHEME)
    assert decision.status == "refused"


def test_ambiguous_custom_properties_fail_closed(tmp_path):
    # Enabled is neither true nor false.
    doc = add_label_parts(
        write_docx(tmp_path / "a.docx", TEXT), custom=msip_properties(CONFIDENTIAL, enabled="yes")
    )
    assert read_sensitivity(doc, "docx").problems
    # Two enabled labels for one tenant.
    both = {**msip_properties(CONFIDENTIAL), **msip_properties(PUBLIC)}
    doc2 = add_label_parts(write_docx(tmp_path / "b.docx", TEXT), custom=both)
    reading = read_sensitivity(doc2, "docx")
    assert any("conflicting" in p for p in reading.problems)


def test_disabled_custom_property_label_is_no_label(tmp_path):
    doc = add_label_parts(
        write_docx(tmp_path / "a.docx", TEXT), custom=msip_properties(CONFIDENTIAL, enabled="false")
    )
    assert read_sensitivity(doc, "docx").empty


def test_pdf_info_and_xmp(tmp_path):
    props = msip_properties(CONFIDENTIAL)
    info_only = write_pdf(tmp_path / "info.pdf", TEXT, info=props)
    assert [(x.label_id, x.where) for x in read_sensitivity(info_only, "pdf").labels] == [
        (CONFIDENTIAL, "pdf-info")
    ]
    xmp_only = write_pdf(tmp_path / "xmp.pdf", TEXT, xmp=props)
    assert [(x.label_id, x.where) for x in read_sensitivity(xmp_only, "pdf").labels] == [
        (CONFIDENTIAL, "pdf-xmp")
    ]
    both = write_pdf(tmp_path / "both.pdf", TEXT, info=props, xmp=props)
    assert label_ids(both, "pdf") == [CONFIDENTIAL]


def test_a_pdf_with_a_large_catalog_is_read_not_refused(tmp_path, shared_data):
    # pypdf's default limit is 100,000 elements per array: a tagged filing's catalog exceeds it,
    # and an unreadable reading refuses the document (visible to nobody).
    props = msip_properties(CONFIDENTIAL)
    large = write_pdf(tmp_path / "tagged.pdf", TEXT, info=props, xmp=props, catalog_array=150_000)
    reading = read_sensitivity(large, "pdf")
    assert reading.problems == ()
    assert [x.label_id for x in reading.labels] == [CONFIDENTIAL]
    # A real one: Microsoft's 10-Q, whose catalog shares an object stream with such an array.
    filing = shared_data / "qa" / "docugami_sec10q" / "docs" / "2023 Q1 MSFT.pdf"
    assert read_sensitivity(filing, "pdf").empty


def test_pdf_info_and_xmp_disagreeing_is_ambiguous(tmp_path):
    doc = write_pdf(
        tmp_path / "mismatch.pdf",
        TEXT,
        info=msip_properties(PUBLIC),
        xmp=msip_properties(CONFIDENTIAL),
    )
    reading = read_sensitivity(doc, "pdf")
    assert any("conflicting" in p for p in reading.problems)
    assert decide(reading, policy(tmp_path), SCHEME).status == "refused"


def test_eml_msip_labels_header(tmp_path):
    doc = write_eml(tmp_path / "a.eml", TEXT, msip_header(CONFIDENTIAL))
    reading = read_sensitivity(doc, "eml")
    assert [(x.label_id, x.site_id, x.where) for x in reading.labels] == [
        (CONFIDENTIAL, TENANT, "msip_labels")
    ]
    assert read_sensitivity(write_eml(tmp_path / "b.eml", TEXT), "eml").empty


def test_msg_msip_labels_header(tmp_path, shared_data):
    """A real Outlook message: the label travels in its transport headers (read through oxmsg,
    what unstructured parses .msg with)."""
    doc = write_msg(shared_data, tmp_path / "a.msg", compact_msip_header(CONFIDENTIAL))
    reading = read_sensitivity(doc, "msg")
    assert [(x.label_id, x.site_id, x.where) for x in reading.labels] == [
        (CONFIDENTIAL, TENANT, "msip_labels")
    ]
    assert decide(reading, policy(tmp_path), SCHEME).label == AccessLabel(
        classification="confidential", groups=frozenset({"finance"})
    )
    foreign = write_msg(
        shared_data, tmp_path / "b.msg", compact_msip_header(CONFIDENTIAL, site=OTHER_TENANT)
    )
    assert decide(read_sensitivity(foreign, "msg"), policy(tmp_path), SCHEME).status == "refused"
    plain = copy_sample(shared_data, "fake-email-attachment.msg", tmp_path / "plain.msg")
    assert read_sensitivity(plain, "msg").empty
    # A damaged message cannot prove it carries no label: a problem, never an empty reading.
    damaged = tmp_path / "damaged.msg"
    damaged.write_bytes(doc.read_bytes()[:3000])
    assert read_sensitivity(damaged, "msg").problems


def test_real_office_file_from_the_samples(tmp_path, shared_data):
    doc = copy_sample(shared_data, "2023-half-year-analyses-by-segment.xlsx", tmp_path / "s.xlsx")
    reading = read_sensitivity(doc, "xlsx")
    assert [(x.label_id, x.site_id) for x in reading.labels] == [
        ("1ada0a2f-b917-4d51-b0d0-d418a10c8b23", "12a3af23-a769-4654-847f-958f3d479f4a")
    ]
    # Nobody mapped that tenant's label: visible to nobody.
    assert decide(reading, policy(tmp_path), SCHEME).status == "refused"


def test_unreadable_label_metadata_fails_closed(tmp_path):
    doc = write_docx(tmp_path / "a.docx", TEXT)
    add_label_parts(doc, custom=msip_properties(CONFIDENTIAL))
    import zipfile

    with zipfile.ZipFile(doc) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts["docProps/custom.xml"] = b"<Properties><property name='x'"  # truncated XML
    with zipfile.ZipFile(doc, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    reading = read_sensitivity(doc, "docx")
    assert reading.problems and "unreadable" in reading.problems[0]
    # Files without label metadata read as empty, and non-packages are left to the parser.
    assert read_sensitivity(write_docx(tmp_path / "plain.docx", TEXT), "docx").empty
    (tmp_path / "fake.docx").write_bytes(b"not a zip")
    assert read_sensitivity(tmp_path / "fake.docx", "docx").empty


# --- mapping ---------------------------------------------------------------------------------
def reading_of(tmp_path, label_id, site=TENANT, name="Label"):
    doc = add_label_parts(
        write_docx(tmp_path / f"{label_id}-{site}.docx", TEXT),
        custom=msip_properties(label_id, site=site, name=name),
    )
    return read_sensitivity(doc, "docx")


def test_mapping_by_guid_braces_and_case_insensitive(tmp_path):
    rules = policy(tmp_path)
    decision = decide(reading_of(tmp_path, HIGHLY), rules, SCHEME)
    assert decision.status == "mapped"
    assert decision.label == AccessLabel(classification="restricted", groups=frozenset({"legal"}))


def test_unmapped_and_unknown_tenant_are_refused(tmp_path):
    rules = policy(tmp_path)
    unmapped = decide(reading_of(tmp_path, UNMAPPED), rules, SCHEME)
    assert unmapped.status == "refused" and "not mapped" in (unmapped.reason or "")
    foreign = decide(reading_of(tmp_path, CONFIDENTIAL, site=OTHER_TENANT), rules, SCHEME)
    assert foreign.status == "refused" and "unknown tenant" in (foreign.reason or "")


def test_names_only_where_configured(tmp_path):
    rules = policy(tmp_path)
    reading = reading_of(tmp_path, UNMAPPED, name="Secret Project")
    assert decide(reading, rules, SCHEME).status == "refused"
    named = policy(
        tmp_path,
        '  names: {"Secret Project": {classification: restricted, groups: [board]}}\n',
    )
    decision = decide(reading, named, SCHEME)
    assert decision.label == AccessLabel(classification="restricted", groups=frozenset({"board"}))


def test_removed_or_lowered_label_keeps_the_earlier_one_unless_allowed(tmp_path):
    rules = policy(tmp_path)
    first = decide(reading_of(tmp_path, CONFIDENTIAL), rules, SCHEME)
    previous = first.record
    removed = decide(
        read_sensitivity(write_docx(tmp_path / "x.docx", TEXT), "docx"), rules, SCHEME, previous
    )
    assert removed.status == "mapped" and removed.retained
    assert removed.label == first.label
    lowered = decide(reading_of(tmp_path, PUBLIC), rules, SCHEME, previous)
    assert lowered.retained and lowered.label is not None
    assert lowered.label.classification == "confidential"
    # The retained label survives another refresh (it stays in the record).
    again = decide(
        read_sensitivity(write_docx(tmp_path / "y.docx", TEXT), "docx"),
        rules,
        SCHEME,
        removed.record,
    )
    assert again.retained and again.label == first.label
    allowing = policy(tmp_path, "  allow_downgrade: true\n")
    assert decide(reading_of(tmp_path, PUBLIC), allowing, SCHEME, previous).label == AccessLabel(
        classification="public", groups=frozenset({"everyone"})
    )
    raised = decide(reading_of(tmp_path, HIGHLY), rules, SCHEME, previous)
    assert not raised.retained and raised.label is not None
    assert raised.label.classification == "restricted"


def test_a_refusal_in_between_does_not_launder_a_downgrade(tmp_path):
    # Confidential when indexed; then unreadable, a foreign tenant's or an unmapped label
    # (refused); then Public. The refused refreshes must remember the Confidential label.
    rules = policy(tmp_path)
    first = decide(reading_of(tmp_path, CONFIDENTIAL), rules, SCHEME)
    unreadable = SensitivityReading(problems=("sensitivity label metadata unreadable: X",))
    foreign = read_sensitivity(
        add_label_parts(
            write_docx(tmp_path / "f.docx", TEXT),
            custom=msip_properties(CONFIDENTIAL, site=OTHER_TENANT),
        ),
        "docx",
    )
    public = reading_of(tmp_path, PUBLIC)
    direct = decide(public, rules, SCHEME, first.record)
    assert direct.retained and direct.label is not None
    assert direct.label.classification == "confidential"
    for between in (unreadable, foreign, reading_of(tmp_path, UNMAPPED)):
        refused = decide(between, rules, SCHEME, first.record)
        assert refused.status == "refused"
        assert decide(public, rules, SCHEME, refused.record) == direct, between


def test_record_round_trips_through_json(tmp_path):
    decision = decide(reading_of(tmp_path, CONFIDENTIAL), policy(tmp_path), SCHEME)
    again = SensitivityRecord.model_validate_json(decision.record.model_dump_json())
    assert again == decision.record


# --- the hook: most restrictive wins ---------------------------------------------------------
def base(level: str, groups: set[str], labelled: bool = True) -> ResolvedLabel:
    return ResolvedLabel(
        label=AccessLabel(classification=level, groups=frozenset(groups)),
        labelled=labelled,
        origin="rule:x",
        fingerprint="f",
    )


def test_sensitivity_label_never_lowers_a_rule(tmp_path):
    rules = policy(tmp_path)
    public = decide(reading_of(tmp_path, PUBLIC), rules, SCHEME)
    combined = apply_sensitivity(
        base("confidential", {"hr"}), public, SCHEME, frozenset({"everyone"})
    )
    assert combined.label == AccessLabel(classification="confidential", groups=frozenset({"hr"}))
    confidential = decide(reading_of(tmp_path, CONFIDENTIAL), rules, SCHEME)
    raised = apply_sensitivity(
        base("internal", {"everyone"}), confidential, SCHEME, frozenset({"everyone"})
    )
    assert raised.label == AccessLabel(classification="confidential", groups=frozenset({"finance"}))
    # Groups that exclude each other leave nobody.
    clash = apply_sensitivity(
        base("internal", {"hr"}), confidential, SCHEME, frozenset({"everyone"})
    )
    assert clash.label.groups == frozenset()


def test_sensitivity_label_labels_an_otherwise_unlabelled_document(tmp_path):
    decision = decide(reading_of(tmp_path, CONFIDENTIAL), policy(tmp_path), SCHEME)
    resolved = apply_sensitivity(base("restricted", set(), labelled=False), decision, SCHEME)
    assert resolved.labelled and resolved.label.classification == "confidential"


def test_a_refusal_by_another_source_is_never_relaxed_by_a_sensitivity_label(tmp_path):
    """An object tag naming an unknown level refuses its object (visible to nobody); a mapped
    Purview label in the same file must not turn that into its own, wider label the way it
    labels a document nothing else labelled."""
    refused = refused_label("object-tags: unknown level 'ultra'", SCHEME)
    public = decide(reading_of(tmp_path, PUBLIC), policy(tmp_path), SCHEME)
    for combined in (
        apply_sensitivity(refused, public, SCHEME, frozenset({"everyone"})),
        combine_resolved(
            refused,
            AccessLabel(classification="public", groups=frozenset({"everyone"})),
            "object-metadata",
            SCHEME,
        ),
    ):
        assert not combined.labelled
        assert combined.label == AccessLabel(classification="restricted", groups=frozenset())


def test_refused_label_is_visible_to_nobody(tmp_path):
    decision = decide(reading_of(tmp_path, UNMAPPED), policy(tmp_path), SCHEME)
    resolved = apply_sensitivity(base("public", {"everyone"}), decision, SCHEME)
    assert not resolved.labelled
    assert resolved.label == AccessLabel(classification="restricted", groups=frozenset())


# --- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            f'sensitivity_labels:\n  "{PUBLIC}": {{classification: public, groups: [everyone]}}\n',
            "tenants",
        ),
        (
            'sensitivity_labels:\n  "not-a-guid": {classification: public, groups: [a]}\n'
            f'sensitivity_label_policy: {{tenants: ["{TENANT}"]}}\n',
            "GUID",
        ),
        (
            f'sensitivity_labels:\n  "{PUBLIC}": {{classification: public, groups: [a]}}\n'
            f'  "{{{PUBLIC.upper()}}}": {{classification: restricted, groups: [b]}}\n'
            f'sensitivity_label_policy: {{tenants: ["{TENANT}"]}}\n',
            "twice",
        ),
        (
            f'sensitivity_labels:\n  "{PUBLIC}": {{classification: secretish, groups: [a]}}\n'
            f'sensitivity_label_policy: {{tenants: ["{TENANT}"]}}\n',
            "secretish",
        ),
        (
            f'sensitivity_labels:\n  "{PUBLIC}": '
            "{classification: public, groups: [a], extra: 1}\n"
            f'sensitivity_label_policy: {{tenants: ["{TENANT}"]}}\n',
            "extra",
        ),
        (
            f'sensitivity_labels:\n  "{PUBLIC}": {{classification: public, groups: []}}\n'
            f'sensitivity_label_policy: {{tenants: ["{TENANT}"]}}\n',
            "groups",
        ),
        (
            f'sensitivity_label_policy: {{tenants: ["{TENANT}"], allow_removal: true}}\n',
            "allow_removal",
        ),
    ],
)
def test_bad_sensitivity_config_names_the_file_and_line(tmp_path, yaml_text, message):
    (tmp_path / "citewell.labels.yaml").write_text(yaml_text)
    with pytest.raises(LabelError, match=message) as info:
        LabelRules.load(tmp_path, SCHEME)
    assert "citewell.labels.yaml:" in str(info.value)


def test_readme_sensitivity_labels_example_loads(tmp_path):
    """The labels mapping the README shows is a valid labels file, as written."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("# citewell.labels.yaml (next to default/rules)\n", 1)[1].split("```", 1)[
        0
    ]
    (tmp_path / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [everyone]}\n" + block
    )
    rules = LabelRules.load(tmp_path, SCHEME).sensitivity
    assert rules.labels[CONFIDENTIAL].groups == frozenset({"finance"})
    assert rules.tenants == frozenset({TENANT})
    decision = decide(reading_of(tmp_path, HIGHLY), rules, SCHEME)
    assert decision.label == AccessLabel(classification="restricted", groups=frozenset({"legal"}))


@pytest.mark.parametrize("spell", [str.lower, str.upper])
def test_label_property_names_are_read_in_any_case(tmp_path, spell):
    # Office custom property names are case-insensitive; a tool that rewrote them as
    # "msip_label_<id>_enabled" left a labelled file read as unlabelled (the rules' label).
    props = {spell(key): value for key, value in msip_properties(CONFIDENTIAL).items()}
    doc = add_label_parts(write_docx(tmp_path / "a.docx", TEXT), custom=props)
    assert label_ids(doc, "docx") == [CONFIDENTIAL]
    mail = write_eml(tmp_path / "a.eml", TEXT, spell(msip_header(CONFIDENTIAL)))
    assert label_ids(mail, "eml") == [CONFIDENTIAL]
