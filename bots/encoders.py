"""Faster runtimes for the local embedding model's forward pass.

sentence-transformers runs all-MiniLM-L6-v2 op by op from Python. A pass takes the
GIL back after each of its ~170 operations; in a server whose other threads run
Python (the ORM, the event loop) every one of those waits its turn: a query that
took 5.5 ms alone took 16 ms inside Daphne, and 870 ms beside a busy thread
(docs/performance.md). The encoders here run the whole pass (transformer, mean
pooling, normalisation) in native code without the GIL:

* ``onnx`` (the default): ONNX Runtime, on a graph exported once from the model and
  kept under ``VAR_DIR/models``. Half the CPU of TorchScript per query on one thread
  (6.4 ms against 12.0 on the development machine) and still GIL-free.
* ``torchscript``: the pass traced to a TorchScript graph (no export file, no extra
  dependency at run time).
* ``eager``: sentence-transformers itself.

Questions (not documents) are embedded by an int8 rounding of the onnx pass when
``EMBEDDING_QUERY_PRECISION=int8`` (the default): its matrix products run on 8-bit
weights (ONNX Runtime's dynamic quantization, per output channel), 1.2 ms a question
against 4.3 on one thread, and searching fp32 documents with int8 questions ranks
them as well as fp32 questions do (``bench/embedding_precision.py``). Documents stay
fp32: int8 activations are scaled per pass, so a text's int8 vector depends on the
batch it was padded into (cosine 0.98 to itself alone in a batch of 32), and a
question is therefore always embedded in a pass of its own.

``EMBEDDING_RUNTIME`` picks the first one tried; each is checked against
sentence-transformers when it loads, and one that fails to build or disagrees is
logged and the next one down is used (questions fall back to the fp32 encoder
when the int8 pass is not usable), so a broken runtime costs speed, never
correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

RUNTIMES = ("onnx", "torchscript", "eager")
PRECISIONS = ("int8", "fp32")
# Part of the export file's name: a change to how the graph is exported (or quantized)
# must not load a file made the old way.
EXPORT_VERSION = 1
ONNX_OPSET = 17
# Agreement with sentence-transformers every full-precision encoder must reach on the probes.
MIN_COSINE = 0.9999
# The int8 pass is a rounding of the model, not the model: a cosine of 0.994 to the
# fp32 pass on average and 0.986 at worst over 527 real sentences, with the same
# retrieval quality (bench/embedding_precision.py prints both). Far below that,
# the CPU's integer kernels are not to be trusted (the u8*s8 products of CPUs without
# VNNI can saturate) and the full-precision pass is used instead.
MIN_COSINE_INT8 = 0.98

_PROBES = [
    "refund",
    "How long does delivery to Chennai take, and can I track my parcel?",
    " ".join(["A long paragraph about opening hours, prices and the warranty terms."] * 40),  # truncated
]


class Encoder(Protocol):
    runtime: str
    precision: str

    def encode(self, texts: Sequence[str], *, batch_size: int) -> list[list[float]]: ...


def _pooled_module(model):
    """The model's transformer with mean pooling and normalisation, as one module."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=1)

    return Pooled(model[0].auto_model).eval()


def _padded_example(tokenizer):
    # Traced or exported on a padded pair: the graph keeps the attention-mask path,
    # which is also exact for unpadded input (tracing records one branch of
    # data-dependent code).
    return tokenizer(["a padded example sentence", "short"], padding=True, return_tensors="pt")


class _BatchingEncoder(ABC):
    """Sorts texts by length and runs the pass batch by batch (a batch is padded to its longest)."""

    runtime = ""
    precision = "fp32"

    def __init__(self, model):
        self.tokenizer = model.tokenizer
        self.max_length = model.max_seq_length

    def encode(self, texts: Sequence[str], *, batch_size: int) -> list[list[float]]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = self._pass([texts[i] for i in chosen])
            for i, vector in zip(chosen, batch, strict=True):
                vectors[i] = vector
        return vectors

    @abstractmethod
    def _pass(self, texts: list[str]) -> list[list[float]]:
        """The normalised vectors of one batch, in order."""


class ScriptedEncoder(_BatchingEncoder):
    """The pass as a TorchScript graph: runs in C++ without the GIL from start to end
    (3.2 ms alone, 21 ms beside a busy Python thread, where the eager model took 870)."""

    runtime = "torchscript"

    def __init__(self, model):
        import torch

        super().__init__(model)
        example = _padded_example(self.tokenizer)
        with warnings.catch_warnings():
            # torch.jit is deprecated for torch.export, whose programs run op by op from
            # Python again; the tracer's notes on constant branches are what the
            # comment in _padded_example is about.
            warnings.simplefilter("ignore")
            with torch.no_grad():
                self.graph = torch.jit.trace(
                    _pooled_module(model), (example["input_ids"], example["attention_mask"]), check_trace=False
                )

    def _pass(self, texts: list[str]) -> list[list[float]]:
        import torch

        features = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            return self.graph(features["input_ids"], features["attention_mask"]).tolist()


def _export_key(model_dir: Path) -> str:
    """Names an export by what it was made from: the weights, the config, torch and us."""
    import torch

    digest = hashlib.sha256(f"{EXPORT_VERSION}:{ONNX_OPSET}:{torch.__version__}".encode())
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json"):
        path = model_dir / name
        if path.exists():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _export_onnx(model) -> bytes:
    import torch

    example = _padded_example(model.tokenizer)
    buffer = io.BytesIO()
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same tracer notes as ScriptedEncoder's
        with torch.no_grad():
            # The TorchScript-based exporter: the dynamo one needs onnxscript and takes
            # far longer for the same graph.
            torch.onnx.export(
                _pooled_module(model),
                (example["input_ids"], example["attention_mask"]),
                buffer,
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
    return buffer.getvalue()


def _quantize(data: bytes) -> bytes:
    """The graph with its matrix products on 8-bit weights, scaled per output channel
    (per-tensor scales lost too much: a worst cosine of 0.915 against 0.99), activations
    quantized as each pass runs. Only MatMul: the embedding table stays exact."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _QuantizerNotes()
    with tempfile.TemporaryDirectory(prefix="chatbase-quantize-") as directory:
        output = Path(directory) / "int8.onnx"
        root.addFilter(quiet)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its advice to pre-process the graph first
                quantize_dynamic(
                    onnx.load_from_string(data),
                    output,
                    op_types_to_quantize=["MatMul"],
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                )
        finally:
            root.removeFilter(quiet)
        return output.read_bytes()


class _QuantizerNotes(logging.Filter):
    """Drops the quantizer's notes (one per tensor it leaves to run time, logged on the
    root logger), and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Its warnings are advice too (pre-process the graph first); what matters, the
        # result's agreement with the model, is checked by _build.
        return not (record.levelno < logging.ERROR and "onnxruntime" in record.pathname)


def _keep(cache: Path, data: bytes) -> None:
    temporary = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: another process loading at the same moment reads
        # the old file or the whole new one, never half of one.
        fd, temporary = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from workers running as another user
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, cache)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)  # not a partial 90 MB file left on a full disk
        logger.warning("Could not keep the exported embedding model %s (%s); exported again per process.",
                       cache, exc)  # fmt: skip


def onnx_model_bytes(model, model_dir: Path, *, fresh: bool = False, precision: str = "fp32") -> bytes:
    """The exported graph: read from VAR_DIR/models if exported before, else exported
    (about 2 s; the int8 one is quantized from the fp32 one in about as long again)
    and kept there for the next process. A directory that cannot be written costs the
    export per process, nothing else."""
    suffix = "-int8" if precision == "int8" else ""
    cache = Path(settings.VAR_DIR) / "models" / f"embedding-pass-{_export_key(model_dir)}{suffix}.onnx"
    if not fresh:
        try:
            return cache.read_bytes()
        except OSError:
            pass
    # A damaged int8 file is quantized again from the kept fp32 export, which is checked
    # on its own when it is loaded for documents.
    data = _quantize(onnx_model_bytes(model, model_dir)) if precision == "int8" else _export_onnx(model)
    _keep(cache, data)
    return data


class OnnxEncoder(_BatchingEncoder):
    """The pass on ONNX Runtime, whose run releases the GIL."""

    runtime = "onnx"

    def __init__(self, model, model_dir: Path, *, fresh: bool = False, precision: str = "fp32"):
        import onnxruntime

        super().__init__(model)
        self.precision = precision
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, settings.EMBEDDING_THREADS)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op workers sleep instead of spinning: with EMBEDDING_THREADS > 1 a
        # spinning worker burns the core the event loop needs between passes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            onnx_model_bytes(model, model_dir, fresh=fresh, precision=precision),
            options,
            providers=["CPUExecutionProvider"],
        )

    def _pass(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        features = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        inputs = {name: features[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
        return self.session.run(None, inputs)[0].tolist()


def _agreement(model, encoder: Encoder) -> float:
    """The lowest cosine between the encoder and sentence-transformers on the probes,
    padded together and each alone."""
    expected = model.encode(_PROBES, normalize_embeddings=True, show_progress_bar=False)
    got = encoder.encode(_PROBES, batch_size=len(_PROBES))
    alone = encoder.encode(_PROBES, batch_size=1)
    return min(float(e @ g) for e, g in zip([*expected, *expected], [*got, *alone], strict=True))


def _build(runtime: str, precision: str, model, model_dir: Path) -> Encoder | None:
    minimum = MIN_COSINE_INT8 if precision == "int8" else MIN_COSINE
    if runtime == "torchscript":
        encoder: Encoder = ScriptedEncoder(model)
        similarity = _agreement(model, encoder)
    else:
        try:
            encoder = OnnxEncoder(model, model_dir, precision=precision)
            similarity = _agreement(model, encoder)
        except Exception:
            similarity = -1.0  # an unreadable kept file
        if similarity < minimum:
            # The kept export is damaged or came from another build of the same files:
            # export afresh, once.
            encoder = OnnxEncoder(model, model_dir, fresh=True, precision=precision)
            similarity = _agreement(model, encoder)
    if similarity < minimum:
        logger.warning("The %s %s embedding pass disagrees with the model (cosine %.6f); not used.",
                       runtime, precision, similarity)  # fmt: skip
        return None
    return encoder


def _candidates(runtime: str, precision: str) -> list[tuple[str, str]]:
    """(runtime, precision) to try in order; an empty list means none (the eager model,
    for fp32). Only ONNX Runtime runs the int8 graph; without it the caller falls back
    to the fp32 encoder (one per process, shared with documents)."""
    if precision == "int8":
        return [("onnx", "int8")] if runtime == "onnx" else []
    return [(name, "fp32") for name in RUNTIMES[RUNTIMES.index(runtime) : -1]]


_encoders: dict[tuple[int, str], tuple[object, tuple[str, str], Encoder | None]] = {}
_encoders_lock = threading.Lock()


def fast_encoder(model, model_dir: Path, *, precision: str = "fp32") -> Encoder | None:
    """The fastest faithful fp32 encoder of `model` from EMBEDDING_RUNTIME down, or with
    ``precision="int8"`` the int8 onnx pass; built once per model and precision. None
    means sentence-transformers' own encode (fp32), or no usable int8 pass."""
    runtime = (settings.EMBEDDING_RUNTIME or "onnx").strip().lower()
    if runtime not in RUNTIMES:
        raise ImproperlyConfigured(f"EMBEDDING_RUNTIME must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    wanted = (runtime, precision)
    entry = _encoders.get((id(model), precision))
    if entry is not None and entry[0] is model and entry[1] == wanted:
        return entry[2]
    with _encoders_lock:
        entry = _encoders.get((id(model), precision))
        if entry is not None and entry[0] is model and entry[1] == wanted:
            return entry[2]
        encoder: Encoder | None = None
        for candidate, candidate_precision in _candidates(runtime, precision):
            try:
                encoder = _build(candidate, candidate_precision, model, model_dir)
            except Exception:
                logger.warning("Building the %s %s embedding pass failed; trying the next one.", candidate,
                               candidate_precision, exc_info=True)  # fmt: skip
                encoder = None
            if encoder is not None:
                break
        if encoder is None and runtime != "eager" and precision == "fp32":
            logger.warning("No faster embedding runtime is usable; using the eager model.")
        _encoders[(id(model), precision)] = (model, wanted, encoder)
        return encoder
