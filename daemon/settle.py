"""When is a file complete? And which files are still waiting to be?

A file is handed to the pipeline only when one of these holds *and* no process has it open for
writing:
- closed: inotify reported IN_CLOSE_WRITE (watchdog's FileClosedEvent), or the file was renamed
  into place (Syncthing `.syncthing.NAME.tmp`, rsync `.NAME.XXXXXX`, Nextcloud `.part`, browser
  `.crdownload` writers all rename a finished file);
- settled: two stats `settle_seconds` apart saw the same size and mtime, with no change event in
  between. This is the only signal on polled network mounts (NFS, CIFS, SSHFS send no inotify
  events) and for files found by a scan.

"Open for writing" is checked the way fuser(1) does: walk /proc/*/fd, keep the links whose name
ends in the file's name, and read /proc/PID/fdinfo/FD for the access mode and inode. Why this and
not a read lease (fcntl F_SETLEASE, F_RDLCK fails while a writer has the file open): a lease needs
the caller to own the file (or CAP_LEASE), and a writer that opens the file while the lease is
held makes the kernel send SIGIO, whose default action kills the daemon. The /proc walk needs no
privilege and has no side effects. Cost: one readlink per open file descriptor on the machine,
about 1.5 ms for ~100 descriptors and tens of ms for several thousand, paid once per batch of
candidates, not per file.

The /proc check is a help, never the guarantee. It sees only processes whose /proc/PID/fd this
user may read: its own user's, or everyone's for root. The service runs as the user `nordlys`, so
another user's writer (Syncthing, Nextcloud, an rsync over ssh) is out of its sight with or without
the unit's `ProtectProc=invisible`, which only hides what it could not read anyway, and a PID
namespace or an NFS client hides writers the same way. So the unit keeps `ProtectProc=invisible`,
and what makes an unseen writer safe is the pipeline: a file that stops early (a truncated photo)
and changed lately is left in place and judged again when it changes, or once it has been still
for `watch.truncated_wait` (pipeline.py, `Settler.look_again`). A complete-looking but unfinished
file cannot be mistaken for a photo where its format ends with a marker or a length (JPEG, PNG, GIF,
WebP, HEIF; a RAW whose sensor rows stop early): the loader checks for it.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable, Sequence

FileState = tuple[int, int]  # (size in bytes, mtime in ns)

SCAN, CHANGED, CLOSED = "scan", "changed", "closed"  # why a path was offered
_TRANSIENT_OPEN_ERRORS = {errno.EBUSY, errno.ETXTBSY, errno.EAGAIN}


def file_state(path: Path) -> FileState | None:
    """Size and mtime of a regular file (not following a symlink); None when it is gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def open_for_writing(paths: Collection[Path], proc: Path = Path("/proc")) -> set[Path]:
    """The subset of `paths` that some visible process holds open for writing (see module doc)."""
    wanted: dict[str, list[tuple[Path, int]]] = {}
    for path in paths:
        try:
            inode = os.lstat(path).st_ino
        except OSError:
            continue
        wanted.setdefault(path.name, []).append((path, inode))
    if not wanted:
        return set()
    found: set[Path] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:  # no /proc (not Linux): the settle rule alone decides
        return found
    for pid in pids:
        found.update(_writers_in_process(proc / pid, wanted))
    return found


def _writers_in_process(pid_dir: Path, wanted: dict[str, list[tuple[Path, int]]]) -> set[Path]:
    found: set[Path] = set()
    try:
        fds = os.listdir(pid_dir / "fd")
    except OSError:  # gone, or not ours to read
        return found
    for fd in fds:
        try:
            target = os.readlink(pid_dir / "fd" / fd)
        except OSError:
            continue
        name = target.removesuffix(" (deleted)").rpartition("/")[2]
        if name not in wanted:
            continue
        flags, inode = _fdinfo(pid_dir / "fdinfo" / fd)
        if flags is None or flags & os.O_ACCMODE == os.O_RDONLY:
            continue
        found.update(path for path, ino in wanted[name] if ino == inode)
    return found


def _fdinfo(path: Path) -> tuple[int | None, int | None]:
    """(open flags, inode) from /proc/PID/fdinfo/FD; flags are octal there."""
    flags = inode = None
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "flags":
                    flags = int(value.strip(), 8)
                elif key == "ino":
                    inode = int(value.strip())
    except (OSError, ValueError):
        return None, None
    return flags, inode


def is_openable(path: Path) -> bool:
    """False only while opening fails for a reason that goes away (a mandatory lock, a busy
    file). Permanent errors return True: the pipeline then reports them once, with the reason."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return exc.errno not in _TRANSIENT_OPEN_ERRORS
    os.close(fd)
    return True


@dataclass
class Waiting:
    """One path on its way to complete."""

    inbox: Path  # the inbox it belongs to (placement needs it for keep_subfolders)
    state: FileState | None = None  # last stat; None = not looked at since the last change
    due: float = 0.0  # monotonic time of the next look
    closed: bool = False  # closed after writing / renamed in, and unchanged since
    ready_since: float | None = None  # when it was last found complete
    generation: int = 0  # bumped by every offer, so a look that raced with an event is discarded


class Settler:
    """Thread-safe set of paths waiting to be complete, bounded to `capacity` paths.

    Observer threads and scans `offer` paths (cheap: a dict update under a lock, no I/O); the
    worker calls `check` to stat the due ones, `claim` to take complete ones for a batch and
    `done` when the batch is filed. A path offered while it is being processed is looked at
    again afterwards (a new file of the same name may have arrived).
    """

    def __init__(self, settle_seconds: float, capacity: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 writers: Callable[[Collection[Path]], set[Path]] = open_for_writing) -> None:
        self.settle, self.capacity, self.clock, self.writers = settle_seconds, capacity, clock, writers
        self.lock = threading.Condition()
        self.waiting: dict[Path, Waiting] = {}
        self.in_flight: set[Path] = set()
        self.reoffered: dict[Path, Path] = {}  # offered while in flight: path -> inbox
        self.later: dict[Path, tuple[Path, float]] = {}  # in flight, to be looked at again: path -> (inbox, when)
        self.dropped = 0  # offers refused because the set was full since the last `take_dropped`

    def __len__(self) -> int:
        with self.lock:
            return len(self.waiting)

    def offer(self, path: Path, inbox: Path, why: str) -> bool:
        """Note a path; False when it was dropped because `capacity` paths are already held."""
        with self.lock:
            if path in self.in_flight:
                if why != SCAN:
                    self.reoffered[path] = inbox
                return True
            item = self.waiting.get(path)
            if item is None:
                if len(self.waiting) + len(self.in_flight) >= self.capacity:
                    self.dropped += 1
                    return False
                item = self.waiting[path] = Waiting(inbox)
            elif why == SCAN:
                return True  # already known: a scan must not delay it
            item.closed = why == CLOSED
            item.state, item.due, item.ready_since = None, self.clock(), None
            item.generation += 1
            self.lock.notify_all()
            return True

    def wake(self) -> None:
        """Wake the worker waiting on `lock` (stop, reload, a new folder)."""
        with self.lock:
            self.lock.notify_all()

    def take_dropped(self) -> int:
        with self.lock:
            dropped, self.dropped = self.dropped, 0
            return dropped

    def next_due(self) -> float | None:
        """Earliest time a waiting path needs a look (None: nothing is waiting to be checked)."""
        with self.lock:
            dues = [w.due for w in self.waiting.values() if w.ready_since is None]
            return min(dues) if dues else None

    def check(self) -> None:
        """Stat every due path and mark the complete ones ready (see the module doc)."""
        now = self.clock()
        with self.lock:
            due = [(p, w.state, w.closed, w.generation) for p, w in self.waiting.items()
                   if w.ready_since is None and w.due <= now]
        if not due:
            return
        looks = {path: file_state(path) for path, *_ in due}
        candidates = [p for p, state, closed, _ in due if looks[p] is not None and (closed or looks[p] == state)]
        busy = self.writers(candidates) if candidates else set()
        busy |= {p for p in candidates if p not in busy and not is_openable(p)}
        with self.lock:
            for path, _state, _closed, generation in due:
                item = self.waiting.get(path)
                if item is None or item.generation != generation:
                    continue  # offered again while we looked: its new due time stands
                self._update(path, item, looks[path], complete=path in candidates and path not in busy, now=now)

    def _update(self, path: Path, item: Waiting, state: FileState | None, *, complete: bool, now: float) -> None:
        if state is None:
            del self.waiting[path]  # gone: deleted, or moved away by someone else
        elif complete:
            item.ready_since = now
        else:
            item.state, item.closed, item.due = state, False, now + self.settle

    def ready(self) -> list[tuple[Path, Waiting]]:
        """Complete paths not yet taken, oldest first."""
        with self.lock:
            items = [(p, w) for p, w in self.waiting.items() if w.ready_since is not None]
        return sorted(items, key=lambda pw: pw[1].ready_since or 0.0)

    def waiting_near(self, folders: Iterable[Path]) -> list[Path]:
        """Paths in these folders that are not complete yet (a photo's sidecar still arriving)."""
        wanted = set(folders)
        with self.lock:
            return [p for p, w in self.waiting.items() if w.ready_since is None and p.parent in wanted]

    def claim(self, paths: Sequence[Path]) -> bool:
        """Move complete paths to in flight, all or none: False when one changed since `ready`."""
        with self.lock:
            if any(p not in self.waiting or self.waiting[p].ready_since is None for p in paths):
                return False
            for path in paths:
                del self.waiting[path]
                self.in_flight.add(path)
            return True

    def forget(self, paths: Iterable[Path]) -> None:
        """Drop waiting paths (their inbox is no longer watched); the files stay where they are."""
        with self.lock:
            for path in paths:
                self.waiting.pop(path, None)

    def look_again(self, paths: Iterable[Path], inbox: Path, at: float) -> None:
        """Have in-flight paths looked at again at monotonic time `at`, or sooner if they change
        meanwhile (any event offers them at once): a file that stopped early and whose writer may
        only have paused (pipeline.py). Takes effect when their batch is `done`."""
        with self.lock:
            for path in paths:
                if path in self.in_flight:
                    self.later[path] = (inbox, at)

    def done(self, paths: Iterable[Path]) -> None:
        """The batch holding these paths is finished; paths offered meanwhile are looked at again,
        at once, and paths given to `look_again` at their time."""
        with self.lock:
            again = []
            for path in paths:
                self.in_flight.discard(path)
                later = self.later.pop(path, None)
                if path in self.reoffered:
                    again.append((path, self.reoffered.pop(path)))
                elif later is not None and path not in self.waiting:
                    self.waiting[path] = Waiting(later[0], due=later[1])
                    self.lock.notify_all()
        for path, inbox in again:
            self.offer(path, inbox, CHANGED)

    def counts(self) -> tuple[int, int]:
        """(waiting, being processed)."""
        with self.lock:
            return len(self.waiting), len(self.in_flight)


def wait_until_complete(path: Path, *, settle_seconds: float, timeout: float, closed: bool = False,
                        poll: float = 0.05) -> bool:
    """Block until one file is complete by the rules above (the daemon's own Settler decides).

    closed: the caller already knows a writer closed it (skips the settle wait, not the writer
    check). Returns False when the file vanished or `timeout` seconds passed first.
    """
    settler = Settler(settle_seconds, capacity=1)
    settler.offer(path, path.parent, CLOSED if closed else CHANGED)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        settler.check()
        if settler.ready():
            return True
        if not len(settler):
            return False  # gone
        time.sleep(poll)
    return False
