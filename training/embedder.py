"""Adapt the embedding model to one corpus: fine-tune the configured bi-encoder on the corpus's
own judged train queries and pseudo-queries, so the dense leg ranks that domain better.

Why the bi-encoder and not only the reranker: a cross-encoder has to learn relevance from a
fresh head, which 2 CPU cores cannot give it in minutes (see evaluation/reranker_training.py);
the bi-encoder starts from a good retriever and needs only a few hundred steps of contrastive
fine-tuning to move toward the domain's vocabulary and query style. Besides the other examples
of a batch, each example can bring hard negatives mined from our own hybrid retriever (top
candidates that are not judged relevant): passages the served ranking confuses, which random
in-batch passages rarely are. They are off by default: on SciFact one per example scored lower
on the train holdout than in-batch negatives alone (a likely cause, not measured: SciFact judges
one or two abstracts per claim, so some top-ranked unjudged ones are relevant, false negatives).

The result is a new model folder with MODEL_CARD.md and card.json. It defines a new vector
space, so an index uses it only after ``CITEWELL_EMBEDDING_MODEL=<folder>`` and a rebuild; the
card records the validation nDCG@10 of dense rescoring before and after, measured on a holdout
carved out of the train split (test and dev splits are never used).

The loop is our own, as for the reranker: sentence-transformers' trainer needs the ``datasets``
package and its callbacks for what is here one loss call per batch plus a validation round.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from citewell.core.errors import EvaluationError, ModelError
from citewell.core.logging import log_event
from citewell.core.models import Frozen
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir
from citewell.training.cards import TrainingCard, ValidationPoint
from citewell.training.cross_encoder import (
    Device,
    git_commit,
    hybrid_ndcg,
    publish_model_dir,
    rerank_ndcg,
    resolve_device,
)
from citewell.training.data import TrainingData, TrainingGroup, ValidationQuery

logger = logging.getLogger(__name__)


class EmbedderTrainingParameters(Frozen):
    epochs: int
    batch_size: int  # examples per step; the other examples' passages are negatives too
    hard_negatives: int  # mined negatives per example beside the in-batch ones (0: in-batch only)
    max_length: int  # wordpieces per text while training (serving keeps its own length)
    learning_rate: float
    device: str
    seed: int
    max_pseudo: int
    validation_fraction: float
    validation_candidates: int
    time_budget_s: float | None


class EmbedderCard(TrainingCard):
    """What MODEL_CARD.md and card.json record about one adapted embedder (``data``: training
    pairs per source)."""

    parameters: EmbedderTrainingParameters
    base_ndcg_at_10: float  # validation: the candidates rescored by the base embedder

    @property
    def improved(self) -> bool:
        return self.best_ndcg_at_10 > self.base_ndcg_at_10


class TrainedEmbedder(Frozen):
    model_dir: Path
    card: EmbedderCard


def base_model_source(settings: Settings) -> Path:
    """The folder of the configured embedding model (the bundled MiniLM by default)."""
    from citewell.retrieval.embedding import bundled_model_path, download_model_dir, local_model_dir

    if settings.embedding_model is None:
        return bundled_model_path()
    return local_model_dir(settings.embedding_model) or download_model_dir(settings.embedding_model)


def dense_rescoring_ndcg(
    validation: Sequence[ValidationQuery], model: Any, candidates: int, batch_size: int = 64
) -> float:
    """nDCG@10 when each query's first ``candidates`` hybrid chunks are reordered by cosine
    similarity under ``model`` (a SentenceTransformer): the dense leg's quality on exactly the
    passages serving would fuse. Every distinct passage is encoded once."""
    texts = list(dict.fromkeys(c.text for q in validation for c in q.candidates[:candidates]))
    if not texts:
        raise EvaluationError("no validation candidates to score")
    encode = dict(normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    vectors = model.encode(texts, batch_size=batch_size, **encode)
    row = {text: i for i, text in enumerate(texts)}
    queries = model.encode([q.text for q in validation], batch_size=batch_size, **encode)
    query_row = {q.text: i for i, q in enumerate(validation)}

    def score(query: str, passages: Sequence[str]) -> list[float]:
        matrix = vectors[[row[p] for p in passages]]
        return [float(s) for s in np.asarray(matrix @ queries[query_row[query]])]

    return rerank_ndcg(validation, score, candidates)


Example = tuple[str, ...]  # (query, positive, hard negative 1..N)


def _examples(groups: Sequence[TrainingGroup], hard_negatives: int, seed: int) -> list[Example]:
    """Distinct (query, positive, negative_1..N) examples in a seeded random order. A negative
    that is a positive of the same query anywhere in the data is dropped; with N > 0 a group
    left with fewer than N negatives is skipped, since MNRL takes one column per negative."""
    relevant = _relevant(groups)
    examples: dict[tuple[str, str], Example] = {}
    for group in groups:
        key = (group.query, group.positive)
        if key in examples or group.query == group.positive:
            continue
        own = relevant[group.query]
        negatives = [n for n in dict.fromkeys(group.negatives) if n not in own | {group.query}]
        if len(negatives) >= hard_negatives:
            examples[key] = (*key, *negatives[:hard_negatives])
    shuffled = list(examples.values())
    random.Random(seed).shuffle(shuffled)
    return shuffled


def _relevant(groups: Iterable[TrainingGroup]) -> dict[str, frozenset[str]]:
    """Every positive passage of each query text, over all its groups."""
    positives: dict[str, set[str]] = {}
    for group in groups:
        positives.setdefault(group.query, set()).add(group.positive)
    return {query: frozenset(texts) for query, texts in positives.items()}


def _batches(
    examples: Sequence[Example],
    size: int,
    relevant: Mapping[str, frozenset[str]] | None = None,
) -> list[list[Example]]:
    """Batches in which no text repeats in any column: every passage of a batch is a negative
    for every other query in it, so a repeated passage would be scored as its own negative. With
    ``relevant`` (query -> its positives), a batch also never holds a passage that is a positive
    of another of its queries. An example that clashes waits for a later batch."""
    relevant = relevant or {}
    batches: list[list[Example]] = []
    pending = list(examples)
    while pending:
        batch: list[Example] = []
        texts: set[str] = set()
        passages: set[str] = set()
        positives: set[str] = set()  # of the batch's queries
        rest: list[Example] = []
        for example in pending:
            query, own = example[0], example[1:]
            mine = relevant.get(query, frozenset())
            clash = (
                len(batch) >= size
                or len(set(example)) < len(example)
                or not texts.isdisjoint(example)
                or not positives.isdisjoint(own)
                or not mine.isdisjoint(passages)
            )
            if clash:
                rest.append(example)
                continue
            batch.append(example)
            texts.update(example)
            passages.update(own)
            positives.update(mine)
        if len(batch) < 2:  # one pair alone has no negatives
            break
        batches.append(batch)
        pending = rest
    return batches


def _on_device(features: dict[str, Any], device: Any) -> dict[str, Any]:
    # preprocess() also returns non-tensor entries (the input modality): move tensors only.
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def fit_embedder(
    model: Any,
    data: TrainingData,
    params: EmbedderTrainingParameters,
) -> tuple[list[ValidationPoint], float, float, int]:
    """Fine-tune ``model`` (a SentenceTransformer) in place with contrastive loss over in-batch
    and ``params.hard_negatives`` mined negatives per example; keep the checkpoint with the best
    validation nDCG@10. Returns the history, the hybrid and base-model validation scores, and
    the optimiser steps taken."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    examples = _examples(data.groups, params.hard_negatives, params.seed)
    relevant = _relevant(data.groups)
    if len(examples) < 2:
        raise EvaluationError("fewer than two training examples")
    torch.manual_seed(params.seed)
    serving_length = model.max_seq_length
    hybrid = hybrid_ndcg(data.validation)
    base = dense_rescoring_ndcg(data.validation, model, params.validation_candidates)
    best_score, best_state = base, None
    loss_fn = MultipleNegativesRankingLoss(model)
    # The 12M-parameter word embedding barely moves in fine-tuning and dominates the
    # optimiser's memory traffic on CPU; keep it fixed (as for the reranker).
    model[0].auto_model.embeddings.word_embeddings.weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=0.01)
    rng = random.Random(params.seed)
    per_epoch = len(_batches(examples, params.batch_size, relevant))
    total = per_epoch * params.epochs
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))),
    )
    history: list[ValidationPoint] = []
    started = time.perf_counter()
    step = 0
    for epoch in range(params.epochs):
        rng.shuffle(examples)
        model.train()
        model.max_seq_length = params.max_length
        out_of_time = False
        for batch in _batches(examples, params.batch_size, relevant):
            # One column per role: anchors, positives, then each hard negative (MNRL scores
            # every query against all passages of all columns).
            features = [
                _on_device(model.preprocess([e[i] for e in batch]), model.device)
                for i in range(len(batch[0]))
            ]
            loss = loss_fn(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            out_of_time = (
                params.time_budget_s is not None
                and time.perf_counter() - started > params.time_budget_s
            )
            if out_of_time:
                break
        model.eval()
        model.max_seq_length = serving_length
        with torch.no_grad():
            score = dense_rescoring_ndcg(data.validation, model, params.validation_candidates)
        history.append(ValidationPoint(epoch=round(step / per_epoch, 2), ndcg_at_10=score))
        log_event(
            logger,
            logging.INFO,
            "embedder.validation",
            step=step,
            epoch=epoch + 1,
            loss=round(float(loss.item()), 4),
            ndcg_at_10=round(score, 4),
            base_ndcg_at_10=round(base, 4),
            seconds=round(time.perf_counter() - started, 1),
        )
        if score > best_score:
            best_score = score
            best_state = copy.deepcopy(model.state_dict())
        elif best_state is not None or out_of_time:
            break  # past the best epoch: more would overfit the few judged queries
        if out_of_time:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history, hybrid, base, step


def train_embedder(
    settings: Settings,
    index: str,
    dataset_dir: Path,
    out_dir: Path | None = None,
    *,
    epochs: int = 2,
    batch_size: int = 32,
    hard_negatives: int = 0,
    max_length: int = 192,  # served chunks reach 224 wordpieces; 192 beat 128 on holdout
    learning_rate: float = 3e-5,
    device: Device = "auto",
    seed: int = 13,
    max_pseudo: int = 2000,
    validation_fraction: float = 0.2,
    time_budget_s: float | None = None,
) -> TrainedEmbedder:
    """Fine-tune the configured embedder on the train split of ``dataset_dir`` (whose corpus
    ``index`` holds: the judged positives and the validation candidates are its chunks, as the
    index embeds them) and write it to ``out_dir`` (default
    ``<data_dir>/models/embedder-<dataset>-<UTC timestamp>``) with its model card."""
    from sentence_transformers import SentenceTransformer

    from citewell.retrieval.factory import embedding_model_id
    from citewell.training.data import build_index_training_data

    params = EmbedderTrainingParameters(
        epochs=epochs,
        batch_size=batch_size,
        hard_negatives=hard_negatives,
        max_length=max_length,
        learning_rate=learning_rate,
        device=resolve_device(device),
        seed=seed,
        max_pseudo=max_pseudo,
        validation_fraction=validation_fraction,
        validation_candidates=settings.rerank_candidates,
        time_budget_s=time_budget_s,
    )
    if epochs < 1 or batch_size < 2 or hard_negatives < 0:
        raise EvaluationError(
            "training needs at least one epoch, two examples per batch and hard negatives >= 0"
        )
    dataset = load_beir(dataset_dir, "train")
    data = build_index_training_data(
        settings,
        index,
        dataset,
        validation_fraction=validation_fraction,
        # Groups need one mined negative to exist even when the loss uses in-batch ones only.
        negatives=max(1, hard_negatives),
        max_pseudo=max_pseudo,
        seed=seed,
        indexed_text=True,
    )
    if not data.validation:
        raise EvaluationError("no validation queries: the train split is too small to hold out")

    source = base_model_source(settings)
    try:
        model = SentenceTransformer(str(source), device=params.device, backend="torch")
    except Exception as exc:
        raise ModelError(f"cannot load embedding model {source}: {exc}") from exc
    model.float()
    model.max_seq_length = settings.embedding_max_seq_length
    started = time.perf_counter()
    history, hybrid, base, steps = fit_embedder(model, data, params)
    seconds = time.perf_counter() - started

    stamp = datetime.now(UTC)
    name = f"embedder-{dataset.name}-{stamp:%Y%m%dT%H%M%S}"
    target = out_dir or settings.data_dir / "models" / name
    model.cpu()
    card = EmbedderCard.from_run(
        index=index,
        dataset=dataset.name,
        base_model=embedding_model_id(settings),
        data=data,
        history=history,
        before=base,
        steps=steps,
        seconds=seconds,
        trained_at=stamp,
        git_commit=git_commit(),
        parameters=params,
        hybrid_ndcg_at_10=hybrid,
        base_ndcg_at_10=base,
    )

    def save(staging: Path) -> None:
        model.save(str(staging))
        write_embedder_card(staging, card)

    publish_model_dir(target, save)
    log_event(
        logger,
        logging.INFO,
        "embedder.trained",
        index=index,
        model_dir=str(target),
        base_ndcg_at_10=round(base, 4),
        best_ndcg_at_10=round(card.best_ndcg_at_10, 4),
    )
    return TrainedEmbedder(model_dir=target, card=card)


def write_embedder_card(model_dir: Path, card: EmbedderCard) -> None:
    (model_dir / "card.json").write_text(card.model_dump_json(indent=2), encoding="utf-8")
    p = card.parameters
    history = "\n".join(f"| {h.epoch} | {h.ndcg_at_10:.4f} |" for h in card.history)
    verdict = (
        "better than the base model on validation: rebuild the index with it"
        if card.improved
        else "no better than the base model on validation: keep the base model"
    )
    text = f"""# Citewell embedder adapted to `{card.dataset}`

Fine-tuned from `{card.base_model}` with contrastive loss over in-batch negatives and
{p.hard_negatives} mined hard negative(s) per example (sentence-transformers
MultipleNegativesRankingLoss), fp32. Trained {card.trained_at:%Y-%m-%d %H:%M} UTC on {p.device}
in {card.train_seconds:.0f} s ({card.steps} steps); git {card.git_commit}.

To use it: `CITEWELL_EMBEDDING_MODEL={"<this folder>"}`, then rebuild the index (a new model is a
new vector space; queries and chunks must be embedded by the same model).

## Data ({card.dataset}, train split only; passages as index `{card.index}` embeds them)
(query, passage) pairs per source:
{json.dumps(card.data, indent=2)}
Judged train queries: {card.train_queries}; held-out validation queries: {card.validation_queries}
(carved out of the train split with seed {p.seed}; test/dev splits are never used).

## Parameters
{json.dumps(p.model_dump(mode="json"), indent=2)}

## Validation (nDCG@10 over the first {p.validation_candidates} hybrid candidates)
Hybrid order: {card.hybrid_ndcg_at_10:.4f}; rescored by the base model: {card.base_ndcg_at_10:.4f};
by the best checkpoint: {card.best_ndcg_at_10:.4f}. Verdict: {verdict}.

| epoch | nDCG@10 |
|---|---|
{history}
"""
    (model_dir / "MODEL_CARD.md").write_text(text, encoding="utf-8")
