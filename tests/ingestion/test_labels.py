import os
import re
from pathlib import Path
from typing import Literal

import pytest

from citewell.core.errors import LabelError, UnknownClassificationError
from citewell.core.models import AccessLabel, ClassificationScheme
from citewell.ingestion.labels import LabelRules, detect_banner, find_banner, glob_to_regex

SCHEME = ClassificationScheme()

LABELS = """\
default: {classification: internal, groups: [everyone]}
rules:
  - {match: "finance/**", classification: confidential, groups: [finance]}
  - {match: "finance/public/*.md", classification: public}
  - {match: "hr/*.pdf", groups: [hr]}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "citewell.labels.yaml").write_text(LABELS)
    (tmp_path / "finance" / "public").mkdir(parents=True)
    (tmp_path / "hr").mkdir()
    return tmp_path


def test_first_matching_rule_then_default(folder: Path):
    rules = LabelRules.load(folder, SCHEME)
    q = rules.resolve("finance/q3/report.pdf")
    assert q.label == AccessLabel(classification="confidential", groups=frozenset({"finance"}))
    assert q.labelled and q.origin.startswith("rule:")
    # first match wins: finance/** precedes the more specific public rule
    assert rules.resolve("finance/public/a.md").label.classification == "confidential"
    other = rules.resolve("notes/todo.txt")
    assert other.label == AccessLabel(classification="internal", groups=frozenset({"everyone"}))
    assert other.origin.startswith("default:")


def test_rule_setting_one_key_takes_the_other_from_default(folder: Path):
    resolved = LabelRules.load(folder, SCHEME).resolve("hr/salaries.pdf")
    assert resolved.label == AccessLabel(classification="internal", groups=frozenset({"hr"}))
    assert "groups:" in resolved.origin


def test_sidecar_beats_rule(folder: Path):
    doc = folder / "finance" / "plan.xlsx"
    doc.write_bytes(b"x")
    (folder / "finance" / "plan.xlsx.labels.yaml").write_text(
        "classification: restricted\ngroups: [board]\n"
    )
    resolved = LabelRules.load(folder, SCHEME).resolve("finance/plan.xlsx", doc)
    assert resolved.label == AccessLabel(classification="restricted", groups=frozenset({"board"}))
    assert resolved.origin.startswith("sidecar:")


def test_a_path_a_rule_matches_only_ignoring_case_is_unlabelled_not_defaulted(folder: Path):
    # "Finance/q3.xlsx" from a case-insensitive source (a Windows share, SharePoint) fell to the
    # default, internal for everyone, though "finance/**" says confidential for finance: which
    # the owner meant cannot be told, so it is visible to nobody until a rule or sidecar says.
    rules = LabelRules.load(folder, SCHEME)
    assert not rules.resolve("Finance/q3.xlsx").labelled
    assert not rules.resolve("FINANCE/public/a.md").labelled
    assert not rules.resolve("HR/salaries.pdf").labelled
    assert rules.resolve("finance/q3.xlsx").label.classification == "confidential"
    assert rules.resolve("hr/Salaries.pdf").label.groups == {"hr"}  # "*" matches any case
    doc = folder / "Finance" / "plan.xlsx"
    doc.parent.mkdir()
    doc.write_bytes(b"x")
    (folder / "Finance" / "plan.xlsx.labels.yaml").write_text(
        "classification: restricted\ngroups: [board]\n"
    )
    sidecar = rules.resolve("Finance/plan.xlsx", doc)
    assert sidecar.labelled and sidecar.origin.startswith("sidecar:")
    # A rule written with the path's own case labels it; one giving the same label also does.
    (folder / "citewell.labels.yaml").write_text(
        LABELS + '  - {match: "Finance/**", classification: confidential, groups: [finance]}\n'
    )
    fixed = LabelRules.load(folder, SCHEME).resolve("Finance/q3.xlsx")
    assert fixed.labelled and fixed.label.classification == "confidential"


def test_unknown_level_names_file_and_line(folder: Path):
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [everyone]}\n"
        "rules:\n"
        "  - {match: 'a/**', classification: public}\n"
        "  - {match: 'b/**', classification: topsecret}\n"
    )
    with pytest.raises(LabelError, match=r"citewell\.labels\.yaml:4: .*topsecret"):
        LabelRules.load(folder, SCHEME)


def test_unknown_level_in_sidecar_names_sidecar(tmp_path: Path):
    doc = tmp_path / "a.txt"
    doc.write_text("hi")
    (tmp_path / "a.txt.labels.yaml").write_text("groups: [x]\nclassification: secretish\n")
    with pytest.raises(LabelError, match=r"a\.txt\.labels\.yaml:2: "):
        LabelRules.load(tmp_path, SCHEME).resolve("a.txt", doc)


@pytest.mark.parametrize(
    "content",
    [
        "rules: {match: x}\n",
        "default: [internal]\n",
        "bogus: 1\n",
        "rules:\n  - {classification: public, groups: [a]}\n",
        "default: {classification: internal, groups: everyone}\n",
        "default: {classification: [internal\n",
    ],
)
def test_malformed_files_raise_label_error(tmp_path: Path, content: str):
    (tmp_path / "citewell.labels.yaml").write_text(content)
    with pytest.raises(LabelError, match=r"citewell\.labels\.yaml:\d+"):
        LabelRules.load(tmp_path, SCHEME)


def test_no_configuration_is_unlabelled_and_fails_closed(tmp_path: Path):
    resolved = LabelRules.load(tmp_path, SCHEME).resolve("x.txt", tmp_path / "x.txt", "hello")
    assert not resolved.labelled
    assert resolved.label == AccessLabel(classification="restricted", groups=frozenset())


def test_banner_raises_but_never_lowers(folder: Path):
    rules = LabelRules.load(folder, SCHEME)
    raised = rules.resolve("notes/a.txt", None, "STRICTLY CONFIDENTIAL\n\nQ3 plan text.")
    assert raised.label.classification == "restricted"
    assert raised.banner == "STRICTLY CONFIDENTIAL"
    kept = rules.resolve("finance/x.pdf", None, "PUBLIC\nINTERNAL USE ONLY\n\nText.")
    assert kept.label.classification == "confidential"
    assert kept.banner is None
    assert raised.fingerprint != rules.resolve("notes/a.txt", None, "plain").fingerprint


def test_fingerprint_is_stable_and_tracks_label(folder: Path):
    rules = LabelRules.load(folder, SCHEME)
    a = rules.resolve("finance/a.pdf")
    assert a.fingerprint == rules.resolve("finance/b.pdf").fingerprint
    assert a.fingerprint != rules.resolve("notes/a.pdf").fingerprint


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("CONFIDENTIAL\nBody text follows here.", "confidential"),
        ("Body.\n\n*** INTERNAL USE ONLY ***", "internal"),
        ("Memo\nClassification: Restricted\nBody.", "restricted"),
        ("Security classification = confidential\nx", "confidential"),
        ("Title\n[STRICTLY CONFIDENTIAL - DO NOT FORWARD]\nx", "restricted"),
        ("Please keep this confidential between us.\nThanks.", None),
        ("The restricted stock units vest in 2025.", None),
        ("NONCONFIDENTIAL NOTE\nx", None),
        ("Our internal teams met.\nInternal only, confidential stuff later.", None),
    ],
)
def test_detect_banner(text: str, level: str | None):
    assert detect_banner(text, SCHEME) == level


def test_marking_line_counts_anywhere_but_loose_forms_only_at_edges():
    lines = [f"line {i} of ordinary prose." for i in range(40)]
    lines[20] = "ACME CORP CONFIDENTIAL"  # a loose form in the middle of the text: not a banner
    assert detect_banner("\n".join(lines), SCHEME) is None
    lines[20] = "Confidential"  # a line that is nothing but a marking: a banner anywhere
    assert detect_banner("\n".join(lines), SCHEME) == "confidential"
    lines[-1] = "ACME RESTRICTED"  # the loose form at the document's edge
    assert detect_banner("\n".join(lines), SCHEME) == "restricted"


def test_custom_banner_map_is_validated():
    assert find_banner("ACME SENSITIVE\nx", SCHEME, {"acme sensitive": "confidential"}) == (
        "ACME SENSITIVE",
        "confidential",
    )
    with pytest.raises(UnknownClassificationError):
        detect_banner("x", SCHEME, {"ACME": "ultra"})


def test_custom_scheme_drops_default_banners_it_cannot_map():
    scheme = ClassificationScheme(levels=("open", "closed"))
    assert detect_banner("CONFIDENTIAL\nx", scheme) is None
    assert detect_banner("Classification: closed\nx", scheme) == "closed"


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("finance/**", "finance/a.pdf", True),
        ("finance/**", "finance/x/y/a.pdf", True),
        ("finance/**", "finances/a.pdf", False),
        ("*.pdf", "a.pdf", True),
        ("*.pdf", "dir/a.pdf", False),
        ("**/*.pdf", "dir/sub/a.pdf", True),
        ("**/*.pdf", "a.pdf", True),
        ("hr/?.md", "hr/a.md", True),
        ("hr/[ab].md", "hr/c.md", False),
    ],
)
def test_glob(pattern: str, path: str, matches: bool):
    assert bool(glob_to_regex(pattern).match(path)) is matches


# --- configuration errors: duplicate keys, wrong types, bad globs (issue 16, item 2) ----------
@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (
            "default: {classification: internal, groups: [everyone]}\n"
            "rules: []\n"
            "default: {classification: public, groups: [everyone]}\n",
            3,
            "duplicate key 'default'",
        ),
        ("default:\n  classification: restricted\n  classification: public\n", 3, "duplicate"),
        ("rules:\n  - {match: 'a/[z-a]', classification: public, groups: [a]}\n", 2, "glob"),
        ("rules:\n  - {match: 5, classification: public, groups: [a]}\n", 2, "match"),
        ("default: {classification: internal, groups: [1, 2]}\n", 1, "groups"),
        ("default: {classification: internal, groups: [true]}\n", 1, "groups"),
        ("default:\n  classification: internal\n  groups: [a]\n  group: [b]\n", 4, "unknown key"),
        ("default: {classification: '', groups: [a]}\n", 1, "classification"),
    ],
)
def test_labels_file_errors_name_file_and_line(
    tmp_path: Path, content: str, line: int, message: str
):
    (tmp_path / "citewell.labels.yaml").write_text(content)
    with pytest.raises(LabelError, match=rf"citewell\.labels\.yaml:{line}: .*{message}"):
        LabelRules.load(tmp_path, SCHEME)


@pytest.mark.parametrize(
    "content",
    [
        "classification: restricted\nclassification: public\ngroups: [a]\n",
        "classification: restricted\ngroups: [a]\nclasification: public\n",
        "classification: restricted\ngroups: [7]\n",
        "- classification: restricted\n",
    ],
)
def test_sidecar_errors_name_the_sidecar_and_line(tmp_path: Path, content: str):
    doc = tmp_path / "a.txt"
    doc.write_text("hi")
    (tmp_path / "a.txt.labels.yaml").write_text(content)
    with pytest.raises(LabelError, match=r"a\.txt\.labels\.yaml:\d+: "):
        LabelRules.load(tmp_path, SCHEME).resolve("a.txt", doc)


def test_invalid_glob_in_code_raises_label_error():
    with pytest.raises(LabelError, match=r"invalid glob '\[z-a\]'"):
        glob_to_regex("[z-a]")


@pytest.mark.parametrize("content", ["", "# nothing\n", "{}\n", "classification: null\n"])
def test_an_empty_sidecar_is_an_error_not_silence(tmp_path: Path, content: str):
    doc = tmp_path / "a.txt"
    doc.write_text("hi")
    (tmp_path / "a.txt.labels.yaml").write_text(content)
    rules = LabelRules(SCHEME, default=AccessLabel(classification="public", groups={"all"}))
    with pytest.raises(LabelError, match=r"a\.txt\.labels\.yaml:1: .*neither"):
        rules.resolve("a.txt", doc)


def test_yml_spellings_are_refused_not_ignored(tmp_path: Path):
    doc = tmp_path / "a.txt"
    doc.write_text("hi")
    for name in ("a.txt.labels.yml", "a.txt.LABELS.YAML", "a.TXT.labels.yaml"):
        (tmp_path / name).write_text("classification: restricted\n")
        with pytest.raises(LabelError, match=rf"{re.escape(name)}: .*a\.txt\.labels\.yaml"):
            LabelRules.load(tmp_path, SCHEME).resolve("a.txt", doc)
        (tmp_path / name).unlink()
    (tmp_path / "citewell.labels.yml").write_text("default: {classification: public}\n")
    with pytest.raises(LabelError, match=r"citewell\.labels\.yml: .*citewell\.labels\.yaml"):
        LabelRules.load(tmp_path, SCHEME)


def test_a_nested_labels_file_is_a_configuration_error(tmp_path: Path):
    from citewell.ingestion.sources import LocalFolderSource

    (tmp_path / "citewell.labels.yaml").write_text("default: {classification: public}\n")
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "citewell.labels.yaml").write_text("default: {classification: x}\n")
    (tmp_path / "board" / "minutes.md").write_text("# Minutes\n")
    rules = LabelRules.load(tmp_path, SCHEME)
    source = LocalFolderSource(tmp_path, labels=rules, max_file_bytes=1000)
    with pytest.raises(LabelError, match=r"board/citewell\.labels\.yaml: .*'board/\*\*'"):
        source.discover()


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("Subject: [CONFIDENTIAL] Q3 plan\nFrom: ceo@example.com\n\nBody.", "confidential"),
        ("Subject: Q3 plan (Internal use only)\n\nBody.", "internal"),
        ("Sensitivity: Highly Confidential\n\nBody.", "restricted"),
        ("Body text.\n\nclassification: confidential - do not forward", "confidential"),
        ("Body text.\n\nACME CORP - NOT CONFIDENTIAL", None),
        ("Report on (internal) audit practices across the group.", None),
        # Terms in upper-case titles at a page's top are not markings: 2 of the 20 SEC 10-Qs
        # (exhibits' titles) were raised to restricted and hidden from their readers.
        ("RESTRICTED STOCK UNIT AGREEMENT\n\nThe award vests in four years.", None),
        ("INTERNAL CONTROL OVER FINANCIAL REPORTING\n\nNo change.", None),
        ("TRADE SECRET PROTECTION POLICY\n\nBody.", None),
        # ... and markings in upper-case lines still are.
        ("ACME CORP CONFIDENTIAL\n\nBody.", "confidential"),
        ("CONFIDENTIAL AND PROPRIETARY\n\nBody.", "confidential"),
        ("ACME CONFIDENTIAL INFORMATION\n\nBody.", "confidential"),
        ("TOP SECRET//NOFORN\n\nBody.", "restricted"),
        ("HIGHLY CONFIDENTIAL - ATTORNEYS' EYES ONLY\n\nBody.", "restricted"),
        ("ACME RESTRICTED DO NOT FORWARD\n\nBody.", "restricted"),
        ("ACME INTERNAL USE ONLY\n\nBody.", "internal"),
    ],
)
def test_loose_banner_forms_at_the_edges(text: str, level: str | None):
    assert detect_banner(text, SCHEME) == level


def test_a_document_whose_sidecar_name_would_be_too_long_has_no_sidecar(tmp_path: Path):
    """A file name of 244-255 bytes is legal, but its sidecar's (12 bytes longer) cannot exist:
    the document has no sidecar and takes the rules, instead of failing ("File name too long")
    and being withdrawn on every refresh."""
    (tmp_path / "citewell.labels.yaml").write_text(LABELS)
    name = "q" * 250 + ".md"
    doc = tmp_path / "finance" / name
    doc.parent.mkdir()
    doc.write_text("# Q3\n")
    resolved = LabelRules.load(tmp_path, SCHEME).resolve(f"finance/{name}", doc)
    assert resolved.labelled
    assert resolved.label == AccessLabel(classification="confidential", groups={"finance"})


@pytest.mark.timeout(60)
def test_a_labels_file_that_is_not_a_regular_file_is_an_error_not_a_hang(tmp_path: Path):
    """A FIFO named like a sidecar (or the labels file) would block the run forever on open:
    it is refused like any other unreadable labels file."""
    doc = tmp_path / "a.txt"
    doc.write_text("hi")
    os.mkfifo(tmp_path / "a.txt.labels.yaml")
    rules = LabelRules(SCHEME, default=AccessLabel(classification="public", groups={"all"}))
    with pytest.raises(LabelError, match=r"a\.txt\.labels\.yaml: .*not a regular file"):
        rules.resolve("a.txt", doc)
    (tmp_path / "a.txt.labels.yaml").unlink()
    os.mkfifo(tmp_path / "citewell.labels.yaml")
    with pytest.raises(LabelError, match=r"citewell\.labels\.yaml: .*not a regular file"):
        LabelRules.load(tmp_path, SCHEME)


def test_a_newline_in_a_file_name_does_not_escape_a_restrictive_rule(folder: Path):
    # "**" compiled to ".*", which stops at a newline: "finance/q3\nreport.pdf" matched no rule
    # and fell to the default label, visible to everyone.
    rules = LabelRules.load(folder, SCHEME)
    for path in ("finance/q3\nreport.pdf", "finance/\n/plan.xlsx", "finance/\n"):
        resolved = rules.resolve(path)
        assert resolved.label.classification == "confidential", path
        assert resolved.label.groups == frozenset({"finance"}), path
    assert glob_to_regex("**/*.md").match("a\nb/c\nd.md")
    assert glob_to_regex("hr/*.pdf").match("hr/x\ny.pdf")
    assert not glob_to_regex("hr/*.pdf").match("hr/x\n/y.pdf")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32"])
def test_a_banner_line_the_parse_joins_is_read_in_any_encoding_the_parse_reads(
    tmp_path: Path, encoding: str
) -> None:
    # Markdown joins a paragraph's lines, so a banner line inside one is read from the source as
    # written; that source was decoded as UTF-8 only, and a UTF-16 file (Notepad's "Unicode"),
    # parsed correctly, kept its banner's letters apart with NULs: the document stayed public.
    from citewell.ingestion.parsing import parse_document

    prose = "The heron count rose again this week along the northern shore of the lake."
    note = tmp_path / "note.md"
    note.write_bytes(f"# Heron notes\n\n{prose}\nStrictly Confidential\n{prose}\n".encode(encoding))
    parsed = parse_document(note, "md")
    assert "Strictly Confidential" in parsed.text  # read, but joined into the paragraph
    marking = LabelRules(SCHEME).strongest_marking(parsed, note)
    assert marking is not None and marking.level == "restricted"


@pytest.mark.parametrize(
    "markup",
    [
        "<footer><p>Confidential</p></footer>",
        '<div align="center"><b>CONFIDENTIAL</b></div>',
        "<p>\nConfidential\n</p>",
    ],
)
def test_a_banner_in_html_written_inside_markdown_is_read(tmp_path: Path, markup: str) -> None:
    # Markdown passes HTML through: a banner in a footer or a centred block is shown to readers,
    # though its source line holds the tags too (suspected missed in an attack; it is read).
    from citewell.ingestion.parsing import parse_document

    note = tmp_path / "note.md"
    note.write_text(f"# Heron notes\n\nThe heron count rose again this week.\n\n{markup}\n")
    marking = LabelRules(SCHEME).strongest_marking(parse_document(note, "md"), note)
    assert marking is not None and marking.level == "confidential", marking


def test_a_pdfs_banners_are_read_without_reading_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Source lines are a markup or text file's: the marking step (in the run's own process)
    # read every PDF's bytes whole only to find it had none.
    from citewell.ingestion.parsing import parse_document
    from tests.ingestion.mip_files import write_pdf

    pdf = write_pdf(tmp_path / "memo.pdf", "CONFIDENTIAL\nThe heron count rose.")
    parsed = parse_document(pdf, "pdf")
    read: list[str] = []
    real_read_bytes = Path.read_bytes

    def counted(self: Path) -> bytes:
        read.append(self.name)
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    marking = LabelRules(SCHEME).strongest_marking(parsed, pdf)
    assert marking is not None and marking.level == "confidential"
    assert read == []


@pytest.mark.parametrize("rule_form,path_form", [("NFC", "NFD"), ("NFD", "NFC")])
def test_a_rule_matches_a_path_spelt_in_the_other_unicode_form(
    tmp_path: Path, rule_form: Literal["NFC", "NFD"], path_form: Literal["NFC", "NFD"]
):
    # "Führung" typed in the labels file (NFC) and a file or object named on macOS (NFD) look
    # the same to everyone, but the rule missed it and the default (internal, everyone) applied.
    import unicodedata

    rule = unicodedata.normalize(rule_form, "führung/**")
    (tmp_path / "citewell.labels.yaml").write_text(
        "default: {classification: internal, groups: [everyone]}\n"
        f'rules:\n  - {{match: "{rule}", classification: restricted, groups: [board]}}\n',
        encoding="utf-8",
    )
    path = unicodedata.normalize(path_form, "führung/plan.md")
    resolved = LabelRules.load(tmp_path, SCHEME).resolve(path)
    assert resolved.label == AccessLabel(classification="restricted", groups=frozenset({"board"}))


def test_a_sidecar_named_in_another_unicode_form_refuses_its_document(tmp_path: Path):
    # Ignored, it would leave the document at the default; it is a misspelt sidecar, named so.
    import unicodedata

    (tmp_path / "citewell.labels.yaml").write_text(LABELS)
    doc = tmp_path / unicodedata.normalize("NFD", "führung.md")
    doc.write_bytes(b"x")
    sidecar = unicodedata.normalize("NFC", "führung.md") + ".labels.yaml"
    (tmp_path / sidecar).write_text("classification: restricted\ngroups: [board]\n")
    with pytest.raises(LabelError, match="another Unicode form"):
        LabelRules.load(tmp_path, SCHEME).resolve(doc.name, doc)
