"""File operations that every part shares: reading and hashing a file, temporary and aside names,
and the single-file move with its recovery.

Why one module: the loader, the pipeline, the mover and undo all touch the same files, and each
guarantee (a file is read in bounded memory, hashed once, never overwritten, never left half-copied
under its real name) must hold the same way wherever a file is read or placed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# --- reading and hashing ------------------------------------------------------------------------

CHUNK = 1 << 20  # bytes read per step when hashing or copying


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


def read_hashed(path: Path) -> tuple[bytes, KnownHash | None]:
    """All bytes of a regular file and their hash, for a caller that needs the bytes anyway, so that
    each file is read once. KnownHash is None when the file changed while it was read. Raises
    OSError for a symlink (O_NOFOLLOW), a non-regular file (never blocks on a FIFO) or a read error."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    with open(os.open(path, flags), "rb", closefd=True) as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        data = handle.read()
        after = os.fstat(handle.fileno())
    if file_signature(before) != file_signature(after) or len(data) != after.st_size:
        return data, None
    return data, KnownHash(hashlib.sha256(data).hexdigest(), len(data), file_signature(before))


# --- temporary names and the single-file move -----------------------------------------------------
