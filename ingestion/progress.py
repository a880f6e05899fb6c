"""How ingestion reports progress: a small protocol the pipeline calls, never printing itself.

Entry points choose what to show (the CLI draws one bar per stage on a terminal; the DAGs and
tests pass nothing). Counts are cumulative, so a reporter can be stateless about increments.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, Protocol, TextIO

from tqdm import tqdm

# parse: documents checked (unchanged ones too); embed: chunks embedded; write: chunks written.
Stage = Literal["parse", "embed", "write"]
STAGES: tuple[Stage, ...] = ("parse", "embed", "write")


class IngestProgress(Protocol):
    """Receives an ingestion run's progress."""

    def begin(self, source: str, location: str, documents: int) -> None:
        """Discovery is done: ``documents`` files of ``location`` will be checked."""
        ...

    def update(self, stage: Stage, done: int, total: int | None) -> None:
        """``done`` of ``total`` (None: not known yet) items of ``stage`` are finished."""
        ...

    def close(self) -> None:
        """The run ended (published, unchanged, failed or interrupted)."""
        ...


class NoProgress:
    """Reports nothing."""

    def begin(self, source: str, location: str, documents: int) -> None:
        return None

    def update(self, stage: Stage, done: int, total: int | None) -> None:
        return None

    def close(self) -> None:
        return None


class TerminalProgress:
    """One tqdm bar per stage (count, rate, ETA) on stderr, only when stderr is a terminal;
    with ``announce``, the run's first line (what will be read) is written even when not."""

    def __init__(self, *, announce: bool = False, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._announce = announce
        self._bars_enabled = self._stream.isatty()
        self._bars: dict[Stage, tqdm[Any]] = {}

    def begin(self, source: str, location: str, documents: int) -> None:
        if self._announce:
            noun = "file" if documents == 1 else "files"
            self._stream.write(f"reading {documents} {noun} from {location} (source {source})\n")
            self._stream.flush()

    def update(self, stage: Stage, done: int, total: int | None) -> None:
        if not self._bars_enabled:
            return
        bar = self._bars.get(stage)
        if bar is None:
            unit = "doc" if stage == "parse" else "chunk"
            bar = tqdm(
                total=total,
                desc=f"{stage:<5}",
                unit=unit,
                file=self._stream,
                position=STAGES.index(stage),
                leave=True,
                dynamic_ncols=True,
            )
            self._bars[stage] = bar
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
