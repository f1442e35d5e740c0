"""`nordlys train --cv K`: choose the epoch count and the threshold by K-fold cross-validation
over groups, then train the model to ship on all photos. Reads top to bottom:
fit -> cross_validate -> choose -> summarise -> main.

Why: a single validation split of a few dozen auroras that also picks the epoch and the
threshold flatters the model. Here every photo is scored once by a model that never saw its group
(out-of-fold); the epoch count is the one with the lowest mean held-out loss over the folds, the
threshold is chosen by the usual rule on the pooled out-of-fold scores, and the figures reported
are those out-of-fold scores at that threshold: mean and sd over folds, and pooled.

The run directory is a normal run (checkpoint.pt of the model trained on all photos, split.csv
with every photo on the train side, metrics.json) plus oof.csv (every photo's out-of-fold score)
and folds/<k>/, each itself a run directory of that fold's model at the chosen epoch, whose
split.csv holds out the fold: `nordlys export` scores each fold model on its own held-out photos
as the daemon would, so the shipped figures and the int8 gate are out-of-fold too.
"""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import structlog
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from nordlys.train import data, features, metrics, models
from nordlys.train.curve import plot_curve
from nordlys.train.train import build_optimizer, seed_everything, train_one_epoch

log = structlog.get_logger(__name__)


class ViewDataset(Dataset):
    """Cached prefix features; each draw takes one of the photo's augmented views at random."""

    def __init__(self, views: torch.Tensor, targets: np.ndarray, seed: int) -> None:
        self.views, self.targets, self.rng = views, targets, random.Random(seed)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.views[i, self.rng.randrange(self.views.shape[1])].float(), int(self.targets[i])


def prefix_stages(cfg: dict) -> int:
    """How many stages are frozen, hence cached: all of them in head mode."""
    model = models.build_model(cfg["backbone"], num_classes=len(data.LABELS), weights="none")
    n = len(models.stages(model, cfg["backbone"]))
    return n if cfg["mode"] == "head" else n - cfg["unfreeze"]


def new_model(cfg: dict, device: torch.device) -> nn.Module:
    return models.build_model(cfg["backbone"], num_classes=len(data.LABELS), weights=cfg["weights"]).to(device)


@torch.no_grad()
def logits_of(suffix: nn.Module, evals: torch.Tensor, device: torch.device, batch: int) -> np.ndarray:
    suffix.eval()
    return torch.cat([suffix(x.to(device)).float().cpu() for x in features.eval_batches(evals, batch)]).numpy()


def balanced_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes of the mean cross-entropy: the small class cannot hide in the big one."""
    ce = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets), reduction="none").numpy()
    return float(np.mean([ce[targets == t].mean() for t in np.unique(targets)]))


def scores_of(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1)[:, 1].numpy()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The learnt part of the state (BN statistics are frozen): what differs between epochs."""
    return {k: p.detach().cpu().clone() for k, p in model.named_parameters() if p.requires_grad}


def fit(cache: features.FeatureCache, idx: np.ndarray, cfg: dict, at: int, device: torch.device, *,
        epochs: int, label: str, on_epoch: Callable[[int, nn.Module, nn.Module, float], None] | None = None) -> nn.Module:
    """Train a fresh model's suffix on the cached views of photos `idx` for `epochs` epochs. The
    learning-rate schedule always spans cfg["epochs"], so stopping at epoch e in a fold and
    training e epochs on all photos follow the same schedule."""
    seed_everything(cfg["seed"])
    model = new_model(cfg, device)
    _, suffix = models.split(model, cfg["backbone"], at=at)
    samples = [cache.samples[i] for i in idx]
    dataset = ViewDataset(cache.views[idx], features.targets_of(samples), cfg["seed"])
    weights = data.balanced_weights(samples, hard_negative_weight=cfg["hard_negative_weight"])
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(samples),
                                    replacement=True, generator=torch.Generator().manual_seed(cfg["seed"]))
    loader = DataLoader(dataset, batch_size=cfg["batch_size"], sampler=sampler, num_workers=0,
                        drop_last=len(dataset) > cfg["batch_size"])
    optimizer, scheduler = build_optimizer(model, cfg, cfg["epochs"] * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    for epoch in range(1, epochs + 1):
        loss = train_one_epoch(suffix, criterion, optimizer, scheduler, loader, device, epoch, label=label)
        if on_epoch is not None:
            on_epoch(epoch, model, suffix, loss)
    return model


def cross_validate(cache: features.FeatureCache, folds: np.ndarray, cfg: dict, at: int,
                   device: torch.device) -> tuple[np.ndarray, list[list[dict]], list[list[dict]]]:
    """Every fold trains cfg["epochs"] epochs; after each, its held-out photos are scored.
    Returns out-of-fold logits (epochs, N, 2), per-fold per-epoch rows, per-fold per-epoch states."""
    n, k = len(cache.samples), int(folds.max()) + 1
    oof = np.zeros((cfg["epochs"], n, len(data.LABELS)), dtype=np.float32)
    rows: list[list[dict]] = []
    states: list[list[dict]] = []
    targets = features.targets_of(cache.samples)
    for fold in range(k):
        held, train_idx = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
        fold_rows: list[dict] = []
        fold_states: list[dict] = []

        def on_epoch(epoch: int, model: nn.Module, suffix: nn.Module, loss: float) -> None:
            logits = logits_of(suffix, cache.evals[held], device, cfg["batch_size"])
            oof[epoch - 1, held] = logits
            s = scores_of(logits)
            fold_rows.append({"fold": fold + 1, "epoch": epoch, "train_loss": loss,
                              "val_loss": balanced_loss(logits, targets[held]),
                              "val_roc_auc": metrics.roc_auc(targets[held], s)})
            fold_states.append(trainable_state(model))
            log.info("cv_epoch", **fold_rows[-1])

        fit(cache, train_idx, cfg, at, device, epochs=cfg["epochs"], label=f"fold {fold + 1}/{k}", on_epoch=on_epoch)
        rows.append(fold_rows)
        states.append(fold_states)
    return oof, rows, states


def choose_epochs(rows: list[list[dict]]) -> int:
    """The epoch count with the lowest held-out loss averaged over folds (ties: fewer epochs)."""
    epochs = len(rows[0])
    mean = [np.mean([r[e]["val_loss"] for r in rows]) for e in range(epochs)]
    return int(np.argmin(mean)) + 1


def mean_sd(values: Sequence[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def summarise(samples: Sequence[data.Sample], folds: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Pooled out-of-fold metrics, per-fold metrics, and their mean +- sd (overall and per kind)."""
    targets, kinds = features.targets_of(samples), [s.kind for s in samples]
    pooled = metrics.summary(targets, scores, threshold, kinds)
    per_fold = []
    for fold in range(int(folds.max()) + 1):
        sel = folds == fold
        per_fold.append(metrics.summary(targets[sel], scores[sel], threshold, [k for k, m in zip(kinds, sel) if m]))
    keys = ("recall", "fpr", "balanced_accuracy", "accuracy", "roc_auc")
    spread = {key: mean_sd([f[key] for f in per_fold]) for key in keys}
    spread["per_kind"] = {kind: {key: mean_sd([f.get("per_kind", {}).get(kind, {}).get(key) for f in per_fold])
                                 for key in ("recall", "fpr")}
                          for kind in pooled.get("per_kind", {})}
    return {"pooled": pooled, "per_fold": per_fold, "mean_sd": spread}


def write_oof(path: Path, samples: Sequence[data.Sample], folds: np.ndarray, scores: np.ndarray) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "group", "kind", "fold", "score"])
        for s, f, sc in zip(samples, folds, scores):
            w.writerow([str(s.path), data.LABELS[s.target], s.group, s.kind, int(f) + 1, f"{float(sc):.6f}"])


def save_run(out: Path, model: nn.Module, cfg: dict, *, epoch: int, threshold: float, train: Sequence[data.Sample],
             val: Sequence[data.Sample], result: dict) -> None:
    """checkpoint.pt, config.json, split.csv, metrics.json: what `nordlys export` reads."""
    out.mkdir(parents=True, exist_ok=True)
    model_args = {"backbone": cfg["backbone"], "num_classes": len(data.LABELS), "labels": list(data.LABELS)}
    torch.save({"model_state": model.state_dict(), "config": cfg, "model_args": model_args,
                "epoch": epoch, "threshold": threshold}, out / "checkpoint.pt")
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    data.write_split(out / "split.csv", train, val)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")


def main(cfg: dict, samples: Sequence[data.Sample], out: Path, device: torch.device) -> dict:
    """Cross-validate, train on everything for the chosen epoch count, write the run directory."""
    started = time.monotonic()
    at = prefix_stages(cfg)
    prefix, _ = models.split(new_model(cfg, device), cfg["backbone"], at=at)
    cache = features.load_or_build(data.assign_hash_groups(samples), prefix, cfg, at, device)
    folds = np.array(data.group_folds(cache.samples, folds=cfg["cv"], seed=cfg["seed"]))
    oof, rows, states = cross_validate(cache, folds, cfg, at, device)
    best = choose_epochs(rows)
    scores = scores_of(oof[best - 1])
    threshold = metrics.choose_threshold(features.targets_of(cache.samples), scores, max_fpr=cfg["max_fpr"])
    cv = summarise(cache.samples, folds, scores, threshold)
    history = [{"epoch": e + 1, **{key: float(np.mean([r[e][key] for r in rows]))
                                   for key in ("train_loss", "val_loss", "val_roc_auc")}}
               for e in range(cfg["epochs"])]
    log.info("cv_done", epochs=best, threshold=threshold, recall=cv["pooled"]["recall"], fpr=cv["pooled"]["fpr"],
             balanced_accuracy=cv["pooled"]["balanced_accuracy"], seconds=round(time.monotonic() - started, 1))
    everyone = cache.samples
    for fold in range(cfg["cv"]):
        model = new_model(cfg, device)
        model.load_state_dict(states[fold][best - 1], strict=False)
        held = [s for s, f in zip(everyone, folds) if f == fold]
        rest = [s for s, f in zip(everyone, folds) if f != fold]
        fold_scores = scores[folds == fold]
        save_run(out / "folds" / str(fold + 1), model, {**cfg, "fold": fold + 1}, epoch=best, threshold=threshold,
                 train=rest, val=held, result={
                     "best_epoch": best, "history": [r for r in rows[fold]],
                     "data": {"train": data.summarise(rest), "val": data.summarise(held)},
                     "val": metrics.summary(features.targets_of(held), fold_scores, threshold, [s.kind for s in held])})
    model = fit(cache, np.arange(len(everyone)), cfg, at, device, epochs=best, label="all photos")
    seconds = time.monotonic() - started
    result = {"best_epoch": best, "history": history, "training_seconds": round(seconds, 1),
              "feature_seconds": round(cache.seconds, 1), "features_from_cache": cache.from_cache,
              "validation": f"{cfg['cv']}-fold cross-validation over groups, out-of-fold scores",
              "data": {"train": data.summarise(everyone), "val": data.summarise(everyone)},
              "val": cv["pooled"], "val_at_0.5": metrics.summary(features.targets_of(everyone), scores, 0.5,
                                                                 [s.kind for s in everyone]),
              "cv": {"folds": cfg["cv"], "epochs_chosen": best, "per_fold": cv["per_fold"],
                     "mean_sd": cv["mean_sd"], "per_fold_history": rows}}
    save_run(out, model, cfg, epoch=best, threshold=threshold, train=everyone, val=[], result=result)
    write_oof(out / "oof.csv", everyone, folds, scores)
    plot_curve(history, out / "curve.png", best_epoch=best)
    log.info("run_written", run=str(out), best_epoch=best, threshold=threshold, recall=cv["pooled"]["recall"],
             fpr=cv["pooled"]["fpr"], seconds=round(seconds, 1))
    return result
