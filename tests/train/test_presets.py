"""Train and eval transforms: shapes, the classifier's arithmetic, and train pixels close to eval's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nordlys.daemon.loader import load_image
from nordlys.train import presets
from tests.train.photos import sky_photo

MEAN, STD = presets.IMAGENET_MEAN, presets.IMAGENET_STD


def test_eval_input_is_the_loaders_pixels_normalised(tmp_path: Path) -> None:
    photo = sky_photo(tmp_path / "a.jpg", aurora=True, seed=1, size=(120, 80))
    x = presets.eval_input(photo, size=32, resize="letterbox", mean=MEAN, std=STD)
    pixels = load_image(photo, size=32, resize="letterbox")
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    expected = (pixels[4, 7, 1] / 255 - MEAN[1]) / STD[1]
    assert x[1, 4, 7] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("resize", ["squash", "letterbox", "center_crop"])
def test_train_preset_makes_normalised_squares(tmp_path: Path, resize: str) -> None:
    photo = sky_photo(tmp_path / "a.jpg", aurora=True, seed=2, size=(150, 90))
    image = presets.decode_for_training(photo, short_side=40)
    assert image.dtype == torch.uint8 and min(image.shape[1:]) == 40 and image.shape[2] > image.shape[1]
    out = presets.TrainPreset(size=32, resize=resize, mean=MEAN, std=STD, seed=0)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and -3 < float(out.mean()) < 3


def test_unaugmented_train_pixels_match_the_loaders(tmp_path: Path) -> None:
    """Without crop and jitter, the training path squashes the frame as the daemon does."""
    photo = sky_photo(tmp_path / "a.jpg", aurora=True, seed=3, size=(300, 200))
    image = presets.decode_for_training(photo, short_side=64)
    train_pixels = presets.to_square(image, size=48, resize="squash").permute(1, 2, 0).numpy().astype(float)
    eval_pixels = load_image(photo, size=48, resize="squash").astype(float)
    assert np.mean(np.abs(train_pixels - eval_pixels)) < 4.0  # of 255: resampling differences only


def test_crop_keeps_the_frames_shape() -> None:
    import random

    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = presets.random_crop_box(100, 300, scale=(0.6, 1.0), rng=rng)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 300
        assert w / h > 1.5  # a wide frame stays wide (3:1 photo, aspect within 3/4..4/3 of it)
