"""Export a really trained (tiny) run: ONNX contract, parity, int8 quantisation and its gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.contract import from_metadata
from nordlys.daemon.loader import load_image
from nordlys.export import cli
from nordlys.export.evaluate import Evaluation, evaluate_model
from nordlys.export.export import Int8Refused, export_model, int8_gate
from nordlys.export.onnx_export import ExportError, load_run
from nordlys.export.parity import ParityError, check_parity
from nordlys.export.quantize import pick_calibration, quantize_int8
from nordlys.train import cli as train_cli
from nordlys.train.data import Sample
from tests.train.photos import sky_manifest


def trained_run(root: Path, backbone: str) -> Path:
    manifest = sky_manifest(root / "data", per_class=8)
    out = root / f"run-{backbone}"
    args = ["--manifest", str(manifest), "--output-dir", str(out), "--backbone", backbone, "--weights", "none",
            "--input-size", "32", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--threads", "2"]
    assert train_cli.main(args) == 0
    return out


@pytest.fixture(scope="module")
def mobilenet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, exported fp32 model): one export shared by the tests that need one."""
    root = tmp_path_factory.mktemp("mnv2")
    run = trained_run(root, "mobilenet_v2")
    assert cli.main([str(run), "--out", str(root / "model.onnx")]) == 0
    return run, root / "model.onnx"


def exported(backbone: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    if backbone == "mobilenet_v2":
        return request.getfixturevalue("mobilenet_export")
    run = trained_run(tmp_path, backbone)
    assert cli.main([str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    return run, tmp_path / "model.onnx"


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_export_follows_the_contract_and_scores_like_torch(tmp_path: Path, backbone: str,
                                                          request: pytest.FixtureRequest) -> None:
    run, out = exported(backbone, tmp_path, request)
    model = onnx.load(str(out))
    meta = from_metadata({p.key: p.value for p in model.metadata_props})
    assert meta.backbone == backbone and meta.input_size == 32 and meta.labels == ("other", "aurora")
    assert meta.version.startswith(backbone) and meta.training_data["train"]["photos"] > 0
    assert meta.metrics["val"]["threshold"] == meta.threshold
    assert "false-positive rate" in meta.metrics["threshold_rule"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    # any batch size runs, and the daemon's classifier accepts the file
    clf = Classifier(out, providers=("CPUExecutionProvider",), batch_size=3)
    photos = sorted((run.parent / "data" / "images").glob("*.jpg"))
    scores = clf.score([load_image(p, size=32) for p in photos])
    assert scores.shape == (len(photos),) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.slow
def test_parity_check_fails_for_a_different_model(mobilenet_export: tuple[Path, Path]) -> None:
    run_dir, out = mobilenet_export
    run = load_run(run_dir)
    photos = [s.path for s in run.split["val"]]
    assert check_parity(run.model, out, photos) <= 1e-4
    with __import__("torch").no_grad():
        run.model.classifier[-1].bias[1] += 5.0  # now the ONNX file no longer matches the weights
    with pytest.raises(ParityError, match=r"differ by up to .* expected at most 0\.0001"):
        check_parity(run.model, out, photos)


@pytest.mark.slow
def test_int8_quantisation_and_evaluation(mobilenet_export: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, fp32 = mobilenet_export
    run = load_run(run_dir)
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx", pick_calibration(run.split["train"], count=8, seed=0))
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    a, b = (evaluate_model(p, run.split["val"]) for p in (fp32, int8))
    assert len(a.scores) == len(b.scores) == len(run.split["val"])
    assert a.summary["count"] == b.summary["count"]


@pytest.mark.slow
def test_int8_export_ships_or_refuses_with_numbers(mobilenet_export: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = mobilenet_export
    out = tmp_path / "int8.onnx"
    try:
        result = export_model(run_dir, out, int8=True, calibration_photos=8)
    except Int8Refused as exc:  # a random-init network may well lose accuracy when quantised
        assert "points of validation accuracy" in str(exc) and not out.exists()
        return
    meta = from_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    assert meta.version.endswith("-int8") and meta.metrics["val"] == meta.metrics["val_int8"]
    assert result["int8_accuracy_loss_points"] <= 0.5 and "fp32" in result


def test_int8_gate_says_by_how_much() -> None:
    def ev(accuracy: float) -> Evaluation:
        return Evaluation("m", 0.5, [], np.zeros(0), summary={"accuracy": accuracy})

    assert int8_gate(ev(0.950), ev(0.946)) == pytest.approx(0.4)
    with pytest.raises(Int8Refused, match=r"loses 1\.50 points .*95\.00% fp32 -> 93\.50% int8"):
        int8_gate(ev(0.95), ev(0.935))


def test_export_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="checkpoint.pt is missing"):
        load_run(tmp_path)
    assert cli.main([str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 4


def test_calibration_is_balanced_and_seeded() -> None:
    samples = [Sample(Path(f"/p{i}"), int(i < 3), "g") for i in range(20)]
    picked = pick_calibration(samples, count=8, seed=1)
    assert sum(s.target for s in picked) == 3 and len(picked) == 7
    assert picked == pick_calibration(samples, count=8, seed=1)


@pytest.mark.slow
def test_export_prints_the_figure_it_logs_and_lists_its_training_photos(mobilenet_export: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    """Issue 14 point 4: the log said accuracy=0.8056 threshold=0.5, then the summary 0.8611. Now the
    shipped model is measured once, at its chosen threshold, and both say that. The model lists its
    training photos (nordlys.training_files), so evaluating on its own split.csv warns."""
    import json
    import os
    import subprocess
    import sys

    run_dir, _ = mobilenet_export
    out = tmp_path / "again.onnx"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "nordlys.daemon", "export", str(run_dir), "--out", str(out), "-v"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    evaluated = [e for e in events if e["event"] == "evaluated"]
    assert len(evaluated) == 1  # fp32 only: one measurement, no 0.5 pass before it
    summary = result.stdout.strip()
    assert f"threshold {evaluated[0]['threshold']:.4g};" in summary
    assert f"accuracy {evaluated[0]['accuracy']:.4f}," in summary
    assert f"on {evaluated[0]['photos']} validation photos at that threshold" in summary

    meta = from_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    run = load_run(run_dir)
    assert {side: len(d) for side, d in meta.training_files.items()} == {
        side: len(samples) for side, samples in run.split.items()}
    evaluated_on_own_split = subprocess.run(
        [sys.executable, "-m", "nordlys.daemon", "eval", "--model", str(out), "--manifest", str(run_dir / "split.csv"),
         "--report", str(tmp_path / "report")], capture_output=True, text=True, timeout=600, env=env)
    assert evaluated_on_own_split.returncode == 0, evaluated_on_own_split.stderr
    assert (f"warning: the model has seen some of these photos ({len(run.split['train'])} in its train split, "
            f"{len(run.split['val'])} in its val split)") in evaluated_on_own_split.stderr
