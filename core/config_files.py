"""The one YAML loader for every configuration file Citewell reads (labels files, label
sidecars, the principals file, the sources config).

PyYAML's ``safe_load`` keeps the *last* of two equal keys, so a second ``default:`` block
silently replaces the first; it also forgets where each value was written. This loader composes
the node tree, refuses duplicate keys, merge keys (``<<``) and runaway alias expansion, and
remembers the line of every value, so that :func:`validate_yaml` can turn a pydantic error into
``file:line: field: problem``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from citewell.core.errors import ConfigurationError

M = TypeVar("M", bound=BaseModel)

Location = tuple[str | int, ...]

# Configuration files are small; a bigger one is a mistake (or an attack on the loader).
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Aliases can make a small file expand exponentially ("billion laughs"); no real config file
# comes near this many values.
_MAX_NODES = 250_000
_MAX_FLOW_DEPTH = 64
_PLAIN_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: plain data (dicts, lists, scalars) and the line of every value."""

    file: Path
    data: object
    lines: Mapping[Location, int] = field(default_factory=dict)

    def line(self, location: Location = ()) -> int:
        """The line (1-based) of the value at ``location``, or of its nearest ancestor."""
        loc = tuple(location)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def where(self, location: Location = ()) -> str:
        return f"{self.file}:{self.line(location)}"


class _Builder:
    """Turns a composed node tree into plain data, recording lines and refusing ambiguity."""

    def __init__(self, file: Path, error: type[ConfigurationError]) -> None:
        self.file = file
        self.error = error
        self.lines: dict[Location, int] = {}
        self._constructor = yaml.SafeLoader("")
        self._nodes = 0
        self._active: set[int] = set()

    def fail(self, node: yaml.Node, message: str) -> ConfigurationError:
        return self.error(f"{self.file}:{node.start_mark.line + 1}: {message}")

    def build(self, node: yaml.Node, location: Location) -> object:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise self.fail(node, f"too many values (over {_MAX_NODES:,}; alias expansion?)")
        if id(node) in self._active:
            raise self.fail(node, "recursive alias")
        self.lines.setdefault(location, node.start_mark.line + 1)
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_COLLECTION_TAGS:
            # ``!!set``, ``!!omap`` or an application tag would silently become a plain dict.
            raise self.fail(node, f"unsupported tag {node.tag!r}")
        if isinstance(node, yaml.MappingNode):
            self._active.add(id(node))
            try:
                return self._mapping(node, location)
            finally:
                self._active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self._active.add(id(node))
            try:
                return [self.build(item, (*location, i)) for i, item in enumerate(node.value)]
            finally:
                self._active.discard(id(node))
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"invalid value: {exc}") from exc

    def _mapping(self, node: yaml.MappingNode, location: Location) -> dict[object, object]:
        out: dict[object, object] = {}
        first_line: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, "merge keys ('<<') are not supported; write keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "mapping keys must be plain values")
            key = self.build(key_node, (*location, "<key>"))
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise self.fail(key_node, f"unsupported key {key!r}")
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise self.fail(
                    key_node, f"duplicate key {key!r} (first set on line {first_line[key]})"
                )
            first_line[key] = line
            child = (*location, str(key) if not isinstance(key, int) else key)
            # The key's line: where a reader looks for "unknown key" and for a block value.
            self.lines[child] = line
            out[key] = self.build(value_node, child)
        return out


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` (quotes ignored: an over-estimate is harmless here)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def load_yaml(
    file: Path, *, error: type[ConfigurationError] = ConfigurationError, what: str = "file"
) -> YamlDocument:
    """Read and parse ``file``. Raises ``error`` naming the file and line for unreadable files,
    invalid YAML, duplicate keys, merge keys and recursive or exploding aliases. An empty file
    gives ``data=None``."""
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise error(f"{file}: {what} too large ({size} bytes > {MAX_CONFIG_BYTES})")
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{file}: cannot read {what}: {exc}") from exc
    if _bracket_depth(text) > _MAX_FLOW_DEPTH:
        # PyYAML's scanner is quadratic in flow nesting (seconds per kilobyte of "[[[[").
        raise error(f"{file}: invalid YAML: nested too deeply")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError as exc:  # PyYAML composes recursively: "[[[[…" would crash the caller
        raise error(f"{file}: invalid YAML: nested too deeply") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{file}{line}: invalid YAML: {problem}") from exc
    if node is None:
        return YamlDocument(file=file, data=None, lines={(): 1})
    builder = _Builder(file, error)
    try:
        data = builder.build(node, ())
    except RecursionError as exc:
        raise error(f"{file}: invalid YAML: nested too deeply") from exc
    return YamlDocument(file=file, data=data, lines=builder.lines)


def validate_yaml(
    model: type[M],
    document: YamlDocument,
    *,
    error: type[ConfigurationError] = ConfigurationError,
    data: object | None = None,
) -> M:
    """Validate ``document.data`` (or ``data``, a transformed copy with the same shape) with
    ``model``; every problem is reported as ``file:line: field: message``."""
    try:
        return model.model_validate(document.data if data is None else data)
    except ValidationError as exc:
        raise error(describe_errors(exc, document)) from exc


def describe_errors(exc: ValidationError, document: YamlDocument) -> str:
    """A pydantic error as ``file:line: field: message`` lines, joined by ``; ``."""
    problems = []
    for problem in exc.errors():
        location = tuple(problem["loc"])
        name = ".".join(str(part) for part in location) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        message = message.removeprefix("Value error, ")
        problems.append(f"{document.where(location)}: {name}: {message}")
    return "; ".join(problems)
