"""Realistic camera JPEGs for the benchmark, made from the shared photo set.

The shared photos are web-sized (at most 0.64 MP), while a camera or phone writes 12-24 MP
JPEGs of several megabytes. Decoding cost follows the pixel count and, for the entropy decoder,
the file size, so a photo is upscaled to the camera's frame, given a little sensor grain (an
upscaled photo alone is so smooth that it compresses to a fraction of a real file's size) and
saved the way cameras save: quality 92, 4:2:0 chroma, EXIF with Make/Model/DateTime/Orientation.
Files are cached by name under a git-ignored folder, so later runs reuse them.
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES = {"12mp": (4000, 3000), "24mp": (6000, 4000)}  # camera frame sizes, landscape (pixels)
QUALITY = 92  # JPEG quality most cameras use for "fine"
GRAIN = 6.0  # standard deviation of the added sensor noise, in 8-bit levels
SEED = 0  # photo choice and grain are reproducible
_EXIF_TAGS = {"Make": 0x010F, "Model": 0x0110, "DateTime": 0x0132, "Orientation": 0x0112}


@dataclass(frozen=True)
class SourcePhoto:
    path: Path
    label: str


def pick_sources(data_dir: Path, count: int, *, seed: int = SEED) -> list[SourcePhoto]:
    """Half aurora, half other (the real mix of a winter night's card is closer to that than
    to the data set's 1:5), largest first within each label so upscaling stays modest."""
    with (data_dir / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    picked: list[SourcePhoto] = []
    for label, share in (("aurora", count // 2), ("other", count - count // 2)):
        pool = sorted((r for r in rows if r["label"] == label), key=lambda r: r["file"])
        random.Random(seed).shuffle(pool)  # the same order whatever `count` is: caches stay valid
        pool.sort(key=lambda r: -int(r["width"]) * int(r["height"]))  # stable: largest first
        picked += [SourcePhoto(data_dir / r["file"], label) for r in pool[:share]]
    return picked


def camera_exif(index: int) -> bytes:
    """The EXIF block a camera writes: who made it, when, and that it is upright."""
    exif = Image.Exif()
    exif[_EXIF_TAGS["Make"]] = "NORDLYS-BENCH"
    exif[_EXIF_TAGS["Model"]] = "Synthetic 12-24MP"
    exif[_EXIF_TAGS["DateTime"]] = f"2026:01:{1 + index % 28:02d} 22:{index % 60:02d}:00"
    exif[_EXIF_TAGS["Orientation"]] = 1
    return exif.tobytes()


def make_camera_jpeg(source: Path, out: Path, frame: tuple[int, int], *, index: int) -> Path:
    """Crop the source to the frame's aspect, upscale, add grain, save as a camera would."""
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    width, height = frame if rgb.width >= rgb.height else frame[::-1]
    scale = max(width / rgb.width, height / rgb.height)
    crop_w, crop_h = width / scale, height / scale
    left, top = (rgb.width - crop_w) / 2, (rgb.height - crop_h) / 2
    big = rgb.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    pixels = np.asarray(big, dtype=np.int16)
    noise = np.random.default_rng(SEED + index).normal(0.0, GRAIN, size=pixels.shape).astype(np.int16)
    grained = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    grained.save(tmp, "JPEG", quality=QUALITY, subsampling="4:2:0", exif=camera_exif(index))
    tmp.replace(out)  # a half-written file is never mistaken for a cached one
    return out


def camera_photos(data_dir: Path, cache: Path, *, frame: str, count: int) -> list[Path]:
    """`count` camera JPEGs of the named frame ("12mp", "24mp"), generated once and cached."""
    if frame not in FRAMES:
        raise ValueError(f"frame = {frame!r}: expected one of {sorted(FRAMES)}")
    if not (data_dir / "manifest.csv").exists():
        raise FileNotFoundError(f"{data_dir / 'manifest.csv'} not found: the benchmark makes its photos "
                                f"from the shared photo set (../shared/data beside the checkout)")
    paths, seen = [], {"aurora": 0, "other": 0}
    for src in pick_sources(data_dir, count):
        k = seen[src.label] = seen[src.label] + 1
        out = cache / frame / f"{src.label}_{k:04d}.jpg"
        paths.append(out if out.exists() else make_camera_jpeg(src.path, out, FRAMES[frame], index=k))
    return paths
