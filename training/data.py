"""Training data for the trained models (the cross-encoder reranker, the adapted embedder), built
from an index and its judged collection.

Three kinds of training groups (one query, one positive passage, hard negatives):

- judged: the collection's *train* qrels, minus a validation holdout, with negatives mined from
  our own hybrid retriever (BM25 + dense) over the index, judged positives skipped;
- pseudo: queries generated from the corpus itself (a title asks for its own abstract, a first
  sentence for the rest of its document, an inner sentence for the document without it) with
  BM25 negatives, so the model sees far more pairs than the few hundred judged queries give;
- external: other judged sets that are never evaluation splits here (SQuAD 2.0 dev slice, RGB).

Nothing is drawn from a split that is evaluated on: callers pass the train split only, and the
validation holdout is carved out of it deterministically (``split_holdout``); training
validates on one half of it and the reranker gate decides on the other (``holdout_part``).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.core.models import Chunk, SearchMode, SearchRequest, SearchResult
from citewell.core.settings import Settings
from citewell.evaluation.beir import (
    corpus_path,
    dataset_name,
    holdout_part,
    load_beir,
    load_corpus,
    split_holdout,
)
from citewell.evaluation.models import BeirDataset, BeirDocument, BeirQuery
from citewell.evaluation.retrieval_eval import EvalSearchIndex, eval_principal
from citewell.retrieval.lexical import contextual_text
from citewell.training.examples import (
    Candidate,
    GroupSource,
    TrainingData,
    TrainingGroup,
    ValidationQuery,
    count_sources,
)

logger = logging.getLogger(__name__)

# Candidates kept per validation query: the reranked head plus enough tail for nDCG@10.
VALIDATION_DEPTH = 40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


def sampled_group(
    source: GroupSource,
    query: str,
    positive: str,
    pool: Sequence[str],
    negatives: int,
    rng: random.Random,
) -> TrainingGroup:
    """A group whose negatives are ``negatives`` passages of ``pool`` drawn with ``rng`` (all of
    them when the pool is no larger)."""
    return TrainingGroup(
        query=query, positive=positive, negatives=_pick(pool, negatives, rng), source=source
    )


def _search(
    service: EvalSearchIndex, settings: Settings, query: str, mode: SearchMode, k: int
) -> SearchResult:
    request = SearchRequest(query=query[: settings.max_query_chars], k=k, mode=mode, rerank=False)
    return service.search(eval_principal(settings), request)


def passage_text(chunk: Chunk, indexed: bool) -> str:
    """What a model scores for a chunk: the verbatim text (the reranker's input at serving) or,
    with ``indexed``, the header plus text that the embedder encodes into the index."""
    return contextual_text(chunk.context, chunk.text) if indexed else chunk.text


def _first_sentence(text: str) -> tuple[str, str] | None:
    parts = _SENTENCE_END.split(text.strip(), maxsplit=1)
    if len(parts) != 2:
        return None
    first, rest = parts
    # Very short or very long "sentences" are headings or unsplit paragraphs, not queries.
    if not 5 <= len(first.split()) <= 40 or len(rest.split()) < 20:
        return None
    return first, rest


def _pick(items: Sequence[str], n: int, rng: random.Random) -> tuple[str, ...]:
    if len(items) <= n:
        return tuple(items)
    return tuple(rng.sample(list(items), n))


def judged_groups(
    service: EvalSearchIndex,
    settings: Settings,
    dataset: BeirDataset,
    query_ids: Sequence[str],
    negatives: int,
    rng: random.Random,
    indexed_text: bool = False,
) -> list[TrainingGroup]:
    """Judged train queries: positives as the chunks serving returns for them (the text the
    model scores, see ``passage_text``), negatives sampled from the top hybrid candidates that
    are not judged."""
    by_id = {doc.doc_id: doc for doc in dataset.corpus}
    texts = {query.query_id: query.text for query in dataset.queries}
    groups: list[TrainingGroup] = []
    for query_id in query_ids:
        judged = {doc for doc, grade in dataset.qrels.get(query_id, {}).items() if grade > 0}
        if not judged or query_id not in texts:
            continue
        result = _search(service, settings, texts[query_id], SearchMode.HYBRID, 30)
        best: dict[str, str] = {}
        pool: list[str] = []
        for scored in result.results:
            chunk = scored.chunk
            text = passage_text(chunk, indexed_text)
            if chunk.doc_id in judged:
                best.setdefault(chunk.doc_id, text)
            elif text not in pool:
                pool.append(text)
        for doc_id in sorted(judged):
            positive = best.get(doc_id)
            if positive is None and doc_id in by_id:
                doc = by_id[doc_id]
                positive = f"{doc.title}\n\n{doc.text}" if doc.title else doc.text
            if positive and pool:
                groups.append(
                    sampled_group("judged", texts[query_id], positive, pool, negatives, rng)
                )
    return groups


def _sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def _pseudo_queries(
    doc: BeirDocument, rng: random.Random
) -> list[tuple[GroupSource, str, str, bool]]:
    """What a document can be asked for by: its title (for its body), its first sentence (for
    the rest) and one inner sentence (for the document without it, so the task is never string
    matching). Each: source, query, positive, whether negatives carry their titles."""
    found: list[tuple[GroupSource, str, str, bool]] = []
    if len(doc.title.split()) >= 4:
        found.append(("pseudo-title", doc.title, doc.text, False))
    split = _first_sentence(doc.text)
    if split is not None:
        first, rest = split
        body = f"{doc.title}\n\n{rest}" if doc.title else rest
        found.append(("pseudo-sentence", first, body, True))
    sentences = _sentences(doc.text)
    inner = [i for i in range(1, len(sentences)) if 5 <= len(sentences[i].split()) <= 40]
    if inner:
        pick = rng.choice(inner)
        rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
        if len(rest.split()) >= 20:
            body = f"{doc.title}\n\n{rest}" if doc.title else rest
            found.append(("pseudo-inner", sentences[pick], body, True))
    return found


def pseudo_groups(
    service: EvalSearchIndex,
    settings: Settings,
    corpus: Sequence[BeirDocument],
    limit: int,
    negatives: int,
    rng: random.Random,
    per_document: int = 1,
) -> list[TrainingGroup]:
    """Pseudo-queries from the corpus (``_pseudo_queries``; ``per_document`` of them drawn per
    document, at most ``limit`` groups). Negatives are the BM25 results for the same
    pseudo-query from other documents."""
    by_id = {doc.doc_id: doc for doc in corpus}
    docs = [doc for doc in corpus if doc.text.strip()]
    rng.shuffle(docs)
    groups: list[TrainingGroup] = []
    for doc in docs:
        if len(groups) >= limit:
            break
        candidates = _pseudo_queries(doc, rng)
        if not candidates:
            continue
        for source, query, positive, with_title in rng.sample(
            candidates, min(per_document, len(candidates))
        ):
            result = _search(service, settings, query, SearchMode.BM25, 3 * negatives + 5)
            pool: list[str] = []
            for doc_id in dict.fromkeys(s.chunk.doc_id for s in result.results):
                other = by_id.get(doc_id)
                if doc_id == doc.doc_id or other is None or not other.text.strip():
                    continue
                pool.append(f"{other.title}\n\n{other.text}" if with_title else other.text)
            if pool and len(groups) < limit:
                groups.append(
                    sampled_group(source, query, positive, pool[: 2 * negatives], negatives, rng)
                )
    return groups


def squad_groups(path: Path, negatives: int, rng: random.Random) -> list[TrainingGroup]:
    """SQuAD 2.0 answerable questions → their paragraph; negatives are the paragraphs of the same
    article that share the most words with the question (hard, same topic)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from exc
    groups: list[TrainingGroup] = []
    for article in data.get("data", []):
        contexts = [p["context"] for p in article.get("paragraphs", [])]
        for index, paragraph in enumerate(article.get("paragraphs", [])):
            for qa in paragraph.get("qas", []):
                if qa.get("is_impossible"):
                    continue
                words = set(qa["question"].lower().split())
                others = sorted(
                    (c for j, c in enumerate(contexts) if j != index),
                    key=lambda c: -len(words & set(c.lower().split())),
                )
                groups.append(
                    sampled_group(
                        "squad2",
                        qa["question"],
                        paragraph["context"],
                        others[: 2 * negatives],
                        negatives,
                        rng,
                    )
                )
    return groups


def rgb_groups(path: Path, negatives: int, rng: random.Random) -> list[TrainingGroup]:
    """RGB: each query with its first supporting passage; negatives from its ``negative`` list
    (never ``positive_wrong``, which states a counterfactual answer)."""
    groups: list[TrainingGroup] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from exc
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        positives = [p for p in record.get("positive", []) if isinstance(p, str) and p.strip()]
        negs = [p for p in record.get("negative", []) if isinstance(p, str) and p.strip()]
        if positives and negs:
            groups.append(sampled_group("rgb", record["query"], positives[0], negs, negatives, rng))
    return groups


def validation_queries(
    service: EvalSearchIndex,
    settings: Settings,
    queries: Sequence[BeirQuery],
    qrels: Mapping[str, Mapping[str, int]],
    indexed_text: bool = False,
) -> list[ValidationQuery]:
    """Hybrid candidates for held-out queries, fetched once so each validation round only runs
    the model being trained."""
    held: list[ValidationQuery] = []
    for query in queries:
        judged = qrels.get(query.query_id, {})
        if not any(grade > 0 for grade in judged.values()):
            continue
        result = _search(service, settings, query.text, SearchMode.HYBRID, VALIDATION_DEPTH)
        held.append(
            ValidationQuery(
                query_id=query.query_id,
                text=query.text,
                qrels=dict(judged),
                candidates=tuple(
                    Candidate(doc_id=s.chunk.doc_id, text=passage_text(s.chunk, indexed_text))
                    for s in result.results
                ),
            )
        )
    return held


def build_training_data(
    settings: Settings,
    service: EvalSearchIndex,
    dataset: BeirDataset,
    *,
    validation_fraction: float = 0.2,
    negatives: int = 3,
    max_pseudo: int = 3000,
    external_dir: Path | None = None,
    seed: int = 13,
    indexed_text: bool = False,
    pseudo_per_document: int = 1,
) -> TrainingData:
    """Groups and validation queries for one index. ``dataset`` must be a *train* split, or a
    corpus without judgements (``split`` "corpus": pseudo-queries only, no validation).
    ``indexed_text``: passages as the embedder sees them (header + text), see ``passage_text``."""
    if dataset.split in {"test", "dev", "validation"}:
        raise EvaluationError(f"refusing to train on the {dataset.split!r} split")
    rng = random.Random(seed)
    train_ids, holdout_ids = split_holdout(dataset.qrels, validation_fraction, seed)
    groups = judged_groups(service, settings, dataset, train_ids, negatives, rng, indexed_text)
    if max_pseudo > 0:
        groups += pseudo_groups(
            service, settings, dataset.corpus, max_pseudo, negatives, rng, pseudo_per_document
        )
    if external_dir is not None:
        squad = external_dir / "qa" / "squad2_dev_small.json"
        rgb = external_dir / "qa" / "rgb" / "en_fact.json"
        if squad.is_file():
            groups += squad_groups(squad, negatives, rng)
        if rgb.is_file():
            groups += rgb_groups(rgb, negatives, rng)
    # Checkpoints are picked on one half of the holdout; the reranker gate decides on the other.
    holdout = set(holdout_part(holdout_ids, "selection", seed))
    validation = validation_queries(
        service,
        settings,
        [q for q in dataset.queries if q.query_id in holdout],
        dataset.qrels,
        indexed_text,
    )
    counts = count_sources(groups)
    rng.shuffle(groups)
    log_event(
        logger,
        logging.INFO,
        "training_data.built",
        groups=len(groups),
        validation=len(validation),
        **counts,
    )
    return TrainingData(
        groups=tuple(groups),
        validation=tuple(validation),
        counts=counts,
        train_queries=len(train_ids),
        validation_queries=len(validation),
    )


def training_dataset(dataset_dir: Path) -> BeirDataset:
    """The folder's train split, or its corpus alone (split "corpus": pseudo-queries only)
    where it judges no train queries, as Cranfield does."""
    if (dataset_dir / "qrels" / "train.tsv").is_file():
        return load_beir(dataset_dir, "train")
    corpus, sha256 = load_corpus(corpus_path(dataset_dir))
    return BeirDataset(
        name=dataset_name(dataset_dir),
        split="corpus",
        corpus=corpus,
        queries=(),
        qrels={},
        corpus_sha256=sha256,
    )


class TrainingDataOptions(TypedDict, total=False):
    """The keyword options of :func:`build_training_data`."""

    validation_fraction: float
    negatives: int
    max_pseudo: int
    external_dir: Path | None
    seed: int
    indexed_text: bool
    pseudo_per_document: int


def build_index_training_data(
    settings: Settings, index: str, dataset: BeirDataset, **options: Unpack[TrainingDataOptions]
) -> TrainingData:
    """``build_training_data`` over the serving index ``index``, which must hold the corpus of
    ``dataset`` (opened for this call and closed again)."""
    from citewell.retrieval.service import ServingIndex

    service = ServingIndex(settings, index)
    try:
        if not service.ready():
            raise EvaluationError(f"index {index!r} is not available; ingest {dataset.name} first")
        return build_training_data(settings, service, dataset, **options)
    finally:
        service.close()
