"""PyTorch and onnxruntime must give the same score for the same real photo.

The export is only as good as this check: a silently wrong graph (a mis-traced layer, a wrong
opset translation) would score every photo slightly or wildly differently from the model that
was validated. Both sides get the very same float input, made by the daemon's Classifier from the
daemon's loader, so any difference is the export's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import structlog
import torch
from torch import nn

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.loader import load_image

log = structlog.get_logger(__name__)

FP32_TOLERANCE = 1e-4  # max |score difference| allowed between PyTorch and onnxruntime (fp32)


class ParityError(RuntimeError):
    """The ONNX model scores real photos differently from the PyTorch model."""

    exit_code = 4


def max_score_difference(model: nn.Module, onnx_path: Path, photos: Sequence[Path]) -> float:
    """max |score_torch - score_onnx| over `photos`."""
    classifier = Classifier(onnx_path, providers=("CPUExecutionProvider",), batch_size=16)
    meta = classifier.meta
    pixels = [load_image(p, size=meta.input_size, resize=meta.resize) for p in photos]
    onnx_scores = classifier.score(pixels).astype(np.float64)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(classifier.preprocess(pixels)))
        torch_scores = torch.softmax(logits.double(), dim=1)[:, meta.positive_index].numpy()
    return float(np.max(np.abs(torch_scores - onnx_scores)))


def check_parity(model: nn.Module, onnx_path: Path, photos: Sequence[Path], *,
                 tolerance: float = FP32_TOLERANCE) -> float:
    """Raise ParityError when the largest score difference exceeds `tolerance`."""
    if not photos:
        raise ParityError(f"{onnx_path}: no photos to check parity on")
    delta = max_score_difference(model, onnx_path, photos)
    log.info("parity", model=str(onnx_path), photos=len(photos), max_delta=delta, tolerance=tolerance)
    if not delta <= tolerance:
        raise ParityError(f"{onnx_path}: onnxruntime and PyTorch scores differ by up to {delta:.3g} on "
                          f"{len(photos)} real photos; expected at most {tolerance:g}")
    return delta
