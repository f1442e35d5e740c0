"""The default-model build, end to end on tiny photos: model file, card, numbers on the card."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torchvision

from nordlys.daemon.contract import from_metadata
from nordlys.export import default_model
from tests.train.photos import sky_manifest


@pytest.mark.slow
def test_build_writes_model_and_card(tmp_path: Path) -> None:
    manifest = sky_manifest(tmp_path / "data", per_class=8)
    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    tiny = [a for a in default_model.RECIPE]
    tiny[tiny.index("--input-size") + 1] = "32"
    tiny[tiny.index("--epochs") + 1] = "1"
    tiny[tiny.index("--batch-size") + 1] = "4"
    tiny[tiny.index("--cv") + 1] = "2"
    tiny[tiny.index("--views") + 1] = "2"
    out = tmp_path / "models" / "default.onnx"
    result = default_model.build(manifest=manifest, weights=weights, run_dir=tmp_path / "run", out=out,
                                 skip_train=False, recipe=tiny)
    meta = from_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    assert meta.backbone == "mobilenet_v2" and meta.threshold == result["threshold"]
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert meta.version in card and "python -m nordlys.export.default_model" in card
    assert "| kind=" in card and "Threshold rule:" in card and "out-of-fold" in card
    assert "| MIT | 8 |" in card and "| unknown | 8 |" in card  # licences summarised from the manifest
    assert "mean +- sd over folds" in card and "2-fold cross-validation over groups" in card
    assert (tmp_path / "run" / "oof_report" / "report.html").exists()
    # the shipped figures are the fold models' out-of-fold scores: one per photo, 16 photos
    assert result["fp32"]["count"] == 16 and result["validation"] == "out-of-fold scores of 2 fold models"
    assert meta.metrics["validation"] == "out-of-fold scores of 2 fold models"
