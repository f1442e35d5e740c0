"""`nordlys export RUN --out model.onnx [--int8]`: export, check, choose the threshold, gate int8.

Steps, each of which can fail the export:
1. torch.onnx.export (fp32, dynamic batch axis) into a scratch folder;
2. parity: PyTorch and onnxruntime score the same real validation photos within 1e-4;
3. the fp32 model scores the validation split as the daemon would; the threshold is chosen on
   those scores by the rule in `nordlys.train.metrics.choose_threshold`;
4. with --int8: quantise (static QDQ, per-channel) on training photos, score the validation
   split again, choose the int8 model's own threshold by the same rule, and refuse the int8
   model when its accuracy is more than 0.5 points below fp32's;
5. write the shipped model to --out with the metadata contract (threshold, version, data summary,
   validation metrics of fp32 and, when shipped, int8).

A cross-validated run (`nordlys train --cv K`) has no validation split: its model saw every
photo. There, steps 3 and 4 score each fold's model (folds/<k>/, exported and quantised the same
way) on the photos that fold held out, pool those out-of-fold scores, and choose the thresholds
and gate int8 on them; the shipped model is the one trained on all photos.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import structlog

from nordlys.daemon.contract import training_digest
from nordlys.daemon.fileops import sha256_file
from nordlys.export.evaluate import Evaluation, measure, score_model
from nordlys.export.onnx_export import ExportError, Run, export_fp32, load_run, model_meta, write_metadata
from nordlys.export.parity import FP32_TOLERANCE, check_parity
from nordlys.export.quantize import CALIBRATION_PHOTOS, pick_calibration, quantize_int8
from nordlys.train import metrics

log = structlog.get_logger(__name__)

MAX_INT8_ACCURACY_LOSS = 0.5  # percentage points of validation accuracy int8 may lose against fp32
PARITY_PHOTOS = 32  # validation photos the parity check scores with both runtimes
THRESHOLD_RULE = ("highest validation balanced accuracy among thresholds with false-positive rate "
                  "<= {max_fpr}; ties -> nearest 0.5; chosen on {scores}")
OWN_SCORES = "the shipped model's own scores"
OOF_SCORES = "the pooled out-of-fold scores of the {folds} fold models at the shipped precision"


class Int8Refused(ExportError):
    """The int8 model loses too much accuracy; the message says by how much."""


def validated(path: Path, run: Run, *, max_fpr: float) -> Evaluation:
    """Score the validation split and measure once, at the threshold rule's choice: the figure
    logged is the figure shipped and printed (it used to be logged at 0.5 first, then re-measured)."""
    ev = score_model(path, run.split["val"])
    return measure(ev, metrics.choose_threshold(ev.targets, ev.scores, max_fpr=max_fpr))


def fold_runs(run_dir: Path) -> list[Run]:
    """The fold models of a cross-validated run, in fold order; none for a single-split run."""
    folder = Path(run_dir) / "folds"
    if not folder.is_dir():
        return []
    return [load_run(d) for d in sorted(folder.iterdir(), key=lambda d: int(d.name)) if d.name.isdigit()]


def pooled(evaluations: list[Evaluation], name: str, *, max_fpr: float) -> Evaluation:
    """One evaluation of all out-of-fold scores, measured at the threshold rule's choice."""
    ev = Evaluation(name, 0.5, [s for e in evaluations for s in e.samples],
                    np.concatenate([e.scores for e in evaluations]), [u for e in evaluations for u in e.unreadable])
    return measure(ev, metrics.choose_threshold(ev.targets, ev.scores, max_fpr=max_fpr))


def out_of_fold(folds: list[Run], tmp: Path, *, int8: bool, max_fpr: float,
                calibration_photos: int) -> tuple[Evaluation, Evaluation | None]:
    """Each fold model, as ONNX (and int8), scores its held-out photos as the daemon would."""
    fp32_evs, int8_evs = [], []
    for k, fold in enumerate(folds, start=1):
        path = export_fp32(fold.model, tmp / f"fold{k}.onnx", input_size=int(fold.config["input_size"]))
        write_metadata(path, model_meta(fold, threshold=0.5, metrics={}))
        fp32_evs.append(score_model(path, fold.split["val"]))
        if int8:
            q = quantize_int8(path, tmp / f"fold{k}-int8.onnx",
                              pick_calibration(fold.split["train"], count=calibration_photos,
                                               seed=int(fold.config.get("seed", 0))))
            write_metadata(q, model_meta(fold, threshold=0.5, metrics={}))
            int8_evs.append(score_model(q, fold.split["val"]))
    name = f"{len(folds)} fold models, out-of-fold"
    return (pooled(fp32_evs, f"{name} (fp32)", max_fpr=max_fpr),
            pooled(int8_evs, f"{name} (int8)", max_fpr=max_fpr) if int8 else None)


def training_files(run: Run) -> dict[str, list[str]]:
    """Digests of the run's training and validation photos, carried in the model so that
    `nordlys eval` can warn when it is shown photos the model has seen."""
    listed: dict[str, list[str]] = {}
    for side, samples in run.split.items():
        digests = set()
        for s in samples:
            try:
                digests.add(training_digest(sha256_file(s.path)[0]))
            except OSError:
                continue  # a photo gone since training cannot be evaluated either
        listed[side] = sorted(digests)
    return listed


def compact(summary: dict) -> dict:
    """The metrics worth carrying inside a model file (rounded; per kind without counts of cells)."""
    keys = ("threshold", "count", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "fpr", "roc_auc")
    out = {k: (round(summary[k], 5) if isinstance(summary.get(k), float) and k != "threshold" else summary.get(k))
           for k in keys}
    out["per_kind"] = {k: {c: (round(v, 5) if isinstance(v, float) else v) for c, v in m.items()
                           if c in ("count", "recall", "fpr", "accuracy")}
                       for k, m in summary.get("per_kind", {}).items()}
    return out


def int8_gate(fp32: Evaluation, int8: Evaluation) -> float:
    """Accuracy points lost by int8 (each at its own rule-chosen threshold); refuses past the limit."""
    loss = 100.0 * (fp32.summary["accuracy"] - int8.summary["accuracy"])
    log.info("int8_gate", fp32_accuracy=fp32.summary["accuracy"], int8_accuracy=int8.summary["accuracy"],
             loss_points=round(loss, 3), limit_points=MAX_INT8_ACCURACY_LOSS)
    if loss > MAX_INT8_ACCURACY_LOSS:
        raise Int8Refused(f"int8 model loses {loss:.2f} points of validation accuracy "
                          f"({100 * fp32.summary['accuracy']:.2f}% fp32 -> {100 * int8.summary['accuracy']:.2f}% int8); "
                          f"at most {MAX_INT8_ACCURACY_LOSS} allowed. Export without --int8 to ship fp32.")
    return loss


def export_model(run_dir: Path, out: Path, *, int8: bool = False, max_fpr: float | None = None,
                 calibration_photos: int = CALIBRATION_PHOTOS) -> dict:
    """Run the steps above; returns {"fp32": summary, "int8": summary?, "shipped": ..., ...}."""
    return export_measured(run_dir, out, int8=int8, max_fpr=max_fpr, calibration_photos=calibration_photos)[0]


def export_measured(run_dir: Path, out: Path, *, int8: bool = False, max_fpr: float | None = None,
                    calibration_photos: int = CALIBRATION_PHOTOS) -> tuple[dict, Evaluation]:
    """export_model, also returning the evaluation behind the shipped figures (validation split or
    out-of-fold, at the shipped precision): the default-model build lists and shows its misses."""
    run = load_run(run_dir)
    folds = fold_runs(run_dir)
    max_fpr = float(run.config.get("max_fpr", metrics.DEFAULT_MAX_FPR) if max_fpr is None else max_fpr)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_fp32(run.model, Path(tmp) / "fp32.onnx", input_size=int(run.config["input_size"]))
        write_metadata(fp32_path, model_meta(run, threshold=0.5, metrics={}))
        checked = run.split["val"] or run.split["train"]  # a cross-validated run has no validation side
        photos = [s.path for s in checked[:: max(1, len(checked) // PARITY_PHOTOS)]][:PARITY_PHOTOS]
        delta = check_parity(run.model, fp32_path, photos, tolerance=FP32_TOLERANCE)
        if folds:
            fp32, q_oof = out_of_fold(folds, Path(tmp), int8=int8, max_fpr=max_fpr, calibration_photos=calibration_photos)
        else:
            fp32, q_oof = validated(fp32_path, run, max_fpr=max_fpr), None
        result = {"fp32": fp32.summary, "parity_max_delta": delta, "threshold_rule": THRESHOLD_RULE.format(
                      max_fpr=max_fpr, scores=OOF_SCORES.format(folds=len(folds)) if folds else OWN_SCORES),
                  "validation": (f"out-of-fold scores of {len(folds)} fold models" if folds else "validation split")}
        shipped, chosen, suffix = fp32_path, fp32, ""
        if int8:
            int8_path = quantize_int8(fp32_path, Path(tmp) / "int8.onnx",
                                      pick_calibration(run.split["train"], count=calibration_photos,
                                                       seed=int(run.config.get("seed", 0))))
            write_metadata(int8_path, model_meta(run, threshold=0.5, metrics={}))
            q = q_oof or validated(int8_path, run, max_fpr=max_fpr)
            result["int8"] = q.summary
            result["int8_max_score_delta"] = scores_agree(fp32, q)
            result["int8_accuracy_loss_points"] = int8_gate(fp32, q)
            shipped, chosen, suffix = int8_path, q, "-int8"
        carried = {"val_fp32": compact(fp32.summary), "threshold_rule": result["threshold_rule"],
                   "validation": result["validation"]}
        if int8:
            carried["val_int8"] = compact(result["int8"])
        carried["val"] = carried["val_int8" if int8 else "val_fp32"]
        meta = model_meta(run, threshold=chosen.threshold, metrics=carried, suffix=suffix,
                          training_files=training_files(run))
        write_metadata(shipped, meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, out)
    result.update(shipped=str(out), version=meta.version, threshold=chosen.threshold, bytes=out.stat().st_size)
    log.info("export_done", out=str(out), version=meta.version, threshold=chosen.threshold,
             int8=int8, bytes=result["bytes"])
    return result, chosen


def scores_agree(a: Evaluation, b: Evaluation) -> float:
    """Largest score difference between two evaluations of the same photos (fp32 vs int8 report)."""
    return float(np.max(np.abs(a.scores - b.scores))) if len(a.scores) else 0.0
