"""Access labels for a folder: ``citewell.labels.yaml`` rules, per-file sidecars, banners.

The folder-root file::

    default: {classification: internal, groups: [everyone]}
    rules:                      # globs relative to the folder, first match wins
      - {match: "finance/**", classification: confidential, groups: [finance]}

A sidecar ``<file>.labels.yaml`` next to a document holds the same two keys. Each key is taken
from the most specific place that sets it: sidecar, then the first matching rule, then the
default. A document for which neither key resolves is *unlabelled*: it gets the most restrictive
level and no groups (visible to nobody) and is reported. A classification banner in the
document text ("CONFIDENTIAL", "Classification: Restricted") raises the level, never lowers it.

Purview sensitivity labels the documents carry (``ingestion.sensitivity``) are mapped by two
more keys; :func:`apply_sensitivity` is the one place they meet the label above, and the most
restrictive wins::

    sensitivity_labels:         # label GUID -> label; unmapped labels: visible to nobody
      "f42aa342-8706-4288-bd11-ebb85995028c": {classification: confidential, groups: [finance]}
    sensitivity_label_policy:
      tenants: ["9c1b5a5e-1234-4b9a-9d7e-0123456789ab"]   # SiteIds whose labels are trusted
      names: {}                 # optional: display name -> label, for GUIDs not mapped above
      allow_downgrade: false    # a label removed/lowered after indexing keeps the earlier one
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from citewell.core.errors import LabelError, UnknownClassificationError
from citewell.core.models import AccessLabel, ClassificationScheme
from citewell.ingestion.models import ResolvedLabel
from citewell.ingestion.sensitivity import (
    SensitivityDecision,
    SensitivityPolicy,
    normalise_guid,
)

LABELS_FILE = "citewell.labels.yaml"
SIDECAR_SUFFIX = ".labels.yaml"

# Banner phrase (upper case) → level of the default scheme. Longer phrases are tried first, so
# "STRICTLY CONFIDENTIAL" wins over "CONFIDENTIAL".
DEFAULT_BANNERS: Mapping[str, str] = {
    "TOP SECRET": "restricted",
    "SECRET": "restricted",
    "STRICTLY CONFIDENTIAL": "restricted",
    "HIGHLY CONFIDENTIAL": "restricted",
    "RESTRICTED": "restricted",
    "CONFIDENTIAL": "confidential",
    "COMPANY CONFIDENTIAL": "confidential",
    "PROPRIETARY AND CONFIDENTIAL": "confidential",
    "FOR INTERNAL USE ONLY": "internal",
    "INTERNAL USE ONLY": "internal",
    "INTERNAL ONLY": "internal",
    "INTERNAL": "internal",
}

# Banners sit in the first or last few lines (headers, footers, cover pages).
_BANNER_LINES = 8
_BANNER_MAX_LINE_CHARS = 80
_DECORATION = " \t*-=_#|[](){}<>:~.!"
_CLASSIFICATION_LINE = re.compile(
    r"^\s*(?:security\s+)?classification\s*[:=]\s*(?P<value>[A-Za-z][A-Za-z \-]{0,40}?)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Spec:
    """One place that may set a label: the keys it sets and where it was written."""

    classification: str | None
    groups: frozenset[str] | None
    origin: str


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    spec: _Spec


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob: ``**`` spans directories, ``*`` and ``?`` stay within one.

    ``fnmatch`` lets ``*`` cross ``/`` and Python 3.11 has no ``PurePath.full_match``, hence this.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _fingerprint(label: AccessLabel, labelled: bool) -> str:
    material = f"{label.classification}|{','.join(sorted(label.groups))}|{int(labelled)}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _where(file: Path, node: yaml.Node) -> str:
    return f"{file}:{node.start_mark.line + 1}"


def _scalar(node: yaml.Node, file: Path, key: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
        raise LabelError(f"{_where(file, node)}: {key!r} must be a non-empty string")
    return str(node.value).strip()


def _parse_spec(
    node: yaml.Node, file: Path, scheme: ClassificationScheme, allowed: frozenset[str], what: str
) -> tuple[_Spec, dict[str, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise LabelError(f"{_where(file, node)}: {what} must be a mapping")
    fields: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node, file, "key")
        if key not in allowed:
            raise LabelError(
                f"{_where(file, key_node)}: unknown key {key!r} in {what}; "
                f"expected {', '.join(sorted(allowed))}"
            )
        fields[key] = value_node
    classification: str | None = None
    if "classification" in fields:
        value = fields["classification"]
        classification = _scalar(value, file, "classification").lower()
        try:
            scheme.rank(classification)
        except UnknownClassificationError as exc:
            raise LabelError(f"{_where(file, value)}: {exc}") from exc
    groups: frozenset[str] | None = None
    if "groups" in fields:
        value = fields["groups"]
        if not isinstance(value, yaml.SequenceNode):
            raise LabelError(f"{_where(file, value)}: 'groups' must be a list")
        groups = frozenset(_scalar(g, file, "group") for g in value.value)
    origin = f"{what}:{_where(file, node)}"
    return _Spec(classification, groups, origin), fields


def _compose(file: Path) -> yaml.Node | None:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{file}: cannot read labels file: {exc}") from exc
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise LabelError(f"{file}{line}: invalid YAML: {exc}") from exc


def _normalise_banners(
    banners: Mapping[str, str] | None, scheme: ClassificationScheme
) -> dict[str, str]:
    if banners is None:
        # Defaults name levels of the default scheme; drop those a custom scheme lacks.
        chosen = {p: lvl for p, lvl in DEFAULT_BANNERS.items() if lvl in scheme.levels}
    else:
        chosen = {p.strip().upper(): lvl.strip().lower() for p, lvl in banners.items()}
        for level in chosen.values():
            scheme.rank(level)
    return dict(sorted(chosen.items(), key=lambda kv: -len(kv[0])))


def _mostly_upper(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def find_banner(
    text: str, scheme: ClassificationScheme, banners: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """The most restrictive banner near the start or end of ``text``: (banner, level), where
    banner is the matched phrase (never the surrounding text, which may be sensitive).

    A banner is a short, mostly upper-case line containing a banner phrase as whole words
    ("CONFIDENTIAL - DO NOT DISTRIBUTE"), or a "Classification: X" line naming a level or a
    phrase. Ordinary prose ("keep this confidential") is never a banner.
    """
    phrases = _normalise_banners(banners, scheme)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    candidates = lines[:_BANNER_LINES] + lines[max(_BANNER_LINES, len(lines) - _BANNER_LINES) :]
    best: tuple[str, str] | None = None
    for line in candidates:
        if len(line) > _BANNER_MAX_LINE_CHARS:
            continue
        level: str | None = None
        banner = ""
        match = _CLASSIFICATION_LINE.match(line)
        if match:
            value = match.group("value").strip()
            banner = f"Classification: {value}"
            known = value.lower() in scheme.levels
            level = value.lower() if known else phrases.get(value.upper())
        elif _mostly_upper(line):
            core = line.strip(_DECORATION)
            for phrase, phrase_level in phrases.items():
                if re.search(rf"(?<![A-Z]){re.escape(phrase)}(?![A-Z])", core):
                    level, banner = phrase_level, phrase
                    break
        if level is not None and (best is None or scheme.rank(level) > scheme.rank(best[1])):
            best = (banner, level)
    return best


def detect_banner(
    text: str, scheme: ClassificationScheme, banners: Mapping[str, str] | None = None
) -> str | None:
    """The level named by the document's most restrictive classification banner, if any."""
    found = find_banner(text, scheme, banners)
    return found[1] if found else None


class LabelRules:
    """A folder's label configuration. Cheap to build; sidecars are read per document."""

    def __init__(
        self,
        scheme: ClassificationScheme,
        *,
        default: AccessLabel | None = None,
        rules: tuple[tuple[str, AccessLabel], ...] = (),
        banners: Mapping[str, str] | None = None,
    ) -> None:
        """Rules given in code; :meth:`load` reads them from a folder's labels file."""
        self._scheme = scheme
        self._banners = _normalise_banners(banners, scheme)
        self._default: _Spec | None = None
        if default is not None:
            scheme.rank(default.classification)
            self._default = _Spec(default.classification, default.groups, "default:code")
        self._rules: list[_Rule] = []
        for i, (pattern, label) in enumerate(rules):
            scheme.rank(label.classification)
            spec = _Spec(label.classification, label.groups, f"rule:code:{i}")
            self._rules.append(_Rule(glob_to_regex(pattern), spec))
        self.source_file: Path | None = None
        self.sensitivity = SensitivityPolicy()

    @classmethod
    def load(
        cls,
        root: Path,
        scheme: ClassificationScheme,
        banners: Mapping[str, str] | None = None,
    ) -> LabelRules:
        """Read ``root/citewell.labels.yaml`` if present (no file → every document is unlabelled
        unless it has a sidecar). Errors raise :class:`LabelError` naming file and line."""
        rules = cls(scheme, banners=banners)
        file = root / LABELS_FILE
        if file.is_symlink():
            # Like sidecars: a labels file must live in the folder it labels, not point elsewhere.
            raise LabelError(f"{file}: the labels file must not be a symbolic link")
        if not file.is_file():
            return rules
        rules.source_file = file
        node = _compose(file)
        if node is None:
            return rules
        if not isinstance(node, yaml.MappingNode):
            raise LabelError(f"{_where(file, node)}: expected a mapping with 'default'/'rules'")
        sensitivity: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, file, "key")
            if key in _SENSITIVITY_KEYS:
                sensitivity[key] = value_node
            elif key == "default":
                rules._default, _ = _parse_spec(
                    value_node, file, scheme, frozenset({"classification", "groups"}), "default"
                )
            elif key == "rules":
                if not isinstance(value_node, yaml.SequenceNode):
                    raise LabelError(f"{_where(file, value_node)}: 'rules' must be a list")
                for rule_node in value_node.value:
                    spec, fields = _parse_spec(
                        rule_node,
                        file,
                        scheme,
                        frozenset({"match", "classification", "groups"}),
                        "rule",
                    )
                    if "match" not in fields:
                        raise LabelError(f"{_where(file, rule_node)}: rule needs 'match'")
                    pattern = _scalar(fields["match"], file, "match")
                    rules._rules.append(_Rule(glob_to_regex(pattern), spec))
            else:
                raise LabelError(
                    f"{_where(file, key_node)}: unknown key {key!r}; expected default, rules, "
                    "sensitivity_labels, sensitivity_label_policy"
                )
        if sensitivity:
            rules.sensitivity = _sensitivity_policy(file, sensitivity, scheme)
        return rules

    @property
    def scheme(self) -> ClassificationScheme:
        return self._scheme

    def _sidecar(self, document: Path) -> _Spec | None:
        sidecar = document.with_name(document.name + SIDECAR_SUFFIX)
        if sidecar.is_symlink():
            raise LabelError(f"{sidecar}: labels sidecar must not be a symlink")
        if not sidecar.is_file():
            return None
        node = _compose(sidecar)
        if node is None:
            return None
        spec, _ = _parse_spec(
            node, sidecar, self._scheme, frozenset({"classification", "groups"}), "sidecar"
        )
        return spec

    def resolve(
        self, relative_path: str, document: Path | None = None, text: str | None = None
    ) -> ResolvedLabel:
        """The label for the document at ``relative_path`` (POSIX, relative to the root).

        ``document`` is its path on disk, used to find a sidecar; ``text`` is its parsed text,
        scanned for a banner.
        """
        rule = next((r.spec for r in self._rules if r.pattern.match(relative_path)), None)
        sidecar = self._sidecar(document) if document is not None else None
        specs = [s for s in (sidecar, rule, self._default) if s is not None]
        level = next((s.classification for s in specs if s.classification is not None), None)
        groups = next((s.groups for s in specs if s.groups is not None), None)
        if level is None or groups is None:
            label = AccessLabel(classification=self._scheme.most_restrictive, groups=frozenset())
            return ResolvedLabel(
                label=label,
                labelled=False,
                origin="none",
                fingerprint=_fingerprint(label, labelled=False),
            )
        origin = next(s.origin for s in specs if s.classification is not None)
        groups_origin = next(s.origin for s in specs if s.groups is not None)
        if groups_origin != origin:
            origin = f"{origin}+groups:{groups_origin}"
        banner: str | None = None
        if text:
            found = find_banner(text, self._scheme, self._banners)
            if found and self._scheme.rank(found[1]) > self._scheme.rank(level):
                banner, level = found
        label = AccessLabel(classification=level, groups=groups)
        return ResolvedLabel(
            label=label,
            labelled=True,
            origin=origin,
            banner=banner,
            fingerprint=_fingerprint(label, labelled=True),
        )


# --- Purview sensitivity labels (ingestion/sensitivity.py) --------------------------------
_SENSITIVITY_KEYS = ("sensitivity_labels", "sensitivity_label_policy")


def _construct(node: yaml.Node) -> object:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _sensitivity_policy(
    file: Path, nodes: dict[str, yaml.Node], scheme: ClassificationScheme
) -> SensitivityPolicy:
    labels = nodes.get("sensitivity_labels")
    if labels is not None:
        if not isinstance(labels, yaml.MappingNode):
            raise LabelError(f"{_where(file, labels)}: 'sensitivity_labels' must be a mapping")
        seen: set[str] = set()
        for key_node, _ in labels.value:
            guid = normalise_guid(_scalar(key_node, file, "label id"))
            if guid is None:
                raise LabelError(
                    f"{_where(file, key_node)}: {key_node.value!r} is not a label GUID"
                )
            if guid in seen:
                raise LabelError(f"{_where(file, key_node)}: sensitivity label {guid} mapped twice")
            seen.add(guid)
    raw: dict[str, object] = {}
    policy = nodes.get("sensitivity_label_policy")
    if policy is not None:
        value = _construct(policy)
        if not isinstance(value, dict):
            raise LabelError(
                f"{_where(file, policy)}: 'sensitivity_label_policy' must be a mapping"
            )
        raw.update(value)
    if labels is not None:
        raw["labels"] = _construct(labels) or {}
    anchor = next(iter(nodes.values()))  # where errors point
    try:
        parsed = SensitivityPolicy.model_validate(raw)
        for mapping in (*parsed.labels.values(), *parsed.names.values()):
            scheme.rank(mapping.classification)
    except (ValidationError, UnknownClassificationError) as exc:
        raise LabelError(f"{_where(file, anchor)}: invalid sensitivity labels: {exc}") from exc
    return parsed


def most_restrictive(
    first: AccessLabel,
    second: AccessLabel,
    scheme: ClassificationScheme,
    universal_groups: frozenset[str] = frozenset(),
) -> AccessLabel:
    """The label that lets through only callers both labels let through: the higher level, and
    the groups both accept (a side holding a group every principal holds accepts anyone)."""
    level = scheme.max(first.classification, second.classification)
    if first.groups & universal_groups:
        groups = second.groups
    elif second.groups & universal_groups:
        groups = first.groups
    else:
        groups = first.groups & second.groups
    return AccessLabel(classification=level, groups=groups)


def apply_sensitivity(
    base: ResolvedLabel,
    decision: SensitivityDecision,
    scheme: ClassificationScheme,
    universal_groups: frozenset[str] = frozenset(),
) -> ResolvedLabel:
    """Combine a document's label from rules, sidecars and object labels with its sensitivity
    label: the most restrictive wins, and a sensitivity label never lowers what another source
    set. A refused sensitivity label makes the document visible to nobody."""
    if decision.status == "none":
        return base
    if decision.status == "refused" or decision.label is None:
        return refused_label(f"sensitivity-refused:{decision.reason}", scheme)
    resolved = combine_resolved(base, decision.label, "sensitivity", scheme, universal_groups)
    if decision.retained:
        return resolved.model_copy(update={"origin": resolved.origin + "(retained)"})
    return resolved


def combine_resolved(
    base: ResolvedLabel,
    label: AccessLabel,
    origin: str,
    scheme: ClassificationScheme,
    universal_groups: frozenset[str] = frozenset(),
) -> ResolvedLabel:
    """``base`` with another source's complete label applied: the most restrictive of the two,
    or ``label`` alone when ``base`` resolved to nothing."""
    if base.labelled:
        combined = most_restrictive(base.label, label, scheme, universal_groups)
        origin = f"{base.origin}+{origin}"
    else:
        combined = label
    return ResolvedLabel(
        label=combined,
        labelled=True,
        origin=origin,
        banner=base.banner,
        fingerprint=_fingerprint(combined, labelled=True),
    )


def refused_label(origin: str, scheme: ClassificationScheme) -> ResolvedLabel:
    """Visible to nobody (the most restrictive level, no groups), reported as unlabelled."""
    label = AccessLabel(classification=scheme.most_restrictive, groups=frozenset())
    return ResolvedLabel(
        label=label, labelled=False, origin=origin, fingerprint=_fingerprint(label, False)
    )
