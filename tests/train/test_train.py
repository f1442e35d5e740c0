"""Real training, one epoch, tiny photos, random initialisation, both backbones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nordlys.train import cli, models
from tests.train.photos import sky_folder, sky_manifest


def train_args(source: list[str], out: Path, backbone: str, *extra: str) -> list[str]:
    return [*source, "--output-dir", str(out), "--backbone", backbone, "--weights", "none",
            "--input-size", "32", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25",
            "--threads", "2", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_train_writes_a_complete_run(tmp_path: Path, backbone: str) -> None:
    manifest = sky_manifest(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    assert cli.main(train_args(["--manifest", str(manifest)], out, backbone)) == 0
    for name in ("checkpoint.pt", "metrics.json", "curve.png", "config.json", "split.csv"):
        assert (out / name).stat().st_size > 0, name
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["model_args"] == {"backbone": backbone, "num_classes": 2, "labels": ["other", "aurora"]}
    assert ckpt["config"]["input_size"] == 32 and ckpt["config"]["weights"] == "none"
    result = json.loads((out / "metrics.json").read_text())
    assert result["best_epoch"] == 1 and len(result["history"]) == 1
    assert result["val"]["count"] == result["data"]["val"]["photos"] > 0
    assert set(result["val"]["per_kind"]) >= {"photo"}


@pytest.mark.slow
def test_training_is_reproducible_from_a_folder(tmp_path: Path) -> None:
    root = sky_folder(tmp_path / "data", per_class=6)
    runs = []
    for name in ("a", "b"):
        assert cli.main(train_args(["--data", str(root)], tmp_path / name, "mobilenet_v2", "--mode", "head")) == 0
        runs.append(torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["model_state"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert (tmp_path / "a" / "split.csv").read_text() == (tmp_path / "b" / "split.csv").read_text()


def test_finetune_freezes_early_stages_and_batchnorm() -> None:
    model = models.build_model("mobilenet_v2", num_classes=2, weights="none")
    params = models.set_trainable(model, "mobilenet_v2", mode="finetune", unfreeze=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("features.17", "features.18", "classifier")) for n in trainable)
    assert len(params) == len(trainable)
    models.train_mode(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.classifier.training


def test_head_mode_trains_only_the_new_head() -> None:
    model = models.build_model("resnet50", num_classes=2, weights="none")
    models.set_trainable(model, "resnet50", mode="head", unfreeze=1)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}


def test_local_weights_are_loaded(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.mobilenet_v2()
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    model = models.build_model("mobilenet_v2", num_classes=2, weights=str(tmp_path / "w.pth"))
    assert torch.equal(model.features[0][0].weight, reference.features[0][0].weight)
    assert model.classifier[-1].out_features == 2


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="resnet50.*mobilenet_v2"):
        models.build_model("vgg", num_classes=2, weights="none")
