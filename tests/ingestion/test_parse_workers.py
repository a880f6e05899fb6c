"""Parse worker processes: the time limit and the memory limit hit real pathological inputs, a
worker that hit a limit is replaced and the next document parses, closing ends every worker."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from citewell.ingestion.limits import ZipLimits
from citewell.ingestion.parse_workers import ParseJob, ParseWorkers, WorkerLimits
from tests.ingestion.kb_fixture import write_kb
from tests.ingestion.mip_files import PUBLIC, msip_properties, write_pdf
from tests.security.hostile_files import MIB, pdf_flate_bomb, pdf_nested_forms


def _good(tmp_path: Path) -> ParseJob:
    path = tmp_path / "good.txt"
    path.write_text("Cranes load vessels at berth four.", encoding="utf-8")
    return ParseJob("good", path, "txt")


def test_a_document_past_the_time_limit_fails_and_the_next_one_parses(tmp_path: Path):
    slow = tmp_path / "forms.pdf"
    slow.write_bytes(pdf_nested_forms())  # about a minute of form drawing
    with ParseWorkers(1, WorkerLimits(time_limit_s=8)) as workers:
        workers.submit(ParseJob("slow", slow, "pdf"))
        workers.submit(_good(tmp_path))
        outcome = workers.take("slow")
        assert outcome.parsed is None
        assert outcome.reason == "time limit exceeded (8 s)"
        good = workers.take("good")
        assert good.parsed is not None and "berth four" in good.parsed.text
        assert workers.replaced == 1


def test_a_read_that_never_returns_hits_the_time_limit(tmp_path: Path):
    fifo = tmp_path / "stuck.txt"
    os.mkfifo(fifo)  # opening it blocks until a writer appears: none ever does
    with ParseWorkers(1, WorkerLimits(time_limit_s=4)) as workers:
        workers.submit(ParseJob("stuck", fifo, "txt"))
        assert workers.take("stuck").reason == "time limit exceeded (4 s)"


def test_a_real_bomb_past_the_memory_limit_fails_with_bounded_worker_memory(tmp_path: Path):
    bomb = tmp_path / "bomb.pdf"
    bomb.write_bytes(pdf_flate_bomb(300 * MIB))  # pdfminer inflates it whole
    limit = 160 * MIB
    # The decompression cap is raised out of the way, so only the memory limit stands.
    limits = WorkerLimits(
        memory_limit_bytes=limit, zip_limits=ZipLimits(max_uncompressed_bytes=4096 * MIB)
    )
    memo = write_pdf(tmp_path / "memo.pdf", "Memo: the harbour office closes early on Friday.")
    with ParseWorkers(1, limits) as workers:
        workers.submit(ParseJob("memo", memo, "pdf"))
        baseline = workers.take("memo")
        assert baseline.parsed is not None
        workers.submit(ParseJob("bomb", bomb, "pdf"))
        outcome = workers.take("bomb")
        assert outcome.parsed is None
        assert outcome.reason is not None
        assert outcome.reason.startswith(("memory limit exceeded", "parser process died"))
        # The worker's own high-water mark: never past its start-up size plus the limit.
        assert outcome.peak_rss_bytes < baseline.peak_rss_bytes + limit
        workers.submit(ParseJob("memo-again", memo, "pdf"))
        assert workers.take("memo-again").parsed is not None


def test_close_ends_every_worker(tmp_path: Path):
    slow = tmp_path / "forms.pdf"
    slow.write_bytes(pdf_nested_forms())
    workers = ParseWorkers(2, WorkerLimits(time_limit_s=600))
    workers.submit(ParseJob("a", slow, "pdf"))
    workers.submit(ParseJob("b", slow, "pdf"))
    pids: list[int] = []
    for _ in range(600):
        pids = workers.worker_pids()
        if len(pids) == 2:
            break
        time.sleep(0.1)
    assert len(pids) == 2
    workers.close()
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 5)
    assert not alive


@pytest.mark.parametrize("workers", [0, -1])
def test_worker_count_must_be_positive(workers: int):
    with pytest.raises(ValueError):
        ParseWorkers(workers, WorkerLimits())


def test_a_key_cannot_be_pending_twice(tmp_path: Path):
    with ParseWorkers(1, WorkerLimits()) as workers:
        workers.submit(_good(tmp_path))
        with pytest.raises(ValueError, match="already pending"):
            workers.submit(_good(tmp_path))
        assert workers.take("good").parsed is not None
        workers.submit(_good(tmp_path))  # taken: the key is free again
        assert workers.take("good").parsed is not None


@pytest.mark.slow
def test_text_without_paragraph_breaks_parses_under_a_1_gib_memory_limit(tmp_path: Path):
    # unstructured classifies each paragraph by running spaCy over it whole (up to 1M chars,
    # three times): a 1 MB minified JSON file or a 600 kB text without a blank line took 2 GB
    # and half a minute, and failed with "memory limit exceeded" under the default limit.
    minified = tmp_path / "export.json"
    minified.write_text(
        "{"
        + ",".join(
            f'"item{n}": {{"name": "berth {n}", "note": "crane loads"}}' for n in range(20000)
        )
        + "}",
        encoding="utf-8",
    )
    prose = tmp_path / "minutes.txt"
    prose.write_text("The harbour master signs the manifest at berth four. " * 12000, "utf-8")
    with ParseWorkers(1, WorkerLimits(memory_limit_bytes=1024 * MIB)) as workers:
        workers.submit(ParseJob("json", minified, "json"))
        workers.submit(ParseJob("prose", prose, "txt"))
        for key, expected in (("json", '"berth 19999"'), ("prose", "harbour master")):
            outcome = workers.take(key)
            assert outcome.reason is None, (key, outcome.reason)
            assert outcome.parsed is not None and expected in outcome.parsed.text
            assert outcome.seconds < 30, (key, outcome.seconds)


class _HeldStart:
    """Holds ParseWorkers._start until released, as a forkserver's first start does while it
    imports the parsers; records the processes it started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.started: list[int] = []
        original = ParseWorkers._start

        def held(workers: ParseWorkers):
            self.entered.set()
            self.release.wait(10)
            slot = original(workers)
            self.started.append(slot.process.pid)
            return slot

        monkeypatch.setattr(ParseWorkers, "_start", held)


def test_submitting_does_not_wait_for_a_worker_to_start(tmp_path: Path, monkeypatch):
    start = _HeldStart(monkeypatch)
    with ParseWorkers(1, WorkerLimits()) as workers:
        workers.submit(_good(tmp_path))
        assert start.entered.wait(10)
        other = tmp_path / "other.txt"
        other.write_text("Tugs wait at the harbour mouth.", encoding="utf-8")
        submitter = threading.Thread(
            target=lambda: [workers.submit(ParseJob(f"more{i}", other, "txt")) for i in range(3)]
        )
        submitter.start()
        submitter.join(5)
        submitted_while_starting = not submitter.is_alive()
        start.release.set()
        submitter.join()
        assert submitted_while_starting
        assert "berth four" in workers.take("good").parsed.text
        assert all(workers.take(f"more{i}").parsed is not None for i in range(3))


def test_closing_while_a_worker_starts_ends_that_worker(tmp_path: Path, monkeypatch):
    start = _HeldStart(monkeypatch)
    workers = ParseWorkers(1, WorkerLimits())
    workers.submit(_good(tmp_path))
    assert start.entered.wait(10)
    closer = threading.Thread(target=workers.close)
    closer.start()
    time.sleep(0.2)  # close() has marked the pool closed and waits for the supervisor
    start.release.set()
    closer.join(20)
    assert not closer.is_alive() and len(start.started) == 1
    pid = start.started[0]
    if psutil.pid_exists(pid):
        _, alive = psutil.wait_procs([psutil.Process(pid)], 5)
        assert not alive


@pytest.mark.slow
def test_reading_a_hostile_pdfs_labels_is_held_to_the_time_limit(tmp_path: Path):
    # pypdf parses the catalog's 1.9M-element array for seconds (five such: 19 s, ~800 MB).
    hostile = write_pdf(tmp_path / "hostile.pdf", "Quay cranes.", catalog_array=1_900_000)
    with ParseWorkers(1, WorkerLimits(time_limit_s=1)) as workers:
        workers.submit(ParseJob("parse only", hostile, "pdf"))
        parsed = workers.take("parse only")
        assert parsed.parsed is not None and parsed.labels is None
        workers.submit(ParseJob("labels too", hostile, "pdf", read_labels=True))
        assert workers.take("labels too").reason == "time limit exceeded (1 s)"
        plain = write_pdf(tmp_path / "plain.pdf", "Tugs wait at the harbour mouth.")
        workers.submit(ParseJob("plain", plain, "pdf", read_labels=True))
        after = workers.take("plain")
        assert after.parsed is not None and after.labels is not None and after.labels.empty


def test_labels_read_alone_are_held_to_the_limits_and_refused_past_them(tmp_path: Path):
    # A cached parse or a refused label read again: no parse, the same limits.
    hostile = write_pdf(tmp_path / "hostile.pdf", "Quay cranes.", catalog_array=1_900_000)
    labelled = write_pdf(tmp_path / "memo.pdf", "Tugs wait.", info=msip_properties(PUBLIC))
    with ParseWorkers(1, WorkerLimits(time_limit_s=1)) as workers:
        refused = workers.read_labels(hostile, "pdf")
        assert refused.problems == (
            "sensitivity label metadata unreadable: time limit exceeded (1 s)",
        )
        assert [label.label_id for label in workers.read_labels(labelled, "pdf").labels] == [PUBLIC]
        assert workers.replaced == 1


# Run in a fresh interpreter: the forkserver is one per process, and another test may have
# started it already in this one.
_FORKSERVER_ORDER = """
import sys
from pathlib import Path

import psutil

from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor
from tests.agent.fakes import HashingEmbedder


def forkserver_running() -> bool:
    return any(
        "forkserver" in " ".join(child.cmdline())
        for child in psutil.Process().children()
    )


class ModelEmbedder(HashingEmbedder):
    # A real embedder loads its model when the index asks for its key (seconds).
    seen: list[bool] = []

    @property
    def cache_key(self) -> str:
        self.seen.append(forkserver_running())
        return "hashing-256"


folder, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
embedder = ModelEmbedder()
Ingestor(Settings(data_dir=data_dir), embedder=embedder).ingest_folder(folder, index="kb")
print("forkserver running when the model loaded:", embedder.seen[0])
"""


def test_the_forkserver_imports_the_parsers_while_the_embedding_model_loads(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    folder = write_kb(tmp_path / "kb")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _FORKSERVER_ORDER, str(folder), str(tmp_path / "data")],
        cwd=repo,
        env=dict(os.environ, PYTHONPATH=str(repo)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "forkserver running when the model loaded: True" in result.stdout
