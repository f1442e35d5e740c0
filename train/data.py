"""Which photos exist, what they are, and which side of the split each one is on.

Torch-free on purpose: `nordlys eval` reads manifests and folders with these functions and must
run where only onnxruntime is installed.

Two sources of labelled photos:
- a folder with `aurora/` and `other/` sub-folders, any depth below them;
- a manifest CSV `file,label[,group,...]`, paths relative to the CSV. Any label containing
  "aurora" (aurora, aurora_allsky) is aurora, anything else is other; extra columns (`kind`,
  `license`, ...) are kept on each sample for per-kind metrics and the model card.

The train/validation split keeps each group on one side. Without a group column, photos whose
perceptual hashes are near each other are grouped, because bursts and re-hosted copies of one
photo would otherwise sit on both sides and flatter the validation score.
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import structlog
from PIL import Image

from nordlys.daemon.loader import IMAGE_SUFFIXES, open_image

log = structlog.get_logger(__name__)

LABELS = ("other", "aurora")  # model output order; index 1 is the positive class
POSITIVE = "aurora"


class DataError(ValueError):
    """A data folder or manifest cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Sample:
    """One labelled photo. `target` is the index into LABELS."""

    path: Path
    target: int
    group: str
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def kind(self) -> str:
        return self.extra.get("kind", "")


def label_to_target(label: str) -> int:
    """aurora, aurora_allsky, ... -> 1; other, other_allsky, ... -> 0."""
    return 1 if POSITIVE in label.strip().lower() else 0


def read_manifest(csv_path: Path) -> list[Sample]:
    """Samples from a `file,label[,group,...]` CSV; paths are relative to the CSV's folder."""
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "label"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{csv_path}: columns {sorted(missing)} are missing; expected a header "
                            f"'file,label[,group,...]', found {reader.fieldnames}")
        rows = list(reader)
    samples = []
    for line, row in enumerate(rows, start=2):
        if not row["file"] or not row["label"]:
            raise DataError(f"{csv_path}:{line}: empty file or label in {row}")
        path = (csv_path.parent / row["file"]).resolve()
        extra = {k: v for k, v in row.items() if k not in ("file", "label", "group") and v is not None}
        samples.append(Sample(path, label_to_target(row["label"]), row.get("group") or "", extra))
    log.info("manifest_read", path=str(csv_path), samples=len(samples))
    return samples


def read_folder(root: Path) -> list[Sample]:
    """Samples from `root/aurora/**` and `root/other/**` (photo suffixes only), ungrouped."""
    root = Path(root)
    samples = []
    for label in LABELS:
        folder = root / label
        if not folder.is_dir():
            raise DataError(f"{root}: sub-folder {label}/ is missing; a data folder holds "
                            f"{' and '.join(l + '/' for l in LABELS)}")
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path.resolve(), label_to_target(label), ""))
    log.info("folder_read", path=str(root), samples=len(samples))
    return samples


def read_samples(*, data_dir: Path | None = None, manifest: Path | None = None) -> list[Sample]:
    """Exactly one of a data folder or a manifest; refuses an empty or one-class set."""
    if (data_dir is None) == (manifest is None):
        raise DataError("give exactly one of a data folder (aurora/ and other/) or a manifest CSV")
    samples = read_manifest(manifest) if manifest is not None else read_folder(data_dir)  # type: ignore[arg-type]
    counts = Counter(s.target for s in samples)
    if len(counts) < 2:
        raise DataError(f"{manifest or data_dir}: needs photos of both classes {list(LABELS)}, "
                        f"found {dict((LABELS[k], v) for k, v in counts.items())}")
    return samples


# --- perceptual hashes -------------------------------------------------------------------------

def dhash(image: Image.Image, *, bits: int = 8) -> int:
    """Difference hash: is each pixel of a (bits+1)x bits grey thumbnail brighter than its right
    neighbour. Survives resizing, recompression and mild colour edits, unlike a byte hash."""
    grey = np.asarray(image.convert("L").resize((bits + 1, bits), Image.Resampling.BILINEAR), dtype=np.int16)
    diff = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in diff), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def group_near_duplicates(hashes: Sequence[int], *, max_distance: int = 6) -> list[int]:
    """Union-find over pairs whose hashes differ in at most `max_distance` bits; returns a group
    id per item. Quadratic, which is fine for the few thousand photos a training set has."""
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if hamming(hashes[i], hashes[j]) <= max_distance:
                parent[root(j)] = root(i)
    return [root(i) for i in range(len(hashes))]


def assign_hash_groups(samples: Sequence[Sample], *, max_distance: int = 6) -> list[Sample]:
    """Give ungrouped samples a group `phash-N` shared by near-duplicates; keep given groups."""
    if all(s.group for s in samples):
        return list(samples)
    hashes = [dhash(open_image(s.path, min_side=64)) for s in samples]
    ids = group_near_duplicates(hashes, max_distance=max_distance)
    grouped = [s if s.group else Sample(s.path, s.target, f"phash-{gid}", s.extra) for s, gid in zip(samples, ids)]
    log.info("hash_groups", samples=len(samples), groups=len(set(ids)))
    return grouped


# --- split ----------------------------------------------------------------------------------------

def split_by_group(samples: Sequence[Sample], *, val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Groups go whole to one side. In a seeded random order, a group joins validation while
    neither class there would exceed `val_fraction` of its total, so both classes are represented
    and one giant source (60% of other/ in the shared data) cannot swallow the validation side."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction = {val_fraction}: expected a number between 0 and 1")
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_group[s.group or str(s.path)].append(s)
    totals = Counter(s.target for s in samples)
    budget = {t: val_fraction * n for t, n in totals.items()}
    taken: Counter[int] = Counter()
    names = sorted(by_group)
    random.Random(seed).shuffle(names)
    val_groups = set()
    for name in names:
        counts = Counter(s.target for s in by_group[name])
        if all(taken[t] + n <= budget[t] for t, n in counts.items()):
            val_groups.add(name)
            taken.update(counts)
    train = [s for s in samples if (s.group or str(s.path)) not in val_groups]
    val = [s for s in samples if (s.group or str(s.path)) in val_groups]
    if not val or len({s.target for s in val}) < 2 or len({s.target for s in train}) < 2:
        raise DataError(f"cannot split {len(samples)} photos in {len(by_group)} groups into train and "
                        f"validation with both classes on each side; add photos or groups")
    return train, val


def group_folds(samples: Sequence[Sample], *, folds: int, seed: int) -> list[int]:
    """A fold number (0..folds-1) per sample for cross-validation; each group in one fold.

    Groups are placed largest first (seeded order among equal sizes), each into the fold whose
    shares of the classes it brings are smallest, weighed by how much of each class it brings: a
    fold that took a giant one-class source then fills up with the other class, and every fold
    ends with about 1/folds of the auroras. Refuses a fold without both classes.
    """
    if folds < 2:
        raise DataError(f"folds = {folds}: expected at least 2")
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_group[s.group or str(s.path)].append(i)
    totals = Counter(s.target for s in samples)
    names = sorted(by_group)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda g: -len(by_group[g]))  # stable: the shuffle breaks ties between equal sizes
    taken = [Counter() for _ in range(folds)]
    fold_of = [0] * len(samples)
    for name in names:
        counts = Counter(samples[i].target for i in by_group[name])

        def cost(f: int) -> tuple[float, int]:
            share = sum(n / totals[t] * (taken[f][t] + n) / totals[t] for t, n in counts.items())
            return share, sum(taken[f].values())

        best = min(range(folds), key=cost)
        taken[best].update(counts)
        for i in by_group[name]:
            fold_of[i] = best
    if any(len(t) < 2 for t in taken):
        raise DataError(f"cannot make {folds} folds with both classes in each from {len(samples)} photos in "
                        f"{len(by_group)} groups; use fewer folds or add photos and groups")
    return fold_of


def write_split(path: Path, train: Iterable[Sample], val: Iterable[Sample]) -> None:
    """split.csv: `file,label,group,split,<extra columns>` so export and eval reuse the split."""
    rows = [(s, "train") for s in train] + [(s, "val") for s in val]
    extra_keys = sorted({k for s, _ in rows for k in s.extra})
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "group", "split", *extra_keys])
        for s, side in rows:
            writer.writerow([str(s.path), LABELS[s.target], s.group, side, *(s.extra.get(k, "") for k in extra_keys)])


def read_split(path: Path) -> dict[str, list[Sample]]:
    """The inverse of write_split: {"train": [...], "val": [...]}."""
    out: dict[str, list[Sample]] = {"train": [], "val": []}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            extra = {k: v for k, v in row.items() if k not in ("file", "label", "group", "split")}
            out[row["split"]].append(Sample(Path(row["file"]), label_to_target(row["label"]), row["group"], extra))
    return out


# --- sampling weights -----------------------------------------------------------------------------

def balanced_weights(samples: Sequence[Sample], *, hard_negative_weight: float = 1.0) -> np.ndarray:
    """Per-sample drawing weights: each class draws half the time; inside a class a group of n
    photos weighs sqrt(n), not n, so one big source cannot dominate yet a big varied source still
    counts for more than a single photo. `kind=hard_negative` photos can be drawn more often."""
    group_sizes = Counter((s.target, s.group or str(s.path)) for s in samples)
    w = np.array([1.0 / np.sqrt(group_sizes[(s.target, s.group or str(s.path))]) for s in samples])
    w *= np.array([hard_negative_weight if s.kind == "hard_negative" else 1.0 for s in samples])
    targets = np.array([s.target for s in samples])
    for t in np.unique(targets):
        w[targets == t] /= w[targets == t].sum() * len(np.unique(targets))
    return w


def summarise(samples: Sequence[Sample]) -> dict[str, object]:
    """Counts per class, kind and licence, for metrics.json and the model card."""
    return {
        "photos": len(samples),
        "groups": len({s.group for s in samples}),
        "per_label": dict(Counter(LABELS[s.target] for s in samples)),
        "per_kind": dict(Counter(s.kind for s in samples if s.kind)),
        "per_license": dict(Counter(s.extra["license"] for s in samples if "license" in s.extra).most_common()),
    }
