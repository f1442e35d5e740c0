"""The bundled default model: present, small, following the contract, and sorting real photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.loader import load_image

MODELS = Path(__file__).resolve().parents[2] / "daemon" / "models"


def test_default_model_is_bundled_small_and_documented() -> None:
    model = MODELS / "default.onnx"
    assert model.stat().st_size <= 10 * 1024 * 1024
    clf = Classifier(model, providers=("CPUExecutionProvider",))
    assert clf.meta.labels == ("other", "aurora") and clf.meta.backbone == "mobilenet_v2"
    assert clf.meta.metrics["val"]["recall"] >= 0.97 and clf.meta.metrics["val"]["fpr"] <= 0.02
    # its figures are out-of-fold over all the shared photos, not a few dozen validation auroras
    assert clf.meta.metrics["validation"] == "out-of-fold scores of 5 fold models"
    assert clf.meta.metrics["val"]["count"] >= 2600
    # and it lists the photos it was trained on, so `nordlys eval` can warn about them
    assert len(clf.meta.training_files["train"]) >= 2600
    card = (MODELS / "MODEL_CARD.md").read_text()
    assert clf.meta.version in card and "python -m nordlys.export.default_model" in card


def test_default_model_sorts_real_photos(shared_data: Path) -> None:
    with (shared_data / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    picks = [r for r in rows if r["label"] == "aurora"][:10] + [r for r in rows if r["kind"] == "everyday"][:10]
    clf = Classifier(MODELS / "default.onnx", providers=("CPUExecutionProvider",))
    size, resize = clf.meta.input_size, clf.meta.resize
    scores = clf.score([load_image(shared_data / r["file"], size=size, resize=resize) for r in picks])
    called = scores >= clf.meta.threshold
    assert np.sum(called[:10]) >= 9 and np.sum(called[10:]) <= 1
