from pathlib import Path

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


def test_banner_in_middle_of_long_document_is_ignored():
    lines = [f"line {i} of ordinary prose." for i in range(40)]
    lines[20] = "CONFIDENTIAL"
    assert detect_banner("\n".join(lines), SCHEME) is None
    lines[-1] = "RESTRICTED"
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
