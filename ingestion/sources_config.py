"""The sources config: which folders feed which index, on what schedule, with what checks.

A YAML file (its path is given by the entry point, e.g. ``CITEWELL_SOURCES_FILE`` for the DAGs)::

    sources:
      - name: handbook                  # DAG ids and the manifest's source name
        connector: local                # only local folders for now
        path: /srv/docs/handbook        # relative paths resolve against this file's folder
        index: handbook
        schedule: "@hourly"             # cron or preset; null → manual runs only
        batch_size: 50                  # documents per mapped processing task
        labels: /srv/docs/handbook/citewell.labels.yaml   # optional, see below
        rebuild: {golden: golden/handbook.jsonl, k: 5, min_hit_rate: 0.8}
        evaluation:
          golden: golden/handbook.jsonl
          k: 5
          floors: {hit_rate: 0.8, mrr: 0.5}
      - name: contracts
        type: s3                        # an S3-compatible bucket (``connector: s3`` too)
        bucket: legal-docs
        prefix: contracts/              # labels: citewell.labels.yaml at the prefix root
        index: contracts
        endpoint_url: https://minio.internal:9000   # optional; else AWS_ENDPOINT_URL
        region: eu-west-1               # optional
        aws_conn_id: citewell_s3        # Airflow connection (Amazon provider); else the AWS chain
        object_labels: [tags]           # trust object tags and/or metadata as labels
        allow_empty: false              # refuse to withdraw everything on an empty listing

Credentials never go into this file: they come from the Airflow connection or the standard AWS
chain (environment, profile, instance role).

A golden file is JSON lines of ``{"question": "...", "expected": "relative/path.md"}`` (or a list
of paths or globs, any of which counts as a hit), paths relative to the source folder; see
``evaluation.golden_set`` for the whole format (CSV too).

Every problem raises :class:`ConfigurationError` naming the file (and the source, where known).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, BeforeValidator, Field, field_validator, model_validator

from citewell.core.config_files import load_yaml, validate_yaml
from citewell.core.errors import ConfigurationError
from citewell.core.models import Frozen, SearchMode
from citewell.ingestion.labels import LABELS_FILE

if TYPE_CHECKING:
    from citewell.core.settings import Settings
    from citewell.retrieval.manifest import Manifest

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
EVALUATION_METRICS: tuple[str, ...] = ("hit_rate", "mrr")


def _not_blank(value: object) -> object:
    # Path("") is ".", the process's working directory: an empty value (a template's unset
    # variable) would point a DAG worker at whatever folder it runs in.
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_not_blank)]


class RebuildConfig(Frozen):
    """Validation of a rebuild before it is published. ``golden`` defaults to the evaluation's."""

    golden: ConfigPath | None = None
    k: int = Field(default=5, ge=1, le=100)
    min_hit_rate: float = Field(default=0.8, ge=0.0, le=1.0)


class EvaluationConfig(Frozen):
    golden: ConfigPath
    k: int = Field(default=5, ge=1, le=100)
    mode: SearchMode = SearchMode.HYBRID
    floors: dict[str, float] = Field(default_factory=dict)

    @field_validator("floors")
    @classmethod
    def _known_metrics(cls, floors: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(floors) - set(EVALUATION_METRICS))
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(EVALUATION_METRICS)}"
            )
        for metric, floor in floors.items():
            if not 0.0 <= floor <= 1.0:
                raise ValueError(f"floor of {metric} must be within [0, 1], got {floor}")
        return floors


class SourceConfig(Frozen):
    name: str = Field(pattern=_NAME)
    connector: Literal["local", "s3"] = Field(
        default="local", validation_alias=AliasChoices("connector", "type")
    )
    path: ConfigPath | None = None  # local folders
    # S3-compatible object stores (never credentials: see the module docstring)
    bucket: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-_]{1,254}$")
    prefix: str = ""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    region: str | None = None
    aws_conn_id: str | None = None
    object_labels: tuple[Literal["tags", "metadata"], ...] = ()
    allow_empty: bool = False
    index: str = Field(pattern=_NAME)
    labels: ConfigPath | None = None
    schedule: str | None = "@daily"
    batch_size: int = Field(default=50, ge=1, le=10_000)
    rebuild: RebuildConfig = RebuildConfig()
    evaluation: EvaluationConfig | None = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        value = schedule.strip()
        if value.startswith("@"):
            if value not in _PRESETS:
                raise ValueError(
                    f"unknown schedule preset {value!r}; use one of {sorted(_PRESETS)}"
                )
            return value
        fields = value.split()
        if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"schedule {value!r} is neither a cron expression nor a preset")
        return value

    @model_validator(mode="after")
    def _connector_fields(self) -> SourceConfig:
        if self.connector == "local":
            if self.path is None:
                raise ValueError("a local source needs 'path'")
            s3_only = [
                key
                for key in ("bucket", "endpoint_url", "region", "aws_conn_id")
                if getattr(self, key) is not None
            ]
            if s3_only or self.prefix or self.object_labels:
                raise ValueError(
                    "bucket, prefix, endpoint_url, region, aws_conn_id and "
                    "object_labels are for s3 sources"
                )
        else:
            if self.bucket is None:
                raise ValueError("an s3 source needs 'bucket'")
            if self.path is not None or self.labels is not None:
                raise ValueError(
                    "an s3 source reads citewell.labels.yaml from the prefix root; "
                    "'path' and 'labels' are for local sources"
                )
        return self

    @property
    def folder(self) -> Path:
        """The local folder (local sources only)."""
        if self.path is None:
            raise ConfigurationError(f"source {self.name!r} is not a local folder")
        return self.path

    @property
    def uri(self) -> str:
        """Where the documents are: the folder, or ``s3://bucket/prefix/``."""
        if self.connector == "s3":
            prefix = self.prefix.strip("/")
            return f"s3://{self.bucket}/{prefix + '/' if prefix else ''}"
        return str(self.path)

    @property
    def labels_file(self) -> Path:
        return self.labels or self.folder / LABELS_FILE

    @property
    def smoke_golden(self) -> Path | None:
        """The golden set a rebuild is validated on (the rebuild's, else the evaluation's)."""
        if self.rebuild.golden is not None:
            return self.rebuild.golden
        return self.evaluation.golden if self.evaluation is not None else None


class SourcesConfig(Frozen):
    sources: tuple[SourceConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesConfig:
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate source name(s): {', '.join(duplicates)}")
        return self

    def get(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigurationError(f"no source named {name!r} in the sources config")


def _resolve(base: Path, value: object) -> object:
    if isinstance(value, str) and value.strip():
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    return value


def _absolutise(raw: dict[str, object], base: Path) -> dict[str, object]:
    """Paths in the file are relative to the file's folder, not to the process's cwd."""
    out = dict(raw)
    for key in ("path", "labels"):
        if key in out:
            out[key] = _resolve(base, out[key])
    for section in ("rebuild", "evaluation"):
        block = out.get(section)
        if isinstance(block, dict) and "golden" in block:
            out[section] = {**block, "golden": _resolve(base, block["golden"])}
    return out


def _check_labels(source: SourceConfig, file: Path) -> None:
    if source.labels is None or source.path is None:
        return
    # The ingestor reads the folder's own labels file (ingestion.labels.LabelRules.load); a file
    # elsewhere would be silently ignored, so refuse it rather than mislabel documents.
    if source.labels.resolve() != (source.path / LABELS_FILE).resolve():
        raise ConfigurationError(
            f"{file}: source {source.name!r}: labels must be {source.path / LABELS_FILE} "
            "(the folder's labels file); other locations are not supported yet"
        )
    if not source.labels.is_file():
        raise ConfigurationError(
            f"{file}: source {source.name!r}: labels file {source.labels} does not exist"
        )


def load_sources(file: Path) -> SourcesConfig:
    """Read and validate a sources config file."""
    document = load_yaml(file, what="sources config")
    raw = document.data
    if raw is None:
        return SourcesConfig()
    if not isinstance(raw, dict) or not isinstance(raw.get("sources", []), list):
        raise ConfigurationError(f"{document.where()}: expected a mapping with a 'sources' list")
    base = file.resolve().parent
    entries = []
    for position, entry in enumerate(raw.get("sources") or []):
        if not isinstance(entry, dict):
            where = document.where(("sources", position))
            raise ConfigurationError(f"{where}: source #{position + 1} must be a mapping")
        entries.append(_absolutise(entry, base))
    config = validate_yaml(SourcesConfig, document, data={**raw, "sources": entries})
    for source in config.sources:
        _check_labels(source, file)
    return config


def default_source_name(folder: Path) -> str:
    """A folder's source name when nobody names it: the folder's own name, made valid."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-._")[:64]
    return name or "source"


def indexed_folder_sources(settings: Settings, index: str | None) -> dict[Path, str]:
    """The folders the published version of ``index`` holds documents from, and the source
    each is indexed as (empty for an index with no published version)."""
    from citewell.retrieval.index import IndexLayout
    from citewell.retrieval.manifest import Manifest

    layout = IndexLayout(settings, index)
    version = layout.current_version()
    if version is None:
        return {}
    manifest = Manifest(layout.version_dir(version) / "manifest.sqlite", read_only=True)
    try:
        return folder_sources(manifest)
    finally:
        manifest.close()


def folder_sources(manifest: Manifest) -> dict[Path, str]:
    """The folders ``manifest`` holds documents from, and the source each is indexed as."""
    counts: dict[tuple[Path, str], int] = {}
    for source, source_uri, relative_path in manifest.document_locations():
        root = _folder_of(source_uri, relative_path)
        if root is not None:
            counts[(root, source)] = counts.get((root, source), 0) + 1
    folders: dict[Path, str] = {}
    # The source holding most of a folder's documents names it.
    for (root, source), _ in sorted(counts.items(), key=lambda item: item[1]):
        folders[root] = source
    return folders


def _folder_of(source_uri: str, relative_path: str) -> Path | None:
    parsed = urlparse(source_uri)
    if parsed.scheme != "file":
        return None  # pre-extracted texts ("<source>:<doc_id>") have no folder
    path = PurePosixPath(unquote(parsed.path))
    depth = len(PurePosixPath(relative_path).parts)
    if depth == 0 or depth > len(path.parts) - 1:
        return None
    return Path(path.parents[depth - 1])


def resolve_folder_source(
    settings: Settings,
    index: str | None,
    folder: Path,
    requested: str | None = None,
    *,
    fresh: bool = False,
) -> str:
    """The source name ``folder`` is ingested under in ``index``: one folder is one source,
    however it is ingested (``citewell demo``, ``citewell ingest``, a DAG).

    The name it is already indexed under wins; ``requested`` (``--source-name``, a sources
    config entry) must agree with it, and may not name another folder's source (ingesting
    would delete that folder's documents as gone). Without either, the folder's name. A
    ``fresh`` rebuild starts from an empty version, so it may name the source anew."""
    root = folder.resolve()
    if fresh:
        return requested or default_source_name(root)
    folders = indexed_folder_sources(settings, index)
    return check_folder_source(folders, root, requested, index or settings.index)


def check_folder_source(
    folders: dict[Path, str], root: Path, requested: str | None, index_name: str
) -> str:
    """:func:`resolve_folder_source` against ``folders`` (:func:`folder_sources`): the name
    the folder ``root`` (resolved) is ingested under; raises :class:`ConfigurationError`."""
    existing = folders.get(root)
    if requested is not None and existing is not None and requested != existing:
        raise ConfigurationError(
            f"{root} is already indexed in index {index_name!r} as source {existing!r}; "
            f"ingest it under that name (--source-name {existing})"
        )
    for path, source in sorted(folders.items()):
        if path != root and (root.is_relative_to(path) or path.is_relative_to(root)):
            # The same files under two sources would flip between them on every refresh.
            raise ConfigurationError(
                f"{root} overlaps the folder {path}, indexed in index {index_name!r} as source "
                f"{source!r}; ingest that folder instead, or use another index"
            )
    name = existing or requested or default_source_name(root)
    others = sorted(
        str(path) for path, source in folders.items() if source == name and path != root
    )
    if existing is None and others:
        raise ConfigurationError(
            f"source {name!r} of index {index_name!r} is the folder {others[0]}; "
            f"name this folder's source differently (--source-name NAME)"
        )
    return name


def check_source_inputs(settings: Settings, source: SourceConfig, *, fresh: bool = False) -> None:
    """What ingesting ``source`` reads, checked before any work (the DAGs' first task, which
    checks the golden sets with ``evaluation.smoke_test.check_golden_sets``): for a folder, its
    labels file and that the folder is this source in its index. Raises
    :class:`ConfigurationError` (labels errors name file and line). An s3 source's labels file
    lives in the bucket: the ingest step reads it and refuses the run when it is invalid, before
    anything is written."""
    from citewell.ingestion.labels import LabelRules

    if source.connector == "s3":
        return
    folder = source.folder
    if not folder.is_dir():
        raise ConfigurationError(f"source {source.name!r}: folder {folder} does not exist")
    LabelRules.load(folder, settings.scheme)
    resolve_folder_source(settings, source.index, folder, source.name, fresh=fresh)
