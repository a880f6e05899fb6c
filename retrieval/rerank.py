"""Cross-encoder reranker (PyTorch reference, ONNX Runtime or OpenVINO) and reranker selection."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from citewell.core.errors import ModelError
from citewell.retrieval.embedding import Backend, LazyModel, download_model_dir, local_model_dir
from citewell.retrieval.protocols import Reranker

logger = logging.getLogger(__name__)


class CrossEncoderReranker(LazyModel):
    """Scores (query, passage) pairs with a sentence-transformers CrossEncoder; raw logits
    (higher is more relevant), loaded on first use."""

    # Batches of 64: a typical 20-50 candidate list is one batch, padded only to its longest
    # pair, and runs on the latency-compiled model (no second compile, no stream split).
    _what = "reranker"
    _loaded_event = "reranker_loaded"
    _logger = logger

    def __init__(
        self,
        model: str,
        backend: Backend = "torch",
        max_length: int = 256,
        batch_size: int = 64,
        threads: int | None = None,
        export_dir: Path | None = None,
    ) -> None:
        super().__init__(backend, max_length, "max_length", batch_size, threads, export_dir)
        self._model = model
        self._score: Any = None  # callable (query, passages) -> scores, set by warm_up

    @property
    def name(self) -> str:
        return self._model

    @property
    def max_length(self) -> int:
        return self._capped_length(local_model_dir(self._model))

    def _is_loaded(self) -> bool:
        return self._score is not None

    def _loaded_fields(self) -> dict[str, object]:
        return {"model": self._model, "max_length": self.max_length}

    def _load_torch(self) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        self._set_torch_threads()
        local = local_model_dir(self._model)
        try:
            ce = CrossEncoder(str(local or self._model), device="cpu", max_length=self.max_length)
        except Exception as exc:
            raise ModelError(f"cannot load reranker {self._model}: {exc}") from exc
        if ce.num_labels != 1:
            raise ModelError(f"reranker {self._model} has {ce.num_labels} labels; need 1")
        identity = torch.nn.Identity()
        batch_size = self._batch_size

        def score(query: str, passages: list[str]) -> npt.NDArray[np.float32]:
            # CrossEncoder.predict sorts pairs by length and restores order itself.
            scores = ce.predict(
                [(query, p) for p in passages],
                batch_size=batch_size,
                activation_fn=identity,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            return np.asarray(scores, dtype=np.float32).reshape(-1)

        self._score = score

    def _load_onnx(self) -> None:
        model_dir = local_model_dir(self._model) or download_model_dir(self._model)
        onnx = self._onnx_model(model_dir, model_dir, "cross-encoder", self.max_length)
        batch_size = self._batch_size

        def score(query: str, passages: list[str]) -> npt.NDArray[np.float32]:
            return onnx.run([query] * len(passages), passages, batch_size).reshape(-1)

        self._score = score

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        self.warm_up()
        result: npt.NDArray[np.float32] = self._score(query, list(passages))
        return result


def _has_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")
    )


def resolve_reranker(
    configured: str | None,
    trained_dir: Path | None,
    backend: Backend = "torch",
    *,
    max_length: int = 256,
    batch_size: int = 64,
    threads: int | None = None,
    export_dir: Path | None = None,
) -> tuple[Reranker | None, str]:
    """The reranker to use and why: the configured model, else the index's locally trained
    model in ``trained_dir``, else none (with the reason to show callers)."""

    def build(model: str) -> CrossEncoderReranker:
        return CrossEncoderReranker(
            model,
            backend=backend,
            max_length=max_length,
            batch_size=batch_size,
            threads=threads,
            export_dir=export_dir,
        )

    if configured:
        return build(configured), f"configured reranker {configured}"
    if trained_dir is not None and _has_model(trained_dir):
        return build(str(trained_dir)), f"reranker trained for this index ({trained_dir.name})"
    return None, "no reranker configured or trained for this index"
