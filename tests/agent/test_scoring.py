"""Sentence scoring with the chunk's header: the header informs the score, spans stay in the
chunk text, and a changed header is not served from the cache."""

from __future__ import annotations

import pytest

from agent.scoring import SentenceScorer
from tests.agent.fakes import make_chunk

QUESTION = "How did Apple's Services net sales change in the third quarter of 2023?"
SENTENCE = "Services net sales increased during the quarter compared to the prior year."


def test_header_raises_the_score_of_the_right_filing_and_spans_stay_in_the_text(embedder):
    plain = make_chunk("filing", SENTENCE)
    apple = plain.model_copy(update={"context": "Apple Inc. Form 10-Q, third quarter 2023"})
    other = plain.model_copy(update={"context": "Intel Corporation Form 10-Q, first quarter 2022"})
    scorer = SentenceScorer(embedder)
    scores = {
        name: scorer.score(QUESTION, [chunk])[0]
        for name, chunk in (("plain", plain), ("apple", apple), ("other", other))
    }
    assert scores["apple"].score > scores["plain"].score
    assert scores["apple"].score > scores["other"].score
    span = scores["apple"].span
    assert apple.text[span.start : span.end] == span.text == SENTENCE


def test_rank_prior_breaks_near_ties_towards_the_better_retrieved_source():
    from agent.scoring import rank_prior
    from tests.agent.fakes import HashingEmbedder

    question = "services revenue rose in the quarter"
    first = make_chunk("first", "Services revenue rose in the quarter by eight percent overall.")
    second = make_chunk("second", "Services revenue rose in the quarter by eight percent.")
    scorer = SentenceScorer(HashingEmbedder())
    plain = scorer.score(question, [first, second])
    assert [s.source_n for s in plain] == [2, 1]  # similarity alone: the second source
    assert plain[0].score - plain[1].score < 0.05
    prior = scorer.score(question, [first, second], rank_weight=0.05)
    assert [s.source_n for s in prior] == [1, 2]
    # The similarity itself is never adjusted: it is the refusal signal.
    assert sorted(s.score for s in prior) == sorted(s.score for s in plain)
    assert [s.rank_prior for s in prior] == [0.0, rank_prior(2, 0.05)] == [0.0, -0.05]
    # A clearly more similar sentence of a lower source still wins.
    unrelated = make_chunk("unrelated", "Weather in the harbour was calm and mild all week.")
    ranked = scorer.score(question, [unrelated, second], rank_weight=0.05)
    assert ranked[0].source_n == 2
    with pytest.raises(ValueError):
        scorer.score(question, [first], rank_weight=-0.1)
