"""Reproduce the bundled default model from scratch: `python -m nordlys.export.default_model`.

Cross-validates MobileNetV2 (offline ImageNet weights from ../shared/weights) on ../shared/data
over groups, trains it on all photos, exports it (int8 when it passes the out-of-fold gate, fp32
otherwise), writes daemon/models/default.onnx and MODEL_CARD.md beside it. The recipe lives here as plain values so the model card and the model
cannot describe different things. Lives in export/ because it drives both train and export.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import structlog

from nordlys.export.evaluate import Evaluation
from nordlys.export.export import Int8Refused, export_measured
from nordlys.export.model_card import render_card
from nordlys.export.report import write_report

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The recipe: `nordlys train` arguments besides data, weights and output folder.
RECIPE = [
    "--backbone", "mobilenet_v2",
    "--mode", "finetune", "--unfreeze", "5",  # the last 5 of MobileNetV2's 19 feature stages
    "--input-size", "224", "--resize", "squash",  # squash keeps sky at the frame's edges
    "--augment", "phone",
    "--cv", "5", "--views", "8", "--epochs", "10",  # the epoch count (<= 10) is chosen by the folds
    "--batch-size", "32", "--lr", "3e-4", "--backbone-lr-scale", "0.3",
    "--max-fpr", "0.01", "--seed", "0", "--threads", "2",
]


def licence_summary(manifest: Path) -> dict[str, Counter]:
    """Photo counts per source licence and per label, from the manifest's own columns."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {"license": Counter(r.get("license", "?") or "?" for r in rows),
            "label": Counter(r["label"] for r in rows), "kind": Counter(r.get("kind", "") for r in rows),
            "sources": Counter(r.get("source_repo", "") for r in rows)}


def misses(ev: Evaluation) -> list[tuple[str, float, str, str]]:
    """(true label, score, kind, file) of every photo the evaluation misfiles, by label then score."""
    wrong = [(("aurora" if s.target else "other"), float(sc), s.kind, s.path.name)
             for s, sc in zip(ev.samples, ev.scores) if (sc >= ev.threshold) != bool(s.target)]
    return sorted(wrong, key=lambda r: (r[0], r[1]))


def fold_spread(ev: Evaluation, run_dir: Path) -> dict:
    """Mean +- sd over folds of the shipped precision's out-of-fold scores (fold from oof.csv)."""
    import numpy as np

    from nordlys.train.cv import summarise

    with (run_dir / "oof.csv").open(newline="", encoding="utf-8") as fh:
        fold_of = {row["file"]: int(row["fold"]) - 1 for row in csv.DictReader(fh)}
    folds = np.array([fold_of[str(s.path)] for s in ev.samples])
    return summarise(ev.samples, folds, ev.scores, ev.threshold)["mean_sd"]


def build(*, manifest: Path, weights: Path, run_dir: Path, out: Path, skip_train: bool,
          recipe: list[str] = RECIPE, feature_cache: Path | None = None) -> dict:
    """Train (unless skip_train and the run exists), export, write the card; returns the export result."""
    if not (skip_train and (run_dir / "checkpoint.pt").exists()):
        from nordlys.train.train import get_args_parser, main as train_main

        cache = ["--feature-cache", str(feature_cache)] if feature_cache else []
        args = get_args_parser().parse_args(["--manifest", str(manifest), "--weights", str(weights),
                                             "--output-dir", str(run_dir), *recipe, *cache])
        train_main(args)
    try:
        result, ev = export_measured(run_dir, out, int8=True)
    except Int8Refused as exc:
        log.warning("int8_refused", reason=str(exc))
        result, ev = export_measured(run_dir, out, int8=False)
        result["int8_refused"] = str(exc)
    train_metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(ev, run_dir / "oof_report")
    card = render_card(result=result, train_metrics=train_metrics, sources=licence_summary(manifest),
                       recipe=recipe, weights=weights.name, spread=fold_spread(ev, run_dir), misfiled=misses(ev))
    (out.parent / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    log.info("default_model_written", out=str(out), card=str(out.parent / "MODEL_CARD.md"), bytes=out.stat().st_size)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nordlys.export.default_model", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=SHARED / "data" / "manifest.csv")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2_from_onnx_int8_dequant.pth")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "default")
    parser.add_argument("--out", type=Path, default=REPO / "daemon" / "models" / "default.onnx")
    parser.add_argument("--skip-train", action="store_true", help="reuse --run-dir's checkpoint if it exists")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="keep the frozen stages' features here between builds (about 1.5 GB)")
    args = parser.parse_args(argv)
    build(manifest=args.manifest, weights=args.weights, run_dir=args.run_dir, out=args.out, skip_train=args.skip_train,
          feature_cache=args.feature_cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
