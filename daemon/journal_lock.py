"""One daemon per journal: a lock file beside the journal, held with flock(2) while `watch` runs.

Why flock and not a PID file: the kernel drops the lock when its process ends, however it ends
(kill -9, the OOM killer), so a crashed daemon never keeps the next one out, and no PID that the
system has meanwhile given to another process is ever mistaken for a live daemon.

The file also says who holds it (PID and watched inboxes, JSON), so a second `watch` can name
the PID that keeps it out, and `nordlys sort` can refuse a folder that the daemon files already:
two processes filing the same photos at once make duplicates (`X.jpg` and `X_1.jpg`).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import structlog

from nordlys.daemon.journal import JournalError
from nordlys.daemon.paths import is_within, resolved

log = structlog.get_logger(__name__)


class JournalBusy(JournalError):
    """Another process holds the journal (exit code 2, naming its PID)."""


@dataclass(frozen=True)
class Holder:
    """The daemon that holds a journal's lock, as its lock file describes it."""

    pid: int | None  # None: it has the lock but has not written its description yet
    inboxes: tuple[Path, ...]


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


class JournalLock:
    """The exclusive lock `watch` holds for as long as it runs."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, journal: Path, inboxes: Sequence[Path]) -> "JournalLock":
        """Take the lock or raise JournalBusy naming the holder; JournalError when the folder
        cannot hold a lock file (the journal could not be written there either)."""
        path = lock_path(journal)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"{journal}: cannot make its lock file {path} ({exc.strerror or exc}): expected "
                               f"a writable folder; give this user write access to {path.parent}, or set "
                               f"`journal:` in the config to a path it can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = holder(journal)
            pid = f"PID {who.pid}" if who is not None and who.pid is not None else "a process"
            raise JournalBusy(f"{journal}: already used by a running nordlys watch ({pid}): expected one daemon "
                              f"per journal; stop that one first, or give this one its own `journal:` "
                              f"in the config") from None
        lock = cls(fd, path)
        lock.describe(inboxes)
        return lock

    def describe(self, inboxes: Sequence[Path]) -> None:
        """Write who holds the lock (again after a reload that changed the inboxes). Best effort:
        on a full disk the lock still holds; only the description is missing."""
        text = json.dumps({"pid": os.getpid(), "inboxes": [str(p) for p in inboxes]}).encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text, 0)
        except OSError as exc:
            log.warning("lock file not described", path=str(self.path), reason=exc.strerror or str(exc))

    def release(self) -> None:
        """Close (which unlocks). The file stays: removing it would race with a daemon opening it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def holder(journal: Path) -> Holder | None:
    """The running daemon holding this journal's lock, or None when no process holds it."""
    path = lock_path(journal)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # free: nobody holds it (closing the fd lets go again)
        except BlockingIOError:
            pass
        raw = os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)
    try:
        described = json.loads(raw)
        return Holder(int(described["pid"]), tuple(Path(p) for p in described["inboxes"]))
    except (ValueError, KeyError, TypeError):
        return Holder(None, ())


def refuse_if_watched(journal: Path, folder: Path) -> None:
    """`sort` refuses a folder that a running daemon with this journal watches, or one that holds
    or lies inside such an inbox: both would file the same photos at once. Another folder is
    sorted as usual, beside the running daemon (SQLite lets both write the journal)."""
    who = holder(journal)
    if who is None:
        return
    folder = resolved(folder)
    overlap = [i for i in who.inboxes if is_within(folder, i) or is_within(i, folder)]
    if overlap or who.pid is None:
        pid = f"PID {who.pid}" if who.pid is not None else "a process"
        watched = overlap[0] if overlap else "its inboxes"
        raise JournalBusy(f"{folder}: nordlys watch ({pid}) is watching {watched} with the journal {journal} "
                          f"and files these photos itself: expected a folder it does not watch; stop the "
                          f"daemon first to sort this one by hand")
