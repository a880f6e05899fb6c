"""What the benchmarks share: the answer benchmarks' command line, the data dir they run in and
the SEC 10-Q filings as a labelled folder to ingest; the training benchmarks' result line."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from citewell.core.logging import configure_logging

# The third-party evaluation data beside the checkout (../shared/data; its README says what).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QA_DATA = SHARED_DATA / "qa"


def task_parser(doc: str | None, tasks: Sequence[str]) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring as help, the task to run, ``--limit`` and
    ``--data-dir``; the caller adds its own options."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=list(tasks))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep indexes here (default: a temp dir)"
    )
    return parser


@contextmanager
def benchmark_data_dir(chosen: Path | None) -> Iterator[Path]:
    """Offline models and quiet logs for the run, in ``chosen`` or else in a temporary data dir
    removed afterwards."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        yield chosen or Path(tmp)


class TrainingCard(Protocol):
    @property
    def train_seconds(self) -> float: ...
    @property
    def data(self) -> dict[str, int]: ...
    @property
    def best_ndcg_at_10(self) -> float: ...


def report_trained(model_dir: Path, card: TrainingCard, validation: str, before: float) -> None:
    """One line on a trained model: where, how long, on what data, and the validation nDCG@10
    of ``validation`` before training next to the trained model's best."""
    sys.stdout.write(
        f"\ntrained {model_dir} in {card.train_seconds:.0f} s (data {card.data}); "
        f"validation nDCG@10 {validation} {before:.4f} → {card.best_ndcg_at_10:.4f}\n"
    )


@contextmanager
def docugami_folder() -> Iterator[Path]:
    """A temporary copy of the 20 SEC 10-Q PDFs, every file labelled public."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docugami"
        shutil.copytree(QA_DATA / "docugami_sec10q" / "docs", folder)
        (folder / "citewell.labels.yaml").write_text(
            "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
        )
        yield folder


# SIMD features that decide how fast int8 and fp32 inference run (an int8 backend is ~3.3x
# faster with VNNI than without: 75 vs 22.6 chunks/s on the SEC filings, 2 cores).
_SIMD_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def cpu_line() -> str:
    """The CPU a benchmark ran on, e.g. ``AMD EPYC, 2 cores, avx2``: model speeds depend on it."""
    name, flags = "unknown CPU", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    simd = [flag for flag in _SIMD_FLAGS if flag in flags] or ["no AVX2"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores, {' '.join(simd)}"
