"""The one Settings object. Read only by entry points (api, cli, dags) and passed down.

Every field can be set from the environment with the ``CITEWELL_`` prefix, e.g.
``CITEWELL_DATA_DIR=/srv/citewell``. Nothing here is read at import time.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from citewell.core.models import DEFAULT_LEVELS, ClassificationScheme, FusionMethod, SearchMode

EmbeddingBackend = Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"]


# Filtered dense searches matching at most this many points are searched exactly. Brute force
# over 384-d points costs ~0.4 us each with qdrant-edge on this machine: at 100k points a
# 10,000-point filter took 4.9 / 7.1 ms p50 / p95 (7.0 / 9.1 through the store, payloads
# included) where HNSW answered in ~2 ms with recall 0.165 (benchmarks/vector_store.py). 10,000
# is above Qdrant's own per-segment full_scan_threshold (10 MB, ~6,700 such points), so filters
# between the two are made exact too.
EXACT_SEARCH_MAX_POINTS = 10_000


ENV_PREFIX = "CITEWELL_"
# CITEWELL_* variables that are not settings: the Airflow DAG files read these themselves.
OTHER_VARIABLES = frozenset(
    {"CITEWELL_SOURCES_FILE", "CITEWELL_AIRFLOW_RETRIES", "CITEWELL_ALERT_WEBHOOK"}
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=None, extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = "development"

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Path(".citewell")
    index: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    qdrant_url: str | None = None  # set → remote Qdrant server/cluster; unset → embedded
    qdrant_api_key: SecretStr | None = None
    keep_versions: int = Field(default=3, ge=2)  # published index versions kept for rollback
    # Scheduled runs' work folders (<data_dir>/runs/...: snapshot, plan, batches, report) are
    # removed this many days after their last write, once a later run of the source completed.
    keep_runs_days: float = Field(default=14.0, gt=0)
    reload_interval_s: float = Field(default=2.0, gt=0)  # how often the API looks for new versions

    # --- access --------------------------------------------------------------------------
    # From the environment as "public,internal,confidential" (a JSON array works too).
    classification_levels: Annotated[tuple[str, ...], NoDecode] = DEFAULT_LEVELS
    default_groups: Annotated[tuple[str, ...], NoDecode] = ("everyone",)  # every principal's
    principals_file: Path | None = None

    # --- models --------------------------------------------------------------------------
    embedding_model: str | None = None  # id or path; None → bundled all-MiniLM-L6-v2
    # The fastest backend that holds quality (2.8x torch's documents/s on 2 cores, SciFact
    # nDCG@10 within 0.005; benchmarks/README.md). Exported once from the local
    # weights into model_cache_dir; if that fails, torch with one WARNING log line. An index
    # records its backend and refuses vectors of another (set torch to keep an older index).
    embedding_backend: EmbeddingBackend = "openvino-int8"
    embedding_batch_size: int = Field(default=32, ge=1)
    embedding_max_seq_length: int = Field(default=256, ge=16)
    reranker_model: str | None = None  # id or path; None → the index's trained model, if any
    reranker_backend: EmbeddingBackend = "torch"
    reranker_max_length: int = Field(default=256, ge=16)  # tokens per (query, passage) pair
    rerank_candidates: int = Field(default=20, ge=1, le=200)
    model_threads: int | None = None  # torch/onnx intra-op threads; None → cores available
    # Model exports (ONNX/OpenVINO), keyed by the source weights' hash, so several data dirs may
    # share one; None → <data_dir>/cache/models.
    model_cache_dir: Path | None = None

    # --- chunking ------------------------------------------------------------------------
    # Counted with the embedding model's tokenizer; leaves room under its 256-token limit for
    # the title/section prefix embedded with each chunk.
    chunk_size_tokens: int = Field(default=224, ge=32)
    chunk_overlap_tokens: int = Field(default=24, ge=0)
    # Prepend a short header (document title, file name, section heading) to what is embedded
    # and BM25-indexed; the stored chunk text stays verbatim. Changing it re-chunks on refresh.
    chunk_context: bool = True

    # --- retrieval -----------------------------------------------------------------------
    default_mode: SearchMode = SearchMode.HYBRID
    # Weighted fusion of min-max normalised scores with an equal dense/lexical split and half of
    # the lexical evidence from the document-level BM25 leg, chosen a priori (the middle of each
    # range, not fitted) and checked against RRF on every judged set here (nDCG@10 / correct
    # cited filing): SciFact train holdout 0.760 -> 0.768, Cranfield test 0.399 -> 0.407,
    # docugami 10-Q answers 0.815 -> 0.877. See retrieval/fusion.py; `citewell eval
    # tune-fusion` fits all three per index where judgements exist.
    fusion: FusionMethod = FusionMethod.WEIGHTED
    rrf_k: int = Field(default=60, ge=1)
    dense_weight: float = Field(default=0.5, ge=0, le=1)  # for weighted fusion
    # Share of the lexical evidence from the document-level BM25 leg (0: off): it lifts every
    # chunk of a document whose rare terms (a filing's company and quarter in its title) the
    # question names, although most of its chunks never repeat them.
    fusion_document_share: float = Field(default=0.5, ge=0, le=1)
    # Use the fusion `citewell eval tune-fusion` recorded for an index (<index>/fusion.json) over
    # the three settings above; off: those settings always apply.
    use_tuned_fusion: bool = True
    # Weight of the recency leg that requests with prefer_recent add (see retrieval/fusion.py).
    # 1.0 is chosen a priori, not tuned. Under RRF that is as much as one chunk leg; under
    # weighted fusion (fused scores in [0, 1]) the newest candidate document gains up to 1.0, so
    # among the candidates date outweighs a moderate relevance gap (docugami answers: the same
    # at 0.5 and 1.0). It never adds a document the chunk legs did not retrieve.
    recency_weight: float = Field(default=1.0, ge=0, le=2)
    candidates_per_leg: int = Field(default=50, ge=1, le=1000)
    # Filtered dense search is exact (brute force) when the caller's access filter and request
    # filters match at most this many points (see EXACT_SEARCH_MAX_POINTS). 0 turns this off
    # (HNSW, exact only when an answer comes back short).
    exact_search_max_points: int = Field(default=EXACT_SEARCH_MAX_POINTS, ge=0)
    bm25_k1: float = Field(default=0.9, gt=0)
    bm25_b: float = Field(default=0.4, ge=0, le=1)
    # Snowball stemming: SciFact nDCG@10 0.674 vs 0.661 without (whole documents, k1 0.9, b 0.4).
    # Changing it needs a rebuild (`citewell ingest --fresh`).
    bm25_stemming: bool = True

    # --- limits --------------------------------------------------------------------------
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    # Zip-based formats (DOCX, PPTX, XLSX, ODT, EPUB) are checked before parsing: zip bombs.
    max_uncompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_compression_ratio: float = Field(default=100.0, gt=1)
    max_zip_entries: int = Field(default=10_000, ge=1)
    # Each document is parsed in a worker process (ingestion/parse_workers.py): killed past the
    # time limit; its address space capped at start-up size plus the memory limit. The failure
    # is that document's, with its reason; the run goes on. Workers: None → cores - 1 (1 to 4).
    parse_time_limit_s: float = Field(default=300.0, gt=0)
    parse_memory_limit_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)
    parse_workers: int | None = Field(default=None, ge=1, le=64)
    max_query_chars: int = Field(default=2000, ge=1)
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)

    # --- object stores (S3-compatible) ---------------------------------------------------
    # Credentials and the endpoint come from the standard AWS chain (AWS_* variables, profile,
    # instance role; AWS_ENDPOINT_URL), never from here. Attempts per request, with botocore's
    # "standard" retry mode (exponential backoff with jitter).
    s3_max_attempts: int = Field(default=5, ge=1, le=20)
    s3_timeout_s: float = Field(default=60.0, gt=0)  # connect and read timeout per request

    # --- API auth and audit --------------------------------------------------------------
    jwt_secret: SecretStr | None = None  # HS256
    jwt_jwks_file: Path | None = None  # RS256/ES256 public keys
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    audit_log: Path | None = None  # JSON lines; None → <data_dir>/audit.jsonl
    audit_log_queries: bool = False  # log query text (off: only its hash)

    # --- agent ---------------------------------------------------------------------------
    generation_enabled: bool = True  # kill switch: off → answers return sources only
    llm_base_url: str | None = None  # OpenAI-compatible endpoint; None → offline extractive
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=60.0, gt=0)
    answer_time_budget_s: float = Field(default=30.0, gt=0)
    answer_max_retrievals: int = Field(default=2, ge=1, le=5)
    # Refuse when no candidate sentence's calibrated answerability probability reaches this;
    # None → the index's calibration (`citewell eval calibrate`), else the shipped one
    # (agent/answerability.json). Prefer recalibrating over setting a number by hand.
    answer_refusal_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _known_variables(cls, data: object) -> object:
        """pydantic-settings ignores a CITEWELL_* variable that names no setting, so a misspelt
        one silently kept the default: CITEWELL_JWT_AUDIANCE turned the audience check off."""
        known = {ENV_PREFIX + name.upper() for name in cls.model_fields} | OTHER_VARIABLES
        for variable in sorted(os.environ):
            upper = variable.upper()
            if upper.startswith(ENV_PREFIX) and upper not in known:
                close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ValueError(f"unknown variable {variable}{hint}")
        return data

    @field_validator("classification_levels", "default_groups", mode="before")
    @classmethod
    def _name_list(cls, value: object) -> object:
        """A comma-separated list, the form an operator writes in a variable; pydantic-settings
        alone would want JSON and fail with a decoding error that names no field."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)  # a JSONDecodeError is a ValueError: a validation error
        return tuple(name.strip() for name in text.split(",") if name.strip())

    @field_validator(
        "data_dir",
        "principals_file",
        "model_cache_dir",
        "jwt_jwks_file",
        "audit_log",
        mode="before",
    )
    @classmethod
    def _path(cls, value: object) -> object:
        """Path("") is "." (the working directory): an empty variable, e.g. a compose file's
        unset one, must not move the data dir or name a folder as the principals file. A
        leading "~" is the home folder, as with --data-dir: environment files never expand it,
        and taken literally it made a folder named "~"."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty (unset the variable for the default)")
        if not isinstance(value, str | Path):
            return value
        try:
            return Path(value).expanduser()
        except RuntimeError as exc:  # "~nobody/x", or no home folder to expand "~" to
            raise ValueError(f"cannot expand {str(value)!r}: {exc}") from exc

    @model_validator(mode="after")
    def _check(self) -> Settings:
        ClassificationScheme(levels=self.classification_levels)
        if self.chunk_overlap_tokens >= self.chunk_size_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_size_tokens")
        if self.environment == "production" and self.jwt_secret is not None:
            secret = self.jwt_secret.get_secret_value()
            if len(secret) < 32 or secret in {"changethis", "secret"}:
                raise ValueError("CITEWELL_JWT_SECRET must be at least 32 random characters")
        return self

    @property
    def scheme(self) -> ClassificationScheme:
        return ClassificationScheme(levels=self.classification_levels)

    @property
    def index_root(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def apply_process_environment(settings: Settings) -> None:
    """Set the process environment the libraries read, before any model or parser loads.

    Called by entry points only (the CLI, the API factory, DAG tasks): library code never sets
    the environment. unstructured sends no telemetry; Hugging Face libraries never reach a hub
    while every configured model is a local folder (a hub id in production keeps the hub).
    Python children never import from the working directory. Values already set by the
    operator win.
    """
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # The parse workers' forkserver runs `python -c`, which puts the working directory first on
    # sys.path: an `email.py` there ran in every worker; a checkout's `citewell/` hid the install.
    os.environ.setdefault("PYTHONSAFEPATH", "1")
    models = (settings.embedding_model, settings.reranker_model)
    if all(model is None or Path(model).expanduser().is_dir() for model in models):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
