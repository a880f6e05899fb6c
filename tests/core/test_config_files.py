"""The one YAML loader: duplicate keys, lines for every error, bounded alias expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.config_files import load_yaml, validate_yaml
from citewell.core.errors import ConfigurationError, LabelError
from citewell.core.models import Frozen


class _Entry(Frozen):
    name: str
    size: int = 0


class _File(Frozen):
    entries: tuple[_Entry, ...] = ()


def _write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "config.yaml"
    file.write_text(text, encoding="utf-8")
    return file


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    file = _write(tmp_path, "a: 1\nb: 2\na: 3\n")
    with pytest.raises(ConfigurationError, match=r"config\.yaml:3: duplicate key 'a' .*line 1"):
        load_yaml(file)


def test_duplicate_keys_in_nested_flow_mappings(tmp_path: Path) -> None:
    file = _write(tmp_path, "entries:\n  - {name: x, size: 1}\n  - {name: y, name: z}\n")
    with pytest.raises(LabelError, match=r"config\.yaml:3: duplicate key 'name'"):
        load_yaml(file, error=LabelError)


def test_validation_errors_name_the_line_of_the_offending_key(tmp_path: Path) -> None:
    file = _write(tmp_path, "entries:\n  - name: x\n  - name: y\n    colour: red\n")
    with pytest.raises(ConfigurationError, match=r"yaml:4: entries\.1\.colour: unknown key"):
        validate_yaml(_File, load_yaml(file))
    file = _write(tmp_path, "entries:\n  - name: x\n\n    size: big\n")
    with pytest.raises(ConfigurationError, match=r"config\.yaml:4: entries\.0\.size"):
        validate_yaml(_File, load_yaml(file))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", r":3: merge keys"),
        ("a: &a [1, *a]\n", r":1: recursive alias"),
        ("a: !!set {x, y}\n", r":1: unsupported tag"),
        ("a: !!python/object:os.system {}\n", r":1: unsupported tag"),
        ("a: [1, 2\n", r"invalid YAML"),
        ("? [a, b]\n: 1\n", r":1: mapping keys must be plain values"),
        ("a: " + "[" * 1200 + "]" * 1200 + "\n", r"nested too deeply"),
    ],
)
def test_ambiguous_or_unsafe_yaml_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_yaml(_write(tmp_path, text))


def test_alias_bombs_are_bounded(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    with pytest.raises(ConfigurationError, match="too many values"):
        load_yaml(_write(tmp_path, "\n".join(lines) + "\n"))


def test_plain_values_and_empty_files(tmp_path: Path) -> None:
    document = load_yaml(_write(tmp_path, "a: [1, two, true, null]\nb: {c: 1.5}\n"))
    assert document.data == {"a": [1, "two", True, None], "b": {"c": 1.5}}
    assert document.line(("b", "c")) == 2 and document.line(("a", 3)) == 1
    assert load_yaml(_write(tmp_path, "# nothing\n")).data is None
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_yaml(tmp_path / "absent.yaml")
