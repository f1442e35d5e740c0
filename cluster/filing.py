"""`nordlys sort --scores scores.parquet`: file scored photos on one machine.

The filing is `nordlys sort`'s own (sorter.sort_tree: scan, groups, journal run, progress,
summary; Pipeline.file_batch: placement, mover, journal), so `nordlys undo` works as after any
sort. Only the scoring differs: a photo whose row still describes it (same model version, size,
mtime and sha256, the hash taken by reading the file here once, with the loader's read_photo, which
also gives the EXIF date a `layout` needs) is placed by its row's score under this machine's
threshold and review band; any other photo (new, changed, unreadable when scored,
scored by another model version) goes through the local Pipeline, decoded and scored on the spot.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from nordlys.cluster.scores import Row, read_scores
from nordlys.daemon.fileops import KnownHash
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
from nordlys.daemon.loader import ImageLoadError, date_taken, read_photo
from nordlys.daemon.pipeline import Outcome, Pipeline
from nordlys.daemon.placement import Verdict, decide
from nordlys.daemon.sorter import SortSummary, sort_tree


def scores_root(scores: Path) -> Path:
    """The folder all scored files share: what `sort --scores` sorts when no SRC is given."""
    paths = list(read_scores(scores))
    if not paths:
        raise ValueError(f"{scores}: no rows")
    return Path(os.path.commonpath([os.path.dirname(p) for p in paths]))


def sort_scored(source: Path, scores: Path, *, pipeline: Pipeline, recursive: bool, ignore: Sequence[str],
                journal: Journal | None, batch_size: int, command: str, remove_emptied: bool = True) -> SortSummary:
    """sort_tree over `source`, scoring only the photos whose rows no longer describe them."""
    rows = read_scores(scores)

    def process(batches: Iterable[Sequence[PhotoGroup]], *, inbox: Path,
                run_id: int | None) -> Iterator[list[Outcome]]:
        for batch in batches:
            yield file_scored(batch, rows, pipeline=pipeline, inbox=inbox, run_id=run_id)

    return sort_tree(source, pipeline=pipeline, recursive=recursive, ignore=ignore, journal=journal,
                     batch_size=batch_size, command=command, process=process, remove_emptied=remove_emptied)


def file_scored(batch: Sequence[PhotoGroup], rows: dict[str, Row], *, pipeline: Pipeline, inbox: Path,
                run_id: int | None) -> list[Outcome]:
    """One batch: trusted rows filed as they are, the rest through pipeline.process. In order."""
    trusted: dict[int, tuple[PhotoGroup, Verdict, KnownHash]] = {}
    dates: dict[Path, datetime] = {}
    t = pipeline.target
    for i, group in enumerate(batch):
        row = rows.get(str(group.primary.absolute()))
        still = still_scored(group.primary, row, pipeline, with_date=bool(t.layout))
        if still is not None and row is not None:
            known, taken = still
            verdict = Verdict(decide(row["score"], threshold=t.threshold, band=t.review_band), row["score"],
                              model_version=pipeline.classifier.version)
            trusted[i] = (group, verdict, known)
            if taken is not None:
                dates[group.primary] = taken
    again = [g for i, g in enumerate(batch) if i not in trusted]
    rescored = iter(pipeline.process(again, inbox=inbox, run_id=run_id) if again else [])
    filed = iter(pipeline.file_batch(list(trusted.values()), inbox=inbox, run_id=run_id, dates=dates))
    return [next(filed) if i in trusted else next(rescored) for i in range(len(batch))]


def still_scored(path: Path, row: Row | None, pipeline: Pipeline, *,
                 with_date: bool) -> tuple[KnownHash, datetime | None] | None:
    """The file's hash (and its date, for a `layout`) when its row still describes it: model
    version, size, mtime, sha256; else None. The hash comes with the signature it was taken under,
    so the mover trusts it only while the file stays as it was, and does not read it again."""
    if (row is None or row["score"] is None or row["sha256"] is None
            or row["model_version"] != pipeline.classifier.version):
        return None
    try:
        st = os.lstat(path)
        if st.st_size != row["size"] or st.st_mtime_ns != row["mtime_ns"]:
            return None
        data, known = read_photo(path, max_file_bytes=pipeline.max_file_bytes, follow_symlinks=False)
    except (OSError, ImageLoadError):
        return None  # the local pipeline finds out again what is wrong with it, and says so
    if known is None or known.sha256 != row["sha256"] or known.signature[3] != row["mtime_ns"]:
        return None
    taken = (date_taken(path, data) or datetime.fromtimestamp(known.signature[3] / 1e9)) if with_date else None
    return known, taken
