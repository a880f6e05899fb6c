"""Sentence scoring with the chunk's header: the header informs the score, spans stay in the
chunk text, and a changed header is not served from the cache."""

from __future__ import annotations

from citewell.agent.scoring import SentenceScorer
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


def test_a_chunk_id_seen_with_other_text_is_scored_on_its_own_text(embedder):
    # The cache must not trust the id alone: a store written by another tool, or two
    # knowledge bases that number their chunks alike, would otherwise get another text's
    # sentences quoted (and cited at that text's character offsets).
    first = make_chunk("a", "The game was played in Tampa, Florida.")
    second = first.model_copy(update={"text": "Norway won 39 medals in 2018."})
    scorer = SentenceScorer(embedder)
    assert scorer.score("Where was the game played?", [first])[0].span.text == first.text
    later = scorer.score("Which country won the most medals?", [second])
    assert [s.span.text for s in later] == [second.text]
    together = scorer.score("Which country won the most medals?", [first, second])
    assert {s.span.text for s in together} == {first.text, second.text}
