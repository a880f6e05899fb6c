"""Train the full-size reranker on a GPU machine that has torch but not Citewell's dependencies,
and bring it back under the machine's transfer limits (issue 22). The recipe, in three steps:

    # here: the training data (indexes from `citewell eval retrieval`) and the carried inputs
    CITEWELL_DATA_DIR=.citewell-bench citewell reranker data \\
        --dataset ../shared/data/ir/scifact --dataset ../shared/data/ir/cranfield/beir \\
        --out .devcarry/reranker-data.json.xz
    python -m benchmarks.gpu_reranker prepare --carry .devcarry   # fp16 base weights
    # there (carry .devcarry; pydantic wheels in .devcarry/whl): teacher, then distilled student
    python -m benchmarks.gpu_reranker device --carry .devcarry --out $OUT
    # here: full fp32 model folders again, then `citewell reranker install` each per index
    python -m benchmarks.gpu_reranker unpack --files <returned files> --out .devcarry/models

Only what training changed travels back: the word-embedding matrix (12M of the 23M weights) is
frozen in training (``training.cross_encoder._Student``), so it is dropped from the returned
weights and restored from the bundled base model here; the rest travels as fp16 in parts of at
most 15 MiB (the machine returns at most 16 MiB per file, 64 MiB in all).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from citewell.core.logging import configure_logging
from citewell.training.cross_encoder import PortableFitOptions, base_model_path, fit_from_file

WEIGHTS = "model.safetensors"
FROZEN_SUFFIX = "embeddings.word_embeddings.weight"
PART_BYTES = 15 * 1024 * 1024
TEACHER, STUDENT = "teacher", "student"


def prepare(carry: Path, source: Path | None = None, name: str = "base") -> Path:
    """A model folder (default: the bundled MiniLM) with fp16 weights (45 MB instead of 91)
    under ``carry/name``."""
    import torch
    from safetensors.torch import load_file, save_file

    source = source or base_model_path()
    target = carry / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(WEIGHTS, "*.md", ".git*"))
    tensors = load_file(str(source / WEIGHTS))
    save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, target / WEIGHTS)
    return target


def pack(model_dir: Path, out: Path, name: str) -> list[Path]:
    """Trained weights minus the frozen word embeddings, fp16, in parts; the small files in one
    tar."""
    import torch
    from safetensors.torch import load_file, save

    tensors = load_file(str(model_dir / WEIGHTS))
    kept = {
        k: v.to(torch.float16).contiguous()
        for k, v in tensors.items()
        if not k.endswith(FROZEN_SUFFIX)
    }
    blob = save(kept)
    written: list[Path] = []
    for index, start in enumerate(range(0, len(blob), PART_BYTES)):
        part = out / f"{name}.weights.part{index}"
        part.write_bytes(blob[start : start + PART_BYTES])
        written.append(part)
    archive = out / f"{name}.files.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(model_dir.iterdir()):
            if path.is_file() and path.name != WEIGHTS:
                tar.add(path, arcname=path.name)
    return [*written, archive]


def unpack(files: Path, name: str, out: Path) -> Path:
    """A full fp32 model folder from ``pack``'s files and the bundled base's word embeddings."""
    import torch
    from safetensors.torch import load, load_file, save_file

    parts = sorted(
        files.glob(f"{name}.weights.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1])
    )
    if not parts:
        raise SystemExit(f"no {name}.weights.part* under {files}")
    trained = load(b"".join(p.read_bytes() for p in parts))
    base = load_file(str(base_model_path() / WEIGHTS))
    frozen = {k: v for k, v in base.items() if k.endswith(FROZEN_SUFFIX)}
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(files / f"{name}.files.tar") as tar:
        tar.extractall(target, filter="data")
    # The saved model prefixes its encoder ("bert."); the bi-encoder base does not.
    prefix = next(k for k in trained if k.endswith("embeddings.position_embeddings.weight"))
    prefix = prefix[: -len("embeddings.position_embeddings.weight")]
    weights = {k: v.to(torch.float32).contiguous() for k, v in trained.items()}
    for key, value in frozen.items():
        weights[prefix + key[key.index(FROZEN_SUFFIX) :]] = value.to(torch.float32).contiguous()
    save_file(weights, target / WEIGHTS, metadata={"format": "pt"})
    return target


def device(
    carry: Path,
    out: Path,
    teacher_budget: float,
    student_budget: float,
    *,
    where: str = "cuda",
    max_length: int = 256,
    batch_size: int = 32,
    trained_teacher: Path | None = None,
    student_learning_rate: float = 7e-5,
) -> None:
    """On the GPU machine: a 6-layer teacher, then a 2-layer student distilled from it; each
    packed into ``out`` as soon as it is trained, so a run cut short still returns the first.
    With ``trained_teacher`` only the student is trained, initialised from that teacher's first
    two layers and head: started from the bi-encoder's, a 2-layer student stayed at chance."""
    data = carry / "reranker-data.json.xz"
    base = carry / "base"
    work = Path("/tmp/citewell-models")
    timings: dict[str, float] = {TEACHER: 0.0}
    started = time.perf_counter()
    if trained_teacher is None:
        _train_teacher(data, base, work, out, teacher_budget, where, max_length, batch_size)
        timings[TEACHER] = time.perf_counter() - started
    teacher = trained_teacher or work / TEACHER
    fit_from_file(
        data,
        work / STUDENT,
        PortableFitOptions(
            layers=2,
            epochs=8,
            learning_rate=student_learning_rate,
            batch_size=batch_size,
            negatives=7,
            max_length=max_length,
            device=where,
            patience=3,
            time_budget_s=student_budget,
            teacher=teacher,
            distill_weight=0.7,
        ),
        base=teacher if trained_teacher is not None else base,
        label="scifact+cranfield",
    )
    pack(work / STUDENT, out, STUDENT)
    timings[STUDENT] = time.perf_counter() - started - timings[TEACHER]
    sys.stdout.write(json.dumps({"seconds": timings}) + "\n")


def _train_teacher(
    data: Path,
    base: Path,
    work: Path,
    out: Path,
    budget: float,
    where: str,
    max_length: int,
    batch_size: int,
) -> None:
    fit_from_file(
        data,
        work / TEACHER,
        PortableFitOptions(
            layers=None,
            epochs=8,
            batch_size=batch_size,
            negatives=7,
            max_length=max_length,
            device=where,
            patience=3,
            time_budget_s=budget,
        ),
        base=base,
        label="scifact+cranfield",
    )
    pack(work / TEACHER, out, TEACHER)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    actions = parser.add_subparsers(dest="action", required=True)
    p = actions.add_parser("prepare")
    p.add_argument("--carry", type=Path, required=True)
    p.add_argument("--source", type=Path, help="model folder (default: the bundled MiniLM)")
    p.add_argument("--name", default="base", help="folder name under --carry")
    d = actions.add_parser("device")
    d.add_argument("--carry", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--teacher-budget", type=float, default=300.0)
    d.add_argument("--student-budget", type=float, default=150.0)
    d.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    d.add_argument("--max-length", type=int, default=256)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--trained-teacher", type=Path, help="skip the teacher: distil from this one")
    d.add_argument("--student-learning-rate", type=float, default=7e-5)
    u = actions.add_parser("unpack")
    u.add_argument("--files", type=Path, required=True)
    u.add_argument("--out", type=Path, required=True)
    u.add_argument("--name", action="append", choices=[TEACHER, STUDENT])
    args = parser.parse_args(argv)
    configure_logging()
    if args.action == "prepare":
        sys.stdout.write(f"{prepare(args.carry, args.source, args.name)}\n")
    elif args.action == "device":
        args.out.mkdir(parents=True, exist_ok=True)
        device(
            args.carry,
            args.out,
            args.teacher_budget,
            args.student_budget,
            where=args.device,
            max_length=args.max_length,
            batch_size=args.batch_size,
            trained_teacher=args.trained_teacher,
            student_learning_rate=args.student_learning_rate,
        )
    else:
        for name in args.name or [TEACHER, STUDENT]:
            if any(args.files.glob(f"{name}.weights.part*")):
                sys.stdout.write(f"{unpack(args.files, name, args.out)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
