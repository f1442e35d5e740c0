"""`nordlys sort`: file an existing folder tree once, safely, with a progress bar and a summary."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import structlog

from nordlys.daemon.grouping import group_files
from nordlys.daemon.journal import Journal
from nordlys.daemon.pipeline import Outcome, Pipeline, Target
from nordlys.daemon.progress import ProgressBar
from nordlys.daemon.scan import scan_inbox

log = structlog.get_logger(__name__)

T = TypeVar("T")
ProcessBatches = Callable[..., Iterator[list[Outcome]]]  # Pipeline.process_batches' signature


@dataclass
class SortSummary:
    counts: Counter = field(default_factory=Counter)  # files per folder key (sidecars included)
    photos: Counter = field(default_factory=Counter)  # photo groups per folder key
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # filed in rejected/, with reason
    failed: list[tuple[Path, str]] = field(default_factory=list)  # left in place, with reason
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not regular files, videos: left in place
    seconds: float = 0.0
    dry_run: bool = False
    copied: bool = False  # copy mode (a synced folder, syncsafety.py): the sources stayed where they were

    def as_dict(self) -> dict:
        return {"files": dict(self.counts), "photos": dict(self.photos), "rejected": len(self.rejected),
                "failed": len(self.failed), "skipped": len(self.skipped), "seconds": round(self.seconds, 3),
                "dry_run": self.dry_run}


def output_dirs(target: Target) -> list[Path]:
    return [target.output_root / target.folder_name(key)
            for key in ("aurora", "other", "review", "rejected", "duplicates")]


def tapered_batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Batches of `size`, except that the last `size` items go in halving batches (8 -> 4, 2, 1, 1).

    Why: once the last photo is decoded, the cores idle while the final batch is scored and
    filed. A one-photo final batch shortens that tail from ~35 ms to a few on a 64-photo card
    (bench/, docs/PERFORMANCE.md); the few smaller model calls cost far less than that.
    """
    head = max(len(items) - size, 0) // size * size  # full batches that stay full
    batches: list[Sequence[T]] = [items[i:i + size] for i in range(0, head, size)]
    rest = items[head:]
    while rest:
        take = max(len(rest) // 2, 1)
        batches.append(rest[:take])
        rest = rest[take:]
    return batches


def sort_tree(source: Path, *, pipeline: Pipeline, recursive: bool, ignore: Sequence[str],
              journal: Journal | None, batch_size: int, command: str = "sort",
              process: ProcessBatches | None = None) -> SortSummary:
    """Sort every file under `source` once. Output folders inside `source` are never re-sorted.
    `process` replaces pipeline.process_batches (nordlys.cluster files with scores made elsewhere)."""
    started = time.perf_counter()
    summary = SortSummary(dry_run=pipeline.dry_run, copied=os.path.realpath(source) in pipeline.target.copy_from)
    scan = scan_inbox(source, recursive=recursive, ignore=ignore, exclude=output_dirs(pipeline.target))
    for path, reason in scan.skipped:
        log.warning("skipped", path=str(path), reason=reason)
    summary.skipped = scan.skipped
    groups = group_files(scan.files)
    run_id = journal.start_run(command) if journal is not None and not pipeline.dry_run else None
    batches = tapered_batches(groups, batch_size)
    with ProgressBar(len(groups), label="sorting") as bar:
        # process_batches decodes the next batches while this one is scored and filed
        for batch, outcomes in zip(batches, (process or pipeline.process_batches)(batches, inbox=source,
                                                                                 run_id=run_id)):
            for outcome in outcomes:
                if outcome.verdict is None:  # by a setting (videos: leave) it is no failure: exit 0
                    (summary.skipped if outcome.by_rule else summary.failed).append((outcome.group.primary,
                                                                                     outcome.error))
                    continue
                key = outcome.verdict.folder
                summary.photos[key] += 1
                summary.counts[key] += len(outcome.group.members)
                if key == "rejected":
                    summary.rejected.append((outcome.group.primary, outcome.verdict.reason))
            bar.advance(len(batch))
    summary.seconds = time.perf_counter() - started
    if run_id is not None and journal is not None:
        journal.finish_run(run_id, summary.as_dict())
    return summary


def format_summary(summary: SortSummary, target: Target) -> str:
    """The closing summary printed by `nordlys sort`: counts per folder, then every problem."""
    verb = {(False, False): "moved", (True, False): "would move", (False, True): "copied",
            (True, True): "would copy"}[summary.dry_run, summary.copied]
    lines = [f"{verb} {sum(summary.counts.values())} files ({sum(summary.photos.values())} photos) "
             f"in {summary.seconds:.1f} s"]
    for key in ("aurora", "other", "review", "rejected", "duplicates"):
        if summary.counts.get(key):
            lines.append(f"  {target.output_root / target.folder_name(key)}: "
                         f"{summary.photos[key]} photos, {summary.counts[key]} files")
    for path, reason in summary.rejected:
        lines.append(f"  rejected: {path}: {reason}")
    for path, reason in summary.failed:
        lines.append(f"  left in place: {path}: {reason}")
    for path, reason in summary.skipped:
        lines.append(f"  skipped: {path}: {reason}")
    return "\n".join(lines)
