"""Which files belong together: a photo, its RAW twin and its sidecars travel as one group.

A RAW+JPEG pair is classified once (from the fast-to-decode raster file) and both land in the
same folder; an edit sidecar (.xmp), an iPhone adjustment file (.aae), a Live Photo clip (.mov)
or a Google Takeout metadata file (IMG_1.JPG.json) follows its photo, so nothing is orphaned.

Pure functions on path names: nothing here touches the disk.

Rules, for files in the same directory whose stems match case-insensitively:
- Every raster image (JPEG, HEIC, PNG, ...) is the primary of its own group: two different
  images that happen to share a stem (IMG_1.jpg, IMG_1.png) are never merged.
- RAW files join the first raster group (sorted by name); with no raster image the first RAW is
  the primary and the other RAWs of that stem (IMG_1.CR2 + IMG_1.DNG: one shot) join it.
- A sidecar that names its file (IMG_1.png.xmp, IMG_1.CR2.pp3) joins the group holding that
  file; any other sidecar of the stem (IMG_1.xmp) joins the first group.
- Sidecars with no image form one group of their own; its primary is the first by name.
- A file with any other suffix is a group by itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nordlys.daemon.loader import IMAGE_SUFFIXES, RAW_SUFFIXES

# Decodable raster images (the loader's list, less RAW): preferred as primary, they decode fast.
RASTER_SUFFIXES = IMAGE_SUFFIXES - RAW_SUFFIXES

# Files that describe or accompany a photo and must follow it.
SIDECAR_SUFFIXES = frozenset({
    ".xmp", ".aae", ".json", ".mov", ".mp4", ".thm", ".pp3", ".dop", ".on1",
})
_KNOWN_SUFFIXES = RASTER_SUFFIXES | RAW_SUFFIXES | SIDECAR_SUFFIXES

# Videos: never read to be classified (the pipeline's `videos` setting decides where one goes when
# it is a group's primary); a Live Photo's .MOV beside its photo is a sidecar above and travels with it.
VIDEO_SUFFIXES = frozenset({
    ".mov", ".mp4", ".m4v", ".3gp", ".3g2", ".avi", ".mkv", ".mts", ".m2ts", ".webm", ".wmv",
    ".mpg", ".mpeg", ".insv", ".lrv",
})

_RASTER, _RAW, _SIDECAR, _OTHER = "raster", "raw", "sidecar", "other"


@dataclass(frozen=True)
class PhotoGroup:
    """One photo and the files that must land next to it."""

    primary: Path  # the file that gets decoded and classified
    members: tuple[Path, ...]  # primary first, then sidecars/pair files, all in the same directory


def split_name(name: str) -> tuple[str, str]:
    """Split a file name into (stem, tail) where tail holds the suffixes that make it a photo file.

    "IMG_1.JPG" -> ("IMG_1", ".JPG"); "IMG_1.JPG.json" -> ("IMG_1", ".JPG.json");
    "IMG_1.xmp" -> ("IMG_1", ".xmp"); "notes.tar.gz" -> ("notes.tar", ".gz").
    The stem is what group members share and where a numbered suffix goes (IMG_1_1.JPG.json).
    """
    stem, last = _split_one(name)
    if not last:
        return name, ""
    if last.lower() in SIDECAR_SUFFIXES:
        inner_stem, inner = _split_one(stem)
        if inner and inner.lower() in _KNOWN_SUFFIXES:
            return inner_stem, inner + last
    return stem, last


def _split_one(name: str) -> tuple[str, str]:
    """Like Path.stem/.suffix but never treats a leading dot (".xmp") as a suffix."""
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:
        return name, ""
    return name[:dot], name[dot:]


def _kind(name: str) -> str:
    suffix = _split_one(name)[1].lower()
    if suffix in RASTER_SUFFIXES:
        return _RASTER
    if suffix in RAW_SUFFIXES:
        return _RAW
    if suffix in SIDECAR_SUFFIXES:
        return _SIDECAR
    return _OTHER


def _name_key(path: Path) -> tuple[str, str]:
    """Sort key: case-insensitive first, exact name as tie-break, so order never depends on input."""
    return path.name.casefold(), path.name


def group_files(paths: Iterable[Path]) -> list[PhotoGroup]:
    """Group paths into photos with their sidecars; see the module docstring for the rules.

    Every distinct input path is in exactly one group. Groups are ordered by directory, then
    primary name; members are the primary, then the rest by name.
    """
    by_stem: dict[tuple[str, str], list[Path]] = defaultdict(list)
    singles: list[PhotoGroup] = []
    for path in sorted(set(paths), key=lambda p: (str(p.parent), _name_key(p))):
        if _kind(path.name) == _OTHER:
            singles.append(PhotoGroup(primary=path, members=(path,)))
        else:
            by_stem[(str(path.parent), split_name(path.name)[0].casefold())].append(path)
    groups = singles + [g for files in by_stem.values() for g in _group_one_stem(files)]
    return sorted(groups, key=lambda g: (str(g.primary.parent), _name_key(g.primary)))


def _group_one_stem(files: list[Path]) -> list[PhotoGroup]:
    """Groups for the files of one directory that share a stem (already sorted by name)."""
    rasters = [f for f in files if _kind(f.name) == _RASTER]
    raws = [f for f in files if _kind(f.name) == _RAW]
    sidecars = [f for f in files if _kind(f.name) == _SIDECAR]
    primaries = rasters or raws[:1] or sidecars[:1]
    members: dict[Path, list[Path]] = {p: [p] for p in primaries}
    first = primaries[0]
    for raw in raws:
        if raw not in members:
            members[first].append(raw)
    owner_by_name = {f.name.casefold(): p for p, fs in members.items() for f in fs}
    for sidecar in sidecars:
        if sidecar in members:
            continue
        named = _split_one(sidecar.name)[0].casefold()  # "img_1.png" for "IMG_1.png.xmp"
        members[owner_by_name.get(named, first)].append(sidecar)
    return [PhotoGroup(primary=p, members=(p, *sorted(fs[1:], key=_name_key)))
            for p, fs in members.items()]
