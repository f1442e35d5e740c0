"""`nordlys train` out of the box (issue 14, point 4), through the real command: each way a first run
goes wrong ends in one clear line and exit code 2, and --help shows the defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.photos import sky_folder

pytest.importorskip("torch", reason="train needs the training extras: pip install 'nordlys[train]'")


def train(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), **env}
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", "train", *args], capture_output=True, text=True,
                          env=full_env, timeout=600, cwd=tmp_path)


def one_line(result: subprocess.CompletedProcess) -> str:
    """The last stderr line, after checking that nothing before it is a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_offline_download_of_the_imagenet_weights_is_one_line(tmp_path: Path) -> None:
    """torch's hub folder is empty, so torchvision must download ResNet50; the proxy is a loopback
    port nobody listens on, so the download is refused here whether or not the machine is online."""
    data = sky_folder(tmp_path / "data", per_class=2)
    result = train(tmp_path, "--data", str(data), "--output-dir", str(tmp_path / "run"),
                   TORCH_HOME=str(tmp_path / "torch-home"), https_proxy="http://127.0.0.1:9",
                   HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("nordlys train: cannot download the ImageNet weights of resnet50 (")
    assert "--weights PATH" in line and "--weights none" in line


def test_a_missing_weights_file_is_one_line(tmp_path: Path) -> None:
    data = sky_folder(tmp_path / "data", per_class=2)
    result = train(tmp_path, "--data", str(data), "--output-dir", str(tmp_path / "run"), "--backbone", "mobilenet_v2",
                   "--weights", str(tmp_path / "nope.pth"))
    assert result.returncode == 2
    assert one_line(result) == (f"nordlys train: --weights = '{tmp_path / 'nope.pth'}' is not a file: expected a "
                                f"torchvision state_dict of the ImageNet mobilenet_v2 (.pth), 'imagenet' "
                                f"(downloaded by torchvision) or 'none' (random start)")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_weights_of_another_backbone_are_one_line(tmp_path: Path) -> None:
    import torch

    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    data = sky_folder(tmp_path / "data", per_class=2)
    result = train(tmp_path, "--data", str(data), "--output-dir", str(tmp_path / "run"), "--backbone", "mobilenet_v2",
                   "--weights", str(tmp_path / "other.pth"))
    assert result.returncode == 2
    assert one_line(result).startswith(f"nordlys train: --weights = '{tmp_path / 'other.pth'}': cannot load it "
                                       f"into mobilenet_v2 (")


def test_an_existing_run_is_not_overwritten_silently(tmp_path: Path) -> None:
    data = sky_folder(tmp_path / "data", per_class=2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"an earlier run")
    result = train(tmp_path, "--data", str(data), "--output-dir", str(run), "--weights", "none")
    assert result.returncode == 2
    assert one_line(result) == (f"nordlys train: --output-dir = '{run}' already holds files (checkpoint.pt): "
                                f"expected a new or empty folder, or --overwrite to replace the run in it")
    assert (run / "checkpoint.pt").read_bytes() == b"an earlier run"


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    result = train(tmp_path, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for option, default in (("--backbone", "resnet50"), ("--epochs", "15"), ("--batch-size", "32"),
                            ("--lr", "0.001"), ("--input-size", "224"), ("--seed", "0"), ("--max-fpr", "0.02")):
        assert re.search(rf"{option} (?:(?! --[a-z]).)*\(default: {re.escape(default)}\)", text), option


@pytest.mark.slow
def test_a_run_ends_with_its_figures_and_the_next_step(tmp_path: Path) -> None:
    """Without -v the log shows warnings only, so the run's result is one line on stdout, with the
    same figures as metrics.json."""
    import json

    data = sky_folder(tmp_path / "data", per_class=8)
    run = tmp_path / "run"
    result = train(tmp_path, "--data", str(data), "--output-dir", str(run), "--backbone", "mobilenet_v2",
                   "--weights", "none", "--input-size", "32", "--epochs", "1", "--batch-size", "4",
                   "--val-fraction", "0.25", "--threads", "2")
    assert result.returncode == 0, result.stderr
    val = json.loads((run / "metrics.json").read_text())["val"]
    line = result.stdout.strip()
    assert line.startswith(f"{run}: best epoch 1, threshold {val['threshold']:.4g}; on {val['count']} validation photos")
    assert f"accuracy {val['accuracy']:.4f}" in line and line.endswith(f"Next: nordlys export {run} --out model.onnx")
