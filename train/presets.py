"""Train and eval transforms, in one place so their arithmetic cannot drift apart.

Eval pixels come from the daemon's own loader (`load_image`), then the same normalisation the
classifier applies, so a validation score is the score the daemon would give the same file.
Training starts from a photo decoded once by the same loader (`open_image`) and kept in RAM as a
uint8 tensor, then augments it. Colour is the signal (green/red aurora against a dark sky), so
there is no hue or saturation jitter, only mild brightness/contrast; crops are mild because the
aurora is often at the top or side of the frame.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from nordlys.daemon.loader import load_image, open_image
from nordlys.train.options import AUGMENTS  # --augment choices, one list with the CLI

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on the 0..1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(pixels: np.ndarray, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 as `(pixel / 255 - mean) / std`: the classifier's arithmetic."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def eval_input(path: Path, *, size: int, resize: str, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The daemon's pixels for `path`, normalised: (3, size, size) float32."""
    return normalise(load_image(path, size=size, resize=resize), mean=mean, std=std)


def decode_for_training(path: Path, *, short_side: int) -> torch.Tensor:
    """Decode once (reduced-size JPEG decode) to a uint8 (3, H, W) tensor with the shorter side
    `short_side`: small enough to keep a few thousand photos in RAM, big enough to crop from."""
    image = open_image(path, min_side=short_side)
    scale = short_side / min(image.size)
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR, reducing_gap=3.0)  # the loader's filter
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def random_crop_box(height: int, width: int, *, scale: tuple[float, float], rng: random.Random) -> tuple[int, int, int, int]:
    """A crop covering `scale` of the area whose aspect is within 3/4..4/3 of the photo's own,
    so a wide frame stays wide (top, left, h, w)."""
    area = rng.uniform(*scale) * height * width
    aspect = (width / height) * math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = min(width, max(1, round(math.sqrt(area * aspect))))
    h = min(height, max(1, round(math.sqrt(area / aspect))))
    return rng.randint(0, height - h), rng.randint(0, width - w), h, w


def to_square(image: torch.Tensor, *, size: int, resize: str) -> torch.Tensor:
    """The loader's three ways to make a square, on a uint8 tensor."""
    h, w = image.shape[-2:]
    if resize == "squash":
        return F.resize(image, [size, size], antialias=True)
    if resize == "center_crop":
        return F.center_crop(F.resize(image, size, antialias=True), [size, size])
    if resize == "letterbox":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        small = F.resize(image, [nh, nw], antialias=True)
        top, left = (size - nh) // 2, (size - nw) // 2
        return F.pad(small, [left, top, size - nw - left, size - nh - top], fill=0)
    raise ValueError(f"resize = {resize!r}: expected one of squash, letterbox, center_crop")


class TrainPreset:
    """Random mild crop -> square (same mode as eval) -> flip -> brightness/contrast -> normalise.

    `augment="phone"` adds what differs between cameras and phones but not between aurora and
    not-aurora: crops biased to keep the top of the frame (the sky), exposure of +-0.7 EV,
    a white-balance shift of +-10% on red and blue (green stays green), and, each with
    probability 0.3, blur, sensor noise and JPEG re-compression at quality 35..90.
    """

    def __init__(self, *, size: int, resize: str, mean: Sequence[float], std: Sequence[float],
                 crop_scale: tuple[float, float] | None = None, brightness: float = 0.25,
                 contrast: float = 0.2, seed: int = 0, augment: str = "basic") -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment = {augment!r}: expected one of {list(AUGMENTS)}")
        self.size, self.resize, self.augment = size, resize, augment
        self.crop_scale = crop_scale or ((0.45, 1.0) if augment == "phone" else (0.6, 1.0))
        self.rng = random.Random(seed)
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast)  # no hue: colour is the signal
        self.flip = v2.RandomHorizontalFlip(p=0.5)
        self.normalize = v2.Normalize(mean=list(mean), std=list(std))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = random_crop_box(*image.shape[-2:], scale=self.crop_scale, rng=self.rng)
        if self.augment == "phone":
            top = self.rng.randint(0, top)  # biased upwards: a crop keeps the sky more often than the ground
        x = to_square(F.crop(image, top, left, h, w), size=self.size, resize=self.resize)
        x = self.jitter(self.flip(x))
        if self.augment == "phone":
            x = self.camera(x)
        return self.normalize(F.to_dtype(x, torch.float32, scale=True))

    def camera(self, x: torch.Tensor) -> torch.Tensor:
        """Exposure, white balance, blur, noise, JPEG: uint8 in, uint8 out."""
        rng = self.rng
        f = x.to(torch.float32)
        gain = 2.0 ** rng.uniform(-0.7, 0.7)
        wb = torch.tensor([math.exp(rng.uniform(-0.1, 0.1)), 1.0, math.exp(rng.uniform(-0.1, 0.1))]).view(3, 1, 1)
        f = f * gain * wb
        if rng.random() < 0.3:
            sigma = rng.uniform(0.3, 1.5)
            f = F.gaussian_blur(f, kernel_size=[5, 5], sigma=[sigma, sigma])
        if rng.random() < 0.3:
            f = f + torch.randn(f.shape, generator=torch.Generator().manual_seed(rng.getrandbits(31))) * rng.uniform(1.0, 8.0)
        x = f.round().clamp(0, 255).to(torch.uint8)
        if rng.random() < 0.3:
            x = F.jpeg(x, rng.randint(35, 90))
        return x
