"""Train a cross-encoder reranker for one index and install it as ``rerankers/current``.

``train_reranker`` does it all on one machine: mine training data from the index
(``training.data``), train (``training.cross_encoder``), install and gate. For a GPU machine
without the full install the same work splits in three: ``export_training_data`` writes the
data file here, ``python -m citewell.training.cross_encoder`` trains there, and
``install_reranker`` copies the model back into an index and gates it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from citewell.core.errors import EvaluationError, ModelError
from citewell.core.logging import log_event
from citewell.core.models import Frozen
from citewell.core.settings import Settings
from citewell.evaluation.beir import load_beir
from citewell.retrieval.reranker_decision import GateDecision
from citewell.training.cross_encoder import (
    Device,
    LossName,
    RerankerCard,
    TrainingParameters,
    base_model_path,
    fit,
    git_commit,
    publish_model_dir,
    resolve_device,
    save_trained,
    write_card,
)
from citewell.training.examples import TrainingData, merge_training_data, save_training_data

logger = logging.getLogger(__name__)

CURRENT = "current"


class TrainedReranker(Frozen):
    model_dir: Path
    card: RerankerCard


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
    save_trained(student, card, target)
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

    queries, qrels = holdout_judgements(dataset_dir, fraction, seed, part="gate")
    return list(queries), {k: dict(v) for k, v in qrels.items()}


def dataset_index(settings: Settings, dataset_dir: Path) -> str:
    """The evaluation index ``citewell eval retrieval`` built for this folder's corpus."""
    from citewell.evaluation.retrieval_eval import default_index_name, index_fingerprint
    from citewell.training.data import training_dataset

    dataset = training_dataset(dataset_dir)
    return default_index_name(dataset, index_fingerprint(settings, dataset))


def export_training_data(
    settings: Settings,
    dataset_dirs: Sequence[Path],
    out: Path,
    *,
    negatives: int = 7,
    max_pseudo: int = 20000,
    pseudo_per_document: int = 3,
    validation_fraction: float = 0.2,
    seed: int = 13,
) -> TrainingData:
    """Mine one training set from several indexes (each folder's evaluation index must exist)
    and write it as a portable file for ``python -m citewell.training.cross_encoder``.

    Per folder: its train judgements minus the validation holdout (none where it has no train
    split), pseudo-queries from its corpus, hard negatives from our own retrievers; validation:
    the holdout's hybrid candidates."""
    from citewell.training.data import build_index_training_data, training_dataset

    parts = []
    for dataset_dir in dataset_dirs:
        dataset = training_dataset(dataset_dir)
        parts.append(
            build_index_training_data(
                settings,
                dataset_index(settings, dataset_dir),
                dataset,
                validation_fraction=validation_fraction,
                negatives=negatives,
                max_pseudo=max_pseudo,
                seed=seed,
                pseudo_per_document=pseudo_per_document,
            )
        )
    data = merge_training_data(parts)
    save_training_data(data, out)
    log_event(logger, logging.INFO, "training_data.exported", path=str(out), **data.counts)
    return data


def install_reranker(
    settings: Settings,
    index: str,
    model_dir: Path,
    holdout: tuple[Sequence[Any], dict[str, dict[str, int]]] | None,
    *,
    judgements: str,
    min_gain: float = 0.005,
) -> tuple[Path, GateDecision | None]:
    """Copy a model folder trained elsewhere into ``index``'s rerankers folder, point
    ``rerankers/current`` at it and, given validation judgements, run the gate on exactly what
    serving will run. Returns the installed folder and the gate's decision."""
    from citewell.evaluation.reranker_gate import decide_gate
    from citewell.retrieval.factory import model_export_dir, model_threads
    from citewell.retrieval.index import IndexLayout
    from citewell.retrieval.rerank import CrossEncoderReranker

    if not (model_dir / "config.json").is_file():
        raise EvaluationError(f"{model_dir} is not a model folder (no config.json)")
    layout = IndexLayout(settings, index)
    target = layout.rerankers_dir / model_dir.name
    copied = target.resolve() != model_dir.resolve()
    if copied:
        if target.exists() or target.name == CURRENT:
            # Replacing a folder a serving process may be reading is not atomic; a new name is.
            raise EvaluationError(
                f"{index} already has a reranker folder named {target.name!r}; rename the model "
                "folder, or re-run the gate on the installed one (citewell reranker gate)"
            )
        publish_model_dir(target, lambda staging: shutil.copytree(model_dir, staging))

    def load(folder: Path) -> CrossEncoderReranker:
        return CrossEncoderReranker(
            str(folder),
            backend=settings.reranker_backend,
            max_length=settings.reranker_max_length,
            threads=model_threads(settings),
            export_dir=model_export_dir(settings),
        )

    try:
        # Serving must never be pointed at a model it cannot load: score one pair first.
        load(target).score("probe", ["probe passage"])
    except ModelError:
        if copied:
            shutil.rmtree(target, ignore_errors=True)
        raise
    current = install(layout.rerankers_dir, target)
    if holdout is None:
        return target, None
    reranker = load(current)
    decision = decide_gate(
        settings, index, reranker, holdout[0], holdout[1], min_gain=min_gain, judgements=judgements
    )
    card_path = target / "card.json"
    if card_path.is_file():
        card = RerankerCard.model_validate_json(card_path.read_text(encoding="utf-8"))
        write_card(target, card.model_copy(update={"gate": decision}))
    return target, decision
