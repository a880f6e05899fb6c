"""Offline ONNX export of local sentence-transformers models, cached once per source model.

We export with ``torch.onnx.export`` and run with onnxruntime directly instead of
sentence-transformers' ``backend="onnx"``: that backend needs ``optimum``, whose current release
pins transformers < 4.58 and would downgrade the transformers 5 the rest of the stack uses.

Layout: ``<export_dir>/<model name>-<source hash>-<task>/`` holds ``model.onnx`` (fp32,
attention and GELU fused by onnxruntime's transformer optimizer), ``model_int8.onnx`` (dynamic
int8), ``model_raw.onnx`` (the plain torch export, for OpenVINO, which cannot run onnxruntime's
com.microsoft fused ops), ``model_w8.xml``/``.bin`` (the raw export as OpenVINO IR with int8
weights, which OpenVINO runs with dynamically quantised int8 activations) and ``export.json``,
a marker written last so a half-finished export is never reused. Nothing here reads data from
the repository: the int8 variants need no calibration text, so an installed package exports too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from citewell.core.errors import ModelError
from citewell.core.logging import log_event

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Task = Literal["embedding", "cross-encoder"]
# fp32/int8: fused graphs for onnxruntime; raw/int8-weights: plain ops for OpenVINO.
Variant = Literal["fp32", "int8", "raw", "int8-weights"]

_MARKER = "export.json"
_EXPORT_VERSION = 3  # bump when the export recipe changes, so old exports are redone
_FILES: dict[Variant, str] = {
    "fp32": "model.onnx",
    "int8": "model_int8.onnx",
    "raw": "model_raw.onnx",
    "int8-weights": "model_w8.xml",
}


def hash_model_dir(path: Path) -> str:
    """sha256 over every file's relative name and content (the source model's identity)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def input_names(model_dir: Path) -> tuple[str, ...]:
    """The tokenizer inputs the exported graph takes (BERT: ids, mask and token types)."""
    config = json.loads((model_dir / "config.json").read_text())
    names = ["input_ids", "attention_mask"]
    if config.get("type_vocab_size", 0) > 0:
        names.append("token_type_ids")
    return tuple(names)


_STALE_EXPORT_S = 3600.0


def exported_model(source: Path, export_dir: Path, task: Task, variant: Variant) -> Path:
    """Path of the ONNX file for ``source``, exporting (offline) on first use."""
    source = source.resolve()
    if not (source / "config.json").is_file():
        raise ModelError(f"ONNX export needs a local model folder with config.json: {source}")
    source_hash = hash_model_dir(source)
    target = export_dir / f"{source.name}-{source_hash[:16]}-{task}"
    if _is_current(target, source_hash):
        return target / _FILES[variant]
    # Processes starting together on a fresh cache (API replicas, an ingest, test workers) wait
    # for one export instead of each spending a CPU-minute on the same files.
    with _export_lock(export_dir, target.name):
        if not _is_current(target, source_hash):
            _export(source, source_hash, target, task)
    return target / _FILES[variant]


def _is_current(target: Path, source_hash: str) -> bool:
    marker = target / _MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable ONNX export marker {marker}") from exc
    return bool(meta.get("source_sha256") == source_hash and meta.get("version") == _EXPORT_VERSION)


# How long a loader waits for another process's export before exporting on its own: an
# export takes under a minute on 2 cores, so a holder past this is stuck, not slow.
_EXPORT_WAIT_S = 600.0


@contextlib.contextmanager
def _export_lock(export_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock per export (released by the kernel if its holder dies). A holder that
    hangs must not hang every process starting after it: past ``_EXPORT_WAIT_S`` the export
    runs without the lock, as it did before there was one (renames keep it safe)."""
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(export_dir / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ModelError(f"cannot write model exports to {export_dir}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + _EXPORT_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log_event(
                        logger,
                        logging.WARNING,
                        "onnx_export_lock_timeout",
                        export=name,
                        waited_s=_EXPORT_WAIT_S,
                    )
                    break
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def sweep_stale_exports(folder: Path, older_than_s: float = _STALE_EXPORT_S) -> None:
    """Remove the work folders of exports killed before they finished (87 MB each): an export
    takes minutes, so one untouched for ``older_than_s`` is no live process's."""
    cutoff = time.time() - older_than_s
    for leftover in folder.glob(".export-*"):
        try:
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def _export(source: Path, source_hash: str, target: Path, task: Task) -> None:
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_exports(target.parent)
    # Export into a private temp dir, then rename: concurrent exporters never see half a model.
    workdir = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        names = input_names(source)
        raw = workdir / _FILES["raw"]
        num_heads, hidden = _torch_export(source, task, names, raw)
        _optimize(raw, workdir / _FILES["fp32"], num_heads, hidden)
        _quantize(workdir / _FILES["fp32"], workdir / _FILES["int8"])
        _compress_weights(raw, workdir / _FILES["int8-weights"])
        meta = {
            "version": _EXPORT_VERSION,
            "source": str(source),
            "source_sha256": source_hash,
            "task": task,
            "inputs": list(names),
        }
        (workdir / _MARKER).write_text(json.dumps(meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        try:
            workdir.rename(target)
        except OSError:
            # Another process finished the same export first; its result is equivalent.
            if not (target / _MARKER).is_file():
                raise
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"ONNX export of {source.name} failed: {exc}") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log_event(
        logger,
        logging.INFO,
        "onnx_export_done",
        model=source.name,
        task=task,
        seconds=round(time.perf_counter() - started, 2),
    )


def _torch_export(source: Path, task: Task, names: tuple[str, ...], out: Path) -> tuple[int, int]:
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    # Eager attention traces to plain MatMul/Softmax, which onnxruntime can fuse into one
    # Attention op; the SDPA path does not fuse.
    kwargs = {"attn_implementation": "eager"}
    module: torch.nn.Module
    if task == "embedding":
        st = SentenceTransformer(str(source), device="cpu", model_kwargs=kwargs).eval()
        tokenizer = st.tokenizer
        module = _wrap(st, names, task)
        output = "sentence_embedding"
    else:
        ce = CrossEncoder(str(source), device="cpu", model_kwargs=kwargs)
        tokenizer = ce.tokenizer
        module = _wrap(ce.model.eval(), names, task)
        output = "logits"
    config = json.loads((source / "config.json").read_text())
    sample = tokenizer(
        ["a short sample", "a slightly longer sample sentence"], padding=True, return_tensors="pt"
    )
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch"}
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer's notes (Python conditions traced as constants, opset-17 indexing) were
        # printed on every first run; the exported graph is checked against torch instead
        # (tests/retrieval/test_embedding.py::test_vectors_match_torch).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            module,
            args,
            str(out),
            input_names=list(names),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript; the TorchScript one does not
        )
    return int(config.get("num_attention_heads", 0)), int(config.get("hidden_size", 0))


def _optimize(raw: Path, out: Path, num_heads: int, hidden: int) -> None:
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(raw), model_type="bert", num_heads=num_heads, hidden_size=hidden
    )
    log_event(
        logger,
        logging.INFO,
        "onnx_fused_ops",
        **{k: v for k, v in optimized.get_fused_operator_statistics().items() if v},
    )
    optimized.save_model_to_file(str(out))


@contextlib.contextmanager
def _dropped_root_records(prefix: str) -> Iterator[None]:
    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _quantize(fp32: Path, out: Path) -> None:
    # onnxruntime logs a suggestion to pre-process through the root logger on every call.
    with _dropped_root_records("Please consider to run pre-processing"):
        _quantize_matmuls(fp32, out)


def _quantize_matmuls(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # MatMul only, per channel: quantising the embedding Gather and fused Attention too was
    # faster by ~10 % but dropped cosine to the fp32 vectors from ~0.995 to ~0.94 (measured).
    quantize_dynamic(
        str(fp32),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _compress_weights(raw: Path, out: Path) -> None:
    """Symmetric per-channel int8 weights (NNCF) saved as OpenVINO IR. Activations stay float
    in the file; OpenVINO's CPU plugin quantises them per token group at run time, so no
    calibration set and no fixed activation ranges (static per-tensor int8 of the same model
    lost 0.0135 SciFact nDCG@10 to BERT's outlier dimensions; see benchmarks/README.md)."""
    import nncf
    import openvino
    from nncf.common.logging import nncf_logger

    model = openvino.Core().read_model(str(raw))
    # NNCF prints a statistics table and a progress bar to stdout at INFO: keep stdout for
    # what the CLI prints (a first `citewell search --json` exports on the way).
    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    finally:
        nncf.set_log_level(level)
    openvino.save_model(compressed, str(out), compress_to_fp16=False)


def _wrap(inner: object, names: tuple[str, ...], task: Task) -> torch.nn.Module:
    """A module taking positional tensors: finished sentence vectors from the whole
    SentenceTransformer (so pooling is the model's own), or the first logit per pair."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, tensors, strict=True))
            if task == "embedding":
                return self.inner(features)["sentence_embedding"]  # type: ignore[operator]
            return self.inner(**features).logits[:, 0]  # type: ignore[operator]

    return Wrapper()


class BatchedModel:
    """The model's fast tokenizer plus length-sorted batching; subclasses run one padded batch.

    Built only after export. Subclasses cap intra-op threads at ``threads`` and keep idle
    threads from spinning, so an API and an ingestion worker sharing a machine do not burn each
    other's cores.
    """

    def __init__(self, model_dir: Path, max_length: int, input_names: Sequence[str]) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._names = tuple(input_names)
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        self.max_length = max_length

    def _infer(self, feed: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def _infer_batches(
        self, feeds: list[dict[str, npt.NDArray[np.int64]]]
    ) -> list[npt.NDArray[np.float32]]:
        """Outputs of each padded batch, in order; one at a time unless a subclass overlaps
        them."""
        return [np.asarray(self._infer(feed), dtype=np.float32) for feed in feeds]

    def run(
        self,
        first: Sequence[str],
        second: Sequence[str] | None,
        batch_size: int,
    ) -> npt.NDArray[np.float32]:
        """Outputs for each text (or text pair), in input order. Batches are built from
        length-sorted inputs so each is padded only to its own longest member."""
        encoded = self._tokenizer(
            list(first),
            list(second) if second is not None else None,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids="token_type_ids" in self._names,
        )
        ids: list[list[int]] = encoded["input_ids"]
        types: list[list[int]] | None = encoded.get("token_type_ids")
        order = np.argsort([-len(row) for row in ids], kind="stable")
        feeds: list[dict[str, npt.NDArray[np.int64]]] = []
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[r]) for r in rows)
            feed = {
                "input_ids": np.full((len(rows), width), self._pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
            }
            if types is not None:
                feed["token_type_ids"] = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                n = len(ids[r])
                feed["input_ids"][i, :n] = ids[r]
                feed["attention_mask"][i, :n] = 1
                if types is not None:
                    feed["token_type_ids"][i, :n] = types[r]
            feeds.append({k: v for k, v in feed.items() if k in self._names})
        outputs = self._infer_batches(feeds)
        merged = np.concatenate(outputs, axis=0)
        restored = np.empty_like(merged)
        restored[order] = merged
        return restored


class OnnxModel(BatchedModel):
    """An onnxruntime session over an exported model."""

    def __init__(self, onnx_path: Path, model_dir: Path, max_length: int, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"cannot load ONNX model {onnx_path}: {exc}") from exc
        super().__init__(model_dir, max_length, [i.name for i in self._session.get_inputs()])

    def _infer(self, feed: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        result = self._session.run(None, dict(feed))
        return np.asarray(result[0], dtype=np.float32)
