"""Metrics against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from nordlys.train import metrics

# 10 photos: 4 auroras, 6 others. At threshold 0.5: TP 3 (0.9, 0.8, 0.6), FN 1 (0.3),
# FP 2 (0.7, 0.55), TN 4 (0.1, 0.2, 0.4, 0.45).
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.55, 0.1, 0.2, 0.4, 0.45])


def test_confusion_and_ratios_by_hand() -> None:
    c = metrics.confusion(Y, S, 0.5)
    assert c == {"tp": 3, "fp": 2, "tn": 4, "fn": 1}
    m = metrics.from_confusion(**c)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["fpr"] == pytest.approx(2 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))


def test_undefined_ratios_are_none_not_zero() -> None:
    m = metrics.from_confusion(tp=0, fp=1, tn=3, fn=0)
    assert m["recall"] is None and m["balanced_accuracy"] is None and m["fpr"] == pytest.approx(0.25)


def test_roc_auc_by_hand_with_a_tie() -> None:
    # pairs (aurora, other): 0.9 beats 3/3, 0.5 ties one 0.5 and beats 0.2 -> 1.5/3, 0.1 beats 0/3
    auc = metrics.roc_auc(np.array([1, 1, 1, 0, 0, 0]), np.array([0.9, 0.5, 0.1, 0.5, 0.2, 0.95]))
    assert auc == pytest.approx((2 + 1.5 + 0) / 9)
    assert metrics.roc_auc(np.array([0, 0]), np.array([0.1, 0.2])) is None


def test_roc_curve_runs_from_origin_to_corner() -> None:
    fpr, tpr = metrics.roc_curve(Y, S)
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_threshold_rule_respects_fpr_limit_and_prefers_half() -> None:
    t = metrics.choose_threshold(Y, S, max_fpr=0.0)
    assert metrics.confusion(Y, S, t)["fp"] == 0
    assert 0.7 < t <= 0.8  # only above 0.7 is fpr 0; recall 2/4 there (0.9 and 0.8)
    # perfectly separable scores: every threshold in the gap is best; the rule takes 0.5
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert metrics.choose_threshold(y, s) == 0.5


def test_summary_per_kind() -> None:
    kinds = ["photo"] * 4 + ["hard_negative", "hard_negative", "everyday", "everyday", "everyday", "everyday"]
    s = metrics.summary(Y, S, 0.5, kinds)
    assert s["per_kind"]["hard_negative"]["fpr"] == pytest.approx(1.0)
    assert s["per_kind"]["everyday"]["fpr"] == pytest.approx(0.0)
    assert s["per_kind"]["photo"]["recall"] == pytest.approx(0.75)
    assert s["per_kind"]["hard_negative"]["recall"] is None
    assert s["roc_auc"] == pytest.approx(metrics.roc_auc(Y, S))
