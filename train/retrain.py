"""Retrain the live model's head on the user's corrections, and keep it only if it is better.

Why the head, and why on the ONNX file: the exported model is the only thing a user has (the
bundled model's training run is not shipped), and its last layer is a plain Gemm on pooled
backbone features. So the retrainer
1. finds that Gemm (`find_head`; its weights may be int8 behind a DequantizeLinear),
2. runs the live model once over every photo with the Gemm's input added as an output: the
   backbone features and the live model's own scores in one pass (`extract`),
3. fits a new softmax head on those features in numpy (`fit_head`), starting from the live
   head and pulled towards it by an L2 term, on the original training data when given plus
   the corrections, which weigh more,
4. writes a copy of the ONNX file with the new head as float initializers (`write_model`);
   in an int8 model the output's Quantize/Dequantize pair after the head is dropped, so the
   new logits are not clipped to the old head's range. The threshold is the live model's.

The gate (`gate`): the candidate is kept only if it gets strictly more of the held-out
corrections right than the live model, and its balanced accuracy on the validation photos is
not lower by more than VAL_TOLERANCE (the int8 export gate's 0.5 points). The last stages are
not retrained: that needs torch weights the ONNX file does not carry.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import structlog
from onnx import helper, numpy_helper

from nordlys.daemon.classifier import positive_probability
from nordlys.daemon.contract import OUTPUT_NAME, from_metadata, to_metadata
from nordlys.daemon.loader import ImageLoadError, load_image
from nordlys.train.metrics import confusion, from_confusion

log = structlog.get_logger(__name__)

VAL_TOLERANCE = 0.005  # balanced accuracy the validation split may lose (= the int8 gate's 0.5 points)
CORRECTION_WEIGHT = 5.0  # a correction counts this many times a training photo
L2 = 1e-3  # pull of the new head towards the live one
STEPS = 400  # full-batch gradient steps (features are few and small: seconds on a CPU)


@dataclass(frozen=True)
class Labelled:
    """A photo and what it is: 1 aurora, 0 other."""

    path: Path
    target: int


@dataclass
class Head:
    """The model's final Gemm: logits = features @ weight + bias, weight (F, C)."""

    node: int
    feature: str
    weight: np.ndarray
    bias: np.ndarray
    trans_b: bool


@dataclass
class Features:
    x: np.ndarray  # (N, F)
    scores: np.ndarray  # the live model's aurora probability
    kept: list[Labelled]


@dataclass
class GateResult:
    passed: bool
    reason: str
    metrics: dict = field(default_factory=dict)


class RetrainError(Exception):
    """The model cannot be retrained this way, or there is too little to learn from."""

    exit_code = 2


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    """An initializer, or the float value of DequantizeLinear(initializer) (int8 weights)."""
    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float64)
    for node in model.graph.node:
        if name in node.output and node.op_type == "DequantizeLinear":
            q, scale = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[:2])
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if np.ndim(scale) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            return (q - zero) * scale
    raise RetrainError(f"head input {name!r} is neither a constant nor a dequantised constant; "
                       "expected a model whose last layer is a Gemm with fixed weights")


def find_head(model: onnx.ModelProto) -> Head:
    """The last Gemm in the graph: the classifier layer of every nordlys export."""
    gemms = [i for i, n in enumerate(model.graph.node) if n.op_type == "Gemm"]
    if not gemms:
        raise RetrainError("the model has no Gemm layer: expected a classifier head (a linear layer) to retrain")
    node = model.graph.node[gemms[-1]]
    attrs = {a.name: a for a in node.attribute}
    trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
    if "transA" in attrs and attrs["transA"].i:
        raise RetrainError("the head Gemm has transA=1: expected features as rows")
    weight = _constant(model, node.input[1])
    weight = weight.T if trans_b else weight
    bias = _constant(model, node.input[2]).reshape(-1) if len(node.input) > 2 else np.zeros(weight.shape[1])
    return Head(gemms[-1], node.input[0], weight, bias, trans_b)


def _session(model: onnx.ModelProto, extra_output: str | None = None) -> ort.InferenceSession:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if extra_output is not None:
        model.graph.output.append(helper.make_tensor_value_info(extra_output, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def extract(model_path: Path, photos: Sequence[Labelled], *, chunk: int = 32) -> Features:
    """Backbone features and the live model's scores for each readable photo (one pass)."""
    model = onnx.load(str(model_path))
    meta = from_metadata({p.key: p.value for p in model.metadata_props}, source=str(model_path))
    head = find_head(model)
    session = _session(model, head.feature)
    scale = 1.0 / (255.0 * np.asarray(meta.std, dtype=np.float32))
    offset = -np.asarray(meta.mean, dtype=np.float32) / np.asarray(meta.std, dtype=np.float32)
    xs, scores, kept = [], [], []
    for i in range(0, len(photos), chunk):
        pixels = []
        for photo in photos[i:i + chunk]:
            try:
                pixels.append(load_image(photo.path, size=meta.input_size, resize=meta.resize))
                kept.append(photo)
            except (ImageLoadError, OSError) as exc:
                log.warning("unreadable", path=str(photo.path), reason=str(exc))
        if not pixels:
            continue
        batch = np.stack(pixels).astype(np.float32) * scale + offset
        logits, feats = session.run([OUTPUT_NAME, head.feature], {session.get_inputs()[0].name: batch.transpose(0, 3, 1, 2)})
        xs.append(feats.reshape(len(pixels), -1).astype(np.float64))
        scores.append(positive_probability(logits.astype(np.float64), meta.positive_index))
    width = head.weight.shape[0]
    return Features(np.concatenate(xs) if xs else np.zeros((0, width)),
                    np.concatenate(scores) if scores else np.zeros(0), kept)


def fit_head(x: np.ndarray, y: np.ndarray, weights: np.ndarray, w0: np.ndarray, b0: np.ndarray, *,
             positive: int, l2: float = L2, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Weighted softmax cross-entropy from the live head, with an L2 pull back towards it.

    Full-batch gradient descent with the step from the loss's largest curvature, so it needs
    no tuning across feature scales (3 channel means in tests, 1280 pooled features in MobileNetV2).
    """
    classes = w0.shape[1]
    onehot = np.zeros((len(y), classes))
    onehot[np.arange(len(y)), np.where(y == 1, positive, 1 - positive) if classes == 2 else y] = 1.0
    wts = weights / weights.sum()
    lr = 1.0 / (0.5 * _largest_eigenvalue(np.hstack([x, np.ones((len(x), 1))]), wts) + l2)
    w, b = w0.copy(), b0.copy()
    for _ in range(steps):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * wts[:, None]
        w -= lr * (x.T @ g + l2 * (w - w0))
        b -= lr * g.sum(axis=0)
    return w, b


def _largest_eigenvalue(x: np.ndarray, wts: np.ndarray, iterations: int = 30) -> float:
    """Of x.T @ diag(wts) @ x, by power iteration (bounds the loss's curvature: the step size)."""
    v = np.ones(x.shape[1]) / math.sqrt(x.shape[1])
    value = 0.0
    for _ in range(iterations):
        u = x.T @ (wts * (x @ v))
        value = float(np.linalg.norm(u))
        if value == 0.0:
            return 1.0
        v = u / value
    return value * 1.05  # power iteration approaches from below


def predict(x: np.ndarray, w: np.ndarray, b: np.ndarray, positive: int) -> np.ndarray:
    return positive_probability(x @ w + b, positive)


def write_model(model_path: Path, out: Path, w: np.ndarray, b: np.ndarray, *, version: str,
                metrics: dict) -> Path:
    """A copy of the live model with the new head, a new version and the gate metrics."""
    model = onnx.load(str(model_path))
    head = find_head(model)
    node = model.graph.node[head.node]
    weight = (w.T if head.trans_b else w).astype(np.float32)
    model.graph.initializer.extend([numpy_helper.from_array(weight, "nordlys_retrained_head_weight"),
                                    numpy_helper.from_array(b.astype(np.float32), "nordlys_retrained_head_bias")])
    node.input[1] = "nordlys_retrained_head_weight"
    if len(node.input) > 2:
        node.input[2] = "nordlys_retrained_head_bias"
    else:
        node.input.append("nordlys_retrained_head_bias")
    _drop_output_requantisation(model, head.node)
    meta = from_metadata({p.key: p.value for p in model.metadata_props}, source=str(model_path))
    meta = dataclasses.replace(meta, version=version, metrics={**meta.metrics, "retrain": metrics})
    del model.metadata_props[:]
    helper.set_model_props(model, to_metadata(meta))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def _drop_output_requantisation(model: onnx.ModelProto, head_index: int) -> None:
    """Gemm -> QuantizeLinear -> DequantizeLinear -> logits becomes Gemm -> logits."""
    nodes = model.graph.node
    chain, name = [], nodes[head_index].output[0]
    while name != OUTPUT_NAME:
        users = [i for i, n in enumerate(nodes) if name in n.input]
        if len(users) != 1 or nodes[users[0]].op_type not in ("QuantizeLinear", "DequantizeLinear"):
            return  # something else follows the head: leave the graph as it is
        chain.append(users[0])
        name = nodes[users[0]].output[0]
    nodes[head_index].output[0] = OUTPUT_NAME
    for i in sorted(chain, reverse=True):
        del nodes[i]


def balanced_accuracy(y: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Mean of the per-class recalls present (a class missing from y is left out, not counted as 0)."""
    m = from_confusion(**confusion(y, scores, threshold))
    recalls = [r for r in (m["recall"], None if m["fpr"] is None else 1.0 - m["fpr"]) if r is not None]
    return float(np.mean(recalls)) if recalls else math.nan


def gate(*, held_y: np.ndarray, held_old: np.ndarray, held_new: np.ndarray, val_y: np.ndarray,
         val_old: np.ndarray, val_new: np.ndarray, threshold: float) -> GateResult:
    """Strictly more held-out corrections right, and validation balanced accuracy not lower by
    more than VAL_TOLERANCE."""
    old_right = int(np.sum((held_old >= threshold) == (held_y == 1)))
    new_right = int(np.sum((held_new >= threshold) == (held_y == 1)))
    m: dict = {"held_out": len(held_y), "held_out_right_before": old_right, "held_out_right_after": new_right}
    if len(val_y):
        m["val_photos"] = len(val_y)
        m["val_balanced_accuracy_before"] = round(balanced_accuracy(val_y, val_old, threshold), 5)
        m["val_balanced_accuracy_after"] = round(balanced_accuracy(val_y, val_new, threshold), 5)
    if not len(held_y):
        return GateResult(False, "no held-out corrections to check the new model on: expected at least 2 corrections", m)
    if new_right <= old_right:
        return GateResult(False, f"the new model gets {new_right} of {len(held_y)} held-out corrections right, "
                                 f"the live one {old_right}: expected strictly more", m)
    if len(val_y):
        drop = m["val_balanced_accuracy_before"] - m["val_balanced_accuracy_after"]
        if drop > VAL_TOLERANCE:
            return GateResult(False, f"validation balanced accuracy drops from {m['val_balanced_accuracy_before']:.4f} "
                                     f"to {m['val_balanced_accuracy_after']:.4f}: expected at most "
                                     f"{VAL_TOLERANCE:.3f} lower", m)
    return GateResult(True, "better on held-out corrections, no worse on validation", m)


def split_holdout(corrections: Sequence[Labelled], fraction: float) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held out): every k-th correction in path order is held out, at least one of two."""
    ordered = sorted(corrections, key=lambda c: str(c.path))
    if len(ordered) < 2:
        return list(ordered), []
    count = min(len(ordered) - 1, max(1, round(len(ordered) * fraction)))
    step = len(ordered) / count
    held_idx = {int(i * step) for i in range(count)}
    return ([c for i, c in enumerate(ordered) if i not in held_idx],
            [c for i, c in enumerate(ordered) if i in held_idx])


@dataclass
class Outcome:
    candidate: Path
    version: str
    gate: GateResult


def retrain(live: Path, out: Path, *, corrections: Sequence[Labelled], train: Sequence[Labelled] = (),
            val: Sequence[Labelled] = (), holdout: float = 0.25, correction_weight: float = CORRECTION_WEIGHT,
            steps: int = STEPS) -> Outcome:
    """Fit a new head, write it to `out`, and judge it; installing it is the caller's choice."""
    learn, held = split_holdout(corrections, holdout)
    if not learn:
        raise RetrainError(f"{len(corrections)} correction(s): expected at least 2 (one to learn from, one to check)")
    meta = from_metadata({p.key: p.value for p in onnx.load(str(live)).metadata_props}, source=str(live))
    model = onnx.load(str(live))
    head = find_head(model)
    fit = extract(live, [*train, *learn])
    learn_paths = {p.path for p in learn}
    weights = np.array([correction_weight if p.path in learn_paths else 1.0 for p in fit.kept])
    y = np.array([p.target for p in fit.kept])
    w, b = fit_head(fit.x, y, weights, head.weight, head.bias, positive=meta.positive_index, steps=steps)
    held_f, val_f = extract(live, held), extract(live, val)
    result = gate(held_y=np.array([p.target for p in held_f.kept]), held_old=held_f.scores,
                  held_new=predict(held_f.x, w, b, meta.positive_index),
                  val_y=np.array([p.target for p in val_f.kept]), val_old=val_f.scores,
                  val_new=predict(val_f.x, w, b, meta.positive_index), threshold=meta.threshold)
    result.metrics.update(corrections=len(corrections), learned_from=len(learn), training_photos=len(train))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    version = f"{meta.version.split('+')[0]}+r{stamp}c{len(corrections)}"
    write_model(live, out, w, b, version=version, metrics=result.metrics)
    _check_written(out, held, predict(held_f.x, w, b, meta.positive_index))
    log.info("retrained", version=version, passed=result.passed, reason=result.reason, **result.metrics)
    return Outcome(out, version, result)


def _check_written(out: Path, photos: Sequence[Labelled], expected: np.ndarray) -> None:
    """The written file scores like the numpy head did (the export step's parity check)."""
    got = extract(out, photos).scores
    if len(got) != len(expected) or (len(got) and float(np.max(np.abs(got - expected))) > 1e-4):
        raise RetrainError(f"{out}: the written model scores {got.tolist()}, the fitted head {expected.tolist()}: "
                           "expected the same within 1e-4")
