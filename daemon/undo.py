"""Putting files back: finishing moves a crash interrupted, and `nordlys undo`.

Both decide from what is on disk, never from what the journal hopes: a file is only removed
when an identical copy (same inode, or same SHA-256 as journaled) exists at the other name, and
a file whose bytes changed since sorting is reported and left where it is.

Undo's own moves are journal entries of an "undo" run (status "restored", `undoes` = the entry
reversed), so a crash during an undo is recovered by `recover_interrupted` like any other move.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Collection, Sequence

import structlog

from nordlys.daemon.config import FoldersConfig
from nordlys.daemon.fileops import owner_alive, remove_stale_temps
from nordlys.daemon.journal import DONE, Entry, Journal
from nordlys.daemon.mover import (
    ASIDE_PREFIX, MAX_PLAN_ATTEMPTS, MoveError, aside_tag, human_reason, move_file, plan_destinations,
    restore_aside, sha256_file,
)
from nordlys.daemon.placement import Verdict

log = structlog.get_logger(__name__)

DEFAULT_FOLDER_NAMES = tuple(dataclasses.asdict(FoldersConfig()).values())  # aurora, other, review, ...

# Actions reported by recover_interrupted.
RECOVERED_ROLLED_BACK = "rolled back: never moved"
RECOVERED_DONE = "done"
RECOVERED_SOURCE_REMOVED = "done: source removed"
RECOVERED_CONTENT_DIFFERS = "done: content differs from the journal"
RECOVERED_LEFT_BOTH = "left both: they differ from the journaled content"
RECOVERED_MISSING = "failed: missing after crash"


@dataclass
class UndoReport:
    """What undo did (or, in a dry run, would do)."""

    restored: list[tuple[Path, Path]] = field(default_factory=list)  # (where it was, where it is now)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it was left in place)
    renamed: list[tuple[Path, str]] = field(default_factory=list)  # (restored file, why not its old name)
    found: list[tuple[Path, Path]] = field(default_factory=list)  # (journaled place, where its bytes were found)
    nothing: str = ""  # why there was nothing to undo, when there was nothing


# --- crash recovery -------------------------------------------------------------------------

def _regular_sha256(path: Path) -> str | None:
    """SHA-256 of a regular file; None for symlinks, folders and unreadable files."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        return sha256_file(path)[0]
    except OSError:
        return None


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return stat.S_ISREG(sa.st_mode) and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _recover_both(journal: Journal, entry: Entry) -> str:
    """Source and destination both exist: the link or the copy was made, the unlink was not."""
    identical = _same_inode(entry.source, entry.dest) or (
        _regular_sha256(entry.dest) == entry.sha256 and _regular_sha256(entry.source) == entry.sha256)
    if entry.keeps_source and _regular_sha256(entry.dest) == entry.sha256:
        journal.done(entry.id, entry.dest)  # copy mode: the copy is whole, and its source stays where it is
        return RECOVERED_DONE
    if not identical and _empty_placeholder(entry):
        os.unlink(entry.dest)  # the checked rename's claim on the name (fileops._rename_checked): no bytes
        journal.rolled_back(entry.id, "interrupted before the move; the file stayed at its source")
        return RECOVERED_ROLLED_BACK
    if not identical:
        log.warning("left both after crash", src=str(entry.source), dest=str(entry.dest),
                    reason="they differ from the journaled content")
        journal.rolled_back(entry.id, f"interrupted; {entry.dest} holds other content, left in place")
        return RECOVERED_LEFT_BOTH
    try:
        os.unlink(entry.source)
    except OSError as exc:  # entry stays "intent": the next start-up tries again
        log.error("cannot finish interrupted move", src=str(entry.source), reason=human_reason(exc))
        return f"left both: cannot remove the source: {human_reason(exc)}"
    journal.done(entry.id, entry.dest)
    return RECOVERED_SOURCE_REMOVED


def _empty_placeholder(entry: Entry) -> bool:
    """An empty destination for a non-empty file whose source still holds the journaled bytes:
    the name a crash left claimed, never a copy of anything."""
    try:
        st = os.lstat(entry.dest)
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_size == 0 < entry.size
            and _regular_sha256(entry.source) == entry.sha256)


def _recover_one(journal: Journal, entry: Entry) -> str:
    at_source, at_dest = os.path.lexists(entry.source), os.path.lexists(entry.dest)
    if at_source and at_dest:
        return _recover_both(journal, entry)
    if at_source:
        journal.rolled_back(entry.id, "interrupted before the move; the file stayed at its source")
        return RECOVERED_ROLLED_BACK
    if at_dest:
        if _regular_sha256(entry.dest) == entry.sha256:
            journal.done(entry.id, entry.dest)
            return RECOVERED_DONE
        log.error("content differs after crash", dest=str(entry.dest), expected_sha256=entry.sha256)
        journal.done(entry.id, entry.dest, detail="content differs from the journaled sha256")
        return RECOVERED_CONTENT_DIFFERS
    log.error("missing after crash", src=str(entry.source), dest=str(entry.dest), sha256=entry.sha256)
    journal.failed(entry.id, "missing after crash: found at neither the source nor the destination")
    return RECOVERED_MISSING


def _settle_asides(folder: Path, entries: Sequence[Entry]) -> None:
    """A crash between renaming a source aside and removing it (mover._unlink_source) leaves the
    aside name: when it holds the moved bytes, which are at the destination, it goes; anything
    else (a new file that had taken the source's name) gets that name back. Never deleted unsure."""
    by_tag = {aside_tag(e.source.name): e for e in entries}
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(ASIDE_PREFIX))
    except OSError:
        return
    for name in names:
        if owner_alive(name, ASIDE_PREFIX):
            continue
        fields = name[len(ASIDE_PREFIX):].split("-")  # pid, tag, random
        path, entry = folder / name, by_tag.get(fields[1] if len(fields) == 3 else "")
        try:
            if entry is None:
                log.error("left an aside file of no interrupted move", path=str(path), reason="kept as it is")
            elif _same_inode(path, entry.dest) or _regular_sha256(path) == entry.sha256 == _regular_sha256(entry.dest):
                os.unlink(path)
                log.warning("removed the old name of a finished move", path=str(path), dest=str(entry.dest))
            else:
                log.warning("gave a set-aside file its name back", path=str(restore_aside(path, entry.source)))
        except (OSError, MoveError) as exc:
            log.error("cannot settle an aside file", path=str(path), reason=str(exc))


def recover_interrupted(journal: Journal) -> list[tuple[Entry, str]]:
    """Finish or roll back every move a crash interrupted; call at start-up of sort and watch.

    Moves of another nordlys process still running on this host are left alone.
    Returns (entry, action) pairs; actions are the RECOVERED_* texts (or "left both: ...").
    """
    results = []
    for entry in journal.interrupted():
        action = _recover_one(journal, entry)
        log.info("recovered", src=str(entry.source), dest=str(entry.dest), action=action)
        results.append((entry, action))
    for folder in sorted({entry.dest.parent for entry, _ in results}):
        remove_stale_temps(folder)
    for folder in sorted({entry.source.parent for entry, _ in results}):
        _settle_asides(folder, [entry for entry, _ in results if entry.source.parent == folder])
    return results


# --- undo -----------------------------------------------------------------------------------

def _select(journal: Journal, run_id: int | None, since: datetime | None, paths: Sequence[Path],
            report: UndoReport) -> list[Entry]:
    if run_id is None and since is None and not paths:
        # "the most recent run" means the last `nordlys sort`: a daemon's run is its whole lifetime,
        # weeks of photos, which a bare `undo` must not sweep back (use --since or PATH for those).
        # Only the last one: once it is undone, a second bare undo must not reach for an older,
        # unrelated sort the user never meant.
        run_id = journal.last_run_id("sort", moved=True)
        if run_id is None:
            report.nothing = "no `nordlys sort` in the journal; the daemon's moves are undone with --since or PATH"
            return []
        chosen = journal.entries(run_id=run_id, status=DONE)
        if not chosen:
            report.nothing = (f"the last sort (run {run_id}) has nothing left to undo; older moves are undone "
                              "with --since or PATH")
        return chosen
    return journal.entries(run_id=run_id, since=since, paths=paths, status=DONE)


def output_root_of(dest: Path, folder_names: Collection[str]) -> Path | None:
    """The output root a sorted file was filed under: the parent of its nearest ancestor named like
    an output folder (aurora/, other/, ...), whatever sub-folders lie below that."""
    for parent in dest.parents:
        if parent.name in folder_names:
            return parent.parent
    return None


class MovedFinder:
    """Finds a sorted file the user renamed or moved within its output root, by its SHA-256.

    Each output root is walked once, on the first miss in it; only files of the journaled size
    are hashed, so a library of thousands costs a directory walk and a handful of reads."""

    def __init__(self, folder_names: Collection[str]) -> None:
        self.folder_names = set(folder_names)
        self.by_size: dict[Path, dict[int, list[Path]]] = {}
        self.claimed: set[Path] = set()  # found for one entry already: never restored twice

    def find(self, entry: Entry) -> Path | None:
        root = output_root_of(entry.dest, self.folder_names)
        if root is None:
            return None
        if root not in self.by_size:
            self.by_size[root] = self._index(root)
        for path in self.by_size[root].get(entry.size, []):
            if path not in self.claimed and _regular_sha256(path) == entry.sha256:
                self.claimed.add(path)
                return path
        return None

    def _index(self, root: Path) -> dict[int, list[Path]]:
        sizes: dict[int, list[Path]] = {}
        for top in (root / name for name in sorted(self.folder_names)):
            for folder, _dirs, names in os.walk(top):
                for name in names:
                    path = Path(folder) / name
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        sizes.setdefault(st.st_size, []).append(path)
        return sizes


def _current_place(entry: Entry, report: UndoReport, finder: MovedFinder | None) -> Path | None:
    """Where the sorted file is now: its journaled place, or, when that is gone, the file of the
    same bytes the user moved it to within the output root."""
    if os.path.lexists(entry.dest):
        return entry.dest
    found = finder.find(entry) if finder is not None else None
    if found is None:
        report.skipped.append((entry.dest, "missing: no longer at its sorted place, and no file in its output "
                                           "folders holds its bytes"))
        return None
    report.found.append((entry.dest, found))
    log.info("found moved", path=str(entry.dest), now=str(found), reason="same sha256 as journaled")
    return found


def _restorable(entry: Entry, report: UndoReport) -> bool:
    """Is the sorted file still there with the bytes it had when it was sorted?"""
    try:
        st = os.lstat(entry.dest)
    except FileNotFoundError:
        report.skipped.append((entry.dest, "missing: no longer at its sorted place"))
        return False
    except OSError as exc:
        report.skipped.append((entry.dest, human_reason(exc)))
        return False
    if not stat.S_ISREG(st.st_mode):
        report.skipped.append((entry.dest, "is no longer a regular file; left in place"))
        return False
    try:
        digest = sha256_file(entry.dest)[0]
    except OSError as exc:
        report.skipped.append((entry.dest, f"{human_reason(exc)}: cannot read it"))
        return False
    if digest != entry.sha256:
        report.skipped.append((entry.dest, "changed since it was sorted (sha256 differs); left in place"))
        return False
    return True


def _restore_one(journal: Journal, undo_run: int, entry: Entry, target: Path, report: UndoReport) -> None:
    verdict = Verdict(entry.label, entry.score, entry.reason, entry.model_version)
    for _attempt in range(MAX_PLAN_ATTEMPTS):
        _stay_put(journal, entry, target)
        entry_id = journal.intent(undo_run, source=entry.dest, dest=target, size=entry.size,
                                  sha256=entry.sha256, verdict=verdict, group_id=entry.group_id,
                                  undoes=entry.id)
        try:
            result = move_file(entry.dest, target, expected_sha256=entry.sha256)
        except FileExistsError:
            journal.rolled_back(entry_id, f"{target.name} was taken meanwhile; re-planned")
            target = plan_destinations([entry.source], entry.source.parent)[entry.source]
            continue
        except MoveError as exc:
            journal.failed(entry_id, exc.reason)
            report.skipped.append((entry.dest, exc.reason))
            log.warning("not restored", path=str(entry.dest), reason=exc.reason)
            return
        journal.done(entry_id, target, created_dirs=result.created_dirs)
        _report_restored(entry, target, report, verb="restored")
        return
    report.skipped.append((entry.dest, f"free names next to {entry.source} kept being taken"))


def _stay_put(journal: Journal, entry: Entry, target: Path) -> None:
    """Tell a running daemon to leave the restored file where undo puts it (journal table `kept`,
    which Service skips while the file's size and mtime are unchanged): otherwise an undo into a
    watched inbox is filed again a second later. Written before the move, so the daemon can
    never see the file first; a move keeps the file's size and mtime. Touching the file, or
    moving it in anew, has it sorted again."""
    try:
        st = os.lstat(entry.dest)
    except OSError:
        return  # the move below reports it
    journal.remember_kept(target, st, entry.sha256, entry.dest)


def _report_restored(entry: Entry, target: Path, report: UndoReport, *, verb: str) -> None:
    report.restored.append((entry.dest, target))
    log.info(verb, src=str(entry.dest), dest=str(target))
    if target != entry.source:
        why = f"{entry.source} is taken; restored next to it as {target.name}"
        report.renamed.append((target, why))
        log.warning("restored under another name", path=str(target), reason=why)


def _drop_copy_of_kept_source(journal: Journal, undo_run: int | None, entry: Entry, report: UndoReport) -> bool:
    """Undo of a copy (copy mode, a synced inbox): while the source still holds the same bytes,
    undoing means removing the copy, not putting it back next to the source as NAME_1 (which a
    sync client would then send to the phone). False: restore it as any file (source gone)."""
    if not entry.keeps_source or _regular_sha256(entry.source) != entry.sha256:
        return False
    if undo_run is None:
        report.restored.append((entry.dest, entry.source))
        log.info("would remove the copy", path=str(entry.dest), source=str(entry.source))
        return True
    try:
        os.unlink(entry.dest)
    except OSError as exc:
        report.skipped.append((entry.dest, f"{human_reason(exc)}: cannot remove this copy"))
        return True
    journal.mark_undone(entry.id, f"copy removed; the source is still at {entry.source}")
    report.restored.append((entry.dest, entry.source))
    log.info("removed the copy", path=str(entry.dest), source=str(entry.source))
    return True


def _undo_group(journal: Journal, undo_run: int | None, entries: list[Entry], report: UndoReport,
                reserved: set[Path], finder: MovedFinder | None) -> None:
    """Restore one photo group; when an old name is taken the whole group gets one new suffix."""
    by_folder: dict[Path, list[Entry]] = {}
    for entry in entries:
        place = _current_place(entry, report, finder)
        if place is None:
            continue
        entry = dataclasses.replace(entry, dest=place)
        if _restorable(entry, report) and not _drop_copy_of_kept_source(journal, undo_run, entry, report):
            by_folder.setdefault(entry.source.parent, []).append(entry)
    for folder, items in by_folder.items():
        plan = plan_destinations([e.source for e in items], folder, reserved=reserved)
        reserved.update(plan.values())
        for entry in items:
            if undo_run is None:  # dry run
                _report_restored(entry, plan[entry.source], report, verb="would restore")
            else:
                _restore_one(journal, undo_run, entry, plan[entry.source], report)


def _remove_created_folders(journal: Journal, chosen: list[Entry]) -> None:
    """Remove folders the undone runs created that are empty now; never a folder that holds, or
    lies above, a restored file's home."""
    keep = {parent for entry in chosen for parent in entry.source.parents}
    created = set(journal.created_dirs([e.run_id for e in chosen]))
    for folder in sorted(created - keep, key=lambda p: len(p.parts), reverse=True):
        try:
            os.rmdir(folder)
        except OSError:
            continue  # not empty (other files live there) or already gone
        log.info("removed empty folder", path=str(folder))


def undo(journal: Journal, *, run_id: int | None = None, since: datetime | None = None,
         paths: Sequence[Path] = (), dry_run: bool = False,
         folder_names: Collection[str] = DEFAULT_FOLDER_NAMES) -> UndoReport:
    """Move sorted files back to where they came from, byte-identical.

    With no run_id/since/paths: the last `nordlys sort`, once (report.nothing says why there is
    nothing when it was undone already). Filters combine (AND); paths: entries whose sorted
    place or original place is one of these paths or under them. A taken original name gets the
    numbered suffix (see report.renamed). A sorted file the user renamed or moved within its
    output folders (folder_names: aurora, other, ... as configured) is found by its SHA-256.
    """
    report = UndoReport()
    chosen = _select(journal, run_id, since, paths, report)
    finder = MovedFinder(folder_names)
    if not chosen:
        log.info("nothing to undo", run_id=run_id, since=since and since.isoformat(),
                 paths=[str(p) for p in paths])
        return report
    undo_run = None if dry_run else journal.start_run(
        f"undo run={run_id} since={since and since.isoformat()} paths={[str(p) for p in paths]}")
    groups: dict[str, list[Entry]] = {}
    for entry in chosen:
        groups.setdefault(entry.group_id, []).append(entry)
    reserved: set[Path] = set()
    for entries in groups.values():
        _undo_group(journal, undo_run, entries, report, reserved, finder)
    if undo_run is not None:
        _remove_created_folders(journal, chosen)
        journal.finish_run(undo_run, {"restored": len(report.restored), "skipped": len(report.skipped),
                                      "renamed": len(report.renamed)})
    return report
