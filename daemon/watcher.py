"""watchdog glue: observers per inbox, and a handler that only filters and queues paths.

The handler runs on watchdog's observer thread, so it does no I/O and no inference: it drops
what can never be a photo to sort (directories, ignored names, anything inside an output folder)
and hands the rest to a sink (the Settler's `offer`). Which event says what:
- FileClosedEvent (inotify IN_CLOSE_WRITE): a writer finished -> "closed", the fast path;
- FileMovedEvent into the inbox: a temp-then-rename writer finished -> "closed";
- FileCreatedEvent / FileModifiedEvent: still being written, or moved in from elsewhere ->
  "changed", complete once it settles;
- a directory created or moved in: its files are found by scanning it (`on_folder`).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from nordlys.daemon.config import ConfigError, InboxConfig
from nordlys.daemon.paths import resolved
from nordlys.daemon.scan import is_ignored
from nordlys.daemon.settle import CHANGED, CLOSED

log = structlog.get_logger(__name__)

# Only these reach the handler; with inotify the filter also narrows the kernel's event mask.
EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent, DirCreatedEvent, DirMovedEvent]

# inotify_add_watch / inotify_init fail with these when the per-user limits are used up
_LIMIT_ERRNOS = {errno.ENOSPC, errno.EMFILE}

Sink = Callable[[Path, Path, str], object]  # (path, inbox, why) -> anything


def _fs_path(raw: str | bytes) -> Path:
    return Path(raw.decode(errors="surrogateescape") if isinstance(raw, bytes) else raw)


class WatchError(ConfigError):
    """The inboxes cannot be watched: inotify limits too low, or a folder unreadable (exit code 2)."""


class InboxHandler(FileSystemEventHandler):
    """Filters one inbox's events and queues the paths worth a look."""

    def __init__(self, inbox: Path, *, ignore: Sequence[str], exclude: Iterable[Path],
                 sink: Sink, on_folder: Callable[[Path, Path], object]) -> None:
        # resolved once here, so that events (under the resolved inbox that is watched) and
        # exclusions compare in one spelling, without I/O on the observer thread per event
        self.inbox, self.ignore, self.sink, self.on_folder = resolved(inbox), list(ignore), sink, on_folder
        self.exclude = [resolved(p) for p in exclude]

    def wanted(self, path: Path) -> bool:
        """Inside this inbox, outside every output folder, and no part of it is ignored."""
        if path == self.inbox or self.inbox not in path.parents:
            return False
        if any(path == d or d in path.parents for d in self.exclude):
            return False
        relative = path.relative_to(self.inbox).parts
        return not any(is_ignored(part, self.ignore) for part in relative)

    def dispatch(self, event: FileSystemEvent) -> None:
        moved = isinstance(event, (FileMovedEvent, DirMovedEvent))
        path = _fs_path(event.dest_path if moved else event.src_path)
        if not self.wanted(path):
            return
        if event.is_directory:
            self.on_folder(path, self.inbox)
        elif isinstance(event, (FileClosedEvent, FileMovedEvent)):
            self.sink(path, self.inbox, CLOSED)
        else:
            self.sink(path, self.inbox, CHANGED)


def start_observers(inboxes: Sequence[InboxConfig], *, ignore: Sequence[str], exclude: Sequence[Path],
                    sink: Sink, on_folder: Callable[[Path, Path], object]) -> list[BaseObserver]:
    """One native (inotify) observer for all local inboxes, one polling observer per polled one
    (the poll interval is per observer). Raises WatchError when the kernel refuses."""
    observers: list[BaseObserver] = []
    try:
        native: BaseObserver | None = None
        for inbox in inboxes:
            handler = InboxHandler(inbox.path, ignore=ignore, exclude=exclude, sink=sink, on_folder=on_folder)
            if inbox.polling:
                observer: BaseObserver = PollingObserver(timeout=inbox.poll_interval)
                observers.append(observer)
            else:
                if native is None:
                    native = Observer()  # inotify_init: EMFILE past max_user_instances
                    observers.append(native)
                observer = native
            # the resolved folder: inotify is asked not to follow a symlinked inbox (IN_DONT_FOLLOW)
            observer.schedule(handler, str(handler.inbox), recursive=inbox.recursive, event_filter=EVENTS)
        for observer in observers:
            observer.daemon = True  # never keeps a dying process alive; stop_observers joins them
            observer.start()  # adds the inotify watches: ENOSPC past max_user_watches
    except OSError as exc:
        stop_observers([o for o in observers if o.is_alive()])
        raise WatchError(_watch_failure([str(i.path) for i in inboxes], exc)) from None
    for inbox in inboxes:
        log.info("watching", inbox=str(inbox.path), mode="polling" if inbox.polling else "inotify",
                 recursive=inbox.recursive, **({"interval": inbox.poll_interval} if inbox.polling else {}))
    check_watch_coverage(inboxes)
    return observers


def _watch_failure(paths: list[str], exc: OSError) -> str:
    if exc.errno in _LIMIT_ERRNOS:
        return (f"cannot watch {paths}: {exc.strerror}: expected a higher fs.inotify.max_user_watches "
                f"(and max_user_instances), e.g. `sysctl fs.inotify.max_user_watches=524288`, "
                f"or `polling: true` for these inboxes")
    return f"cannot watch {paths}: {exc.strerror or exc}: expected existing, readable folders"


def _inotify_watch_lines(proc_self: Path) -> Iterator[str]:
    """One `inotify wd:... ino:... sdev:...` line per watch, from each inotify fd's fdinfo."""
    try:
        fds = os.listdir(proc_self / "fd")
    except OSError:
        return
    for fd in fds:
        try:
            if os.readlink(proc_self / "fd" / fd) != "anon_inode:inotify":
                continue
            with open(proc_self / "fdinfo" / fd, encoding="ascii") as f:
                lines = [line for line in f if line.startswith("inotify wd:")]
        except OSError:
            continue
        yield from lines


def inotify_watches(proc_self: Path = Path("/proc/self")) -> int:
    """Watches this process holds."""
    return sum(1 for _ in _inotify_watch_lines(proc_self))


_WATCHED = re.compile(r" ino:([0-9a-f]+) sdev:([0-9a-f]+)")


def watched_folders(proc_self: Path = Path("/proc/self")) -> set[tuple[int, int]]:
    """(device, inode) of every folder this process has an inotify watch on, as the kernel says.

    Why ask the kernel: a folder deleted and made again often gets the inode number of the old
    one, so its path's (device, inode) alone does not show the change; but the kernel drops the
    watch of a deleted folder, so the new one is not in this set. (fdinfo gives the device in
    the kernel's encoding: major << 20 | minor.)"""
    found = set()
    for line in _inotify_watch_lines(proc_self):
        match = _WATCHED.search(line)
        if match:
            kdev = int(match.group(2), 16)
            found.add((os.makedev(kdev >> 20, kdev & 0xFFFFF), int(match.group(1), 16)))
    return found


def folders_to_watch(inboxes: Sequence[InboxConfig]) -> int:
    """Folders the native observer needs a watch for (watchdog watches every sub-folder). Counted
    once each, by device and inode: the kernel gives a folder one watch however many inboxes
    hold it (an inbox inside another, or the same one spelled twice)."""
    folders: set[tuple[int, int]] = set()
    for inbox in inboxes:
        if inbox.polling:
            continue
        roots = [inbox.path]
        if inbox.recursive:
            roots += [Path(top) / d for top, dirs, _ in os.walk(inbox.path) for d in dirs]
        for folder in roots:
            identity = folder_identity(folder)
            if identity is not None:
                folders.add(identity)
    return len(folders)


def folder_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, following a symlink; None when it is not there. A folder
    deleted and made again, or with a file system mounted onto it, gets a new identity while its
    path stays the same: that is how a replaced inbox is noticed (see Service.check_inboxes)."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_watch_coverage(inboxes: Sequence[InboxConfig]) -> None:
    """watchdog skips a sub-folder it cannot watch without a word; say so, and why it matters.

    Files in such folders are still found, by the reconcile scan, just not within a second.
    """
    wanted, have = folders_to_watch(inboxes), inotify_watches()
    if have < wanted:
        log.error("not every folder is watched", folders=wanted, watches=have,
                  reason="the inotify watch limit (fs.inotify.max_user_watches) is reached, or sub-folders "
                         "are unreadable; their files are found by the reconcile scan only")


def stop_observers(observers: Sequence[BaseObserver], timeout: float = 3.0) -> None:
    for observer in observers:
        observer.stop()
    for observer in observers:
        observer.join(timeout)


class OutputHandler(FileSystemEventHandler):
    """Output folders (aurora/, other/, review/): queue moves and arrivals for corrections.py.

    A move is (src, dest); a file that appeared is (None, dest). Ignored names and anything
    outside `folders` are dropped; the worker decides what is a correction.
    """

    def __init__(self, folders: Sequence[Path], *, ignore: Sequence[str],
                 sink: Callable[[Path | None, Path], object]) -> None:
        self.folders, self.ignore, self.sink = [Path(f) for f in folders], list(ignore), sink

    def wanted(self, path: Path) -> bool:
        return (any(f in path.parents for f in self.folders)
                and not any(is_ignored(part, self.ignore) for part in path.parts[-2:]))

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory or not isinstance(event, (FileMovedEvent, FileCreatedEvent)):
            return
        dest = _fs_path(event.dest_path if isinstance(event, FileMovedEvent) else event.src_path)
        if not self.wanted(dest):
            return
        src = _fs_path(event.src_path) if isinstance(event, FileMovedEvent) else None
        self.sink(src, dest)


def start_output_observer(root: Path, folders: Sequence[Path], *, ignore: Sequence[str],
                          sink: Callable[[Path | None, Path], object]) -> BaseObserver:
    """One observer on the output root, recursive, so a move between two output folders arrives
    as one move event (src and dest) rather than a deletion and an unrelated creation."""
    observer = Observer()
    observer.schedule(OutputHandler(folders, ignore=ignore, sink=sink), str(root), recursive=True,
                      event_filter=[FileCreatedEvent, FileMovedEvent])
    observer.daemon = True
    try:
        observer.start()
    except OSError as exc:
        stop_observers([observer] if observer.is_alive() else [])
        raise WatchError(_watch_failure([str(root)], exc)) from None
    log.info("watching for corrections", root=str(root), folders=[str(f) for f in folders])
    return observer
