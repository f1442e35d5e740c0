"""Reading labelled photos, perceptual-hash grouping, the group-keeping split, sampling weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nordlys.train import data
from tests.train.photos import sky_folder, sky_manifest, sky_photo


def test_manifest_maps_labels_keeps_extra_columns(tmp_path: Path) -> None:
    samples = data.read_manifest(sky_manifest(tmp_path, per_class=4))
    assert Counter(s.target for s in samples) == {1: 4, 0: 4}
    allsky = [s for s in samples if s.path.name == "a0.jpg"][0]
    assert allsky.target == 1 and allsky.kind == "photo" and allsky.extra["license"] == "MIT"
    assert all(s.path.is_absolute() and s.path.exists() for s in samples)
    assert {s.group for s in samples} == {"g0", "g1", "g2", "g3"}


def test_manifest_without_label_column_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("file,klass\na.jpg,aurora\n")
    with pytest.raises(data.DataError, match=r"m\.csv.*\['label'\]"):
        data.read_manifest(bad)


def test_folder_reads_any_depth_and_only_photos(tmp_path: Path) -> None:
    root = sky_folder(tmp_path / "d", per_class=4)
    (root / "other" / "notes.txt").write_text("not a photo")
    samples = data.read_folder(root)
    assert Counter(s.target for s in samples) == {1: 4, 0: 4}
    assert any("nested" in s.path.parts for s in samples)


def test_folder_without_other_is_refused(tmp_path: Path) -> None:
    sky_photo(tmp_path / "aurora" / "a.jpg", aurora=True, seed=1)
    with pytest.raises(data.DataError, match="other/"):
        data.read_folder(tmp_path)


def test_dhash_survives_resize_and_recompression_but_not_another_photo(tmp_path: Path) -> None:
    a = sky_photo(tmp_path / "a.jpg", aurora=True, seed=3, size=(160, 120))
    Image.open(a).resize((96, 72)).save(tmp_path / "a_small.jpg", quality=60)
    b = sky_photo(tmp_path / "b.jpg", aurora=True, seed=4, size=(160, 120))
    ha, hs, hb = (data.dhash(Image.open(p)) for p in (a, tmp_path / "a_small.jpg", b))
    assert data.hamming(ha, hs) <= 6 < data.hamming(ha, hb)


def test_near_duplicates_share_a_group_transitively() -> None:
    hashes = [0b0000, 0b0001, 0b0011, 0b1111_1111_0000]
    ids = data.group_near_duplicates(hashes, max_distance=1)
    assert ids[0] == ids[1] == ids[2] != ids[3]


def test_ungrouped_burst_stays_on_one_side(tmp_path: Path) -> None:
    root = sky_folder(tmp_path / "d", per_class=8)
    burst = sky_photo(root / "aurora" / "burst0.jpg", aurora=True, seed=77, size=(160, 120))
    for i in range(1, 4):
        Image.open(burst).resize((160 - 8 * i, 120 - 6 * i)).save(root / "aurora" / f"burst{i}.jpg")
    samples = data.assign_hash_groups(data.read_folder(root))
    train, val = data.split_by_group(samples, val_fraction=0.4, seed=1)
    sides = {("val" if s in val else "train") for s in samples if s.path.name.startswith("burst")}
    assert len(sides) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_groups_whole_and_both_classes_on_each_side(tmp_path: Path, seed: int) -> None:
    samples = data.read_manifest(sky_manifest(tmp_path, per_class=8, groups=4))
    train, val = data.split_by_group(samples, val_fraction=0.25, seed=seed)
    assert not {s.group for s in train} & {s.group for s in val}
    assert {s.target for s in val} == {0, 1} == {s.target for s in train}
    assert len(train) + len(val) == len(samples)
    assert data.split_by_group(samples, val_fraction=0.25, seed=seed) == (train, val)


def test_split_round_trips_through_csv(tmp_path: Path) -> None:
    samples = data.read_manifest(sky_manifest(tmp_path, per_class=8))
    train, val = data.split_by_group(samples, val_fraction=0.25, seed=0)
    data.write_split(tmp_path / "split.csv", train, val)
    back = data.read_split(tmp_path / "split.csv")
    assert back["train"] == train and back["val"] == val
    assert [s.kind for s in back["val"]] == [s.kind for s in val]


def test_weights_balance_classes_and_damp_big_groups() -> None:
    mk = lambda t, g, kind="": data.Sample(Path(f"/x/{t}{g}{kind}{id(object())}"), t, g, {"kind": kind})
    samples = [mk(0, "big") for _ in range(9)] + [mk(0, "solo")] + [mk(1, "a"), mk(1, "b", "hard")]
    w = data.balanced_weights(samples)
    targets = np.array([s.target for s in samples])
    assert w[targets == 0].sum() == pytest.approx(0.5) and w[targets == 1].sum() == pytest.approx(0.5)
    big_total, solo = w[:9].sum(), w[9]
    assert big_total == pytest.approx(3 * solo)  # a group of 9 weighs sqrt(9) = 3 single photos
    hard = data.balanced_weights([mk(0, "x", "hard_negative"), mk(0, "y"), mk(1, "z")], hard_negative_weight=3.0)
    assert hard[0] == pytest.approx(3 * hard[1])
