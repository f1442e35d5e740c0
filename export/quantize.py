"""Static int8 quantisation (QDQ, per-channel weights) calibrated on training photos.

Static rather than dynamic: convolutions dominate these networks and only static quantisation
makes them int8. Calibration uses training photos (never validation ones, which judge the
result), class-balanced so the activation ranges of faint night skies are seen as often as those
of bright day photos.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import structlog
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.contract import INPUT_NAME
from nordlys.daemon.loader import ImageLoadError, load_image
from nordlys.train.data import Sample

log = structlog.get_logger(__name__)

CALIBRATION_PHOTOS = 256  # photos, half aurora and half other when there are enough


class PhotoReader(CalibrationDataReader):
    """Feeds normalised photos to the calibrator one small batch at a time."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def pick_calibration(samples: Sequence[Sample], *, count: int, seed: int) -> list[Sample]:
    """Up to count/2 photos of each class, seeded."""
    rng = random.Random(seed)
    picked: list[Sample] = []
    for target in (0, 1):
        pool = [s for s in samples if s.target == target]
        picked += rng.sample(pool, min(len(pool), count // 2))
    return picked


def calibration_batches(classifier: Classifier, samples: Sequence[Sample], *, batch: int = 16) -> list[np.ndarray]:
    """Photos -> the exact float input the daemon would feed the model."""
    meta, pixels = classifier.meta, []
    for s in samples:
        try:
            pixels.append(load_image(s.path, size=meta.input_size, resize=meta.resize))
        except ImageLoadError as exc:
            log.warning("calibration_skip", path=str(s.path), reason=exc.reason)
    return [classifier.preprocess(pixels[i:i + batch]) for i in range(0, len(pixels), batch)]


# The shipped settings. bench/int8_variants.py measures the alternatives against them
# (per-tensor weights, QOperator, S8S8, U8U8, float stems): none beat these by more than a few
# per cent on this kind of CPU, and S8S8 and U8U8 run 2-3x slower.
SETTINGS = {"quant_format": QuantFormat.QDQ, "per_channel": True, "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8, "calibrate_method": CalibrationMethod.MinMax,
            "extra_options": {"CalibMovingAverage": True}}


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Sequence[Sample], *,
                  overrides: dict | None = None,
                  keep_float: Callable[[onnx.ModelProto], list[str]] | None = None) -> Path:
    """Write a QDQ int8 copy of `fp32_path` to `out_path` (metadata is set again by the caller).

    overrides: quantize_static arguments that replace SETTINGS; keep_float: names of nodes of the
    shape-inferred graph to leave in float. Both exist for bench/int8_variants.py.
    """
    classifier = Classifier(fp32_path, providers=("CPUExecutionProvider",))
    batches = calibration_batches(classifier, calibration)
    if not batches:
        raise ValueError(f"{fp32_path}: no readable calibration photos among {len(calibration)}")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        settings = {**SETTINGS, **(overrides or {})}
        if keep_float is not None:
            settings["nodes_to_exclude"] = keep_float(onnx.load(str(prepared)))
        quantize_static(str(prepared), str(out_path), PhotoReader(batches), **settings)
    log.info("quantized", source=str(fp32_path), out=str(out_path), calibration_photos=sum(len(b) for b in batches))
    return out_path
