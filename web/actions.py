"""The web app's two actions, moving a photo to aurora/ or other/ and undoing that, done with
the daemon's own parts: the one mover (move_group, so sidecars travel and nothing is
overwritten), the one journal, and undo.py.

Corrections are recorded once. The action records the correction itself; the daemon's
corrections watcher (another process) sees the photo appear in its new folder and asks the
journal, which by then names this very place as where nordlys filed those bytes (the action's
own "done" entry and the correction's path), so it judges the file "placed by nordlys itself".
Undo drops the correction *before* the file moves back, for the same reason: when the watcher
looks, the journal already says the photo belongs where it reappears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import structlog

from nordlys.daemon.corrections import FROM_KEYS, TO_KEYS, folder_key
from nordlys.daemon.grouping import PhotoGroup, group_files, split_name
from nordlys.daemon.journal import DONE, Journal
from nordlys.daemon.mover import MoveError, move_group, sha256_file
from nordlys.daemon.placement import Verdict
from nordlys.daemon.undo import undo

log = structlog.get_logger(__name__)

RUN_PREFIX = "web "  # the journal run of each web action: "web aurora->other PATH"


class ActionError(Exception):
    """An action that cannot be done as asked; the message says why, for the page."""


@dataclass(frozen=True)
class Moved:
    path: Path  # where the photo is now
    old_label: str
    new_label: str
    correction_id: int | None  # None: nordlys never filed these bytes, so there is nothing to learn


def _group_of(path: Path) -> PhotoGroup:
    """The photo and its sidecars (same stem, same folder), as the daemon moved them together."""
    stem = split_name(path.name)[0].casefold()
    siblings = [p for p in path.parent.iterdir() if p.is_file() and split_name(p.name)[0].casefold() == stem]
    return next(g for g in group_files(siblings + [path]) if path in g.members)


def move_photo(journal: Journal, folders: Mapping[str, Path], path: Path, to_key: str) -> Moved:
    """Move a filed photo (with its sidecars) from aurora/, other/ or review/ into aurora/ or
    other/, keeping its sub-folder, and record the correction."""
    from_key = folder_key(path, folders)
    if to_key not in TO_KEYS or from_key not in FROM_KEYS:
        raise ActionError(f"{path.name}: only photos in aurora/, other/ or review/ move to aurora/ or other/")
    if from_key == to_key:
        raise ActionError(f"{path.name} is already in {to_key}/")
    digest = sha256_file(path)[0]
    filed = journal.filed_by_sha(digest)
    entry = filed[-1] if filed else None
    group = _group_of(path)
    dest_dir = folders[to_key] / path.parent.relative_to(folders[from_key])
    verdict = Verdict(folder=to_key, score=entry.score if entry else None, reason="moved in nordlys web",
                      model_version=entry.model_version if entry else "")
    run_id = journal.start_run(f"{RUN_PREFIX}{from_key}->{to_key} {path}")
    try:
        results = move_group(group, dest_dir, verdict, journal=journal, run_id=run_id)
    except (MoveError, OSError) as exc:
        journal.finish_run(run_id, {"moved": 0, "error": str(exc)})
        log.warning("web move failed", path=str(path), reason=str(exc))
        raise ActionError(f"{path.name} was not moved: {exc}") from None
    new_path = next(r.dest for r in results if r.source == group.primary)
    correction_id = None
    if entry is not None:
        correction_id = journal.record_correction(entry_id=entry.id, path=new_path, sha256=digest,
                                                  old_label=from_key, new_label=to_key, score=entry.score,
                                                  model_version=entry.model_version)
        journal.move_correction(digest, new_path)
    journal.finish_run(run_id, {"moved": len(results), "correction": correction_id})
    log.info("correction", path=str(new_path), old_label=from_key, new_label=to_key, source="web",
             recorded=correction_id is not None)
    return Moved(new_path, from_key, to_key, correction_id)


def undo_last(journal: Journal, folder_names: list[str]) -> list[tuple[Path, Path]]:
    """Undo the newest web action that still has files to put back; returns (from, to) pairs."""
    run_id = journal.last_run_id(RUN_PREFIX, with_status=DONE)
    if run_id is None:
        raise ActionError("nothing to undo: no web action left in the journal")
    moved = journal.entries(run_id=run_id, status=DONE)
    dropped = []
    for e in moved:  # before the files move: see the module docstring
        for c in journal.corrections():
            if c.sha256 == e.sha256 and c.path == e.dest and c.new_label == e.label:
                journal.drop_correction(c.id)
                dropped.append(c)
        journal.move_correction(e.sha256, e.source)
    report = undo(journal, run_id=run_id, folder_names=folder_names)
    if not report.restored:
        for c in dropped:  # nothing moved back: the correction still stands
            journal.record_correction(entry_id=c.entry_id, path=c.path, sha256=c.sha256, old_label=c.old_label,
                                      new_label=c.new_label, score=c.score, model_version=c.model_version)
            journal.move_correction(c.sha256, c.path)
        why = "; ".join(f"{p.name}: {r}" for p, r in report.skipped) or report.nothing
        raise ActionError(f"not undone: {why}")
    log.info("web action undone", run_id=run_id, restored=[str(b) for _, b in report.restored])
    return report.restored
