"""The served version through its lifecycle on disk: a data dir that cannot be read, a served
version collected by a writer before the server switched, a refresh after a rollback. Searches
answer from one verified version or 503, and readiness says which."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

import citewell.retrieval.serving_version as serving_module
from citewell.api.main import create_app
from citewell.cli.main import main as cli_main
from citewell.core.errors import IndexIntegrityError, IndexNotFoundError
from citewell.core.models import AccessLabel, Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.index import (
    IndexLayout,
    IndexMeta,
    OpenedVersion,
    rollback,
    verify_version,
)
from citewell.retrieval.principals import hash_api_key
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder

API_KEY = "lifecycle-key-7c2e"
HEADERS = {"X-API-Key": API_KEY}
PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
READER = Principal(name="reader", clearance="public", groups=frozenset())
REQUEST = SearchRequest(query="harbor cranes", k=10, mode=SearchMode.HYBRID, rerank=False)


def _settings(root: Path) -> Settings:
    body = {
        "principals": {"reader": {"clearance": "public", "api_key_sha256": hash_api_key(API_KEY)}}
    }
    (root / "principals.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
    return Settings(
        data_dir=root / "data",
        principals_file=root / "principals.yaml",
        keep_versions=2,
        reload_interval_s=60.0,
    )


def _publish(settings: Settings, revision: int) -> str:
    docs = [
        TextDocument(
            doc_id=f"doc-{i}",
            title=f"Crane {i}",
            text=f"Harbor cranes revision {revision} lift container {i}.",
            label=PUBLIC,
        )
        for i in range(3)
    ]
    report = Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        docs, index=settings.index, source_name="cranes"
    )
    assert report.index_version is not None
    return report.index_version


@pytest.mark.slow
def test_a_data_dir_that_cannot_be_read_answers_503_not_500(tmp_path: Path) -> None:
    """CURRENT that cannot be read (here a directory; an unmounted or stale network share gives
    EIO or ESTALE) raised a bare OSError on the first search: a 500."""
    settings = _settings(tmp_path)
    _publish(settings, 1)
    layout = IndexLayout(settings)
    layout.current_file.unlink()
    layout.current_file.mkdir()
    service = ServingIndex(settings, embedder=HashingEmbedder())
    try:
        with TestClient(create_app(settings, service), raise_server_exceptions=False) as client:
            search = client.post("/v1/search", json={"query": "harbor cranes"}, headers=HEADERS)
            assert search.status_code == 503, search.text
            ready = client.get("/readyz")
            assert (ready.status_code, ready.json()["reason"]) == (503, "store_unavailable")
        readiness = service.versions.readiness()  # also what `citewell index ready` prints
        assert (readiness.ready, readiness.reason) == (False, "store_unavailable")
    finally:
        service.close()


def test_a_refresh_after_a_rollback_keeps_the_version_rolled_back_to(tmp_path: Path) -> None:
    """Rolled back from v2 to v1, the next refresh (v3, built on v1) collected v1 and kept v2:
    the version that served just before v3 was gone, a server still on v1 answered 503 until it
    switched, and the version the operator had rolled away from became the only way back."""
    settings = _settings(tmp_path)
    first = _publish(settings, 1)
    second = _publish(settings, 2)
    assert rollback(settings) == first
    service = ServingIndex(settings, embedder=HashingEmbedder())
    try:
        assert service.search(READER, REQUEST).index_version == first
        third = _publish(settings, 3)
        layout = IndexLayout(settings)
        assert layout.versions() == [first, third]  # keep_versions=2: current and previous
        assert service.versions.readiness().ready is True
        assert service.search(READER, REQUEST).index_version == first
        assert service.versions.maybe_reload() is True
        assert service.search(READER, REQUEST).index_version == third
        assert rollback(settings) == first
        assert second not in layout.versions()
    finally:
        service.close()


def _served_then_collected(settings: Settings) -> tuple[ServingIndex, str, str]:
    """A server on the first version, then two versions published before its reload check
    (keep_versions=2 collects the served one): the server, the first and the third version."""
    first = _publish(settings, 1)
    service = ServingIndex(settings, embedder=HashingEmbedder())
    try:
        assert service.search(READER, REQUEST).index_version == first
        _publish(settings, 2)
        third = _publish(settings, 3)
    except BaseException:
        service.close()
        raise
    return service, first, third


def test_a_served_version_collected_before_the_switch_answers_until_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two versions published before the server's reload check (keep_versions=2) collect the
    served one. Readiness said integrity_failed and every search answered 503 from then until
    the newest version was open and verified (its digests read in full), though the served
    version was whole in memory and a verified newer one was waiting."""
    settings = _settings(tmp_path)
    service, first, third = _served_then_collected(settings)
    try:
        assert first not in IndexLayout(settings).versions()

        readiness = service.versions.readiness()
        assert (readiness.ready, readiness.version) == (True, first)
        assert service.search(READER, REQUEST).index_version == first

        real_open = serving_module.open_version
        during_open: list[str] = []

        def open_while_searching(*args: Any, **kwargs: Any) -> OpenedVersion:
            opened = real_open(*args, **kwargs)
            during_open.append(service.search(READER, REQUEST).index_version)
            return opened

        monkeypatch.setattr(serving_module, "open_version", open_while_searching)
        assert service.versions.maybe_reload() is True
        assert during_open == [first]
        assert service.search(READER, REQUEST).index_version == third
        assert service.versions.readiness().ready is True
    finally:
        service.close()


def test_a_collected_served_version_whose_successor_is_refused_stops_serving(
    tmp_path: Path,
) -> None:
    """Nothing on disk verifies any more: 503 and not ready, never the collected version."""
    settings = _settings(tmp_path)
    service, _, third = _served_then_collected(settings)
    try:
        layout = IndexLayout(settings)
        (layout.version_dir(third) / "manifest.sqlite").unlink()
        assert service.versions.maybe_reload() is False
        readiness = service.versions.readiness()
        assert (readiness.ready, readiness.reason) == (False, "integrity_failed")
        with pytest.raises(IndexIntegrityError):
            service.search(READER, REQUEST)
    finally:
        service.close()


def test_a_plain_rollback_returns_to_the_version_the_current_one_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """v1, v2, v3 published, rolled back to v2, refreshed into v4 (built on v2): a plain
    rollback served v3, the newest older version by number, which is the version the operator
    had rolled away from, not the one v4 replaced."""
    settings = _settings(tmp_path).model_copy(update={"keep_versions": 4})
    first = _publish(settings, 1)
    second = _publish(settings, 2)
    _publish(settings, 3)
    assert rollback(settings) == second
    fourth = _publish(settings, 4)
    layout = IndexLayout(settings)
    assert layout.read_meta(fourth).replaces == second
    assert cli_main(["index", "versions", "--data-dir", str(settings.data_dir)]) == 0
    listed = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()}
    assert listed[fourth].startswith("*") and f"replaced {second}" in listed[fourth]
    assert rollback(settings) == second
    assert rollback(settings) == first  # second replaced first
    with pytest.raises(IndexNotFoundError, match="no earlier version"):
        rollback(settings)  # first replaced nothing


def test_a_plain_rollback_from_a_version_whose_predecessor_is_gone_takes_an_older_one(
    tmp_path: Path,
) -> None:
    """The replaced version collected (keep_versions=2), rollback falls back to the newest
    published version older than the current one."""
    settings = _settings(tmp_path)
    _publish(settings, 1)
    second = _publish(settings, 2)
    third = _publish(settings, 3)
    assert rollback(settings) == second
    layout = IndexLayout(settings)
    assert layout.versions() == [second, third]
    with pytest.raises(IndexNotFoundError, match="no earlier version"):
        rollback(settings)


def test_a_version_sealed_before_the_replaces_record_verifies_and_rolls_back(
    tmp_path: Path,
) -> None:
    """meta.json written by the code before ``replaces`` (no such key, sealed without it) still
    verifies, and a plain rollback from it takes the newest older version."""
    settings = _settings(tmp_path)
    first = _publish(settings, 1)
    second = _publish(settings, 2)
    layout = IndexLayout(settings)
    meta_file = layout.version_dir(second) / "meta.json"
    record = json.loads(meta_file.read_text(encoding="utf-8"))
    assert record.pop("replaces") == first
    older = IndexMeta.model_validate({**record, "seal": None})
    material = older.model_dump_json(exclude={"seal", "replaces"})
    record["seal"] = hashlib.sha256(material.encode("utf-8")).hexdigest()
    meta_file.write_text(json.dumps(record), encoding="utf-8")
    assert verify_version(settings, settings.index, second).replaces is None
    assert rollback(settings) == first
