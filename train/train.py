"""Train an aurora/other classifier. Reads top to bottom:
train_one_epoch -> evaluate -> load_data -> main(args) -> get_args_parser().

A run directory holds everything export needs and nothing else has to be remembered:
checkpoint.pt (weights + resolved config + model arguments), config.json, split.csv (which photo
went where), metrics.json (per-epoch history and the kept epoch's validation metrics) and
curve.png.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import structlog
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from nordlys.daemon.loader import ImageLoadError, load_image
from nordlys.daemon.progress import ProgressBar
from nordlys.train import data, metrics, models, options, presets
from nordlys.train.curve import plot_curve

log = structlog.get_logger(__name__)


class RamDataset(Dataset):
    """Photos decoded once into RAM (uint8), augmented on every draw."""

    def __init__(self, images: Sequence[torch.Tensor], targets: Sequence[int], transform: presets.TrainPreset) -> None:
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.targets[i]


@dataclass
class ValSet:
    """Validation photos as the daemon's loader produced them (uint8 NHWC), plus their labels."""

    pixels: np.ndarray
    targets: np.ndarray
    samples: list[data.Sample]


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, loader: DataLoader,
                    device: torch.device, epoch: int, label: str = "") -> float:
    """One pass over `loader`; returns the mean training loss. BN statistics stay frozen."""
    models.train_mode(model)
    total, count = 0.0, 0
    with ProgressBar(len(loader), label=f"{label} epoch {epoch}".strip()) as bar:
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(targets)
            count += len(targets)
            bar.advance(suffix=f"loss={total / count:.4f}")
    return total / max(count, 1)


@torch.no_grad()
def predict_scores(model: nn.Module, pixels: np.ndarray, *, mean: Sequence[float], std: Sequence[float],
                   device: torch.device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and aurora probabilities for uint8 NHWC pixels, normalised like the classifier."""
    model.eval()
    logits = []
    for i in range(0, len(pixels), batch_size):
        batch = np.stack([presets.normalise(p, mean=mean, std=std) for p in pixels[i:i + batch_size]])
        logits.append(model(torch.from_numpy(batch).to(device)).float().cpu())
    out = torch.cat(logits)
    return out.numpy(), torch.softmax(out, dim=1)[:, 1].numpy()


def evaluate(model: nn.Module, val: ValSet, *, mean: Sequence[float], std: Sequence[float],
             device: torch.device, batch_size: int) -> tuple[dict, np.ndarray]:
    """Validation loss (mean of the per-class mean cross-entropy, so the big class cannot hide the
    small one), ROC-AUC, and metrics at 0.5; returns them and the scores."""
    logits, scores = predict_scores(model, val.pixels, mean=mean, std=std, device=device, batch_size=batch_size)
    ce = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val.targets), reduction="none").numpy()
    val_loss = float(np.mean([ce[val.targets == t].mean() for t in np.unique(val.targets)]))
    at_half = metrics.from_confusion(**metrics.confusion(val.targets, scores, 0.5))
    return {"val_loss": val_loss, "val_roc_auc": metrics.roc_auc(val.targets, scores),
            "val_balanced_accuracy": at_half["balanced_accuracy"]}, scores


def decode_all(samples: Sequence[data.Sample], decode: Callable[[Path], Any], label: str) -> tuple[list, list[data.Sample]]:
    """Decode each photo once; an unreadable one is logged and left out, not fatal."""
    kept, out = [], []
    with ProgressBar(len(samples), label=label) as bar:
        for s in samples:
            try:
                out.append(decode(s.path))
                kept.append(s)
            except ImageLoadError as exc:
                log.warning("skipped", path=str(s.path), reason=exc.reason)
            bar.advance()
    return out, kept


def load_data(samples: Sequence[data.Sample], cfg: dict) -> tuple[RamDataset, WeightedRandomSampler, ValSet, list, list]:
    """Split (by group, or by perceptual hash without groups), decode once, build the sampler."""
    samples = data.assign_hash_groups(samples)
    train_s, val_s = data.split_by_group(samples, val_fraction=cfg["val_fraction"], seed=cfg["seed"])
    size, resize = cfg["input_size"], cfg["resize"]
    cache_side = round(size * cfg["cache_scale"])
    train_images, train_s = decode_all(
        train_s, lambda p: presets.decode_for_training(p, short_side=cache_side), "decode train")
    val_pixels, val_s = decode_all(val_s, lambda p: load_image(p, size=size, resize=resize), "decode val")
    transform = presets.TrainPreset(size=size, resize=resize, mean=cfg["mean"], std=cfg["std"], seed=cfg["seed"],
                                    augment=cfg["augment"])
    dataset = RamDataset(train_images, [s.target for s in train_s], transform)
    weights = data.balanced_weights(train_s, hard_negative_weight=cfg["hard_negative_weight"])
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(train_s),
                                    replacement=True, generator=torch.Generator().manual_seed(cfg["seed"]))
    val = ValSet(np.stack(val_pixels), np.array([s.target for s in val_s]), list(val_s))
    return dataset, sampler, val, list(train_s), list(val_s)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg: dict, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW, the backbone at a fraction of the head's rate; cosine decay over all steps."""
    params = models.set_trainable(model, cfg["backbone"], mode=cfg["mode"], unfreeze=cfg["unfreeze"])
    head_ids = {id(p) for p in models.head(model, cfg["backbone"]).parameters()}
    groups = [{"params": [p for p in params if id(p) in head_ids], "lr": cfg["lr"]},
              {"params": [p for p in params if id(p) not in head_ids], "lr": cfg["lr"] * cfg["backbone_lr_scale"]}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    return optimizer, scheduler


def main(args: argparse.Namespace) -> dict:
    """Train, keep the epoch with the lowest validation loss, write the run directory."""
    cfg = resolve_config(args)
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg["seed"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = torch.device("cuda" if torch.cuda.is_available() and not cfg["cpu"] else "cpu")
    started = time.monotonic()
    samples = data.read_samples(data_dir=args.data, manifest=args.manifest)
    if cfg["cv"]:
        from nordlys.train import cv  # imports this module: only here, not at the top

        return cv.main(cfg, samples, out, device)
    # the weights before the photos: a failed download is reported at once, not after decoding them all
    model = models.build_model(cfg["backbone"], num_classes=len(data.LABELS), weights=cfg["weights"]).to(device)
    dataset, sampler, val, train_s, val_s = load_data(samples, cfg)
    data.write_split(out / "split.csv", train_s, val_s)
    loader = DataLoader(dataset, batch_size=cfg["batch_size"], sampler=sampler, num_workers=0, drop_last=len(dataset) > cfg["batch_size"])
    optimizer, scheduler = build_optimizer(model, cfg, cfg["epochs"] * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    history, best, best_state, stale = [], None, None, 0
    for epoch in range(1, cfg["epochs"] + 1):
        train_loss = train_one_epoch(model, criterion, optimizer, scheduler, loader, device, epoch)
        row, _ = evaluate(model, val, mean=cfg["mean"], std=cfg["std"], device=device, batch_size=cfg["batch_size"])
        history.append({"epoch": epoch, "train_loss": train_loss, **row, "elapsed_s": time.monotonic() - started})
        log.info("epoch", **history[-1])
        if best is None or row["val_loss"] < best["val_loss"]:
            best, stale = history[-1], 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg["patience"]:
                log.info("early_stop", epoch=epoch, best_epoch=best["epoch"], patience=cfg["patience"])
                break
    model.load_state_dict(best_state)
    return write_run(out, model, cfg, history, best, val, train_s, device, time.monotonic() - started)


def write_run(out: Path, model: nn.Module, cfg: dict, history: list, best: dict, val: ValSet,
              train_s: list, device: torch.device, seconds: float) -> dict:
    """checkpoint.pt, config.json, metrics.json, curve.png; validation metrics at the threshold rule."""
    _, scores = predict_scores(model, val.pixels, mean=cfg["mean"], std=cfg["std"], device=device, batch_size=cfg["batch_size"])
    threshold = metrics.choose_threshold(val.targets, scores, max_fpr=cfg["max_fpr"])
    result = {"best_epoch": best["epoch"], "history": history, "training_seconds": round(seconds, 1),
              "data": {"train": data.summarise(train_s), "val": data.summarise(val.samples)},
              "val": metrics.summary(val.targets, scores, threshold, [s.kind for s in val.samples]),
              "val_at_0.5": metrics.summary(val.targets, scores, 0.5, [s.kind for s in val.samples])}
    model_args = {"backbone": cfg["backbone"], "num_classes": len(data.LABELS), "labels": list(data.LABELS)}
    torch.save({"model_state": model.state_dict(), "config": cfg, "model_args": model_args,
                "epoch": best["epoch"], "threshold": threshold}, out / "checkpoint.pt")
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_curve(history, out / "curve.png", best_epoch=best["epoch"])
    log.info("run_written", run=str(out), best_epoch=best["epoch"], threshold=threshold,
             recall=result["val"]["recall"], fpr=result["val"]["fpr"], seconds=round(seconds, 1))
    return result


def resolve_config(args: argparse.Namespace) -> dict:
    """Every value the run used, JSON-able, stored in the checkpoint and config.json."""
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
           if k not in ("func", "config", "verbose", "overwrite")}  # the CLI's, not the run's
    cfg["mean"], cfg["std"] = list(presets.IMAGENET_MEAN), list(presets.IMAGENET_STD)
    if cfg["weights"] is None:
        cfg["weights"] = "imagenet"
    if cfg["unfreeze"] is None:
        cfg["unfreeze"] = 1 if cfg["backbone"] == "resnet50" else 5
    return cfg


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nordlys train", description=__doc__.splitlines()[0])
    options.add_arguments(parser)
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
