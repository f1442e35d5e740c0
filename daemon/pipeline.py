"""Decode → score → place → move, for a batch of photo groups. Shared by `sort` and `watch`.

Decoding runs on a thread pool (Pillow releases the GIL while decoding), scoring is one batched
onnxruntime call, and every group then goes through the one placement decision and the one
mover. Each group has its own try/except: a bad photo is logged, journaled and counted, and the
batch carries on.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import structlog

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.config import FoldersConfig
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
from nordlys.daemon.loader import ImageLoadError, load_image
from nordlys.daemon.mover import MoveError, MoveResult, move_group
from nordlys.daemon.placement import REJECTED, Verdict, decide, destination_dir

log = structlog.get_logger(__name__)


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
        self.pool = ThreadPoolExecutor(max_workers=decode_workers or os.cpu_count() or 2,
                                       thread_name_prefix="nordlys-decode")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def decode(self, group: PhotoGroup) -> np.ndarray | ImageLoadError:
        meta = self.classifier.meta
        try:
            return load_image(group.primary, size=meta.input_size, resize=meta.resize, max_pixels=self.max_pixels)
        except ImageLoadError as exc:
            return exc

    def verdicts(self, groups: Sequence[PhotoGroup]) -> list[Verdict]:
        """Decode every primary in parallel and score the readable ones in one batch."""
        decoded = list(self.pool.map(self.decode, groups))
        readable = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        scores = self.classifier.score([decoded[i] for i in readable])  # type: ignore[misc]
        score_of = {i: float(s) for i, s in zip(readable, scores)}
        version, t = self.classifier.version, self.target
        result = []
        for i, item in enumerate(decoded):
            if isinstance(item, ImageLoadError):
                result.append(Verdict(REJECTED, None, reason=item.reason, model_version=version))
            else:
                folder = decide(score_of[i], threshold=t.threshold, band=t.review_band)
                result.append(Verdict(folder, score_of[i], model_version=version))
        return result

    def process(self, groups: Sequence[PhotoGroup], *, inbox: Path, run_id: int | None) -> list[Outcome]:
        """Classify and file each group; never raises for a single bad file."""
        started = time.perf_counter()
        verdicts = self.verdicts(groups)
        per_group_ms = (time.perf_counter() - started) * 1000 / max(len(groups), 1)
        return [self.file(group, verdict, inbox=inbox, run_id=run_id, millis=per_group_ms)
                for group, verdict in zip(groups, verdicts)]

    def file(self, group: PhotoGroup, verdict: Verdict, *, inbox: Path, run_id: int | None,
             millis: float = 0.0) -> Outcome:
        t = self.target
        dest_dir = destination_dir(group.primary, inbox=inbox, output_root=t.output_root,
                                   folder_name=t.folder_name(verdict.folder), keep_subfolders=t.keep_subfolders)
        start = time.perf_counter()
        try:
            moved = move_group(group, dest_dir, verdict, journal=self.journal, run_id=run_id, dry_run=self.dry_run,
                               reserved=self.planned if self.dry_run else None)
        except MoveError as exc:
            log.error("left in place", path=str(group.primary), reason=exc.reason, folder=verdict.folder)
            return Outcome(group, None, [], error=exc.reason)
        except OSError as exc:  # anything the mover did not classify still must not stop the batch
            log.error("left in place", path=str(group.primary), reason=str(exc), folder=verdict.folder)
            return Outcome(group, None, [], error=str(exc))
        ms = millis + (time.perf_counter() - start) * 1000
        if verdict.folder == REJECTED:
            log.warning("rejected", path=str(group.primary), reason=verdict.reason, ms=round(ms, 1))
        else:
            log.info("would sort" if self.dry_run else "sorted", path=str(group.primary), label=verdict.folder,
                     score=round(verdict.score or 0.0, 4), ms=round(ms, 1))
        return Outcome(group, verdict, moved, millis=ms)
