"""Shared fixtures: settings in a temporary data dir and one embedder per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach a model hub; models load from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# The files of shared/data/sample_docs (its MANIFEST.tsv lists each), named here so tests
# parametrised by them collect the same ids whether or not the data is present.
SAMPLE_DOCS = (
    "2023-half-year-analyses-by-segment.xlsx",
    "README.md",
    "README.rst",
    "copy-protected.pdf",
    "csv-with-long-lines.csv",
    "docx-hdrftr.docx",
    "docx-tables.docx",
    "email-no-utf8-2014-03-17.111517.eml",
    "empty.txt",
    "example-10k-1p.html",
    "fake-doc.rtf",
    "fake-email-attachment.eml",
    "fake-email-attachment.msg",
    "fake-encrypted.eml",
    "fake-html-cp1252.html",
    "fake-incomplete-json.txt",
    "fake-memo.pdf",
    "fake-power-point-malformed.pptx",
    "fake-power-point-table.pptx",
    "fake-text-utf-16.txt",
    "fake.doc",
    "fake.odt",
    "family-day.eml",
    "handbook-1p.docx",
    "interface-config-guide-p93.pdf",
    "korean-text-with-tables.pdf",
    "layout-parser-paper-fast.pdf",
    "loremipsum-flat.pdf",
    "more-than-1k-cells.xlsx",
    "norwich-city.txt",
    "password.pdf",
    "password_protected.xlsx",
    "pypdf-issue-297-broken-xref.pdf",
    "reliance.pdf",
    "sample-presentation.pptx",
    "single_table.pdf",
    "tests-example.xls",
    "umlauts-non-utf8.md",
    "winter-sports.epub",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The third-party data beside the checkout (../shared/data). Tests reach it only through
    this fixture (or ``sample_docs``), never at import time: a clone without it skips them."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared third-party data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_docs(shared_data: Path) -> Path:
    """shared/data/sample_docs: one real file per format (SAMPLE_DOCS)."""
    return shared_data / "sample_docs"


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("citewell-cache")


@pytest.fixture(scope="session", autouse=True)
def process_environment() -> None:
    """What every entry point sets before loading models and parsers (no hub, no telemetry)."""
    from citewell.core.settings import Settings, apply_process_environment

    apply_process_environment(Settings())


@pytest.fixture(scope="session", autouse=True)
def shared_model_exports(
    session_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """One model export per test run for every Settings a test builds (each in its own data
    dir), subprocesses and every xdist worker included (the export takes a lock, so workers
    wait for one another's): the default backend exports once, ~20-40 s on 2 cores."""
    exports = session_cache_dir / "models"
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Workers' temporary folders are popen-gwN/ under the run's own.
        exports = tmp_path_factory.getbasetemp().parent / "citewell-models"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "CITEWELL_MODEL_CACHE_DIR", os.environ.get("CITEWELL_MODEL_CACHE_DIR", str(exports))
        )
        yield exports


@pytest.fixture(scope="session")
def embedder(shared_model_exports: Path, session_cache_dir: Path) -> Iterator[Any]:
    """The real bundled MiniLM embedder on the default backend behind an embedding cache,
    loaded once per session: what Settings() builds, so indexes it writes serve without a
    backend mismatch."""
    from citewell.retrieval.embedding import DEFAULT_BACKEND, SentenceTransformerEmbedder
    from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache

    inner = SentenceTransformerEmbedder(
        backend=DEFAULT_BACKEND, threads=2, export_dir=shared_model_exports
    )
    yield CachingEmbedder(inner, EmbeddingCache(session_cache_dir / "embeddings.sqlite"))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    from citewell.core.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A moto S3 server on a free loopback port for the whole session (tests/s3_server.py)."""
    from tests.s3_server import running_s3_server

    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The standard AWS environment pointing at the test server (no profile files read)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


# Files that keep one xdist worker busy for a minute or more (on 2 CI cores), longest first.
# They are handed out before every other file (pyproject's --no-loadscope-reorder keeps this
# order; xdist's own order, by number of tests, put the two-test crash-recovery file last), so
# no worker is left running one of them alone at the end of the run.
LONG_FILES = (
    "tests/cli/test_documented_data_engineers.py",
    "tests/security/test_leak_sweep.py",
    "tests/cli/test_documented_commands.py",
    "tests/retrieval/test_embedding.py",
    "tests/dags/test_dags.py",
    "tests/ingestion/test_crash_recovery.py",
    "tests/hardening/test_api_fuzz.py",
    "tests/training/test_embedder.py",
    "tests/ingestion/test_parsing.py",
    "tests/security/test_bombs.py",
    "tests/retrieval/stores/test_edge.py",
    "tests/retrieval/test_index_crash_points.py",
    "tests/retrieval/test_integrity.py",
    "tests/cli/test_documented_examples.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of LONG_FILES first, in that order; every other file after them, in
    collection order. Whole files move, so each stays one xdist unit (``--dist loadfile``)."""
    rank = {path: n for n, path in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture
def sigint_reaches_children() -> Iterator[None]:
    """Children started during the test begin with SIGINT at its default. A disposition of
    "ignore" is inherited across exec, and the CLI keeps an ignored SIGINT ignored, as Python
    does (a background job of a script): a Ctrl-C test must not depend on what the tests
    before it in the same worker left (both Ctrl-C tests once saw their runs carry on)."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
