"""A small real index (SciFact abstracts, real MiniLM embedder, edge store, BM25) built once per
module and copied per test, plus a principals file with an API key."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

from citewell.core.models import AccessLabel
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from tests import principal_files

API_KEY = "hardening-key-3c9e"
HEADERS = {"X-API-Key": API_KEY}
LABELS = [
    AccessLabel(classification="public", groups=frozenset({"everyone"})),
    AccessLabel(classification="internal", groups=frozenset({"engineering"})),
    AccessLabel(classification="restricted", groups=frozenset({"hr"})),
]


def scifact_docs(shared_data: Path, start: int, count: int) -> list[TextDocument]:
    docs: list[TextDocument] = []
    with gzip.open(shared_data / "ir" / "scifact" / "corpus.jsonl.gz", "rt") as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if i >= start + count:
                break
            raw = json.loads(line)
            docs.append(
                TextDocument(
                    doc_id=f"scifact-{raw['_id']}",
                    title=raw["title"],
                    text=raw["text"][:800],
                    label=LABELS[i % len(LABELS)],
                )
            )
    return docs


def write_principals(path: Path) -> Path:
    return principal_files.write_principals(
        path, {"alice": principal_files.keyed("internal", ["engineering"], API_KEY)}
    )


def settings_for(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "principals_file": root / "principals.yaml",
        "reload_interval_s": 60.0,
    }
    values.update(overrides)
    return Settings(**values)


def build(root: Path, shared_data: Path, embedder: Any, count: int = 8) -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    write_principals(root / "principals.yaml")
    settings = settings_for(root)
    Ingestor(settings, embedder=embedder).ingest_texts(
        scifact_docs(shared_data, 0, count), index=settings.index, source_name="scifact"
    )
    return settings


def copy_of(template: Path, root: Path) -> Settings:
    shutil.copytree(template, root)
    return settings_for(root)
