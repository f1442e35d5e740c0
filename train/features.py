"""Frozen-prefix features, computed once per photo and augmented view, for cross-validation.

The backbone's frozen stages (and their frozen BatchNorm) compute the same function in every
fold and in the final fit, and on a CPU they are most of the cost of a training step (MobileNetV2
at 224: about 22 of 28 ms per photo). So each photo is decoded once, `views` augmented copies go
through the prefix once, and every fold then trains only the suffix on those tensors, picking a
random view per draw. With views >= epochs this is the same training as augmenting on the fly;
with fewer, views repeat across epochs.

The evaluation input of each photo is the daemon's own pixels (`load_image`) through the same
prefix, so an out-of-fold score is the score the daemon would give that file (up to float16
storage of the features).

The cache can live on disk (`--feature-cache DIR`), keyed by everything that changes its
contents, so trying recipes that differ only in the suffix (learning rate, epochs, weighting)
does not recompute it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import structlog
import torch
from torch import nn

from nordlys.daemon.loader import ImageLoadError, load_image
from nordlys.daemon.progress import ProgressBar
from nordlys.train import data, presets

log = structlog.get_logger(__name__)

CHUNK = 32  # photos decoded and pushed through the prefix at a time: memory stays flat


@dataclass
class FeatureCache:
    """views: (N, V, C, H, W) float16 augmented training inputs of the suffix; evals: (N, C, H, W)
    float16 evaluation inputs; samples: the N readable photos, in the caller's order."""

    views: torch.Tensor
    evals: torch.Tensor
    samples: list[data.Sample]
    seconds: float = 0.0  # what computing them took (when read from the cache folder: back then)
    from_cache: bool = False


def cache_key(samples: Sequence[data.Sample], cfg: dict, at: int) -> str:
    """What the cache's contents depend on: the photos (path, size, mtime), the prefix and the
    augmentation. Anything else (the suffix's recipe) may change and reuse the cache."""
    photos = []
    for s in samples:
        st = s.path.stat()
        photos.append([str(s.path), st.st_size, st.st_mtime_ns])
    keyed = {k: cfg[k] for k in ("backbone", "weights", "input_size", "resize", "cache_scale", "augment",
                                 "views", "seed", "mean", "std")}
    blob = json.dumps({"photos": photos, "cfg": keyed, "at": at, "format": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def build(samples: Sequence[data.Sample], prefix: nn.Module, cfg: dict, device: torch.device) -> FeatureCache:
    """Decode each photo once, make cfg["views"] augmented views and the eval view, run the prefix."""
    prefix.eval()
    started = time.monotonic()
    size, resize, views = cfg["input_size"], cfg["resize"], cfg["views"]
    transform = presets.TrainPreset(size=size, resize=resize, mean=cfg["mean"], std=cfg["std"], seed=cfg["seed"],
                                    augment=cfg["augment"])
    short_side = round(size * cfg["cache_scale"])
    kept: list[data.Sample] = []
    view_out: list[torch.Tensor] = []
    eval_out: list[torch.Tensor] = []
    with ProgressBar(len(samples), label="features") as bar:
        for i in range(0, len(samples), CHUNK):
            train_x, eval_x = [], []
            for s in samples[i:i + CHUNK]:
                try:
                    image = presets.decode_for_training(s.path, short_side=short_side)
                    pixels = load_image(s.path, size=size, resize=resize)
                except ImageLoadError as exc:
                    log.warning("skipped", path=str(s.path), reason=exc.reason)
                    bar.advance()
                    continue
                train_x += [transform(image) for _ in range(views)]
                eval_x.append(torch.from_numpy(presets.normalise(pixels, mean=cfg["mean"], std=cfg["std"])))
                kept.append(s)
                bar.advance()
            if not eval_x:
                continue
            t = prefix(torch.stack(train_x).to(device)).to("cpu", torch.float16)
            view_out.append(t.view(len(eval_x), views, *t.shape[1:]))
            eval_out.append(prefix(torch.stack(eval_x).to(device)).to("cpu", torch.float16))
            if (i // CHUNK) % 10 == 9:  # for -v logs, where there is no progress bar
                log.info("features_progress", photos=min(i + CHUNK, len(samples)), of=len(samples))
    if not kept:
        raise data.DataError(f"none of the {len(samples)} photos could be read")
    return FeatureCache(torch.cat(view_out), torch.cat(eval_out), kept, time.monotonic() - started)


def load_or_build(samples: Sequence[data.Sample], prefix: nn.Module, cfg: dict, at: int,
                  device: torch.device) -> FeatureCache:
    """build(), through cfg["feature_cache"] (a folder) when one is given."""
    folder = cfg.get("feature_cache")
    if not folder:
        return build(samples, prefix, cfg, device)
    path = Path(folder) / f"features-{cache_key(samples, cfg, at)}.pt"
    if path.exists():
        stored = torch.load(path, map_location="cpu", weights_only=False)
        by_path = {str(s.path): s for s in samples}
        log.info("feature_cache_hit", path=str(path), photos=len(stored["paths"]))
        return FeatureCache(stored["views"], stored["evals"], [by_path[p] for p in stored["paths"]],
                            stored.get("seconds", 0.0), from_cache=True)
    cache = build(samples, prefix, cfg, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    torch.save({"views": cache.views, "evals": cache.evals, "paths": [str(s.path) for s in cache.samples],
                "seconds": cache.seconds}, scratch)
    scratch.replace(path)
    log.info("feature_cache_written", path=str(path), bytes=path.stat().st_size)
    return cache


def eval_batches(features: torch.Tensor, batch: int) -> list[torch.Tensor]:
    return [features[i:i + batch].float() for i in range(0, len(features), batch)]


def targets_of(samples: Sequence[data.Sample]) -> np.ndarray:
    return np.array([s.target for s in samples], dtype=np.int64)
