"""Tiny real JPEG photos for training and evaluation tests (written with Pillow at run time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def sky_photo(path: Path, *, aurora: bool, seed: int, size: tuple[int, int] = (72, 48)) -> Path:
    """A dark noisy sky; an aurora photo has a green band at a random height. Each seed differs
    in structure, so perceptual hashes of different seeds differ."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray(rng.integers(0, 110, size=(4, 6, 3)).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    noise = rng.integers(0, 20, size=(h, w, 3))
    pixels = np.clip(np.asarray(coarse, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
    if aurora:
        top = int(rng.integers(0, h // 2))
        pixels[top:top + h // 3, :, 1] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def flat_photo(path: Path, colour: tuple[int, int, int], *, size: tuple[int, int] = (40, 30)) -> Path:
    """A single-colour photo: the green test model scores it from its colour alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


def sky_folder(root: Path, *, per_class: int = 8) -> Path:
    """root/aurora/... and root/other/... (one level nested, to test 'any depth')."""
    for i in range(per_class):
        sky_photo(root / "aurora" / ("nested" if i % 2 else "") / f"a{i}.jpg", aurora=True, seed=i)
        sky_photo(root / "other" / f"o{i}.jpg", aurora=False, seed=1000 + i)
    return root


def sky_manifest(root: Path, *, per_class: int = 8, groups: int = 4) -> Path:
    """A manifest like ../shared/data/manifest.csv: labels incl. *_allsky, group and kind columns."""
    lines = ["file,label,kind,group,license"]
    for i in range(per_class):
        sky_photo(root / "images" / f"a{i}.jpg", aurora=True, seed=i)
        sky_photo(root / "images" / f"o{i}.jpg", aurora=False, seed=1000 + i)
        label = "aurora_allsky" if i == 0 else "aurora"
        lines.append(f"images/a{i}.jpg,{label},photo,g{i % groups},MIT")
        kind = "hard_negative" if i % 2 else "everyday"
        lines.append(f"images/o{i}.jpg,other,{kind},g{i % groups},unknown")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
