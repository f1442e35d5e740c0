"""The training-curve PNG: loss per epoch (train and validation) and validation ROC-AUC."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402


def plot_curve(history: Sequence[dict], path: Path, *, best_epoch: int) -> None:
    """`history`: one dict per epoch with epoch, train_loss, val_loss, val_roc_auc."""
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation (class-balanced)")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("cross-entropy"), ax1.legend()
    ax2.plot(epochs, [h["val_roc_auc"] or 0 for h in history], marker="o", color="tab:green")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("validation ROC-AUC")
    for ax in (ax1, ax2):
        ax.axvline(best_epoch, color="grey", linestyle=":", label="kept")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
