"""Ctrl-C is never lost: CPython drops a KeyboardInterrupt raised inside a finaliser ("Exception
ignored"), and an ingestion run then went on and published. The entry point's handler records
the request and the run stops at its next document, publishing nothing."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from citewell.ingestion import interrupts
from citewell.ingestion.pipeline import Ingestor
from citewell.ingestion.progress import NoProgress, Stage
from citewell.retrieval.index import IndexLayout
from tests.agent.fakes import HashingEmbedder


class _SigintInFinaliser:
    """Delivers SIGINT to this process while its ``__del__`` runs: the handler's
    KeyboardInterrupt is raised inside the finaliser, where CPython prints and drops it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not interrupts.interrupted() and time.monotonic() < deadline:
            time.sleep(0.001)


class _LosesCtrlCAtDocument(NoProgress):
    def __init__(self, document: int) -> None:
        self.document = document
        self.sent = False

    def update(self, stage: Stage, done: int, total: int | None) -> None:
        if stage == "parse" and done == self.document and not self.sent:
            self.sent = True
            _SigintInFinaliser()  # dropped at once: its __del__ runs here


@pytest.fixture
def handler() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh process starts
    try:
        with interrupts.sigint_recorded():
            yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _kb(root: Path, documents: int) -> Path:
    root.mkdir()
    for n in range(documents):
        (root / f"note-{n}.txt").write_text(f"Harbor freight note number {n}.", "utf-8")
    (root / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    return root


def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_run_before_publishing(
    tmp_path: Path,
    make_settings: Callable[..., Any],
    handler: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dropped: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    settings = make_settings()
    kb = _kb(tmp_path / "kb", documents=6)
    progress = _LosesCtrlCAtDocument(document=2)
    with pytest.raises(KeyboardInterrupt):
        Ingestor(settings, embedder=HashingEmbedder()).ingest_folder(kb, progress=progress)
    assert progress.sent and dropped == [KeyboardInterrupt]  # CPython dropped the first one
    assert IndexLayout(settings, settings.index).current_version() is None


def test_without_a_request_the_checks_cost_nothing(
    tmp_path: Path, make_settings: Callable[..., Any], handler: None
) -> None:
    settings = make_settings()
    report = Ingestor(settings, embedder=HashingEmbedder()).ingest_folder(_kb(tmp_path / "kb", 3))
    assert len(report.added) == 3 and not interrupts.interrupted()


def test_a_sigint_the_process_was_started_ignoring_stays_ignored() -> None:
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        interrupts.install_handler()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupts.install_handler()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_cli_called_in_process_leaves_the_callers_sigint_handler_as_it_found_it(
    tmp_path: Path,
) -> None:
    from citewell.cli.main import main as cli_main

    previous = signal.getsignal(signal.SIGINT)
    no_judgements = ["reranker", "gate", "--dataset", str(tmp_path)]
    assert cli_main([*no_judgements, "--data-dir", str(tmp_path / "data")]) != 0
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_ctrl_c_handled_by_one_call_does_not_stop_the_callers_next_run(
    tmp_path: Path, make_settings: Callable[..., Any]
) -> None:
    # The record outlived the call: a library user (a notebook) that caught the CLI's
    # KeyboardInterrupt had its next ingestion stopped at the first document.
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), interrupts.sigint_recorded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
    finally:
        signal.signal(signal.SIGINT, previous)
    settings = make_settings()
    report = Ingestor(settings, embedder=HashingEmbedder()).ingest_folder(_kb(tmp_path / "kb", 2))
    assert len(report.added) == 2
