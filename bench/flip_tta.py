"""`python -m bench.flip_tta RUN`: would a horizontal-flip test-time augmentation pay?

Scores every photo of a cross-validated run (`nordlys train --cv K`) with its fold's model on the
mirror image, averages that with the photo's out-of-fold score (RUN/oof.csv), and prints both at
their own thresholds by the shipped rule. An accuracy measurement, not a speed one: the cost is
known (twice the model's work per photo). Issue 13 measured it; the daemon does not do it.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from nordlys.daemon.loader import load_image
from nordlys.train import metrics, models, presets


def flipped_scores(run: Path, rows: list[dict], cfg: dict) -> np.ndarray:
    out = np.zeros(len(rows))
    for fold in sorted({r["fold"] for r in rows}, key=int):
        ckpt = torch.load(run / "folds" / fold / "checkpoint.pt", map_location="cpu", weights_only=False)
        model = models.build_model(cfg["backbone"], num_classes=2, weights="none")
        model.load_state_dict(ckpt["model_state"])
        model.eval()
        idx = [i for i, r in enumerate(rows) if r["fold"] == fold]
        for j in range(0, len(idx), 64):
            batch = idx[j:j + 64]
            x = np.stack([presets.normalise(np.ascontiguousarray(load_image(
                Path(rows[i]["file"]), size=cfg["input_size"], resize=cfg["resize"])[:, ::-1]),
                mean=cfg["mean"], std=cfg["std"]) for i in batch])
            with torch.no_grad():
                out[batch] = torch.softmax(model(torch.from_numpy(x)), 1)[:, 1].numpy()
    return out


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    with (run / "oof.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cfg = json.loads((run / "config.json").read_text())
    torch.set_num_threads(cfg.get("threads") or 2)
    plain = np.array([float(r["score"]) for r in rows])
    y = np.array([int(r["label"] == "aurora") for r in rows])
    kinds = [r["kind"] for r in rows]
    both = (plain + flipped_scores(run, rows, cfg)) / 2
    print("| scores | threshold | recall | FPR | hard-neg. FPR | bal. acc. | ROC-AUC |\n|---|---|---|---|---|---|---|")
    for name, s in (("out-of-fold", plain), ("mean with the mirror image", both)):
        t = metrics.choose_threshold(y, s, max_fpr=cfg["max_fpr"])
        m = metrics.summary(y, s, t, kinds)
        hard = m["per_kind"].get("hard_negative", {}).get("fpr") or 0.0
        print(f"| {name} | {t:.4f} | {100 * m['recall']:.2f}% | {100 * m['fpr']:.2f}% | {100 * hard:.2f}% | "
              f"{100 * m['balanced_accuracy']:.2f}% | {m['roc_auc']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
