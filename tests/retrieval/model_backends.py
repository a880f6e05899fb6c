"""The model runtime backends the embedding and reranking tests run on, and one place that
builds and warms each exported backend's model once per test module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

EXPORTED_BACKENDS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
ALL_BACKENDS = ("torch", *EXPORTED_BACKENDS)


class _Model(Protocol):
    def warm_up(self) -> None: ...


ModelT = TypeVar("ModelT", bound=_Model)


class WarmModels(Generic[ModelT]):
    """``models(backend)``: the model ``build(backend)`` makes, warmed up on first use and kept.
    An exported backend's ONNX export comes first: the int8 and OpenVINO variants are made
    from it."""

    def __init__(self, build: Callable[[str], ModelT]) -> None:
        self._build = build
        self._built: dict[str, ModelT] = {}

    def __call__(self, backend: str) -> ModelT:
        if backend not in self._built:
            if backend not in ("torch", "onnx"):
                self("onnx")
            model = self._build(backend)
            model.warm_up()
            self._built[backend] = model
        return self._built[backend]
