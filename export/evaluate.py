"""Score labelled photos with an ONNX model exactly as the daemon would, and measure.

Torch-free: the daemon's loader makes the pixels and the daemon's Classifier scores them, so an
evaluation number is what a user of that model file gets. Export's int8 gate calls the same
`evaluate_model`, so the gate and `nordlys eval` cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import structlog

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.contract import training_digest
from nordlys.daemon.fileops import sha256_file
from nordlys.daemon.loader import ImageLoadError, load_image
from nordlys.daemon.progress import ProgressBar
from nordlys.train import metrics
from nordlys.train.data import Sample

log = structlog.get_logger(__name__)

SWEEP = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))  # thresholds in the report's table


@dataclass
class Evaluation:
    """Scores of the readable photos, the photos that could not be read, and the metrics."""

    model: str
    threshold: float
    samples: list[Sample]
    scores: np.ndarray
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    seen_in_training: dict[str, list[str]] | None = None  # split -> evaluated photos it held; None: not listed

    @property
    def targets(self) -> np.ndarray:
        return np.array([s.target for s in self.samples], dtype=np.int64)


def score_samples(classifier: Classifier, samples: Sequence[Sample], *, chunk: int = 64,
                  label: str = "score") -> tuple[list[Sample], np.ndarray, list[tuple[str, str]]]:
    """Load (daemon loader) and score in chunks, so memory stays flat on big sets."""
    size, resize = classifier.meta.input_size, classifier.meta.resize
    kept: list[Sample] = []
    scores: list[np.ndarray] = []
    unreadable: list[tuple[str, str]] = []
    with ProgressBar(len(samples), label=label) as bar:
        for i in range(0, len(samples), chunk):
            pixels = []
            for s in samples[i:i + chunk]:
                try:
                    pixels.append(load_image(s.path, size=size, resize=resize))
                    kept.append(s)
                except ImageLoadError as exc:
                    log.warning("unreadable", path=str(s.path), reason=exc.reason)
                    unreadable.append((str(s.path), exc.reason))
                bar.advance()
            if pixels:
                scores.append(classifier.score(pixels))
    return kept, (np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)), unreadable


def seen_in_training(training_files: dict[str, list[str]],
                     samples: Sequence[Sample]) -> dict[str, list[str]] | None:
    """Evaluated photos whose bytes the model was trained or validated on (by the sha256 digests
    export writes into nordlys.training_files): figures measured on them flatter the model.
    None when the model does not list its training photos (then nothing can be said)."""
    if not training_files:
        return None
    sides = {side: set(digests) for side, digests in training_files.items()}
    seen: dict[str, list[str]] = {}
    for s in samples:
        try:
            digest = training_digest(sha256_file(s.path)[0])
        except OSError:
            continue
        for side, digests in sides.items():
            if digest in digests:
                seen.setdefault(side, []).append(str(s.path))
    return seen


def score_model(model_path: Path, samples: Sequence[Sample], *, threads: int = 0) -> Evaluation:
    """Scores of `samples`, not yet measured (threshold and summary are the caller's: `measure`)."""
    classifier = Classifier(Path(model_path), providers=("CPUExecutionProvider",), threads=threads, batch_size=32)
    kept, scores, unreadable = score_samples(classifier, samples, label=f"eval {Path(model_path).name}")
    if not kept:
        raise ValueError(f"{model_path}: none of the {len(samples)} photos could be read")
    return Evaluation(str(model_path), classifier.meta.threshold, kept, scores, unreadable,
                      seen_in_training=seen_in_training(classifier.meta.training_files, kept))


def measure(ev: Evaluation, threshold: float) -> Evaluation:
    """Metrics at `threshold`, logged once: the one accuracy figure for this threshold."""
    ev.threshold = threshold
    ev.summary = metrics.summary(ev.targets, ev.scores, threshold, [s.kind for s in ev.samples])
    ev.summary["unreadable"] = len(ev.unreadable)
    ev.summary["sweep"] = metrics.threshold_sweep(ev.targets, ev.scores, sorted({*SWEEP, threshold}))
    log.info("evaluated", model=ev.model, photos=len(ev.samples), threshold=threshold,
             accuracy=ev.summary["accuracy"], recall=ev.summary["recall"], fpr=ev.summary["fpr"])
    return ev


def evaluate_model(model_path: Path, samples: Sequence[Sample], *, threshold: float | None = None,
                   threads: int = 0) -> Evaluation:
    """Metrics of `model_path` on `samples` at `threshold` (default: the model's own)."""
    ev = score_model(model_path, samples, threads=threads)
    return measure(ev, ev.threshold if threshold is None else threshold)
