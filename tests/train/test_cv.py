"""`nordlys train --cv K`: folds by group, out-of-fold scores, the feature cache, export of a
cross-validated run. Real training on tiny photos, real ONNX exports."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from nordlys.daemon.contract import from_metadata
from nordlys.export.export import export_model
from nordlys.train import cli, data, metrics, models, presets
from tests.train.photos import sky_manifest


def samples_in_groups(sizes: list[tuple[int, int]]) -> list[data.Sample]:
    """One group per (aurora, other) pair of counts."""
    out = []
    for g, (auroras, others) in enumerate(sizes):
        out += [data.Sample(Path(f"/g{g}/a{i}.jpg"), 1, f"g{g}") for i in range(auroras)]
        out += [data.Sample(Path(f"/g{g}/o{i}.jpg"), 0, f"g{g}") for i in range(others)]
    return out


def test_folds_keep_groups_whole_and_classes_spread() -> None:
    rng = random.Random(3)
    # one giant source like the shared data's Day-Night set, and many small ones
    sizes = [(0, 400)] + [(rng.randint(0, 6), rng.randint(0, 12)) for _ in range(120)]
    samples = [s for s in samples_in_groups(sizes)]
    fold_of = data.group_folds(samples, folds=5, seed=0)
    by_group: dict[str, set[int]] = {}
    for s, f in zip(samples, fold_of):
        by_group.setdefault(s.group, set()).add(f)
    assert all(len(f) == 1 for f in by_group.values())  # no group on two sides
    auroras = Counter(f for s, f in zip(samples, fold_of) if s.target == 1)
    total = sum(auroras.values())
    assert set(auroras) == set(range(5))
    assert max(auroras.values()) - min(auroras.values()) <= max(6, total // 20)  # about a fifth each
    assert fold_of == data.group_folds(samples, folds=5, seed=0)  # seeded


def test_folds_refuse_what_cannot_be_split() -> None:
    with pytest.raises(data.DataError, match="cannot make 3 folds with both classes"):
        data.group_folds(samples_in_groups([(2, 2), (2, 2)]), folds=3, seed=0)
    with pytest.raises(data.DataError, match="expected at least 2"):
        data.group_folds(samples_in_groups([(2, 2)]), folds=1, seed=0)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_prefix_then_suffix_is_the_model(backbone: str) -> None:
    model = models.build_model(backbone, num_classes=2, weights="none").eval()
    x = torch.randn(2, 3, 64, 64)
    n = len(models.stages(model, backbone))
    for at in (0, 1, n - 1, n):
        prefix, suffix = models.split(model, backbone, at=at)
        with torch.no_grad():
            assert torch.allclose(suffix(prefix(x)), model(x), atol=1e-5), at


def test_phone_augmentation_keeps_green_green() -> None:
    """Exposure, white balance, blur, noise and JPEG vary the photo, never its colour's meaning."""
    image = torch.zeros(3, 80, 120, dtype=torch.uint8)
    image[0], image[1], image[2] = 30, 170, 50  # an aurora-green frame
    preset = presets.TrainPreset(size=32, resize="squash", mean=(0, 0, 0), std=(1, 1, 1), seed=0, augment="phone")
    outs = [preset(image) for _ in range(60)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert all(float(o[1].mean()) > 1.8 * float(o[0].mean()) and float(o[1].mean()) > 1.8 * float(o[2].mean())
               for o in outs)
    assert len({round(float(o[1].mean()), 3) for o in outs}) > 30  # and it does vary


def cv_args(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["--manifest", str(manifest), "--output-dir", str(out), "--backbone", "mobilenet_v2", "--weights", "none",
            "--input-size", "32", "--epochs", "2", "--batch-size", "4", "--threads", "2", "--cv", "2",
            "--views", "2", *extra]


@pytest.mark.slow
def test_cross_validated_run_scores_every_photo_out_of_fold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = sky_manifest(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    assert cli.main(cv_args(manifest, out, "--augment", "phone", "--feature-cache", str(cache))) == 0
    assert "out of fold (16 photos, 2-fold cross-validation; the model was then trained on all of them)" \
        in capsys.readouterr().out
    result = json.loads((out / "metrics.json").read_text())
    assert result["cv"]["folds"] == 2 and 1 <= result["best_epoch"] <= 2
    with (out / "oof.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and len({r["file"] for r in rows}) == 16  # every photo once
    for fold in ("1", "2"):
        split = data.read_split(out / "folds" / fold / "split.csv")
        held = {str(s.path) for s in split["val"]}
        assert held == {r["file"] for r in rows if r["fold"] == fold}
        assert not {s.group for s in split["val"]} & {s.group for s in split["train"]}
    # the reported figures are the out-of-fold scores at the chosen threshold
    scores = np.array([float(r["score"]) for r in rows])
    targets = np.array([int(r["label"] == "aurora") for r in rows])
    assert result["val"]["count"] == 16
    assert result["val"]["tp"] == metrics.confusion(targets, scores, result["val"]["threshold"])["tp"]
    assert set(result["cv"]["mean_sd"]) >= {"recall", "fpr", "balanced_accuracy", "per_kind"}
    # the shipped model trained on every photo
    assert len(data.read_split(out / "split.csv")["train"]) == 16
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == result["best_epoch"] and ckpt["threshold"] == result["val"]["threshold"]

    # a second run with another suffix recipe reuses the features: same cache file, same folds
    stored = list(cache.iterdir())
    assert len(stored) == 1
    mtime = stored[0].stat().st_mtime_ns
    again = tmp_path / "again"
    assert cli.main(cv_args(manifest, again, "--augment", "phone", "--feature-cache", str(cache), "--lr", "3e-4")) == 0
    assert [p.stat().st_mtime_ns for p in cache.iterdir()] == [mtime]
    assert (again / "oof.csv").read_text().count("\n") == 17

    # export: the fold models' ONNX out-of-fold scores give the figures, int8 gated on them
    model = tmp_path / "m.onnx"
    exported = export_model(out, model, int8=False)
    assert exported["validation"] == "out-of-fold scores of 2 fold models"
    assert exported["fp32"]["count"] == 16 and "out-of-fold" in exported["threshold_rule"]
    meta = from_metadata({p.key: p.value for p in onnx.load(str(model)).metadata_props})
    assert meta.threshold == exported["threshold"] and meta.metrics["val"]["count"] == 16


def test_cv_arguments_are_checked_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = sky_manifest(tmp_path / "data", per_class=2)
    assert cli.main(cv_args(manifest, tmp_path / "run")[:-4] + ["--cv", "1"]) == 2
    assert "--cv = 1: expected 0 (one validation split) or at least 2 folds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
