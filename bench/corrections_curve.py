"""How many corrections does it take to fix a systematic mistake? `python -m bench.corrections_curve`

The mistake: hard negatives (kind=hard_negative in ../shared/data) that the bundled model calls
aurora. They are split by group into a pool the user corrects (moves to other/) and a held-out
pool of the same mistake the retrained model never sees. For N = 5, 10, 20, 40 corrections the
head is refitted exactly as `nordlys retrain` does (train.retrain.fit_head: the original
training split, less the mistake pool, plus N corrections weighted CORRECTION_WEIGHT) and we
report how many held-out mistakes are fixed, and the validation balanced accuracy before and
after (the retrain gate: at most VAL_TOLERANCE lower). Backbone features are computed once.
Repeated with several random orders of the correction pool; prints JSON lines and a table.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import onnx

from nordlys.daemon.contract import from_metadata
from nordlys.daemon.paths import bundled_model_path
from nordlys.train import data
from nordlys.train.retrain import (CORRECTION_WEIGHT, VAL_TOLERANCE, Labelled, balanced_accuracy, extract,
                                   find_head, fit_head, predict)


def load_features(model: Path, manifest: Path, cache: Path) -> dict:
    """Features, live scores, targets, kinds, groups and split of every photo (cached in `cache`)."""
    if cache.is_file():
        return dict(np.load(cache, allow_pickle=True))
    samples = data.assign_hash_groups(data.read_manifest(manifest))
    train, val = data.split_by_group(samples, val_fraction=0.2, seed=0)  # the bundled model's recipe
    ordered = [*train, *val]
    feats = extract(model, [Labelled(s.path, s.target) for s in ordered])
    kept = {p.path for p in feats.kept}
    ordered = [s for s in ordered if s.path in kept]
    val_paths = {s.path for s in val}
    out = {"x": feats.x, "scores": feats.scores, "y": np.array([s.target for s in ordered]),
           "kind": np.array([s.kind for s in ordered]), "group": np.array([s.group or str(s.path) for s in ordered]),
           "is_val": np.array([s.path in val_paths for s in ordered])}
    np.savez(cache, **out)
    return out


def theme_of_hard_negatives(x: np.ndarray, candidates: np.ndarray, scores: np.ndarray, k: int = 8) -> np.ndarray:
    """A theme: the k-means cluster (on backbone features) of training-split hard negatives whose
    photos the bundled model finds most aurora-like (highest mean score)."""
    rng = np.random.default_rng(0)
    pts = x[candidates]
    centres = pts[rng.choice(len(pts), k, replace=False)]
    for _ in range(30):
        assign = ((pts[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([pts[assign == c].mean(0) if (assign == c).any() else centres[c] for c in range(k)])
    best = max(range(k), key=lambda c: float(scores[candidates[assign == c]].mean()) if (assign == c).any() else -1.0)
    return candidates[assign == best]


def split_three(photos: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three parts of about equal size, in a seeded random order of photos. Photos of one
    near-duplicate group (data.assign_hash_groups: names starting "dup-") stay together; other
    groups are whole source repositories, one of which holds most of the theme, so those are split."""
    order = list(photos)
    random.Random(0).shuffle(order)
    key = [group[i] if str(group[i]).startswith("dup-") else f"photo-{i}" for i in order]
    parts: list[list[int]] = [[], [], []]
    where: dict[str, int] = {}
    for i, k in zip(order, key):
        if k not in where:
            where[k] = min(range(3), key=lambda j: len(parts[j]))
        parts[where[k]].append(i)
    return tuple(np.array(sorted(part), dtype=int) for part in parts)  # type: ignore[return-value]


def run(model: Path, manifest: Path, counts: list[int], repeats: int, cache: Path,
        weight: float = CORRECTION_WEIGHT) -> list[dict]:
    f = load_features(model, manifest, cache)
    onnx_model = onnx.load(str(model))
    meta = from_metadata({p.key: p.value for p in onnx_model.metadata_props})
    head, t, pos = find_head(onnx_model), meta.threshold, meta.positive_index
    x, y, is_val = f["x"], f["y"], f["is_val"]
    train_idx = np.flatnonzero(~is_val)
    theme = theme_of_hard_negatives(x, np.flatnonzero((~is_val) & (f["kind"] == "hard_negative")), f["scores"])
    # The bundled model gets (almost) all of these right, so the mistake is planted: a third of the
    # theme sits in the original training data labelled aurora (as a scraped data set might have
    # it), which makes a head trained on it call the theme aurora. The rest of the theme is split
    # into the photos the user corrects (pool) and held-out ones that measure the fix.
    cause, test, pool = split_three(theme, f["group"])
    val = np.flatnonzero(is_val)
    labels = y.copy()
    labels[cause] = 1
    base = np.concatenate([np.setdiff1d(train_idx, theme), cause])  # the original data, mistake included
    base_w = np.where(np.isin(base, cause), 3.0, 1.0)
    w0, b0 = fit_head(x[base], labels[base], base_w, head.weight, head.bias, positive=pos, steps=4000)  # converged
    ba_bundled = balanced_accuracy(y[val], f["scores"][val], t)
    ba_before = balanced_accuracy(y[val], predict(x[val], w0, b0, pos), t)
    wrong_before = int(np.sum(predict(x[test], w0, b0, pos) >= t))
    print(f"theme: {len(theme)} training-split hard negatives ({len(cause)} mislabelled aurora in the training "
          f"data, {len(pool)} to correct, {len(test)} held out); "
          f"the mistaken model calls {wrong_before}/{len(test)} held-out ones aurora "
          f"(bundled: {int(np.sum(f['scores'][test] >= t))}); validation balanced accuracy "
          f"bundled {ba_bundled:.4f}, mistaken {ba_before:.4f} ({len(val)} photos)")
    rows = []
    for n in counts:
        if n > len(pool):
            break
        for r in range(repeats):
            chosen = np.array(random.Random(r).sample(list(pool), n), dtype=int)
            idx = np.concatenate([base, chosen]).astype(int)
            targets = np.concatenate([labels[base], np.zeros(n, dtype=int)])
            weights = np.concatenate([base_w, np.full(n, weight)])
            w, b = fit_head(x[idx], targets, weights, w0, b0, positive=pos)
            still_wrong = int(np.sum(predict(x[test], w, b, pos) >= t))
            ba_after = balanced_accuracy(y[val], predict(x[val], w, b, pos), t)
            rows.append({"corrections": n, "repeat": r, "held_out": len(test), "wrong_before": wrong_before,
                         "fixed": wrong_before - still_wrong, "val_ba_before": round(ba_before, 4),
                         "val_ba_after": round(ba_after, 4),
                         "gate": bool(n > 0 and still_wrong < wrong_before and ba_before - ba_after <= VAL_TOLERANCE)})
            print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.corrections_curve", description=__doc__)
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--manifest", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "manifest.csv")
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 5, 10, 20, 40])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weight", type=float, default=CORRECTION_WEIGHT, help="what one correction counts for")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/nordlys-corrections-features.npz"))
    args = parser.parse_args()
    rows = run(args.model, args.manifest, args.counts, args.repeats, args.cache, args.weight)
    print("corrections  fixed/wrong held-out (mean)  val BA after (min)  gate passed")
    for n in sorted({r["corrections"] for r in rows}):
        sel = [r for r in rows if r["corrections"] == n]
        print(f"{n:>11}  {np.mean([r['fixed'] for r in sel]):>6.1f}/{sel[0]['wrong_before']:<14}"
              f"{min(r['val_ba_after'] for r in sel):>10.4f}          {sum(r['gate'] for r in sel)}/{len(sel)}")


if __name__ == "__main__":
    main()
