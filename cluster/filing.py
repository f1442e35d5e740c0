"""`nordlys sort --scores scores.parquet`: file scored photos on one machine.

The filing is `nordlys sort`'s own (sorter.sort_tree: scan, groups, journal run, progress,
summary; Pipeline.file_batch: placement, mover, journal), so `nordlys undo` works as after any
sort. Only the scoring differs: a photo whose row still describes it (same model version, size,
mtime and sha256, the hash taken by reading the file here once) is placed by its row's score under
this machine's threshold and review band; any other photo (new, changed, unreadable when scored,
scored by another model version) goes through the local Pipeline, decoded and scored on the spot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from nordlys.cluster.scores import Row, read_scores
from nordlys.daemon.fileops import KnownHash, file_signature, sha256_file
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
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
                journal: Journal | None, batch_size: int, command: str) -> SortSummary:
    """sort_tree over `source`, scoring only the photos whose rows no longer describe them."""
    rows = read_scores(scores)

    def process(batches: Iterable[Sequence[PhotoGroup]], *, inbox: Path,
                run_id: int | None) -> Iterator[list[Outcome]]:
        for batch in batches:
            yield file_scored(batch, rows, pipeline=pipeline, inbox=inbox, run_id=run_id)

    return sort_tree(source, pipeline=pipeline, recursive=recursive, ignore=ignore, journal=journal,
                     batch_size=batch_size, command=command, process=process)


def file_scored(batch: Sequence[PhotoGroup], rows: dict[str, Row], *, pipeline: Pipeline, inbox: Path,
                run_id: int | None) -> list[Outcome]:
    """One batch: trusted rows filed as they are, the rest through pipeline.process. In order."""
    trusted: dict[int, tuple[PhotoGroup, Verdict, KnownHash]] = {}
    for i, group in enumerate(batch):
        known = still_scored(group.primary, rows.get(str(group.primary.absolute())), pipeline.classifier.version)
        if known is not None:
            score = rows[str(group.primary.absolute())]["score"]
            t = pipeline.target
            verdict = Verdict(decide(score, threshold=t.threshold, band=t.review_band), score,
                              model_version=pipeline.classifier.version)
            trusted[i] = (group, verdict, known)
    again = [g for i, g in enumerate(batch) if i not in trusted]
    rescored = iter(pipeline.process(again, inbox=inbox, run_id=run_id) if again else [])
    filed = iter(pipeline.file_batch(list(trusted.values()), inbox=inbox, run_id=run_id))
    return [next(filed) if i in trusted else next(rescored) for i in range(len(batch))]


def still_scored(path: Path, row: Row | None, version: str) -> KnownHash | None:
    """The file's hash when its row still describes it (model version, size, mtime, sha256), else
    None. The hash comes with the signature it was taken under, so the mover trusts it only while
    the file stays as it was, and does not read it a second time."""
    if row is None or row["score"] is None or row["model_version"] != version or row["sha256"] is None:
        return None
    try:
        before = os.lstat(path)
        if before.st_size != row["size"] or before.st_mtime_ns != row["mtime_ns"]:
            return None
        sha, size = sha256_file(path)
        after = os.lstat(path)
    except OSError:
        return None  # the local pipeline reports what is wrong with it
    if file_signature(before) != file_signature(after) or sha != row["sha256"]:
        return None
    return KnownHash(sha, size, file_signature(after))
