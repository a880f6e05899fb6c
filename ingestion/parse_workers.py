"""Parse documents in worker processes, each document under a time limit and a memory limit.

The ingestion run hands files to :class:`ParseWorkers` and takes the results back later, so the
next documents parse while the current batch embeds. A worker is a separate process started
from multiprocessing's ``forkserver`` (never ``fork``: the parent runs torch, whose threads do
not survive a fork), with the parsing libraries preloaded so a new worker starts warm.

* Memory: a worker caps its own address space (``RLIMIT_AS``) at what it holds after start-up
  plus ``memory_limit_bytes``; the kernel refuses allocations past that, and parser subprocesses
  (pandoc, LibreOffice, Tesseract) inherit the cap. A parse that hits it fails with a reason and
  the worker is replaced (its heap cannot be trusted afterwards).
* Time: the parent kills a worker (its whole process group, subprocesses included) whose
  document runs past ``time_limit_s``, fails that document, and starts a new worker.
* A worker that dies (a parser library crashing in C) fails the document it held, nothing else.

Why not ``concurrent.futures.ProcessPoolExecutor`` (or ``multiprocessing.Pool``): neither can
kill one hung task (Python 3.11 has no ``kill_workers``), and a worker that dies breaks the
whole executor and every pending future without saying which document killed it (``Pool`` even
waits forever for the lost task). Here each worker holds one document at a time through its own
``multiprocessing`` pipe, so the document that hung or crashed is known and alone fails.
"""

from __future__ import annotations

import itertools
import logging
import os
import resource
import signal
import threading
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from multiprocessing import forkserver, get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from pydantic import Field

from citewell.core.errors import InvalidArgumentError, ParseError, ParseWorkerError
from citewell.core.logging import log_event
from citewell.core.models import Frozen
from citewell.ingestion.limits import ZipLimits
from citewell.ingestion.models import ParsedDocument
from citewell.ingestion.parsing import parse_document
from citewell.ingestion.sensitivity import SensitivityReading, read_sensitivity

logger = logging.getLogger(__name__)

# Imported once by the forkserver, so every worker forked from it starts with them loaded
# (importing unstructured's Office partitioners pulls torch: seconds per worker otherwise).
PRELOAD = (
    "citewell.ingestion.parsing",
    "pdfminer.high_level",
    "unstructured.partition.docx",
    "unstructured.partition.pptx",
    "unstructured.partition.xlsx",
    "unstructured.partition.html",
    "unstructured.partition.md",
    "unstructured.partition.email",
    "unstructured.partition.text",
)
_POLL_S = 0.05  # how often the supervisor looks for new jobs and expired deadlines
_PARENT_CHECK_S = 1.0


class WorkerLimits(Frozen):
    """What one document may cost a worker."""

    time_limit_s: float = Field(default=300.0, gt=0)
    memory_limit_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)
    zip_limits: ZipLimits = ZipLimits()
    ocr: bool = True


@dataclass(frozen=True)
class ParseJob:
    """``sha256``: the file's content as the run hashed it; other bytes fail the job.
    ``read_labels``: also read the sensitivity labels the file carries, under the same limits
    (a hostile PDF's label metadata can take pypdf seconds and hundreds of MB); ``parse``
    False: only read them."""

    key: str
    path: Path
    doc_type: str
    sha256: str | None = None
    read_labels: bool = False
    parse: bool = True


@dataclass(frozen=True)
class ParseOutcome:
    """A parsed document, or the reason it failed; ``seconds`` is the worker's time on it and
    ``peak_rss_bytes`` the worker's resident-memory high-water mark after it."""

    key: str
    parsed: ParsedDocument | None
    reason: str | None
    seconds: float
    peak_rss_bytes: int
    labels: SensitivityReading | None = None  # when the job asked for them and parsing worked


def start_forkserver() -> None:
    """Start the workers' forkserver now, without waiting for it: it imports the parsers
    (seconds) in its own process while the run goes on (loading the embedding model, reading
    the manifest), instead of after them at the first parse. Idempotent."""
    get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()


def default_workers() -> int:
    """One worker per core beyond the one the embedder's main thread keeps busy, 1 to 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) - 1))


# --- the worker process ------------------------------------------------------------------------


def _address_space_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024  # Linux reports kilobytes


def _exit_with_parent() -> None:
    # A worker whose parent is gone (killed) must not parse on: its result has nowhere to go.
    parent = os.getppid()
    while True:
        time.sleep(_PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(conn: Connection, limits: WorkerLimits) -> None:
    # Ctrl-C reaches the parent, which ends the workers; a worker's own session lets the parent
    # kill it together with any subprocess a parser started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setsid()
    cap = _address_space_bytes() + limits.memory_limit_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        started = time.perf_counter()
        parsed: str | None = None
        labels: str | None = None
        reason: str | None = None
        out_of_memory = False
        try:
            if job.parse:
                parsed = parse_document(
                    job.path,
                    job.doc_type,
                    ocr=limits.ocr,
                    zip_limits=limits.zip_limits,
                    sha256=job.sha256,
                ).model_dump_json()
            if job.read_labels:
                labels = read_sensitivity(job.path, job.doc_type).model_dump_json()
        except ParseError as exc:
            reason = exc.reason
        except MemoryError:
            out_of_memory = True
            reason = f"memory limit exceeded ({limits.memory_limit_bytes} bytes)"
        except Exception as exc:  # parse_document wraps library errors; this is a last guard
            reason = f"parser failed: {type(exc).__name__}: {str(exc)[:160]}"
        seconds = time.perf_counter() - started
        if reason is not None:
            parsed = labels = None
        try:
            conn.send((job.key, parsed, labels, reason, seconds, _peak_rss_bytes()))
        except MemoryError:
            parsed, out_of_memory = None, True
            reason = f"memory limit exceeded ({limits.memory_limit_bytes} bytes)"
            conn.send((job.key, None, None, reason, seconds, _peak_rss_bytes()))
        if out_of_memory:
            return  # a heap that ran out cannot be trusted with the next document


# --- the parent side ---------------------------------------------------------------------------


@dataclass
class _Slot:
    process: BaseProcess
    conn: Connection
    job: ParseJob | None = None
    deadline: float = 0.0


class ParseWorkers:
    """Parses submitted jobs in up to ``workers`` processes; :meth:`take` returns a job's
    outcome (waiting for it). Use as a context manager: leaving it ends every worker."""

    def __init__(self, workers: int, limits: WorkerLimits) -> None:
        if workers < 1:
            raise InvalidArgumentError("workers must be at least 1")
        self.workers = workers
        self.limits = limits
        self._context = get_context("forkserver")
        self._queue: deque[ParseJob] = deque()
        self._results: dict[str, ParseOutcome] = {}
        self._pending: set[str] = set()  # submitted, not yet taken
        self._changed = threading.Condition()
        self._slots: list[_Slot] = []
        self._closed = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.busy_seconds = 0.0  # worker time spent parsing, all workers together
        self.peak_rss_bytes = 0  # the largest resident size any worker reached
        self.replaced = 0  # workers killed or lost and started again
        self._label_jobs = itertools.count()

    def __enter__(self) -> ParseWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, job: ParseJob) -> None:
        """Queue ``job``; its key must not be pending already (one outcome per key)."""
        with self._changed:
            if job.key in self._pending:
                raise InvalidArgumentError(f"a job with key {job.key!r} is already pending")
            self._pending.add(job.key)
            if self._thread is None:
                start_forkserver()
                # Kept only once started: Ctrl-C between the two must not leave close() joining
                # a thread that never ran ("cannot join thread before it is started").
                thread = threading.Thread(
                    target=self._supervise, name="citewell-parse-supervisor", daemon=True
                )
                thread.start()
                self._thread = thread
            self._queue.append(job)

    def take(self, key: str) -> ParseOutcome:
        with self._changed:
            while key not in self._results:
                if self._failure is not None:
                    reason = str(self._failure).strip().splitlines()
                    raise ParseWorkerError(
                        f"parse workers failed: {reason[0] if reason else self._failure!r}"
                    ) from self._failure
                self._changed.wait(_POLL_S * 4)
            self._pending.discard(key)
            return self._results.pop(key)

    def read_labels(self, path: Path, doc_type: str) -> SensitivityReading:
        """The sensitivity labels of the file at ``path``, read by a worker under its limits
        (waits for the jobs queued before it). A read that fails, runs out of time or memory,
        or kills its worker is a reading with that problem: the label is refused, never
        guessed."""
        key = f"labels:{next(self._label_jobs)}:{path}"
        self.submit(ParseJob(key, path, doc_type, read_labels=True, parse=False))
        outcome = self.take(key)
        if outcome.labels is None:
            reason = f"sensitivity label metadata unreadable: {outcome.reason or 'no reading'}"
            return SensitivityReading(problems=(reason,))
        return outcome.labels

    def worker_pids(self) -> list[int]:
        """Process ids of the workers alive now."""
        with self._changed:
            return [s.process.pid for s in self._slots if s.process.pid and s.process.is_alive()]

    def close(self) -> None:
        """End every worker now (jobs still queued are dropped)."""
        with self._changed:
            self._closed = True
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(timeout=10)
        for slot in self._slots:
            self._kill(slot)
        self._slots.clear()

    # --- supervisor thread ---------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            while True:
                with self._changed:
                    if self._closed:
                        return
                    idle = sum(1 for slot in self._slots if slot.job is None)
                    missing = min(len(self._queue) - idle, self.workers - len(self._slots))
                for _ in range(missing):
                    # Outside the lock: the first start waits for the forkserver to import the
                    # parsers (seconds), while the run goes on submitting and chunking.
                    started = self._start()
                    with self._changed:
                        if self._closed:
                            self._kill(started)
                            return
                        self._slots.append(started)
                with self._changed:
                    self._dispatch()
                busy = [slot for slot in self._slots if slot.job is not None]
                if not busy:
                    time.sleep(_POLL_S)
                    continue
                now = time.monotonic()
                timeout = max(0.0, min(_POLL_S, *(slot.deadline - now for slot in busy)))
                ready = set(
                    wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout)
                )
                for slot in busy:
                    self._check(slot, ready)
        except BaseException as exc:  # surfaced to the waiting run instead of hanging it
            with self._changed:
                self._failure = exc
                self._changed.notify_all()

    def _dispatch(self) -> None:
        while self._queue:
            slot = next((s for s in self._slots if s.job is None), None)
            if slot is None:
                return  # every worker is busy; the loop starts more, up to ``workers``
            job = self._queue.popleft()
            slot.job = job
            slot.deadline = time.monotonic() + self.limits.time_limit_s
            try:
                slot.conn.send(job)
            except (OSError, ValueError):
                self._finish(slot, None, "parser process lost before parsing", 0.0, 0)
                self._retire(slot)

    def _start(self) -> _Slot:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, self.limits),
            name="citewell-parse-worker",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Slot(process=process, conn=parent_end)

    def _check(self, slot: _Slot, ready: Container[object]) -> None:
        job = slot.job
        if job is None:
            return
        if slot.conn in ready:
            try:
                _, parsed, labels, reason, seconds, peak = slot.conn.recv()
            except (EOFError, OSError):
                pass  # died while answering: handled as a lost worker below
            else:
                self._finish(slot, parsed, reason, seconds, peak, labels)
                if reason is not None and reason.startswith("memory limit exceeded"):
                    self._retire(slot)  # the worker exits after running out of memory
                return
        elapsed = self.limits.time_limit_s - (slot.deadline - time.monotonic())
        if slot.process.sentinel in ready or not slot.process.is_alive():
            slot.process.join(timeout=1)
            code = slot.process.exitcode
            # Killed by the kernel (or a C library's abort) past the memory cap, or a crash.
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            self._finish(slot, None, f"parser process died ({how})", elapsed, 0)
            self._retire(slot)
        elif time.monotonic() >= slot.deadline:
            self._finish(
                slot, None, f"time limit exceeded ({self.limits.time_limit_s:g} s)", elapsed, 0
            )
            self._retire(slot)

    def _finish(
        self,
        slot: _Slot,
        parsed: str | None,
        reason: str | None,
        seconds: float,
        peak: int,
        labels: str | None = None,
    ) -> None:
        job = slot.job
        slot.job = None
        if job is None:
            return
        document: ParsedDocument | None = None
        reading: SensitivityReading | None = None
        try:
            if parsed is not None:
                document = ParsedDocument.model_validate_json(parsed)
            if labels is not None:
                reading = SensitivityReading.model_validate_json(labels)
        except ValueError as exc:
            document = reading = None
            reason = f"parser returned an unreadable result: {str(exc)[:120]}"
        if reason is not None:
            log_event(
                logger, logging.WARNING, "ingest.parse_failed", doc_type=job.doc_type, reason=reason
            )
        with self._changed:
            self.busy_seconds += seconds
            self.peak_rss_bytes = max(self.peak_rss_bytes, peak)
            self._results[job.key] = ParseOutcome(job.key, document, reason, seconds, peak, reading)
            self._changed.notify_all()

    def _retire(self, slot: _Slot) -> None:
        self._kill(slot)
        self._slots.remove(slot)
        self.replaced += 1

    @staticmethod
    def _kill(slot: _Slot) -> None:
        process = slot.process
        if process.pid is not None and process.is_alive():
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the worker and its subprocesses
            except (ProcessLookupError, PermissionError):
                process.kill()  # not yet in its own session
        process.join(timeout=5)
        slot.conn.close()
