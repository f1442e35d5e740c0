"""Finding the files an inbox holds: regular files only, never through a symlink, ignores applied.

Used by `nordlys sort` and by the daemon's start-up and reconcile scans, so "what counts as a
candidate file" is decided here once.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence


def is_ignored(name: str, patterns: Sequence[str]) -> bool:
    """True when a file name matches any ignore pattern (fnmatch, case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclass
class ScanResult:
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason): left in place


def scan_inbox(root: Path, *, recursive: bool, ignore: Sequence[str], exclude: Iterable[Path] = ()) -> ScanResult:
    """Regular files under root, sorted; symlinks, FIFOs, sockets and devices are skipped with a reason.

    Directories in `exclude` (the output folders when they live inside the inbox) are not entered,
    and neither is any directory reached through a symlink, so a link can never lead out of the inbox.
    """
    result = ScanResult()
    excluded = {os.path.realpath(p) for p in exclude}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            result.skipped.append((folder, f"cannot list folder: {exc.strerror or exc}"))
            continue
        for entry in entries:
            path = Path(entry.path)
            if is_ignored(entry.name, ignore):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                result.skipped.append((path, f"cannot stat: {exc.strerror or exc}"))
                continue
            if stat.S_ISDIR(mode):
                if recursive and os.path.realpath(path) not in excluded:
                    stack.append(path)
            elif stat.S_ISREG(mode):
                result.files.append(path)
            else:
                result.skipped.append((path, _kind(mode)))
    result.files.sort()
    return result


def not_regular_reason(path: Path) -> str | None:
    """Why a path that an event named is left in place unread (the scan's rule, for one path);
    None for a regular file. Decided from lstat, so a symlink is never followed."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    return None if stat.S_ISREG(mode) else _kind(mode)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder: not a regular file, left in place"
    if stat.S_ISLNK(mode):
        return "symlink: left in place (nordlys never follows links out of an inbox)"
    if stat.S_ISFIFO(mode):
        return "FIFO: not a regular file, left in place"
    if stat.S_ISSOCK(mode):
        return "socket: not a regular file, left in place"
    return "device or special file: not a regular file, left in place"
