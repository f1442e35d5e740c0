"""File operations that every part shares: reading and hashing a file, temporary and aside names,
and the single-file move with its recovery.

Why one module: the loader, the pipeline, the mover and undo all touch the same files, and each
guarantee (a file is read in bounded memory, hashed once, never overwritten, never left half-copied
under its real name) must hold the same way wherever a file is read or placed.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import platform
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import structlog

log = structlog.get_logger(__name__)

# --- reading and hashing ------------------------------------------------------------------------

CHUNK = 1 << 20  # bytes read per step when hashing or copying
HEAD_BYTES = 4096  # bytes a reader's check_head sees before the rest of a file is read


@dataclass(frozen=True)
class KnownHash:
    """A file's SHA-256 taken by whoever read it already (the pipeline decodes the same bytes), with
    the stat signature it had before and after that read. The mover trusts it instead of reading
    the file again only while the file's signature is still the same."""

    sha256: str
    size: int
    signature: tuple[int, int, int, int]  # file_signature(): device, inode, size, mtime


def file_signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must not change between hashing a file and moving it (device, inode, size, mtime)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size) of a file's bytes, read in 1 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


class FileTooLarge(OSError):
    """A file is larger than its reader allows; nothing but its size was looked at."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"{size} bytes, more than the {limit} allowed", os.fspath(path))
        self.size, self.limit = size, limit


def read_hashed(path: Path, *, max_bytes: int | None = None, check_head: Callable[[bytes], None] | None = None,
                follow_symlinks: bool = False) -> tuple[bytes, KnownHash | None]:
    """All bytes of a regular file and their hash, for a caller that needs the bytes anyway, so that
    each file is read once. KnownHash is None when the file changed while it was read.

    Why the two checks come first: a file is never read whole just because it is in an inbox (a
    3 GB video once got the daemon OOM-killed on every start). `max_bytes` refuses a larger file
    from its fstat size alone (FileTooLarge); `check_head` sees the first HEAD_BYTES and raises to
    refuse the file before the rest is read. The rest is read into one buffer of the file's size,
    hashed as it arrives, so memory is the file's size once, never twice.

    Raises OSError for a symlink (O_NOFOLLOW, unless follow_symlinks: training data may be links),
    a non-regular file (never blocks on a FIFO) or a read error."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_symlinks else os.O_NOFOLLOW)
    with open(os.open(path, flags), "rb", buffering=0, closefd=True) as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        if max_bytes is not None and before.st_size > max_bytes:
            raise FileTooLarge(path, before.st_size, max_bytes)
        head = bytearray(min(HEAD_BYTES, before.st_size))
        got = _read_into(handle, head, 0, len(head))
        if check_head is not None:
            check_head(bytes(head[:got]))
        buffer = bytearray(before.st_size)  # only now: a refused file never costs its size in memory
        buffer[:got] = head[:got]
        digest = hashlib.sha256(head[:got])
        while got < len(buffer):
            n = _read_into(handle, buffer, got, min(CHUNK, len(buffer) - got))
            if not n:
                break
            digest.update(memoryview(buffer)[got:got + n])
            got += n
        grew = bool(handle.read(1))
        after = os.fstat(handle.fileno())
    if grew or got != len(buffer) or file_signature(before) != file_signature(after):
        del buffer[got:]
        return buffer, None  # a bytearray: `bytes(buffer)` would hold the file twice for a moment
    return buffer, KnownHash(digest.hexdigest(), got, file_signature(before))


def _read_into(handle: BinaryIO, buffer: bytearray, start: int, count: int) -> int:
    """Read up to `count` bytes into buffer[start:]; fewer only at the end of the file."""
    view = memoryview(buffer)[start:start + count]
    done = 0
    while done < count and (n := handle.readinto(view[done:])):
        done += n
    return done


# --- temporary names and the single-file move -----------------------------------------------------

TEMP_PREFIX = ".nordlys-tmp-"  # + "<pid>-<random>": recovery removes leftovers of dead processes
RENAME_NOREPLACE = 1  # linux/fs.h: renameat2() fails with EEXIST instead of replacing the target
_AT_FDCWD = -100
_RENAMEAT2_SYSCALL = {"x86_64": 316, "aarch64": 276, "armv7l": 382, "i686": 353, "riscv64": 276,
                      "ppc64le": 357, "s390x": 347}  # for a libc older than glibc 2.28 (no renameat2 symbol)
# link() errors that mean "this file system cannot make hard links (here)": vfat/exFAT always,
# and a file owned by another user under fs.protected_hardlinks.
NO_HARDLINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS})
# renameat2() errors that mean "not here": an old kernel, or a file system without the flag (NFS, some FUSE).
_NO_RENAMEAT2 = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})

def temp_name(folder: Path) -> Path:
    """A fresh temporary name in `folder`: a dotfile (so watchers and `ignore` pass it by) that
    carries our pid, so recovery can tell a dead process's leftover from a live one's copy."""
    return folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"


@functools.cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is not None:
        return func  # type: ignore[no-any-return]
    number = _RENAMEAT2_SYSCALL.get(platform.machine())
    if number is None:
        return None
    return lambda *args: libc.syscall(number, *args)  # type: ignore[no-any-return]


def rename_noreplace(src: Path, dest: Path) -> None:
    """Give `src` the name `dest`, atomically, and never over an existing `dest` (FileExistsError).

    Why not os.rename: it silently replaces whatever took `dest` meanwhile. Why not os.link +
    unlink: FAT/exFAT have no hard links, and fs.protected_hardlinks refuses them for another
    user's file. renameat2(RENAME_NOREPLACE) has neither problem (ext4, btrfs, xfs, tmpfs, vfat,
    exfat since Linux 3.15-5.x); where the kernel or file system lacks it, `_rename_checked`."""
    func = _renameat2()
    if func is not None:
        if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dest), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in _NO_RENAMEAT2:
            raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dest))
    _rename_checked(src, dest)


def _rename_checked(src: Path, dest: Path) -> None:
    """No-clobber rename without renameat2. With hard links: link (fails on an existing name),
    then drop the old name. Without: claim `dest` with an empty O_EXCL placeholder, then rename
    over the placeholder only while `dest` is still that same empty file. What stays unchecked is
    the microseconds between that last look and the rename; a crash in between leaves the empty
    placeholder, which recovery removes (undo.recover_interrupted: an empty destination)."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in NO_HARDLINKS:
            raise
    else:
        os.unlink(src)
        return
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        mine = os.fstat(fd)
    finally:
        os.close(fd)
    now = os.lstat(dest)
    if (now.st_dev, now.st_ino, now.st_size) != (mine.st_dev, mine.st_ino, 0):
        raise FileExistsError(errno.EEXIST, "destination was taken meanwhile", os.fspath(dest))
    try:
        os.rename(src, dest)
    except OSError:
        os.unlink(dest)  # still our empty placeholder: checked just above
        raise


def owner_alive(name: str, prefix: str = TEMP_PREFIX) -> bool:
    """Temporary and aside names are prefix + "<pid>-...": is that process (not this one) still
    running, and so maybe still using the file?"""
    pid_text = name[len(prefix):].split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temps(folder: Path) -> None:
    """Remove the temporary copies dead processes left in `folder` (recovery calls this for every
    destination of an interrupted move). A temporary copy is never the only copy: the source is
    removed only after the copy has its real name."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in sorted(names):
        path = folder / name
        if not name.startswith(TEMP_PREFIX) or owner_alive(name):
            continue
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                log.warning("removed leftover temporary copy", path=str(path))
        except OSError as exc:
            log.error("cannot remove leftover temporary copy", path=str(path), reason=exc.strerror or str(exc))
