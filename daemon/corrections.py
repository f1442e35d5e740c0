"""Learning from the user: a photo moved between output folders is a labelled correction.

The user fixes a mistake by moving the photo: aurora/ -> other/, other/ -> aurora/, or out of
review/ into either. The daemon watches the output folders (watcher.OutputHandler only queues);
a CorrectionWorker thread decides, off the observer thread, whether each move is a correction
and records it in the journal (`corrections` table) for `nordlys retrain`.

Rules (pure: `folder_key`, `judge`):
- the photo is matched to the journal by content hash (a "done" entry with the same sha256), so
  a renamed file is still recognised; files the daemon never filed are ignored;
- source folder aurora/other/review and destination aurora/other, different: a correction; the
  old label is the folder it left, the new label the folder it entered;
- moved elsewhere (out of the output folders, into rejected/), renamed inside one folder: not
  a correction (a rename of an already corrected photo updates the correction's path);
- appeared without a move event (a copy, a move across file systems): a correction only when
  the copy's origin (the last place the journal knows for those bytes) is gone, i.e. it was a
  move; a copy leaves the origin in place and is not a correction;
- an edited file (bytes changed) moved to another folder: matched through the journal entry
  whose destination is the path it was moved from; with no such entry it is ignored and logged.
- a deletion is not a correction (no event is handled for it).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import structlog

from nordlys.daemon.journal import Entry, Journal
from nordlys.daemon.mover import file_signature, sha256_file
from nordlys.daemon.placement import AURORA, OTHER, REVIEW

log = structlog.get_logger(__name__)

FROM_KEYS = (AURORA, OTHER, REVIEW)  # folders a correction may start in
TO_KEYS = (AURORA, OTHER)  # folders a correction may end in
SETTLE = 1.0  # seconds an appeared file must hold still before it is hashed
PLACED_MEMORY = 10_000  # files the daemon filed itself, remembered until their creation event comes


@dataclass(frozen=True)
class Move:
    """What the observer saw: src is None when the file appeared (created, or moved in from outside)."""

    src: Path | None
    dest: Path
    at: float  # time.monotonic() when it was seen


@dataclass(frozen=True)
class Verdict:
    """A correction to record, or why the move is not one."""

    old_label: str | None
    new_label: str | None
    entry: Entry | None
    reason: str  # "correction" or why not

    @property
    def is_correction(self) -> bool:
        return self.reason == "correction"


def folder_key(path: Path, folders: Mapping[str, Path]) -> str | None:
    """The output folder key a path lies under (aurora, other, review), or None. At any depth: the
    `layout`'s dated folders and keep_subfolders' folders are inside them (aurora/2026/2026-11-30/
    x.jpg -> other/x.jpg is a correction); the output observer watches the root recursively."""
    for key, folder in folders.items():
        if folder in path.parents:
            return key
    return None


def judge(move: Move, sha256: str, journal: Journal, folders: Mapping[str, Path]) -> Verdict:
    """Is this move a correction? Reads the journal, touches no files."""
    new = folder_key(move.dest, folders)
    old = folder_key(move.src, folders) if move.src is not None else None
    if new not in TO_KEYS:
        return Verdict(old, new, None, "destination is not aurora/ or other/")
    filed = journal.filed_by_sha(sha256)
    entry = filed[-1] if filed else None
    if entry is None and move.src is not None:  # edited: known by where it was filed
        by_path = journal.entries(paths=[move.src], match=lambda e: e.dest == move.src)
        entry = by_path[-1] if by_path else None
    if entry is None:
        return Verdict(old, new, None, "not filed by nordlys (no journal entry for its bytes or path)")
    if move.src is None:  # appeared: a move only if the origin is gone
        origin = _last_known_place(entry, sha256, journal)
        if origin == move.dest:
            return Verdict(None, new, entry, "placed by nordlys itself")
        if origin.exists():
            return Verdict(None, new, entry, f"a copy: {origin} is still there")
        old = folder_key(origin, folders)
    if old not in FROM_KEYS:
        return Verdict(old, new, entry, "did not come from aurora/, other/ or review/")
    if old == new:
        return Verdict(old, new, entry, "renamed or moved inside one folder")
    return Verdict(old, new, entry, "correction")


def _last_known_place(entry: Entry, sha256: str, journal: Journal) -> Path:
    corrected = [c for c in journal.corrections() if c.sha256 == sha256]
    return corrected[-1].path if corrected else entry.dest


def record(move: Move, journal: Journal, folders: Mapping[str, Path]) -> Verdict | None:
    """Hash the file, judge the move, and write a correction (or a path update) to the journal."""
    if move.src is not None and folder_key(move.src, folders) is None:
        return None  # came from an inbox (the daemon filing it) or from elsewhere: never a correction
    try:
        digest = sha256_file(move.dest)[0]
    except OSError as exc:  # gone again, or unreadable: nothing to learn from
        log.debug("correction skipped", path=str(move.dest), reason=str(exc))
        return None
    verdict = judge(move, digest, journal, folders)
    if verdict.is_correction:
        e = verdict.entry
        assert e is not None and verdict.old_label and verdict.new_label
        journal.record_correction(entry_id=e.id, path=move.dest, sha256=digest, old_label=verdict.old_label,
                                  new_label=verdict.new_label, score=e.score, model_version=e.model_version)
        journal.move_correction(digest, move.dest)  # earlier corrections of these bytes: same photo, new place
        log.info("correction", path=str(move.dest), old_label=verdict.old_label, new_label=verdict.new_label,
                 score=e.score, model_version=e.model_version)
    else:
        if verdict.entry is not None and verdict.old_label == verdict.new_label:
            journal.move_correction(digest, move.dest)
        log.debug("not a correction", path=str(move.dest), src=str(move.src), reason=verdict.reason)
    return verdict


class CorrectionWorker:
    """The thread that turns queued moves into corrections; `offer` is called by the observer."""

    def __init__(self, journal: Journal, folders: Mapping[str, Path], *, settle: float = SETTLE,
                 on_recorded: Callable[[], object] | None = None) -> None:
        self.journal, self.folders, self.settle = journal, dict(folders), settle
        self.on_recorded = on_recorded
        self.moves: queue.Queue[Move | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="nordlys-corrections", daemon=True)
        self.placed: OrderedDict[Path, tuple[int, ...]] = OrderedDict()  # path -> _identity()
        self.placed_lock = threading.Lock()

    def offer(self, src: Path | None, dest: Path) -> None:
        self.moves.put(Move(src, dest, time.monotonic()))

    def filed(self, paths: Iterable[Path]) -> None:
        """Files the daemon has just put into its output folders. Their creation events are not
        corrections, and now need not be hashed to find that out (a second SHA-256 of every photo
        the daemon files, ~2 ms each): only while the path still holds that very file (same
        device, inode, size and times: an inode number alone is reused at once by the next new
        file), so a file put there by anyone else is judged as usual."""
        for path in paths:
            if folder_key(path, self.folders) is None:
                continue  # rejected/ and the like: no events are handled there
            try:
                st = os.lstat(path)
            except OSError:
                continue
            with self.placed_lock:
                self.placed[path] = _identity(st)
                self.placed.move_to_end(path)
                while len(self.placed) > PLACED_MEMORY:
                    self.placed.popitem(last=False)

    def _placed_here(self, move: Move) -> bool:
        """Whether an appeared file is one the daemon filed itself and is still that file."""
        if move.src is not None:
            return False
        with self.placed_lock:
            identity = self.placed.pop(move.dest, None)
        if identity is None:
            return False
        try:
            st = os.lstat(move.dest)
        except OSError:
            return True  # gone again: nothing to learn from it either way
        return _identity(st) == identity

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self.moves.put(None)
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            move = self.moves.get()
            if move is None:
                return
            if move.src is None:  # appeared: let a copy finish before hashing it
                time.sleep(max(0.0, move.at + self.settle - time.monotonic()))
            if self._placed_here(move):
                log.debug("not a correction", path=str(move.dest), src=None, reason="filed there by this daemon")
                continue
            try:
                verdict = record(move, self.journal, self.folders)
            except Exception:  # one odd file must not stop learning from the others
                log.exception("correction failed", path=str(move.dest))
                continue
            if verdict is not None and verdict.is_correction and self.on_recorded is not None:
                self.on_recorded()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """The mover's file signature, plus the inode's change time: filing links the file, which sets
    it, so a same-size file with the same mtime put there later still tells itself apart."""
    return (*file_signature(st), st.st_ctime_ns)
