"""What each page shows, gathered from the journal, the output folders and the inboxes. Pure
reads: the handlers in app.py render these and never touch files themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping, Sequence

from nordlys.daemon.config import Config
from nordlys.daemon.corrections import folder_key
from nordlys.daemon.journal import DONE, Correction, Entry, Journal, ModelRecord
from nordlys.daemon.journal_lock import holder
from nordlys.daemon.placement import AURORA, OTHER, REVIEW
from nordlys.daemon.scan import scan_inbox
from nordlys.daemon.status import InboxWaiting, waiting_in

REVIEW_UNCERTAIN = 24  # least certain recent decisions shown beside review/
RECENT_WINDOW = 500  # newest journal entries the review queue looks at


@dataclass(frozen=True)
class Photo:
    """A photo as the pages show it: where it is (relative to the output root), its folder and score."""

    rel: str
    name: str
    folder: str
    score: float | None
    time: str = ""


@dataclass
class Overview:
    on_disk: dict[str, int]
    last_day: dict[str, int]
    waiting: list[InboxWaiting]
    daemon_pid: int | None
    daemon_alive: bool
    model_version: str
    models: list[ModelRecord]
    corrections_waiting: int
    corrections_total: int
    recent_corrections: list[Correction] = field(default_factory=list)


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def overview(config: Config, journal: Journal, journal_path: Path, folders: Mapping[str, Path],
             model_version: str) -> Overview:
    on_disk = {k: len(scan_inbox(f, recursive=True, ignore=config.ignore).files) if f.is_dir() else 0
               for k, f in folders.items()}
    day = journal.entries(since=datetime.now(timezone.utc) - timedelta(days=1))
    last_day: dict[str, int] = {}
    for e in day:
        last_day[e.label] = last_day.get(e.label, 0) + 1
    models = journal.models()
    live = [m for m in models if m.status == "live"]
    corrections = journal.corrections()
    waiting_since = live[-1].time if live else None
    daemon = holder(journal_path)
    return Overview(on_disk=on_disk, last_day=last_day, waiting=waiting_in(config, kept=journal.kept_unchanged),
                    daemon_pid=daemon.pid if daemon else None, daemon_alive=daemon is not None,
                    model_version=model_version, models=models,
                    corrections_waiting=len([c for c in corrections if waiting_since is None or c.time > waiting_since]),
                    corrections_total=len(corrections), recent_corrections=corrections[-5:][::-1])


def _as_photo(path: Path, root: Path, folders: Mapping[str, Path], entry: Entry | None) -> Photo:
    return Photo(rel(path, root), path.name, folder_key(path, folders) or "",
                 entry.score if entry else None, entry.time if entry else "")


def review_queue(journal: Journal, root: Path, folders: Mapping[str, Path], *, threshold: float,
                 ignore: Sequence[str]) -> list[Photo]:
    """Everything in review/, then the least certain recent decisions still in aurora/ or other/
    that the user has not corrected yet."""
    by_dest = {e.dest: e for e in reversed(journal.recent(RECENT_WINDOW)) if e.status == DONE}
    review = folders[REVIEW]
    in_review = scan_inbox(review, recursive=True, ignore=ignore).files if review.is_dir() else []
    queue = [_as_photo(p, root, folders, by_dest.get(p)) for p in sorted(in_review)]
    corrected = {c.sha256 for c in journal.corrections()}  # the user has judged these already
    uncertain = sorted((e for e in by_dest.values() if e.score is not None and e.sha256 not in corrected
                        and e.dest.is_file()
                        and folder_key(e.dest, folders) in (AURORA, OTHER)),
                       key=lambda e: abs(e.score - threshold))  # type: ignore[operator]
    queue += [_as_photo(e.dest, root, folders, e) for e in uncertain[:REVIEW_UNCERTAIN]]
    return queue


@dataclass(frozen=True)
class RecentFilter:
    folder: str = ""
    date_from: str = ""  # YYYY-MM-DD, local time
    date_to: str = ""
    min_score: float | None = None
    max_score: float | None = None


def recent(journal: Journal, root: Path, folders: Mapping[str, Path], f: RecentFilter, *, limit: int = 200) -> list[Entry]:
    since = datetime.fromisoformat(f.date_from) if f.date_from else None
    until = datetime.fromisoformat(f.date_to) + timedelta(days=1) if f.date_to else None

    def keep(e: Entry) -> bool:
        return ((not f.folder or e.label == f.folder)
                and (until is None or datetime.fromisoformat(e.time) < until.astimezone(timezone.utc))
                and (f.min_score is None or (e.score is not None and e.score >= f.min_score))
                and (f.max_score is None or (e.score is not None and e.score <= f.max_score)))

    found = journal.entries(since=since, match=keep)
    return found[-limit:][::-1]


def photo_history(journal: Journal, path: Path, sha256: str) -> tuple[list[Entry], list[Correction]]:
    """Every journal entry of these bytes or this path, and its corrections, oldest first."""
    entries = journal.entries(status=None, match=lambda e: e.sha256 == sha256 or e.dest == path)
    return entries, [c for c in journal.corrections() if c.sha256 == sha256]


def link_of(path: Path, root: Path, folders: Mapping[str, Path]) -> str:
    """The photo page's relative path for a journaled place, or '' when it is not in a shown folder."""
    return rel(path, root) if folder_key(path, folders) is not None and path.is_file() else ""

