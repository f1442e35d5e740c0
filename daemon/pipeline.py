"""Decode → score → place → move, for a batch of photo groups. Shared by `sort` and `watch`.

Decoding runs on a thread pool (Pillow releases the GIL while decoding), scoring is one batched
onnxruntime call, and every group then goes through the one placement decision and the one
mover. Each group has its own try/except: a bad photo is logged, journaled and counted, and the
batch carries on. Whatever goes wrong while one photo is decoded or scored (a decoder's
TypeError included) rejects that photo, with the reason, and never its batch-mates.

Failures are journaled here, where they happen ("left in place" rows with the reason), so `sort`
and `watch` write the same rows.

What is read, and when (the module docs of loader and fileops say why): a video is judged by
its name and never read (`videos` decides where it goes); any other file is read only after its
size and first bytes passed the loader's checks. A file that stops early (truncated, empty) and
changed less than `truncated_wait` seconds ago is left in place with `Outcome.recheck_in` set:
its writer may only have paused (a writer that reopens the file for each chunk, an interrupted
rsync --partial that will resume, a writer the /proc check cannot see), so it is judged again
when it changes or once it has been still that long, and only then rejected.

Speed, as measured by bench/ (docs/PERFORMANCE.md): each primary is read once, by its decode
worker, which also hashes those bytes for the mover (hashlib releases the GIL too), so the
mover does not read the file again while it is unchanged; and `process_batches` decodes the
next batch while the current one is scored and filed, so the cores never wait for the disk.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import structlog

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.config import FoldersConfig
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
from nordlys.daemon.fileops import KnownHash
from nordlys.daemon.grouping import VIDEO_SUFFIXES
from nordlys.daemon.loader import DEFAULT_MAX_FILE_BYTES, ImageLoadError, date_taken, load_image, read_photo, warm_up
from nordlys.daemon.mover import MoveError, MoveResult, PlannedGroup, move_group, move_groups, plan_group
from nordlys.daemon.syncsafety import copies_from
from nordlys.daemon.placement import (DUPLICATES, KEEP, LEAVE, REJECTED, REVIEW, TO_FOLDER, Verdict, decide,
                                     destination_dir, duplicate_rule, layout_for)

log = structlog.get_logger(__name__)

LOOKAHEAD = 2  # batches decoding ahead of the one being scored and filed (process_batches)
VIDEO_RULES = {"leave": None, "review": REVIEW, "rejected": REJECTED}  # `videos` -> folder key (None: stays)
VIDEO_REASON = "a video: not classified"


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
    duplicates: str = "leave"  # config `duplicates`: a photo whose bytes were filed before (placement.duplicate_rule)
    copy_from: frozenset[str] = frozenset()  # resolved folders whose files are copied, not moved (syncsafety.py)
    layout: str = ""  # config `layout`: dated folders under aurora/, other/, review/ (placement.expand_layout)

    def folder_name(self, key: str) -> str:
        return str(getattr(self.folders, key))


@dataclass(frozen=True)
class Decoded:
    """A primary's model input (or why it has none) and the hash of the bytes it was made from."""

    pixels: np.ndarray | ImageLoadError
    known: KnownHash | None = None
    torn: bool = False  # the file changed while it was read: these pixels may mix two versions
    video: bool = False  # judged by its name, never read
    taken: datetime | None = None  # EXIF DateTimeOriginal, else mtime, from this read; only when a layout needs it


@dataclass
class Outcome:
    group: PhotoGroup
    verdict: Verdict | None  # None when the group could not be moved at all
    moved: list[MoveResult]
    error: str = ""  # why the group stayed where it was
    millis: float = 0.0
    recheck_in: float | None = None  # left because it may still be written: look again in this many seconds
    by_rule: bool = False  # left in place by a setting (`videos: leave`), not by a failure


class Pipeline:
    """One per process: owns the decode pool; the classifier and journal are passed in."""

    def __init__(self, classifier: Classifier, journal: Journal | None, target: Target, *,
                 max_pixels: int, dry_run: bool = False, decode_workers: int | None = None,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, videos: str = "leave",
                 truncated_wait: float = 0.0) -> None:
        if videos not in VIDEO_RULES:
            raise ValueError(f"videos={videos!r}: expected one of {list(VIDEO_RULES)}")
        self.classifier, self.journal, self.target = classifier, journal, target
        self.max_pixels, self.dry_run = max_pixels, dry_run
        self.max_file_bytes, self.videos, self.truncated_wait = max_file_bytes, videos, truncated_wait
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
        Never raises: whatever goes wrong with this one photo comes back as its ImageLoadError."""
        path, meta = group.primary, self.classifier.meta
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return Decoded(ImageLoadError(path, VIDEO_REASON), video=True)
        data: bytes | None = None
        known: KnownHash | None = None
        try:
            data, known = read_photo(path, max_file_bytes=self.max_file_bytes, follow_symlinks=False)
            pixels = load_image(path, size=meta.input_size, resize=meta.resize, max_pixels=self.max_pixels, data=data)
        except ImageLoadError as exc:
            return Decoded(exc, known, torn=data is not None and known is None)
        except Exception as exc:  # a decoder's bug or an odd file (issue 12: a TypeError sank a batch)
            log.debug("decode failed", path=str(path), exc_info=exc)
            reason = f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"
            return Decoded(ImageLoadError(path, reason), known, torn=data is not None and known is None)
        taken = None
        if self.target.layout and known is not None:  # from the bytes just read: no second read (loader.date_taken)
            taken = date_taken(path, data) or datetime.fromtimestamp(known.signature[3] / 1e9)
        return Decoded(pixels, known, torn=known is None, taken=taken)

    def verdicts(self, groups: Sequence[PhotoGroup]) -> list[Verdict]:
        """Decode every primary in parallel and score the readable ones in one batch."""
        return [verdict for _, verdict in self.scored(groups)]

    def scored(self, groups: Sequence[PhotoGroup]) -> list[tuple[Decoded, Verdict]]:
        """`verdicts` with what each was decoded from (its hash, for nordlys.cluster's score rows)."""
        decoded = list(self.pool.map(self.decode, groups))
        return list(zip(decoded, self._score(decoded)))

    def _score(self, decoded: Sequence[Decoded]) -> list[Verdict]:
        readable = [i for i, d in enumerate(decoded) if isinstance(d.pixels, np.ndarray)]
        scores = self._scores([decoded[i].pixels for i in readable])  # type: ignore[misc]
        score_of = dict(zip(readable, scores))
        version, t = self.classifier.version, self.target
        result = []
        for i, item in enumerate(decoded):
            score = score_of.get(i)
            if item.video:
                folder = VIDEO_RULES[self.videos]
                result.append(Verdict(folder or REJECTED, None, reason=VIDEO_REASON, model_version=version))
            elif isinstance(item.pixels, ImageLoadError):
                result.append(Verdict(REJECTED, None, reason=item.pixels.reason, model_version=version))
            elif isinstance(score, Exception):
                result.append(Verdict(REJECTED, None, reason=f"cannot be scored ({type(score).__name__}: "
                                                             f"{str(score)[:120]})", model_version=version))
            else:
                assert score is not None
                folder = decide(score, threshold=t.threshold, band=t.review_band)
                result.append(Verdict(folder, score, model_version=version))
        return result

    def _scores(self, pixels: list[np.ndarray]) -> list[float | Exception]:
        """One batched call; when it fails, each photo alone, so only a photo that cannot be scored
        is rejected (the model itself was probed when it was loaded)."""
        try:
            return [float(s) for s in self.classifier.score(pixels)] if pixels else []
        except Exception as batch_error:
            log.warning("batch scoring failed; scoring each photo alone", error=f"{type(batch_error).__name__}: "
                                                                                  f"{str(batch_error)[:200]}")
        scores: list[float | Exception] = []
        for one in pixels:
            try:
                scores.append(float(self.classifier.score([one])[0]))
            except Exception as exc:
                scores.append(exc)
        return scores

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
        outcomes: list[Outcome | None] = [self._left_before_filing(g, d) for g, d in zip(groups, decoded)]
        self._journal_left([o for o in outcomes if o is not None], run_id=run_id, since_id=None)
        todo = [i for i, o in enumerate(outcomes) if o is None]
        filed = self.file_batch([(groups[i], verdicts[i], decoded[i].known) for i in todo], inbox=inbox,
                                run_id=run_id, millis=per_group_ms,
                                dates={groups[i].primary: d for i in todo if (d := decoded[i].taken) is not None})
        for i, outcome in zip(todo, filed):
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    def _left_before_filing(self, group: PhotoGroup, decoded: Decoded) -> Outcome | None:
        """Why this group is not filed now, or None when it goes ahead:
        - a verdict made from bytes that changed mid-read must not travel with the new bytes;
        - `videos: leave` keeps a video where it is;
        - a file that stops early and changed lately is looked at again later (module doc)."""
        reason, recheck_in, by_rule = "", None, False
        if decoded.torn:
            reason = "changed while it was read; not moved, it is looked at again"
        elif decoded.video and VIDEO_RULES[self.videos] is None:
            reason, by_rule = f"{VIDEO_REASON} (videos: leave)", True
        elif isinstance(decoded.pixels, ImageLoadError) and decoded.pixels.incomplete:
            recheck_in = self._still_changing(group.primary)
            if recheck_in is not None:
                reason = (f"{decoded.pixels.reason}, changed in the last {self.truncated_wait:g} s: judged again "
                          f"when it changes or once it has been still that long")
        if not reason:
            return None
        log.info("left in place", path=str(group.primary), reason=reason)
        return Outcome(group, None, [], error=reason, recheck_in=recheck_in, by_rule=by_rule)

    def _still_changing(self, path: Path) -> float | None:
        """Seconds until the file will have been still for truncated_wait, or None when it has.
        "Still" counts from the later of mtime and ctime: rsync gives a saved partial file the
        source's old mtime, but the rename that put it there sets its ctime."""
        if self.truncated_wait <= 0:
            return None
        try:
            st = os.lstat(path)
        except OSError:
            return None
        left = self.truncated_wait - (time.time() - max(st.st_mtime, st.st_ctime))
        return left if left > 0 else None

    def _dest_dir(self, group: PhotoGroup, verdict: Verdict, inbox: Path, taken: datetime | None) -> Path:
        """A late sibling goes into the folder its photo was filed in (its own date or sub-folder may
        differ); anything else where placement.destination_dir puts it. taken: the primary's EXIF
        date from its decode; else (a video, never read; a group filed without a decode) its mtime."""
        if verdict.follows_dir is not None:
            return verdict.follows_dir
        t = self.target
        layout = layout_for(verdict.folder, t.layout)
        if layout and taken is None:
            taken = datetime.fromtimestamp(os.lstat(group.primary).st_mtime)
        return destination_dir(group.primary, inbox=inbox, output_root=t.output_root,
                               folder_name=t.folder_name(verdict.folder), keep_subfolders=t.keep_subfolders,
                               layout=layout, taken=taken)

    def _placing(self, group: PhotoGroup, verdict: Verdict, known: KnownHash | None,
                 inbox: Path, taken: datetime | None = None) -> tuple[Path, Verdict, bool] | Outcome:
        """Where a decided group goes and whether its source stays (copy mode); or, for a photo
        whose exact bytes were filed before, the Outcome of leaving it (placement.duplicate_rule)."""
        t = self.target
        keep_source = copies_from(group.primary, t.copy_from)
        earlier = [] if known is None or self.journal is None or verdict.folder == REJECTED else [
            e for e in self.journal.filed_by_sha(known.sha256) if e.label != REJECTED][:1]  # photos, not bad files
        rule = duplicate_rule(t.duplicates, copy_mode=keep_source) if earlier else KEEP
        if rule == LEAVE:
            reason = f"same bytes as {earlier[0].dest}, filed before: left in place (duplicates: {t.duplicates})"
            log.info("left in place", path=str(group.primary), reason=reason)
            if self.journal is not None and not self.dry_run and known is not None:
                with contextlib.suppress(OSError):
                    self.journal.remember_kept(group.primary, os.lstat(group.primary), known.sha256, earlier[0].dest)
            return Outcome(group, None, [], error=reason, by_rule=True)
        if rule == TO_FOLDER:
            verdict = Verdict(DUPLICATES, verdict.score, f"same bytes as {earlier[0].dest}", verdict.model_version)
        return self._dest_dir(group, verdict, inbox, taken), verdict, keep_source

    def file(self, group: PhotoGroup, verdict: Verdict, *, inbox: Path, run_id: int | None,
             millis: float = 0.0, known: KnownHash | None = None, taken: datetime | None = None) -> Outcome:
        """File one group (a companion following its photo, a dry run's group): its own journal
        transactions. Whole batches go through file_batch."""
        start = time.perf_counter()
        mark = self._journal_mark()
        try:
            placing = self._placing(group, verdict, known, inbox, taken)
            if isinstance(placing, Outcome):
                self._journal_left([placing], run_id=run_id, since_id=mark)
                return placing
            dest_dir, verdict, keep_source = placing
            moved = move_group(group, dest_dir, verdict, journal=self.journal, run_id=run_id, dry_run=self.dry_run,
                               reserved=self.planned if self.dry_run else None,
                               known={group.primary: known} if known is not None else None, keep_source=keep_source)
        except Exception as exc:  # one photo's failure, whatever it is, must not stop the batch
            outcome = self._not_filed(group, verdict, exc)
            self._journal_left([outcome], run_id=run_id, since_id=mark)
            return outcome
        return self._filed(group, verdict, moved, millis + (time.perf_counter() - start) * 1000)

    def file_batch(self, items: Sequence[tuple[PhotoGroup, Verdict, KnownHash | None]], *, inbox: Path,
                   run_id: int | None, millis: float = 0.0,
                   dates: Mapping[Path, datetime] | None = None) -> list[Outcome]:
        """File decided groups together: one journal transaction for all their intents and one for
        all their "done" rows (mover.move_groups), instead of two per photo. Outcomes in order.
        dates: primary -> the date its decode found (Decoded.taken), for the `layout` folders."""
        dates = dates or {}
        if self.dry_run or self.journal is None or len(items) < 2:
            return [self.file(g, v, inbox=inbox, run_id=run_id, millis=millis, known=k, taken=dates.get(g.primary))
                    for g, v, k in items]
        start = time.perf_counter()
        mark = self._journal_mark()
        outcomes: list[Outcome | None] = [None] * len(items)
        planned: list[tuple[int, PlannedGroup]] = []
        taken: set[Path] = set()
        for i, (group, verdict, known) in enumerate(items):
            try:
                placing = self._placing(group, verdict, known, inbox, dates.get(group.primary))
                if isinstance(placing, Outcome):
                    outcomes[i] = placing
                    continue
                dest_dir, verdict, keep_source = placing
                planned.append((i, plan_group(group, dest_dir, verdict, taken=taken, keep_source=keep_source,
                                              known={group.primary: known} if known is not None else None)))
            except Exception as exc:
                outcomes[i] = self._not_filed(group, verdict, exc)
        results = move_groups([p for _, p in planned], journal=self.journal, run_id=run_id)
        ms = millis + (time.perf_counter() - start) * 1000 / len(items)
        for (i, p), result in zip(planned, results):
            outcomes[i] = (self._not_filed(p.group, p.verdict, result) if isinstance(result, Exception)
                           else self._filed(p.group, p.verdict, result, ms))
        self._journal_left([o for o in outcomes if o is not None and o.verdict is None], run_id=run_id, since_id=mark)
        return outcomes  # type: ignore[return-value]

    def _journal_mark(self) -> int | None:
        """The journal's last entry id before a move: a failure the mover journaled itself after it
        needs no second row."""
        return self.journal.last_id() if self.journal is not None and not self.dry_run else None

    def _journal_left(self, outcomes: Sequence[Outcome], *, run_id: int | None, since_id: int | None) -> None:
        """A "left in place" row for every member of each group that stayed (and still exists), with
        the reason the log gives, so the journal accounts for every file that was looked at."""
        if self.journal is None or self.dry_run:
            return
        for outcome in outcomes:
            primary = outcome.group.primary
            for member in outcome.group.members:
                if os.path.lexists(member):  # not: deleted or moved away meanwhile
                    reason = outcome.error if member == primary else f"stays with {primary.name}: {outcome.error}"
                    self.journal.left_in_place(run_id, member, reason, since_id=since_id)

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
                     score=round(verdict.score or 0.0, 4), dest=str(moved[0].dest) if moved else None, ms=round(ms, 1))
        for m in moved:  # copy mode: the source stays; a rescan skips it while it is unchanged (Service._scan)
            if m.kept_source and self.journal is not None and not self.dry_run:
                with contextlib.suppress(OSError):
                    self.journal.remember_kept(m.source, os.lstat(m.source), m.sha256, m.dest)
        return Outcome(group, verdict, moved, millis=ms)
