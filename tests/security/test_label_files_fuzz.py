"""Property-based labels files and sidecars (issue 16, items 1 and 2): every defect (duplicate
key, unknown key, wrong type, bad glob, unknown level) is a LabelError naming the file and the
line of the defect, never another exception and never a silently chosen value."""

from __future__ import annotations

import contextlib
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import given, settings
from hypothesis import strategies as st

from citewell.core.errors import LabelError
from citewell.core.models import ClassificationScheme
from citewell.ingestion.labels import LabelRules

SCHEME = ClassificationScheme()
LEVELS = st.sampled_from(SCHEME.levels)
GROUP = st.sampled_from(["everyone", "finance", "hr", "board", "eng-ops", "sales.emea"])
GLOBS = st.sampled_from(["**", "finance/**", "*.pdf", "hr/?.md", "**/[ab]*.txt", "x/[!z]/*"])
WRONG_TYPES = {
    "classification": ["3", "[internal]", "true", "{level: internal}", "1.5"],
    "groups": ["everyone", "7", "[1, 2]", "[true]", "{a: b}", "[[a]]"],
    "match": ["5", "[a, b]", "true", "{a: b}"],
}
UNKNOWN_KEYS = st.sampled_from(["clasification", "group", "owner", "level", "Groups", "matches"])
BAD_GLOBS = st.sampled_from(["[z-a]", "docs/[9-0]*.md", "a/[z-a]/**"])


@st.composite
def label_blocks(draw: st.DrawFn, with_match: bool) -> list[tuple[str, str]]:
    """(key, value) lines of one default/rule/sidecar, at least one key."""
    keys: list[tuple[str, str]] = []
    if with_match:
        keys.append(("match", repr(draw(GLOBS))))
    if draw(st.booleans()) or not keys:
        keys.append(("classification", draw(LEVELS)))
    if draw(st.booleans()):
        groups = draw(st.lists(GROUP, min_size=1, max_size=3, unique=True))
        keys.append(("groups", "[" + ", ".join(groups) + "]"))
    return keys


@st.composite
def labels_files(draw: st.DrawFn) -> tuple[list[str], list[list[tuple[str, str]]]]:
    default = draw(label_blocks(with_match=False))
    rules = draw(st.lists(label_blocks(with_match=True), min_size=0, max_size=4))
    return ["default"] + ["rule"] * len(rules), [default, *rules]


def _render(kinds: list[str], blocks: list[list[tuple[str, str]]]) -> list[str]:
    lines = ["default:"] + [f"  {k}: {v}" for k, v in blocks[0]]
    if len(blocks) > 1:
        lines.append("rules:")
        for block in blocks[1:]:
            first, *rest = block
            lines.append(f"  - {first[0]}: {first[1]}")
            lines.extend(f"    {k}: {v}" for k, v in rest)
    return lines


Blocks = list[list[tuple[str, str]]]


def _defect(data: st.DataObject, blocks: Blocks) -> tuple[int, str, str, str]:
    """(block index, kind, key, value) of one defect to write into a block."""
    draw = data.draw
    target = draw(st.integers(min_value=0, max_value=len(blocks) - 1))
    kind = draw(st.sampled_from(["duplicate", "unknown key", "wrong type", "unknown level"]))
    is_rule = target > 0
    if kind == "duplicate":
        key, value = draw(st.sampled_from(blocks[target]))
        return target, kind, key, value
    if kind == "unknown key":
        return target, kind, draw(UNKNOWN_KEYS), "x"
    if kind == "unknown level":
        return target, kind, "classification", draw(st.sampled_from(["secretish", "top", "pii"]))
    keys = ["classification", "groups", *(["match"] if is_rule else [])]
    key = draw(st.sampled_from(keys))
    return target, kind, key, draw(st.sampled_from(WRONG_TYPES[key]))


def _apply(blocks: Blocks, target: int, key: str, value: str) -> Blocks:
    """Replace ``key`` in the block (or append it), keeping the first key of a rule first."""
    block = list(blocks[target])
    if any(k == key for k, _ in block):
        block = [(k, value if k == key else v) for k, v in block]
    else:
        block.append((key, value))
    return [*blocks[:target], block, *blocks[target + 1 :]]


def _line_of(lines: list[str], block_index: int, key: str, occurrence: int = 1) -> int:
    """1-based line of ``key`` in the block's ``occurrence``-th appearance."""
    starts = [i for i, line in enumerate(lines) if line in ("default:",) or line.startswith("  - ")]
    start = starts[block_index]
    end = starts[block_index + 1] if block_index + 1 < len(starts) else len(lines)
    seen = 0
    for i in range(start, end):
        stripped = lines[i].strip().removeprefix("- ")
        if stripped.startswith(f"{key}:"):
            seen += 1
            if seen == occurrence:
                return i + 1
    raise AssertionError(f"{key} not in block {block_index}")


def _load_error(lines: list[str]) -> LabelError | None:
    """The LabelError that loading a folder whose ``citewell.labels.yaml`` holds ``lines``
    raises, or None when it loads."""
    with TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "citewell.labels.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            LabelRules.load(root, SCHEME)
        except LabelError as exc:
            return exc
    return None


@settings(max_examples=120, deadline=None)
@given(labels_files(), st.data())
def test_every_defect_in_a_labels_file_is_reported_at_its_line(
    shape: tuple[list[str], list[list[tuple[str, str]]]], data: st.DataObject
) -> None:
    kinds, blocks = shape
    target, kind, key, value = _defect(data, blocks)
    if kind == "duplicate":
        blocks = [*blocks[:target], [*blocks[target], (key, value)], *blocks[target + 1 :]]
        expected_key, occurrence = key, 2
    else:
        blocks = _apply(blocks, target, key, value)
        expected_key, occurrence = key, 1
    lines = _render(kinds, blocks)
    line = _line_of(lines, target, expected_key, occurrence)
    error = _load_error(lines)
    assert error is not None, f"{kind} {key}={value} accepted:\n" + "\n".join(lines)
    assert f"citewell.labels.yaml:{line}:" in str(error), (lines, str(error))


@settings(max_examples=100, deadline=None)
@given(labels_files(), BAD_GLOBS, st.data())
def test_a_bad_glob_is_a_label_error_at_its_line(
    shape: tuple[list[str], list[list[tuple[str, str]]]], glob: str, data: st.DataObject
) -> None:
    kinds, blocks = shape
    blocks = [*blocks, [("match", repr(glob)), ("classification", "public")]]
    lines = _render([*kinds, "rule"], blocks)
    line = _line_of(lines, len(blocks) - 1, "match")
    error = _load_error(lines)
    assert error is not None, "bad glob accepted"
    assert f"citewell.labels.yaml:{line}:" in str(error) and "glob" in str(error)


@settings(max_examples=120, deadline=None)
@given(label_blocks(with_match=False), st.data())
def test_every_defect_in_a_sidecar_is_a_label_error_at_its_line(
    block: list[tuple[str, str]], data: st.DataObject
) -> None:
    _, kind, key, value = _defect(data, [block])
    if kind == "duplicate":
        block = [*block, (key, value)]
        occurrence = 2
    else:
        block = _apply([block], 0, key, value)[0]
        occurrence = 1
    lines = [f"{k}: {v}" for k, v in block]
    line = [i + 1 for i, text in enumerate(lines) if text.startswith(f"{key}:")][occurrence - 1]
    with TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a.pdf").write_bytes(b"%PDF-1.4")
        (root / "a.pdf.labels.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        rules = LabelRules.load(root, SCHEME)
        try:
            rules.resolve("a.pdf", root / "a.pdf")
        except LabelError as exc:
            assert f"a.pdf.labels.yaml:{line}:" in str(exc), (lines, str(exc))
        else:
            raise AssertionError(f"{kind} {key}={value} accepted:\n" + "\n".join(lines))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_valid_labels_file_or_a_label_error(text: str) -> None:
    with TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "citewell.labels.yaml").write_text(text, encoding="utf-8")
        (root / "a.txt.labels.yaml").write_text(text, encoding="utf-8")
        # Anything else escaping (re.error, TypeError...) fails the test.
        with contextlib.suppress(LabelError):
            LabelRules.load(root, SCHEME).resolve("a.txt", root / "a.txt")
