"""What the agent makes of odd LLM replies, each served by the local chat server: a sentence the
agent cannot verify must never reach the answer as a cited statement."""

from __future__ import annotations

import pytest

from citewell.agent.agent import Agent
from citewell.agent.backends import LLMBackend
from citewell.agent.llm import OpenAICompatibleLLM
from citewell.agent.models import AgentConfig, Answer
from citewell.agent.scoring import SentenceScorer
from tests.agent.fakes import FakeSearch, HashingEmbedder
from tests.agent.openai_server import chat_server
from tests.agent.test_agent import CHUNKS, PUBLIC

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
