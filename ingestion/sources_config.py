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
``ingestion.golden`` for the whole format (CSV too).

Every problem raises :class:`ConfigurationError` naming the file (and the source, where known).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator

from citewell.core.errors import ConfigurationError
from citewell.core.models import Frozen, SearchMode
from citewell.ingestion.labels import LABELS_FILE

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PRESETS = frozenset(
    {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")
EVALUATION_METRICS: tuple[str, ...] = ("hit_rate", "mrr")


class RebuildConfig(Frozen):
    """Validation of a rebuild before it is published. ``golden`` defaults to the evaluation's."""

    golden: Path | None = None
    k: int = Field(default=5, ge=1, le=100)
    min_hit_rate: float = Field(default=0.8, ge=0.0, le=1.0)


class EvaluationConfig(Frozen):
    golden: Path
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
    path: Path | None = None  # local folders
    # S3-compatible object stores (never credentials: see the module docstring)
    bucket: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-_]{1,254}$")
    prefix: str = ""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    region: str | None = None
    aws_conn_id: str | None = None
    object_labels: tuple[Literal["tags", "metadata"], ...] = ()
    allow_empty: bool = False
    index: str = Field(pattern=_NAME)
    labels: Path | None = None
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
    if isinstance(value, str) and value:
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
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read sources config {file}: {exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{file}: invalid YAML: {exc}") from exc
    if raw is None:
        return SourcesConfig()
    if not isinstance(raw, dict) or not isinstance(raw.get("sources", []), list):
        raise ConfigurationError(f"{file}: expected a mapping with a 'sources' list")
    base = file.resolve().parent
    entries = []
    for position, entry in enumerate(raw.get("sources") or [], start=1):
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{file}: source #{position} must be a mapping")
        entries.append(_absolutise(entry, base))
    try:
        config = SourcesConfig.model_validate({**raw, "sources": entries})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"{file}: invalid sources config: {problems}") from exc
    for source in config.sources:
        _check_labels(source, file)
    return config
