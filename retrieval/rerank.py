"""Cross-encoder reranker (PyTorch reference, ONNX Runtime fp32/int8) and reranker selection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import ConfigurationError, ModelError
from core.logging import log_event
from retrieval.embedding import (
    Backend,
    check_backend,
    download_model_dir,
    local_model_dir,
    model_length_cap,
    resolve_threads,
)
from retrieval.onnx_export import OnnxModel, Quantization, exported_model
from retrieval.protocols import Reranker

logger = logging.getLogger(__name__)


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a sentence-transformers CrossEncoder; raw logits
    (higher is more relevant), loaded on first use."""

    def __init__(
        self,
        model: str,
        backend: Backend = "torch",
        max_length: int = 256,
        batch_size: int = 32,
        threads: int | None = None,
        export_dir: Path | None = None,
    ) -> None:
        check_backend(backend, export_dir)
        if batch_size < 1:
            raise ConfigurationError("reranker batch_size must be at least 1")
        if max_length < 8:
            raise ConfigurationError("reranker max_length must be at least 8")
        self._model = model
        self._backend: Backend = backend
        self._requested_length = max_length
        self._batch_size = batch_size
        self._threads = resolve_threads(threads)
        self._export_dir = export_dir
        self._lock = threading.Lock()
        self._score: Any = None  # callable (query, passages) -> scores, set by warm_up

    @property
    def name(self) -> str:
        return self._model

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def max_length(self) -> int:
        local = local_model_dir(self._model)
        cap = model_length_cap(local) if local is not None else None
        return min(self._requested_length, cap) if cap else self._requested_length

    def warm_up(self) -> None:
        with self._lock:
            if self._score is not None:
                return
            if self._backend == "torch":
                self._load_torch()
            else:
                self._load_onnx()
            log_event(
                logger,
                logging.INFO,
                "reranker_loaded",
                model=self._model,
                backend=self._backend,
                max_length=self.max_length,
                threads=self._threads,
            )

    def _load_torch(self) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(self._threads)
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
        if self._export_dir is None:
            raise ConfigurationError(f"backend {self._backend!r} needs an export_dir")
        model_dir = local_model_dir(self._model) or download_model_dir(self._model)
        quantization: Quantization = "int8" if self._backend == "onnx-int8" else "fp32"
        path = exported_model(model_dir, self._export_dir, "cross-encoder", quantization)
        onnx = OnnxModel(path, model_dir, self.max_length, self._threads)
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
    batch_size: int = 32,
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
