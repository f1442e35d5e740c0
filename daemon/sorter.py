"""`nordlys sort`: file an existing folder tree once, safely, with a progress bar and a summary."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import structlog

from nordlys.daemon.grouping import group_files
from nordlys.daemon.journal import Journal
from nordlys.daemon.paths import is_within, resolved
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
    source: Path = Path()
    total: int = 0  # photo groups found
    done: int = 0  # photo groups handled (filed, left or skipped by a rule) before the end or a Ctrl-C
    interrupted: bool = False  # Ctrl-C: stopped after the batch in hand
    started: str = ""  # local time, to the second: `nordlys undo --since` takes it as it is printed
    plan: list[tuple[Path, Path]] = field(default_factory=list)  # dry run: every file's source and destination
    removed: list[Path] = field(default_factory=list)  # folders this sort emptied and removed

    def as_dict(self) -> dict:
        return {"files": dict(self.counts), "photos": dict(self.photos), "rejected": len(self.rejected),
                "failed": len(self.failed), "skipped": len(self.skipped), "seconds": round(self.seconds, 3),
                "dry_run": self.dry_run, "interrupted": self.interrupted, "removed_folders": len(self.removed)}


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
              process: ProcessBatches | None = None, remove_emptied: bool = True) -> SortSummary:
    """Sort every file under `source` once. Output folders inside `source` are never re-sorted.
    `process` replaces pipeline.process_batches (nordlys.cluster files with scores made elsewhere).
    remove_emptied: remove the folders under `source` that this sort emptied (card1/DCIM/100CANON).
    A Ctrl-C stops after the batch in hand, so the summary says exactly what moved."""
    started = time.perf_counter()
    summary = SortSummary(dry_run=pipeline.dry_run, copied=os.path.realpath(source) in pipeline.target.copy_from,
                          source=source, started=datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S"))
    scan = scan_inbox(source, recursive=recursive, ignore=ignore, exclude=output_dirs(pipeline.target))
    for path, reason in scan.skipped:
        log.warning("skipped", path=str(path), reason=reason)
    summary.skipped = scan.skipped
    groups = group_files(scan.files)
    run_id = journal.start_run(command) if journal is not None and not pipeline.dry_run else None
    batches = tapered_batches(groups, batch_size)
    summary.total = len(groups)
    emptied: set[Path] = set()  # folders files moved out of
    # process_batches decodes the next batches while this one is scored and filed
    results = (process or pipeline.process_batches)(batches, inbox=source, run_id=run_id)
    with ProgressBar(len(groups), label="sorting") as bar, stop_on_ctrl_c() as stop, contextlib.closing(
            results if hasattr(results, "close") else _Closing(results)):
        for batch, outcomes in zip(batches, results):
            summary.done += len(batch)
            for outcome in outcomes:
                if pipeline.dry_run:
                    summary.plan += [(m.source, m.dest) for m in outcome.moved]
                emptied.update(m.source.parent for m in outcome.moved if not m.kept_source)
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
            if stop.is_set():
                summary.interrupted = True
                break
    if remove_emptied and not pipeline.dry_run:
        summary.removed = remove_emptied_folders(emptied, source)
    summary.seconds = time.perf_counter() - started
    if run_id is not None and journal is not None:
        journal.finish_run(run_id, summary.as_dict())
    return summary


class _Closing:
    """contextlib.closing for a results iterable that has no close()."""

    def __init__(self, results: Iterable[object]) -> None:
        self.results = results

    def close(self) -> None:
        pass


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[threading.Event]:
    """While sorting, the first Ctrl-C asks to stop after the batch in hand (the event is set);
    a second one interrupts at once (KeyboardInterrupt, as before: the journal's intents let the
    next run finish any move it cut short). Why not at once: a batch is filed in one go, and a
    stop between batches lets the summary say exactly what moved.

    The handler only sets the event and writes one line with os.write: it may run while the main
    thread holds the logger's or the journal's lock, so it must take none."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only: nothing to install
        return

    def on_sigint(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        with contextlib.suppress(OSError):
            os.write(2, b"\nCtrl-C: stopping after the photos in hand (Ctrl-C again to stop at once)\n")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def remove_emptied_folders(folders: Iterable[Path], root: Path) -> list[Path]:
    """Remove the given folders and their parents below `root` that are empty now, deepest first.

    Only folders files were moved out of, and their parents, are candidates: a folder that was
    empty before the sort is not the sort's to remove, and `root` itself (the folder the user
    named) always stays. os.rmdir removes only an empty folder, so a file that arrives meanwhile
    keeps its folder. `nordlys undo` makes the folders again as it puts the files back."""
    top = resolved(root)
    candidates: set[Path] = set()
    for folder in folders:
        for path in (resolved(folder), *resolved(folder).parents):
            if path == top or not is_within(path, top):
                break
            candidates.add(path)
    removed = []
    for folder in sorted(candidates, key=lambda p: len(p.parts), reverse=True):
        try:
            os.rmdir(folder)
        except OSError:
            continue  # not empty, or gone: left as it is
        log.info("removed emptied folder", path=str(folder))
        removed.append(folder)
    return removed


def plural(n: int, word: str) -> str:
    """'1 photo', '2 photos'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def format_plan(summary: SortSummary, target: Target) -> list[str]:
    """A dry run's plan, one file a line: its path under the source → its path under the output root."""
    def shown(path: Path, base: Path) -> str:
        path, base = resolved(path), resolved(base)
        return str(path.relative_to(base)) if is_within(path, base) else str(path)

    if not summary.plan:
        return []
    return [f"plan: {summary.source} → {target.output_root}"] + [
        f"  {shown(src, summary.source)} → {shown(dest, target.output_root)}" for src, dest in summary.plan]


def format_summary(summary: SortSummary, target: Target) -> str:
    """The closing summary printed by `nordlys sort`: counts per folder, then every problem."""
    verb = {(False, False): "moved", (True, False): "would move", (False, True): "copied",
            (True, True): "would copy"}[summary.dry_run, summary.copied]
    moved = (f"{verb} {plural(sum(summary.counts.values()), 'file')} "
             f"({plural(sum(summary.photos.values()), 'photo')})")
    if summary.interrupted:
        lines = format_plan(summary, target) + [
            f"interrupted: {moved} of {plural(summary.total, 'photo')} in {summary.seconds:.1f} s; "
            f"{plural(summary.total - summary.done, 'photo')} not sorted yet"]
    else:
        lines = format_plan(summary, target) + [f"{moved} in {summary.seconds:.1f} s"]
    for key in ("aurora", "other", "review", "rejected", "duplicates"):
        if summary.counts.get(key):
            lines.append(f"  {target.output_root / target.folder_name(key)}: "
                         f"{plural(summary.photos[key], 'photo')}, {plural(summary.counts[key], 'file')}")
    if summary.removed:
        lines.append(f"  removed {plural(len(summary.removed), 'emptied folder')} (--keep-empty-folders keeps them)")
    for path, reason in summary.rejected:
        lines.append(f"  rejected: {path}: {reason}")
    for path, reason in summary.failed:
        lines.append(f"  left in place: {path}: {reason}")
    for path, reason in summary.skipped:
        lines.append(f"  skipped: {path}: {reason}")
    if summary.interrupted:
        again = f"nordlys sort {shlex.quote(str(summary.source))}"
        if resolved(target.output_root) != resolved(summary.source):
            again += f" --dest {shlex.quote(str(target.output_root))}"
        lines.append(f"to resume, run it again: {again} (what is filed is not looked at again)")
        if not summary.dry_run and summary.counts:
            lines.append(f"to undo this sort: nordlys undo --since {summary.started}")
    return "\n".join(lines)
