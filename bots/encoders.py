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

``EMBEDDING_RUNTIME`` picks the first one tried; each is checked against
sentence-transformers when it loads, and one that fails to build or disagrees is
logged and the next one down is used, so a broken runtime costs speed, never
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
# Part of the export file's name: a change to how the graph is exported must not load
# a file exported the old way.
EXPORT_VERSION = 1
ONNX_OPSET = 17
# Agreement with sentence-transformers every encoder must reach on the probes.
MIN_COSINE = 0.9999

_PROBES = [
    "refund",
    "How long does delivery to Chennai take, and can I track my parcel?",
    " ".join(["A long paragraph about opening hours, prices and the warranty terms."] * 40),  # truncated
]


class Encoder(Protocol):
    runtime: str

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


def onnx_model_bytes(model, model_dir: Path, *, fresh: bool = False) -> bytes:
    """The exported graph: read from VAR_DIR/models if exported before, else exported
    (about 2 s) and kept there for the next process. A directory that cannot be
    written costs the export per process, nothing else."""
    cache = Path(settings.VAR_DIR) / "models" / f"embedding-pass-{_export_key(model_dir)}.onnx"
    if not fresh:
        try:
            return cache.read_bytes()
        except OSError:
            pass
    data = _export_onnx(model)
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
        logger.warning("Could not keep the exported embedding model in %s (%s); exported again per process.",
                       cache.parent, exc)  # fmt: skip
    return data


class OnnxEncoder(_BatchingEncoder):
    """The pass on ONNX Runtime, whose run releases the GIL."""

    runtime = "onnx"

    def __init__(self, model, model_dir: Path, *, fresh: bool = False):
        import onnxruntime

        super().__init__(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, settings.EMBEDDING_THREADS)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op workers sleep instead of spinning: with EMBEDDING_THREADS > 1 a
        # spinning worker burns the core the event loop needs between passes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            onnx_model_bytes(model, model_dir, fresh=fresh), options, providers=["CPUExecutionProvider"]
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


def _build(runtime: str, model, model_dir: Path) -> Encoder | None:
    if runtime == "torchscript":
        encoder: Encoder = ScriptedEncoder(model)
        similarity = _agreement(model, encoder)
    else:
        try:
            encoder = OnnxEncoder(model, model_dir)
            similarity = _agreement(model, encoder)
        except Exception:
            similarity = -1.0  # an unreadable kept file
        if similarity < MIN_COSINE:
            # The kept export is damaged or came from another build of the same files:
            # export afresh, once.
            encoder = OnnxEncoder(model, model_dir, fresh=True)
            similarity = _agreement(model, encoder)
    if similarity < MIN_COSINE:
        logger.warning("The %s embedding pass disagrees with the model (cosine %.6f); not used.", runtime, similarity)
        return None
    return encoder


_encoders: dict[int, tuple[object, str, Encoder | None]] = {}
_encoders_lock = threading.Lock()


def fast_encoder(model, model_dir: Path) -> Encoder | None:
    """The fastest faithful encoder of `model` from EMBEDDING_RUNTIME down, built once per
    model; None means sentence-transformers' own encode (``eager``)."""
    runtime = (settings.EMBEDDING_RUNTIME or "onnx").strip().lower()
    if runtime not in RUNTIMES:
        raise ImproperlyConfigured(f"EMBEDDING_RUNTIME must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    entry = _encoders.get(id(model))
    if entry is not None and entry[0] is model and entry[1] == runtime:
        return entry[2]
    with _encoders_lock:
        entry = _encoders.get(id(model))
        if entry is not None and entry[0] is model and entry[1] == runtime:
            return entry[2]
        encoder: Encoder | None = None
        for candidate in RUNTIMES[RUNTIMES.index(runtime) : -1]:
            try:
                encoder = _build(candidate, model, model_dir)
            except Exception:
                logger.warning("Building the %s embedding pass failed; trying the next runtime.", candidate,
                               exc_info=True)  # fmt: skip
                encoder = None
            if encoder is not None:
                break
        if encoder is None and runtime != "eager":
            logger.warning("No faster embedding runtime is usable; using the eager model.")
        _encoders[id(model)] = (model, runtime, encoder)
        return encoder
