"""Classification metrics as pure numpy functions: labels (1 = aurora) and scores in, numbers out.

Torch-free: training, export's int8 gate and `nordlys eval` all measure with these, so a number
in metrics.json means the same thing wherever it was written. A ratio whose denominator is zero
(recall on a set without auroras, say) is None, not 0: "not measurable" is not "bad".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_MAX_FPR = 0.02  # threshold rule: at most this share of other photos called aurora


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def confusion(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at `score >= threshold` = aurora: tp, fp, tn, fn."""
    y, pred = np.asarray(y_true).astype(bool), np.asarray(scores) >= threshold
    return {"tp": int(np.sum(y & pred)), "fp": int(np.sum(~y & pred)),
            "tn": int(np.sum(~y & ~pred)), "fn": int(np.sum(y & ~pred))}


def from_confusion(tp: int, fp: int, tn: int, fn: int) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, precision, recall (of aurora), F1, false-positive rate."""
    recall, fpr = _ratio(tp, tp + fn), _ratio(fp, fp + tn)
    precision = _ratio(tp, tp + fp)
    specificity = None if fpr is None else 1.0 - fpr
    balanced = None if recall is None or specificity is None else (recall + specificity) / 2
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"accuracy": _ratio(tp + tn, tp + fp + tn + fn), "balanced_accuracy": balanced,
            "precision": precision, "recall": recall, "f1": f1, "fpr": fpr}


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Probability that a random aurora outscores a random other photo (ties count half)."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg)))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct score used as threshold, from (0,0) to (1,1)."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    cuts = np.concatenate([[np.inf], np.unique(s)[::-1]])
    tpr = np.array([np.sum(y & (s >= c)) for c in cuts]) / max(1, y.sum())
    fpr = np.array([np.sum(~y & (s >= c)) for c in cuts]) / max(1, (~y).sum())
    return fpr, tpr


def threshold_sweep(y_true: np.ndarray, scores: np.ndarray, thresholds: Sequence[float]) -> list[dict]:
    """Metrics at each threshold, for the report's sweep table."""
    rows = []
    for t in thresholds:
        c = confusion(y_true, scores, float(t))
        rows.append({"threshold": float(t), **c, **from_confusion(**c)})
    return rows


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, *, max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """The documented threshold rule, applied to validation scores of the model being shipped:

    among thresholds halfway between neighbouring distinct scores (and 0.5), keep those whose
    false-positive rate is at most `max_fpr`; pick the highest balanced accuracy; break ties by
    the threshold nearest 0.5 (the model's own decision point, where it is least tuned to noise).
    """
    s = np.unique(np.asarray(scores, dtype=np.float64))
    candidates = np.unique(np.concatenate([[0.5], (s[1:] + s[:-1]) / 2, [min(1.0, s[-1] + 1e-6)]]))
    best: tuple[float, float, float] | None = None
    for t in candidates:
        m = from_confusion(**confusion(y_true, scores, float(t)))
        if m["fpr"] is None or m["fpr"] > max_fpr or m["balanced_accuracy"] is None:
            continue
        key = (round(m["balanced_accuracy"], 12), -abs(float(t) - 0.5), float(t))
        best = key if best is None or key > best else best
    return 0.5 if best is None else best[2]


def summary(y_true: np.ndarray, scores: np.ndarray, threshold: float,
            kinds: Sequence[str] | None = None) -> dict:
    """Overall metrics, ROC-AUC and confusion matrix; per kind when kinds are given."""
    y, s = np.asarray(y_true), np.asarray(scores)
    c = confusion(y, s, threshold)
    out: dict = {"threshold": float(threshold), "count": int(len(y)), **c, **from_confusion(**c),
                 "roc_auc": roc_auc(y, s)}
    if kinds is not None and any(kinds):
        k = np.asarray(kinds)
        out["per_kind"] = {}
        for kind in sorted(set(kinds)):
            sel = k == kind
            ck = confusion(y[sel], s[sel], threshold)
            out["per_kind"][kind or "(none)"] = {"count": int(sel.sum()), **ck, **from_confusion(**ck)}
    return out
