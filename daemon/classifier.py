"""The one onnxruntime session wrapper: load a contract-following model, score batches of photos.

Preprocessing is numpy only (the loader already produced model-sized uint8 RGB arrays), so the
daemon needs no torch. Provider choice: the wanted providers intersected with what this
onnxruntime build offers, CUDA first when allowed, CPU always last; one log line states the choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
import structlog

from nordlys.daemon.contract import ModelContractError, ModelMeta, from_metadata

log = structlog.get_logger(__name__)

AUTO_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


class ModelError(Exception):
    """The model file cannot be used: missing, not ONNX, or not following the contract."""

    exit_code = 3


def choose_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """Wanted ∩ available, in the wanted order, CPU always appended as the last resort.

    "auto" stands for CUDA-then-CPU. A wanted provider this build lacks is skipped (the log
    line says what was chosen), because a home server without a GPU should still sort photos.
    """
    expanded: list[str] = []
    for name in wanted:
        for item in (AUTO_PROVIDERS if name == "auto" else (name,)):
            if item not in expanded:
                expanded.append(item)
    chosen = [p for p in expanded if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class Classifier:
    """Scores model-sized RGB uint8 arrays; `score` returns the aurora probability per photo."""

    def __init__(self, model_path: Path, *, providers: Sequence[str] = ("auto",), threads: int = 0,
                 batch_size: int = 8) -> None:
        self.path = model_path
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: on a 2-4-core box the spinning threads
        # take the cores the decode pool needs (and each other's, when the box is busy), which
        # halved throughput in bench/ (docs/PERFORMANCE.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # onnxruntime's own warnings are noise for users
        chosen = choose_providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"{model_path}: cannot load ONNX model: {exc}") from None
        try:
            self.meta: ModelMeta = from_metadata(self.session.get_modelmeta().custom_metadata_map,
                                                 source=str(model_path))
        except ModelContractError as exc:
            raise ModelError(str(exc)) from None
        self._check_graph()
        self.provider = self.session.get_providers()[0]
        self.input_name = self.session.get_inputs()[0].name
        mean = np.asarray(self.meta.mean, dtype=np.float32)
        std = np.asarray(self.meta.std, dtype=np.float32)
        # (x / 255 - mean) / std  ==  x * scale + offset, one fused pass per batch
        self._scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
        self._offset = (-mean / std).reshape(1, 3, 1, 1)
        log.info("classifier ready", model=str(model_path), version=self.meta.version,
                 provider=self.provider, threads=threads or "auto", input_size=self.meta.input_size)

    @property
    def version(self) -> str:
        return self.meta.version

    def _check_graph(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        size = self.meta.input_size
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3 or any(isinstance(d, int) and d != size for d in shape[2:]):
            raise ModelError(f"{self.path}: input shape {shape}: expected (N, 3, {size}, {size}) "
                             f"to match metadata nordlys.input_size")
        out = outputs[0].shape
        if len(out) != 2 or (isinstance(out[1], int) and out[1] != len(self.meta.labels)):
            raise ModelError(f"{self.path}: output shape {out}: expected (N, {len(self.meta.labels)}) "
                             f"logits for labels {list(self.meta.labels)}")

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 (S, S, 3) arrays -> normalised float32 NCHW batch.

        The multiply reads the uint8 pixels through the NCHW view and writes floats straight
        into the batch: no float copy of the transposed stack first. A quarter of the CPU of
        transpose-astype-scale-shift (0.12 against 0.51 ms a photo at 224 px, bench/).
        """
        pixels = np.stack(images).transpose(0, 3, 1, 2)
        batch = np.empty(pixels.shape, dtype=np.float32)
        np.multiply(pixels, self._scale, out=batch, casting="unsafe")
        batch += self._offset
        return batch

    def score(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Aurora probability for each image, in [0, 1], in batches of batch_size."""
        scores = [self._score_batch(images[i:i + self.batch_size])
                  for i in range(0, len(images), self.batch_size)]
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)

    def _score_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        logits = self.session.run(None, {self.input_name: self.preprocess(images)})[0]
        return positive_probability(logits, self.meta.positive_index).astype(np.float32)


def positive_probability(logits: np.ndarray, positive: int) -> np.ndarray:
    """Softmax of (N, classes) logits, the positive class's column, in float64 (the contract's
    output is logits; this is the one place that turns them into scores)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p[:, positive] / p.sum(axis=1)
