"""Does starting the parse workers' forkserver at the start of a run pay? (issue 21)

    .venv/bin/python -m benchmarks.forkserver_start FOLDER [--rounds 3]

Runs ``Ingestor.ingest_folder`` on FOLDER into a fresh data dir, each run in a fresh process
(the forkserver is one per process), alternating *late* (the forkserver starts at the first
parse, after the embedding model loaded: the behaviour before 67d0d66) and *early* (it starts
when the run begins and imports the parsers while the model loads). The model export is
shared and made before the first round; its load is part of every run, as in ``citewell
ingest``. Prints each run's wall time and the means.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_ONE_RUN = """
import sys, time
from pathlib import Path

import citewell.ingestion.pipeline as pipeline
from citewell.core.settings import Settings

if __name__ == "__main__":
    if sys.argv[1] == "late":
        pipeline.start_forkserver = lambda: None
    settings = Settings(data_dir=Path(sys.argv[3]), model_cache_dir=Path(sys.argv[4]))
    started = time.perf_counter()
    report = pipeline.Ingestor(settings).ingest_folder(Path(sys.argv[2]), index="bench")
    print(time.perf_counter() - started, report.chunks_written, len(report.failed))
"""


def one_run(mode: str, folder: Path, models: Path) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix="citewell-forkserver-") as data:
        out = subprocess.run(
            [sys.executable, "-c", _ONE_RUN, mode, str(folder), data, str(models)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    return float(out[-3]), int(out[-2]), int(out[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citewell-models-") as models:
        one_run("late", args.folder, Path(models))  # the model export, before the clock
        walls: dict[str, list[float]] = {"late": [], "early": []}
        print("| round | forkserver | wall s | chunks | failed |")
        print("|---|---|---|---|---|")
        for round_ in range(1, args.rounds + 1):
            for mode in ("late", "early"):
                wall, chunks, failed = one_run(mode, args.folder, Path(models))
                walls[mode].append(wall)
                print(f"| {round_} | {mode} | {wall:.2f} | {chunks} | {failed} |")
    late, early = statistics.mean(walls["late"]), statistics.mean(walls["early"])
    print(f"\nmean wall: late {late:.2f} s, early {early:.2f} s ({late - early:+.2f} s saved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
