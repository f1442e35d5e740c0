"""From a training run to an ONNX file that carries the metadata contract.

A run directory is self-describing (train writes the resolved config and model arguments into
checkpoint.pt and the split into split.csv), so rebuilding the network needs nothing but RUN.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import structlog
import torch
from torch import nn

from nordlys.daemon.contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, to_metadata
from nordlys.train import data, models

log = structlog.get_logger(__name__)

OPSET = 18  # ONNX opset; onnxruntime 1.17+ runs it and quantize_static handles it


class ExportError(RuntimeError):
    """The run cannot be exported, or the exported model fails a check; exit code 4."""

    exit_code = 4


@dataclass
class Run:
    """What export needs from a training run."""

    path: Path
    model: nn.Module
    config: dict
    model_args: dict
    split: dict[str, list[data.Sample]]
    train_metrics: dict
    checkpoint_sha: str


def load_run(run_dir: Path) -> Run:
    """Rebuild the trained network (no weights download: the checkpoint has them all)."""
    ckpt_path = Path(run_dir) / "checkpoint.pt"
    for needed in (ckpt_path, Path(run_dir) / "split.csv"):
        if not needed.exists():
            raise ExportError(f"{run_dir}: {needed.name} is missing; expected a run directory written by "
                              f"`nordlys train` (checkpoint.pt, split.csv, metrics.json)")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    args = ckpt["model_args"]
    model = models.build_model(args["backbone"], num_classes=args["num_classes"], weights=None)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    metrics_path = Path(run_dir) / "metrics.json"
    train_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    sha = hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    return Run(Path(run_dir), model, ckpt["config"], args, data.read_split(Path(run_dir) / "split.csv"),
               train_metrics, sha)


def export_fp32(model: nn.Module, path: Path, *, input_size: int) -> Path:
    """torch.onnx.export with a dynamic batch axis, weights inside the one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("N", min=1, max=4096)
    started = time.monotonic()
    torch.onnx.export(model.eval(), (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False,
                      verbose=False)
    log.info("onnx_exported", path=str(path), seconds=round(time.monotonic() - started, 1))
    return path


def model_meta(run: Run, *, threshold: float, metrics: dict, suffix: str = "",
               training_files: dict[str, list[str]] | None = None) -> ModelMeta:
    """The contract's metadata for this run; version = backbone-date-checkpoint hash[-int8]."""
    cfg = run.config
    version = f"{cfg['backbone']}-{time.strftime('%Y%m%d')}-{run.checkpoint_sha[:8]}{suffix}"
    summary = run.train_metrics.get("data", {})
    training = {side: {k: summary[side].get(k) for k in ("photos", "groups", "per_label", "per_kind")}
                for side in ("train", "val") if side in summary}
    return ModelMeta(labels=tuple(run.model_args["labels"]), input_size=int(cfg["input_size"]),
                     mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),  # type: ignore[arg-type]
                     threshold=float(threshold), version=version, positive_label=data.POSITIVE,
                     resize=cfg["resize"], backbone=cfg["backbone"], training_data=training, metrics=metrics,
                     training_files=training_files or {})


def write_metadata(path: Path, meta: ModelMeta) -> None:
    """Replace the file's metadata_props with exactly the contract's keys."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, to_metadata(meta))
    onnx.save(model, str(path))
