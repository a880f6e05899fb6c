"""OpenVINO runtime for the offline exports (``retrieval.onnx_export``).

OpenVINO reads ONNX directly, so no optimum/optimum-intel (which would downgrade transformers).
It cannot run onnxruntime's com.microsoft fused ops, so it gets the plain torch export
(``raw``) or that export with int8 weights (``int8-weights``, OpenVINO IR), and fuses attention
itself.

On CPUs with bf16 support (avx512_bf16 or AMX) OpenVINO computes in bf16: on the 2-core EPYC
it was ~1.8x fp32 OpenVINO and ~2.2x onnxruntime fp32 for MiniLM, with cosine to the torch
fp32 vectors >= 0.9999 (measured on SciFact). Elsewhere it computes in fp32. Its matrix
multiplications then run at roughly the CPU's bf16 peak (profiled: FullyConnected 74 % of a
256-token batch at ~400 GFLOP/s on 2 cores), so only int8 arithmetic goes meaningfully faster.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from citewell.core.errors import ModelError
from citewell.core.logging import log_event
from citewell.retrieval.onnx_export import BatchedModel

logger = logging.getLogger(__name__)

Precision = Literal["auto", "f32", "bf16"]

# Activation group for int8 weights: 128 ran MiniLM at ~78 docs/s against ~62 at OpenVINO's
# default 32 (which rescales too often to pay off) and ~56 with it off, at cosine to torch
# mean 0.9987 / min 0.998 on SciFact (measured on the 2-core EPYC).
INT8_ACTIVATION_GROUP = 128


_core: Any = None
_core_lock = threading.Lock()


def shared_core() -> Any:
    """The process's one OpenVINO Core, which every model here reads and compiles with (its
    methods are thread-safe; OpenVINO recommends one Core per application).

    One Core per model crashed processes: each Core's CPU plugin points the calling thread's
    alternate signal stack at a stack of its own and, when the plugin is released, puts back the
    one it found there. Cores released in any order but the reverse of their creation (the
    embedder's, then a reranker's) left the main thread's alternate stack on unmapped memory, and
    the next signal handled there (Ctrl-C, SIGTERM; Python's handlers run on that stack) killed
    the process with SIGSEGV: a test worker died at the Ctrl-C test after the embedding tests.
    This Core lives as long as the process, so its plugin never puts back a stale stack."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


def cpu_supports_bf16() -> bool:
    capabilities = shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


class OpenVinoModel(BatchedModel):
    """An OpenVINO CPU model compiled twice, each on first need: for latency (one stream of
    ``threads`` threads, one reused request) when a call is a single batch, as queries and
    reranking are; and for throughput (the streams and request count OpenVINO recommends for
    ``threads`` threads) when a call has several batches, as document embedding has. On 2
    cores the throughput plan is 2 streams of 1 thread: two batches in flight ran ~12 % more
    documents/s than one batch on 2 threads (measured, MiniLM, 256 tokens)."""

    def __init__(
        self,
        model_path: Path,
        model_dir: Path,
        max_length: int,
        threads: int,
        precision: Precision = "auto",
        activation_group: int = 0,
    ) -> None:
        try:
            import openvino  # noqa: F401  (the Core below imports it; this names what is missing)
        except ImportError as exc:
            raise ModelError("the openvino backends need the 'openvino' package") from exc

        self._core = shared_core()
        try:
            self._model = self._core.read_model(str(model_path))
        except Exception as exc:
            raise ModelError(f"cannot read {model_path} with OpenVINO: {exc}") from exc
        if precision == "auto":
            precision = "bf16" if cpu_supports_bf16() else "f32"
        self.precision: str = precision
        self._path = model_path
        self._base_config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": precision,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": activation_group,
        }
        self._latency: Any = None  # (compiled model, infer request), compiled on first use
        self._throughput: Any = None  # (compiled model, AsyncInferQueue), compiled on first use
        self._request_lock = threading.Lock()
        names = [port.get_any_name() for port in self._model.inputs]
        super().__init__(model_dir, max_length, names)
        self._threads = threads
        self._activation_group = activation_group

    def _compile(self, hint: str) -> Any:
        try:
            compiled = self._core.compile_model(
                self._model, "CPU", {**self._base_config, "PERFORMANCE_HINT": hint}
            )
        except Exception as exc:
            raise ModelError(f"cannot compile {self._path} with OpenVINO: {exc}") from exc
        log_event(
            logger,
            logging.INFO,
            "openvino_compiled",
            model=self._path.parent.name,
            file=self._path.name,
            hint=hint,
            precision=self.precision,
            threads=self._threads,
            activation_group=self._activation_group,
            streams=int(compiled.get_property("NUM_STREAMS")),
        )
        return compiled

    def _infer(self, feed: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        # One reused request behind a lock: requests are not thread-safe, and a fresh one per
        # call made a single-query embedding ~2.5x slower (17 vs 7 ms, measured).
        with self._request_lock:
            if self._latency is None:
                compiled = self._compile("LATENCY")
                self._latency = (compiled, compiled.create_infer_request())
            compiled, request = self._latency
            result = request.infer(feed)
            return np.array(result[compiled.outputs[0]], dtype=np.float32)

    def _infer_batches(
        self, feeds: list[dict[str, npt.NDArray[np.int64]]]
    ) -> list[npt.NDArray[np.float32]]:
        if len(feeds) < 2:
            return [self._infer(feed) for feed in feeds]
        import openvino

        with self._request_lock:
            if self._throughput is None:
                compiled = self._compile("THROUGHPUT")
                requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
                self._throughput = (compiled, openvino.AsyncInferQueue(compiled, requests))
            compiled, queue = self._throughput
            outputs: list[npt.NDArray[np.float32] | None] = [None] * len(feeds)

            def done(request: Any, index: int) -> None:
                # The request's buffer is reused by its next job: copy out.
                outputs[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

            queue.set_callback(done)
            try:
                for index, feed in enumerate(feeds):
                    queue.start_async(feed, index)
                queue.wait_all()
            except Exception as exc:
                raise ModelError(f"OpenVINO inference failed for {self._path.name}: {exc}") from exc
        if any(out is None for out in outputs):
            raise ModelError(f"OpenVINO returned no output for a batch of {self._path.name}")
        return [out for out in outputs if out is not None]
