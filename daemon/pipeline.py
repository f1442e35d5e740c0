"""Decode → score → place → move, for a batch of photo groups. Shared by `sort` and `watch`.

Decoding runs on a thread pool (Pillow releases the GIL while decoding), scoring is one batched
onnxruntime call, and every group then goes through the one placement decision and the one
mover. Each group has its own try/except: a bad photo is logged, journaled and counted, and the
batch carries on.

Speed, as measured by bench/ (docs/PERFORMANCE.md): each primary is read once, by its decode
worker, which also hashes those bytes for the mover (hashlib releases the GIL too), so the
mover does not read the file again while it is unchanged; and `process_batches` decodes the
next batch while the current one is scored and filed, so the cores never wait for the disk.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import structlog

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.config import FoldersConfig
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
from nordlys.daemon.loader import ImageLoadError, load_image, warm_up
from nordlys.daemon.fileops import KnownHash, read_hashed
from nordlys.daemon.mover import MoveError, MoveResult, PlannedGroup, move_group, move_groups, plan_group
from nordlys.daemon.placement import REJECTED, Verdict, decide, destination_dir

log = structlog.get_logger(__name__)

LOOKAHEAD = 2  # batches decoding ahead of the one being scored and filed (process_batches)


def usable_cpus() -> int:
    """CPUs this process may run on (taskset, cgroup cpusets), not the host's count: a
    2-core container on a 64-core host gets 2 decode threads, not 64 competing ones."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 2


@dataclass(frozen=True)
class Target:
    """Where decided photos go: the resolved placement settings."""

    output_root: Path
    folders: FoldersConfig
    keep_subfolders: bool
    threshold: float
    review_band: float

    def folder_name(self, key: str) -> str:
        return str(getattr(self.folders, key))


@dataclass(frozen=True)
class Decoded:
    """A primary's model input (or why it has none) and the hash of the bytes it was made from."""

    pixels: np.ndarray | ImageLoadError
    known: KnownHash | None = None
    torn: bool = False  # the file changed while it was read: these pixels may mix two versions


@dataclass
class Outcome:
    group: PhotoGroup
    verdict: Verdict | None  # None when the group could not be moved at all
    moved: list[MoveResult]
    error: str = ""  # why the group stayed where it was
    millis: float = 0.0


class Pipeline:
    """One per process: owns the decode pool; the classifier and journal are passed in."""

    def __init__(self, classifier: Classifier, journal: Journal | None, target: Target, *,
                 max_pixels: int, dry_run: bool = False, decode_workers: int | None = None) -> None:
        self.classifier, self.journal, self.target = classifier, journal, target
        self.max_pixels, self.dry_run = max_pixels, dry_run
        self.planned: set[Path] = set()  # names a dry run has "used", so two groups never claim one
        self.pool = ThreadPoolExecutor(max_workers=decode_workers or usable_cpus(),
                                       thread_name_prefix="nordlys-decode")
        warm_up()  # one-time set-up belongs here, not in the first photo's latency

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def decode(self, group: PhotoGroup) -> Decoded:
        """Read the primary once: its bytes become the model input and its hash (for the mover).
        A file read_hashed refuses (symlink, FIFO, unreadable) goes to the loader, whose own
        checks give the reason it is rejected."""
        meta = self.classifier.meta
        try:
            data, known = read_hashed(group.primary)
        except OSError:
            data, known = None, None
        torn = data is not None and known is None
        try:
            pixels = load_image(group.primary, size=meta.input_size, resize=meta.resize,
                                max_pixels=self.max_pixels, data=data)
        except ImageLoadError as exc:
            return Decoded(exc, known, torn)
        return Decoded(pixels, known, torn)

    def verdicts(self, groups: Sequence[PhotoGroup]) -> list[Verdict]:
        """Decode every primary in parallel and score the readable ones in one batch."""
        return self._score(list(self.pool.map(self.decode, groups)))

    def _score(self, decoded: Sequence[Decoded]) -> list[Verdict]:
        readable = [i for i, d in enumerate(decoded) if isinstance(d.pixels, np.ndarray)]
        scores = self.classifier.score([decoded[i].pixels for i in readable])  # type: ignore[misc]
        score_of = {i: float(s) for i, s in zip(readable, scores)}
        version, t = self.classifier.version, self.target
        result = []
        for i, item in enumerate(decoded):
            if isinstance(item.pixels, ImageLoadError):
                result.append(Verdict(REJECTED, None, reason=item.pixels.reason, model_version=version))
            else:
                folder = decide(score_of[i], threshold=t.threshold, band=t.review_band)
                result.append(Verdict(folder, score_of[i], model_version=version))
        return result

    def process(self, groups: Sequence[PhotoGroup], *, inbox: Path, run_id: int | None) -> list[Outcome]:
        """Classify and file each group; never raises for a single bad file."""
        return next(self.process_batches([groups], inbox=inbox, run_id=run_id))

    def process_batches(self, batches: Iterable[Sequence[PhotoGroup]], *, inbox: Path,
                        run_id: int | None) -> Iterator[list[Outcome]]:
        """`process` for many batches, one list of outcomes per batch, in order. The next
        LOOKAHEAD batches decode on the pool while this one is scored and filed, so the pool
        never waits for the disk; what waits is model-sized pixels, ~150 kB a photo."""
        pending: deque[tuple[Sequence[PhotoGroup], list[Future[Decoded]], float]] = deque()
        for groups in batches:
            pending.append((groups, [self.pool.submit(self.decode, g) for g in groups], time.perf_counter()))
            if len(pending) > LOOKAHEAD:
                yield self._finish(*pending.popleft(), inbox=inbox, run_id=run_id)
        while pending:
            yield self._finish(*pending.popleft(), inbox=inbox, run_id=run_id)

    def _finish(self, groups: Sequence[PhotoGroup], futures: list[Future[Decoded]], started: float, *,
                inbox: Path, run_id: int | None) -> list[Outcome]:
        decoded = [f.result() for f in futures]  # decode never raises: errors come back as values
        verdicts = self._score(decoded)
        per_group_ms = (time.perf_counter() - started) * 1000 / max(len(groups), 1)
        outcomes: list[Outcome | None] = [self._left_for_later(g) if d.torn else None for g, d in zip(groups, decoded)]
        todo = [i for i, o in enumerate(outcomes) if o is None]
        filed = self.file_batch([(groups[i], verdicts[i], decoded[i].known) for i in todo], inbox=inbox,
                                run_id=run_id, millis=per_group_ms)
        for i, outcome in zip(todo, filed):
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _left_for_later(group: PhotoGroup) -> Outcome:
        """A verdict made from bytes that changed mid-read must not travel with the new bytes."""
        reason = "changed while it was read; not moved, it is looked at again"
        log.info("left in place", path=str(group.primary), reason=reason)
        return Outcome(group, None, [], error=reason)

    def _dest_dir(self, group: PhotoGroup, verdict: Verdict, inbox: Path) -> Path:
        t = self.target
        return destination_dir(group.primary, inbox=inbox, output_root=t.output_root,
                               folder_name=t.folder_name(verdict.folder), keep_subfolders=t.keep_subfolders)

    def file(self, group: PhotoGroup, verdict: Verdict, *, inbox: Path, run_id: int | None,
             millis: float = 0.0, known: KnownHash | None = None) -> Outcome:
        """File one group (a companion following its photo, a dry run's group): its own journal
        transactions. Whole batches go through file_batch."""
        start = time.perf_counter()
        try:
            moved = move_group(group, self._dest_dir(group, verdict, inbox), verdict, journal=self.journal,
                               run_id=run_id, dry_run=self.dry_run, reserved=self.planned if self.dry_run else None,
                               known={group.primary: known} if known is not None else None)
        except Exception as exc:  # one photo's failure, whatever it is, must not stop the batch
            return self._not_filed(group, verdict, exc)
        return self._filed(group, verdict, moved, millis + (time.perf_counter() - start) * 1000)

    def file_batch(self, items: Sequence[tuple[PhotoGroup, Verdict, KnownHash | None]], *, inbox: Path,
                   run_id: int | None, millis: float = 0.0) -> list[Outcome]:
        """File decided groups together: one journal transaction for all their intents and one for
        all their "done" rows (mover.move_groups), instead of two per photo. Outcomes in order."""
        if self.dry_run or self.journal is None or len(items) < 2:
            return [self.file(g, v, inbox=inbox, run_id=run_id, millis=millis, known=k) for g, v, k in items]
        start = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(items)
        planned: list[tuple[int, PlannedGroup]] = []
        taken: set[Path] = set()
        for i, (group, verdict, known) in enumerate(items):
            try:
                planned.append((i, plan_group(group, self._dest_dir(group, verdict, inbox), verdict, taken=taken,
                                              known={group.primary: known} if known is not None else None)))
            except Exception as exc:
                outcomes[i] = self._not_filed(group, verdict, exc)
        results = move_groups([p for _, p in planned], journal=self.journal, run_id=run_id)
        ms = millis + (time.perf_counter() - start) * 1000 / len(items)
        for (i, p), result in zip(planned, results):
            outcomes[i] = (self._not_filed(p.group, p.verdict, result) if isinstance(result, Exception)
                           else self._filed(p.group, p.verdict, result, ms))
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _not_filed(group: PhotoGroup, verdict: Verdict, exc: Exception) -> Outcome:
        reason = exc.reason if isinstance(exc, MoveError) else f"{type(exc).__name__}: {exc}"
        if not os.path.lexists(group.primary):  # deleted or moved away meanwhile: nothing is in place
            log.info("gone before it was filed", path=str(group.primary), reason=reason)
        else:
            log.error("left in place", path=str(group.primary), reason=reason, folder=verdict.folder,
                      exc_info=exc if not isinstance(exc, (MoveError, OSError)) else False)
        return Outcome(group, None, [], error=reason)

    def _filed(self, group: PhotoGroup, verdict: Verdict, moved: list[MoveResult], ms: float) -> Outcome:
        if verdict.folder == REJECTED:
            log.warning("rejected", path=str(group.primary), reason=verdict.reason, ms=round(ms, 1))
        else:
            log.info("would sort" if self.dry_run else "sorted", path=str(group.primary), label=verdict.folder,
                     score=round(verdict.score or 0.0, 4), ms=round(ms, 1))
        return Outcome(group, verdict, moved, millis=ms)
