"""Offline ONNX export of local sentence-transformers models, cached once per source model.

We export with ``torch.onnx.export`` and run with onnxruntime directly instead of
sentence-transformers' ``backend="onnx"``: that backend needs ``optimum``, whose current release
pins transformers < 4.58 and would downgrade the transformers 5 the rest of the stack uses.

Layout: ``<export_dir>/<model name>-<source hash>-<task>/`` holds ``model.onnx`` (fp32,
attention and GELU fused by onnxruntime's transformer optimizer), ``model_int8.onnx`` (dynamic
int8), ``model_raw.onnx`` (the plain torch export, for OpenVINO, which cannot run onnxruntime's
com.microsoft fused ops), ``model_qdq.onnx`` (static int8 QDQ of the raw export, for OpenVINO)
and ``export.json``, a marker written last so a half-finished export is never reused.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from core.errors import ModelError
from core.logging import log_event

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Task = Literal["embedding", "cross-encoder"]
# fp32/int8: fused graphs for onnxruntime; raw/static-int8: plain ONNX ops for OpenVINO.
Variant = Literal["fp32", "int8", "raw", "static-int8"]

_MARKER = "export.json"
_EXPORT_VERSION = 2  # bump when the export recipe changes, so old exports are redone
_FILES: dict[Variant, str] = {
    "fp32": "model.onnx",
    "int8": "model_int8.onnx",
    "raw": "model_raw.onnx",
    "static-int8": "model_qdq.onnx",
}
# Calibration text for static int8: the sample knowledge base shipped with the repository
# (generic business prose), never an evaluation corpus.
CALIBRATION_DIR = Path(__file__).resolve().parents[1] / "examples" / "kb"


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


def exported_model(source: Path, export_dir: Path, task: Task, variant: Variant) -> Path:
    """Path of the ONNX file for ``source``, exporting (offline) on first use."""
    source = source.resolve()
    if not (source / "config.json").is_file():
        raise ModelError(f"ONNX export needs a local model folder with config.json: {source}")
    source_hash = hash_model_dir(source)
    target = export_dir / f"{source.name}-{source_hash[:16]}-{task}"
    marker = target / _MARKER
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"unreadable ONNX export marker {marker}") from exc
        if meta.get("source_sha256") == source_hash and meta.get("version") == _EXPORT_VERSION:
            return target / _FILES[variant]
    _export(source, source_hash, target, task)
    return target / _FILES[variant]


def _export(source: Path, source_hash: str, target: Path, task: Task) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Export into a private temp dir, then rename: concurrent exporters never see half a model.
    workdir = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        names = input_names(source)
        raw = workdir / _FILES["raw"]
        num_heads, hidden = _torch_export(source, task, names, raw)
        _optimize(raw, workdir / _FILES["fp32"], num_heads, hidden)
        _quantize(workdir / _FILES["fp32"], workdir / _FILES["int8"])
        _quantize_static(raw, workdir / _FILES["static-int8"], source, task, names)
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
    with torch.inference_mode():
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


def _quantize(fp32: Path, out: Path) -> None:
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


def calibration_texts(folder: Path = CALIBRATION_DIR) -> list[str]:
    """Paragraphs of the sample knowledge base's text files (Markdown, plain text, HTML, mail),
    plus runs of 2, 4 and 8 consecutive paragraphs so long inputs are calibrated too."""
    paragraphs: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.suffix not in {".md", ".txt", ".html", ".eml"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if path.suffix == ".html":
            text = html.unescape(re.sub(r"<[^>]+>", " ", text))
        for block in re.split(r"\n\s*\n", text):
            paragraph = " ".join(block.split())
            if len(paragraph) > 20:
                paragraphs.append(paragraph)
    if len(paragraphs) < 20:
        raise ModelError(f"static int8 calibration needs the sample knowledge base at {folder}")
    texts = list(paragraphs)
    for width in (2, 4, 8):
        step = max(1, width // 2)
        texts += [" ".join(paragraphs[i : i + width]) for i in range(0, len(paragraphs), step)]
    return texts


def _calibration_feeds(
    source: Path, task: Task, names: tuple[str, ...]
) -> Iterator[dict[str, npt.NDArray[np.int64]]]:
    """One unpadded input at a time (padding would skew the activation ranges). Cross-encoder
    pairs are a paragraph's opening words as the query against a run of paragraphs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    texts = calibration_texts()
    for i, text in enumerate(texts):
        if task == "embedding":
            encoded = tokenizer([text], truncation=True, max_length=256, return_tensors="np")
        else:
            query = " ".join(texts[(i * 7) % len(texts)].split()[:12])
            encoded = tokenizer(
                [query], [text], truncation=True, max_length=256, return_tensors="np"
            )
        yield {name: np.asarray(encoded[name], dtype=np.int64) for name in names}


def _quantize_static(
    raw: Path, out: Path, source: Path, task: Task, names: tuple[str, ...]
) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference fails on the torch export's dynamic axes; ONNX's own suffices.
    prepared = raw.with_name("prepared.onnx")
    quant_pre_process(str(raw), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    # Only the Q/K/V projections and the FFN's first MatMul. Static per-tensor ranges on the
    # attention-output and FFN-output inputs (BERT's outlier dimensions) dropped cosine to the
    # fp32 vectors to ~0.94; without them it stays ~0.995 (measured on SciFact).
    nodes = [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and any(name in weights for name in node.input)
        and ("/attention/self/" in node.name or "/intermediate/" in node.name)
    ]
    if not nodes:
        raise ModelError(f"no BERT projection MatMuls found to quantise in {raw.name}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = _calibration_feeds(source, task, names)

        def get_next(self) -> dict[str, npt.NDArray[np.int64]] | None:
            return next(self._feeds, None)

    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    prepared.unlink()


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
        outputs: list[npt.NDArray[np.float32]] = []
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
            feed = {k: v for k, v in feed.items() if k in self._names}
            outputs.append(np.asarray(self._infer(feed), dtype=np.float32))
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
