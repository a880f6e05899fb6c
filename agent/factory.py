"""Build an :class:`Agent` from Settings (called by entry points: api, cli, mcp, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from citewell.agent.agent import Agent
from citewell.agent.answerability import CALIBRATION_FILE, AnswerabilityChecker, CalibrationSource
from citewell.agent.backends import AnswerBackend, ExtractiveAnswerer, LLMBackend
from citewell.agent.llm import OpenAICompatibleLLM
from citewell.agent.models import AgentConfig
from citewell.agent.scoring import SentenceScorer
from citewell.core.errors import ConfigurationError
from citewell.core.settings import Settings
from citewell.retrieval.protocols import Embedder, SearchService


def backend_from_settings(settings: Settings) -> AnswerBackend:
    """The OpenAI-compatible backend when ``llm_base_url`` is set, else the offline default."""
    if settings.llm_base_url is None:
        return ExtractiveAnswerer()
    if not settings.llm_model:
        raise ConfigurationError("CITEWELL_LLM_MODEL is required with CITEWELL_LLM_BASE_URL")
    return LLMBackend(
        OpenAICompatibleLLM(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
        )
    )


def build_agent(
    settings: Settings,
    search: SearchService,
    embedder: Embedder,
    config: AgentConfig | None = None,
) -> Agent:
    """``embedder`` should be the serving index's query embedder (already loaded there). The
    answerability check uses the calibration of ``settings.index`` when it has one."""
    return Agent(
        search=search,
        scorer=SentenceScorer(embedder),
        backend=backend_from_settings(settings),
        config=config or AgentConfig.from_settings(settings),
        checker=AnswerabilityChecker(model=CalibrationSource(calibration_path(settings))),
    )


def calibration_path(settings: Settings) -> Path:
    """Where `citewell eval calibrate` writes the answerability calibration of
    ``settings.index``."""
    return settings.index_root / settings.index / CALIBRATION_FILE
