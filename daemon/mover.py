"""The one mover: files a photo group without ever overwriting or losing a file.

Why it is built this way:
- A new name is made with os.link (or an O_EXCL create), never os.rename/shutil.move, because
  those silently replace a file that appeared at the destination meanwhile.
- The new name is made durable (directory fsync) before the old name is removed, so after a crash
  the file exists under at least one name, and the journal's "intent" row says which two.
- Across file systems the bytes are copied to a temporary name in the destination folder, hashed
  while copying and checked against the source's SHA-256 before the copy gets its real name.
- A group (photo + sidecars) moves as a whole or not at all: a failure moves the members that
  already moved back again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import structlog

from nordlys.daemon import fileops
from nordlys.daemon.fileops import CHUNK, NO_HARDLINKS, TEMP_PREFIX, KnownHash, file_signature, sha256_file
from nordlys.daemon.faults import pause_point
from nordlys.daemon.grouping import PhotoGroup, split_name
from nordlys.daemon.journal import Finished, IntentItem, Journal
from nordlys.daemon.placement import Verdict

log = structlog.get_logger(__name__)

ASIDE_PREFIX = ".nordlys-aside-"  # + "<pid>-<aside_tag(name)>-<random>": a source's name while it is removed
NAME_MAX = 255  # bytes in one file name on ext4, btrfs, xfs, APFS, NTFS (UTF-16 units there)
MAX_PLAN_ATTEMPTS = 5  # re-plans after a name was taken between planning and moving

_REASONS = {
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded", errno.ENAMETOOLONG: "file name too long",
    errno.ENOENT: "no such file or folder", errno.EIO: "input/output error",
    errno.ENOTDIR: "a part of the path is not a folder", errno.EISDIR: "is a folder",
    errno.ELOOP: "is a symlink",
}


@dataclass(frozen=True)
class MoveResult:
    """Where one file went, what it was, and which folders had to be made for it."""

    source: Path
    dest: Path
    size: int
    sha256: str
    cross_device: bool
    created_dirs: tuple[Path, ...] = ()  # new folders, outermost first (undo removes them when empty)
    kept_source: bool = False  # copy mode: a copy was filed and the source stays where it is


class MoveError(Exception):
    """A file could not be moved; it is still at its source."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def human_reason(exc: OSError) -> str:
    """'read-only file system' rather than '[Errno 30] ...': the words people search for."""
    return _REASONS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def _still_valid(known: KnownHash | None, now: os.stat_result, expected: str | None) -> bool:
    """Whether a hash taken earlier still describes the file: same signature, same digest as expected."""
    return (known is not None and known.signature == file_signature(now)
            and (expected is None or expected == known.sha256))


# --- naming ---------------------------------------------------------------------------------

def _fit_names(splits: Sequence[tuple[str, str]], tag: str) -> list[str]:
    """stem + tag + tail for every member, cutting the same number of characters off each stem
    when a name would pass NAME_MAX bytes (cutting characters keeps the UTF-8 valid)."""
    longest = max(len(stem) for stem, _ in splits)
    for cut in range(longest + 1):
        names = [stem[:len(stem) - cut] + tag + tail for stem, tail in splits]
        if all(len(os.fsencode(n)) <= NAME_MAX for n in names):
            return names
    raise ValueError(f"names {[s + t for s, t in splits]} cannot be made to fit {NAME_MAX} bytes")


def plan_destinations(members: Sequence[Path], dest_dir: Path, *,
                      reserved: set[Path] | frozenset[Path] = frozenset()) -> dict[Path, Path]:
    """Free names in dest_dir for a group: the original names when all are free, else one shared
    numbered suffix for the whole group (IMG_1.jpg + IMG_1.jpg.json -> IMG_1_1.jpg + IMG_1_1.jpg.json)
    so sidecars still match their photo. `reserved` names count as taken (dry runs use it)."""
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"group members must have distinct names; got {names}")
    splits = [split_name(n) for n in names]
    for number in range(0, 1_000_000):
        tag = f"_{number}" if number else ""
        planned = [dest_dir / n for n in _fit_names(splits, tag)]
        if not any(p in reserved or os.path.lexists(p) for p in planned):
            return dict(zip(members, planned, strict=True))
    raise ValueError(f"no free numbered name for {names[0]} in {dest_dir}")


# --- moving one file ------------------------------------------------------------------------

def _lstat_regular(src: Path) -> os.stat_result:
    try:
        st = os.lstat(src)
    except OSError as exc:
        raise MoveError(src, f"{human_reason(exc)}: cannot read it") from exc
    if stat.S_ISLNK(st.st_mode):
        raise MoveError(src, "is a symlink; symlinks are never followed or moved")
    if not stat.S_ISREG(st.st_mode):
        raise MoveError(src, "is not a regular file")
    return st


def _hash_checked(src: Path, expected: str | None) -> tuple[str, int]:
    try:
        digest, size = sha256_file(src)
    except OSError as exc:
        raise MoveError(src, f"{human_reason(exc)}: cannot read it") from exc
    if expected is not None and digest != expected:
        raise MoveError(src, f"changed since it was hashed (sha256 now {digest[:12]}, "
                             f"expected {expected[:12]}); not moved")
    return digest, size


def _device_of(folder: Path) -> int:
    """st_dev of a folder, or of its nearest existing parent when it is still to be made."""
    for candidate in (folder, *folder.parents):
        try:
            return os.stat(candidate).st_dev
        except OSError:
            continue
    return -1


def _fsync_dir(folder: Path) -> None:
    """Make a new or removed name durable. Some file systems (vfat, FUSE, SMB) cannot; that is
    not an error, it only means their own guarantees apply."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _make_parents(src: Path, folder: Path) -> tuple[Path, ...]:
    """Create `folder` and missing parents; returns the ones this call made, outermost first."""
    missing: list[Path] = []
    probe = folder
    while not os.path.isdir(probe):
        if os.path.lexists(probe):
            raise MoveError(src, f"cannot create folder {folder}: {probe} exists and is not a folder")
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    made: list[Path] = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
            made.append(d)
            _fsync_dir(d.parent)
        except FileExistsError:
            if not os.path.isdir(d):
                raise MoveError(src, f"cannot create folder {d}: a file of that name exists") from None
        except OSError as exc:
            _remove_empty_dirs(made)
            raise MoveError(src, f"{human_reason(exc)}: cannot create folder {d}") from exc
    return tuple(made)


def _remove_empty_dirs(dirs: Sequence[Path]) -> None:
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty, or gone: either way not ours to remove
            os.rmdir(d)


def _link_into_place(src: Path, dest: Path, before: os.stat_result, later: set[Path] | None = None) -> str | None:
    """Same file system: a second name, then drop the first. Returns None when done, or
    "copy" when the file has to be copied instead (another file system, or no hard links here). later: see _unlink_source."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return "copy"
        if exc.errno in NO_HARDLINKS:
            return "copy"  # to a temporary name, then a no-clobber rename (_copy_into_place)
        raise MoveError(src, f"{human_reason(exc)}: cannot create {dest}") from exc
    try:
        if file_signature(os.lstat(dest)) != file_signature(before):
            raise MoveError(src, "changed while being moved; not moved")
        _fsync_dir(dest.parent)
        _unlink_source(src, before, later)
    except BaseException as exc:
        _drop_second_name(src, dest, same_inode=True)
        if isinstance(exc, OSError):
            raise MoveError(src, f"{human_reason(exc)}: cannot finish moving it to {dest}") from exc
        raise
    return None


def _copy_hashing(fd_in: int, fd_out: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd_in, CHUNK):
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd_out, view):]
        pause_point("copy")  # tests only (faults.py): a kill here leaves a half copy under a temporary name
    return digest.hexdigest()


def _copy_metadata(src: Path, dest: Path, st: os.stat_result) -> None:
    """Times (photo tools sort by them), mode, xattrs, and owner when allowed. Not fatal."""
    try:
        shutil.copystat(src, dest, follow_symlinks=False)
        os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    except OSError as exc:
        log.debug("metadata not copied", path=str(dest), reason=human_reason(exc))


def _copy_into_place(src: Path, dest: Path, before: os.stat_result, reference: str, *,
                     later: set[Path] | None = None, keep_source: bool = False) -> None:
    """Copy to a temporary name, fsync, verify, give the copy its real name with a no-clobber
    rename, then drop the source (unless keep_source: copy mode, inbox.mode). The real name
    appears only once the copy is whole and durable, so a crash mid-copy leaves only the
    temporary file, which recovery removes; and it needs no hard links (FAT, exFAT, another
    user's file under fs.protected_hardlinks)."""
    target = fileops.temp_name(dest.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd_out = os.open(target, flags, 0o600)
    except OSError as exc:
        raise MoveError(src, f"{human_reason(exc)}: cannot create {target}") from exc
    made_dest = False
    try:
        try:
            fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                digest = _copy_hashing(fd_in, fd_out)
                after = os.fstat(fd_in)
            finally:
                os.close(fd_in)
            os.fsync(fd_out)
        finally:
            os.close(fd_out)
        if digest != reference:
            raise MoveError(src, f"changed since it was hashed (sha256 of the copy {digest[:12]}, "
                                 f"expected {reference[:12]}); not moved")
        if file_signature(after)[1:] != file_signature(before)[1:]:
            raise MoveError(src, "changed while being copied; not moved")
        _copy_metadata(src, target, before)
        fileops.rename_noreplace(target, dest)  # FileExistsError: someone else's file
        made_dest = True
        _fsync_dir(dest.parent)
        if not keep_source:
            _unlink_source(src, before, later)
    except BaseException as exc:
        if not made_dest:
            _remove_quietly(target)
        else:
            _drop_second_name(src, dest, same_inode=False)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise MoveError(src, f"{human_reason(exc)}: cannot copy it to {dest}") from exc
        raise


def aside_tag(name: str) -> str:
    """What an aside name keeps of the source name, so recovery knows whose name it was."""
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def _unlink_source(src: Path, moved: os.stat_result, later: set[Path] | None = None) -> None:
    """The last step of every move: remove the source's name, but only while it still names the
    file that was moved. A plain unlink could delete a new file that a sync client renamed over
    the name since the move began (its next version, which exists nowhere else); so the name is
    renamed aside first (atomic), and what it held is checked: the moved file is removed, anything
    else gets its name back. A name someone else removed meanwhile is fine: the file is at its
    destination. When this raises, the caller drops the new name again.

    later: where to leave the source folder instead of fsyncing it now, for a caller that moves
    many files out of one folder and fsyncs it once before it journals them "done" (move_groups).
    Only the removal waits: the new name was made durable before this was called, so a crash in
    between leaves the file under both names, which start-up recovery resolves (same inode)."""
    pause_point("unlink")  # tests only (faults.py): a kill here leaves both names and the intent
    aside = src.parent / f"{ASIDE_PREFIX}{os.getpid()}-{aside_tag(src.name)}-{secrets.token_hex(4)}"
    try:
        os.rename(src, aside)
    except FileNotFoundError:
        log.info("source removed meanwhile", path=str(src), reason="the file is at its destination")
        return
    except OSError as exc:
        raise MoveError(src, f"{human_reason(exc)}: cannot remove it from {src.parent}; "
                             "it stays there and was not moved") from exc
    now = os.lstat(aside)
    if (now.st_dev, now.st_ino) != (moved.st_dev, moved.st_ino):
        back = restore_aside(aside, src)
        log.warning("source replaced meanwhile", path=str(back), reason="the new file is kept and looked at again")
        return
    try:
        os.unlink(aside)
    except OSError as exc:
        restore_aside(aside, src)
        raise MoveError(src, f"{human_reason(exc)}: cannot remove it from {src.parent}; "
                             "it stays there and was not moved") from exc
    if later is None:
        _fsync_dir(src.parent)
    else:
        later.add(src.parent)


def restore_aside(aside: Path, src: Path) -> Path:
    """Give a file set aside by `_unlink_source` its name back, or a free numbered one next to it
    when the name was taken again meanwhile; never overwrites. Returns where it is now."""
    for _attempt in range(MAX_PLAN_ATTEMPTS):
        target = src if not os.path.lexists(src) else plan_destinations([src], src.parent)[src]
        try:
            fileops.rename_noreplace(aside, target)
        except FileExistsError:
            continue
        except OSError as exc:
            raise MoveError(src, f"{human_reason(exc)}: it is kept as {aside.name}") from exc
        _fsync_dir(src.parent)
        return target
    raise MoveError(src, f"free names next to it kept being taken; it is kept as {aside.name}")


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("could not remove temporary file", path=str(path), reason=human_reason(exc))


def _drop_second_name(src: Path, dest: Path, *, same_inode: bool) -> None:
    """Undo a half-finished move by removing the new name, but only while the source still holds
    the bytes (checked again here, whatever the caller believes), so this can never lose a file."""
    try:
        s, d = os.lstat(src), os.lstat(dest)
    except OSError:
        log.error("kept destination: source is gone", src=str(src), dest=str(dest))
        return
    if same_inode and (s.st_dev, s.st_ino) != (d.st_dev, d.st_ino):
        log.error("kept destination: source is a different file now", src=str(src), dest=str(dest))
        return
    _remove_quietly(dest)


def move_file(src: Path, dest: Path, *, expected_sha256: str | None = None, dry_run: bool = False,
              known: KnownHash | None = None, later: set[Path] | None = None, keep_source: bool = False) -> MoveResult:
    """Move one file to `dest`, which must not exist (FileExistsError otherwise: re-plan).

    Raises MoveError, with the source untouched, for anything else that goes wrong.
    dry_run: checks and hashes the source, touches nothing. known: a hash taken earlier, used
    instead of reading the file again while its signature is unchanged. later: the source
    folder's fsync is left to the caller (see _unlink_source). keep_source: copy mode (a synced
    inbox, syncsafety.py): file a copy, never a hard link (a writer updating the inbox file in
    place would change the filed one too), and leave the source.
    """
    src, dest = Path(src), Path(dest)
    before = _lstat_regular(src)
    cross = _device_of(dest.parent) != before.st_dev
    if cross and expected_sha256 is not None and not dry_run:
        digest, size = expected_sha256, before.st_size  # verified while copying
    elif known is not None and _still_valid(known, before, expected_sha256):
        digest, size = known.sha256, known.size  # unchanged since hashed; the link is checked again below
    else:
        digest, size = _hash_checked(src, expected_sha256)
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "destination exists; nothing was moved", os.fspath(dest))
    if dry_run:
        return MoveResult(src, dest, size, digest, cross)
    created = _make_parents(src, dest.parent)
    try:
        mode = "copy" if cross or keep_source else _link_into_place(src, dest, before, later)
        if mode is not None:
            _copy_into_place(src, dest, before, digest, later=later, keep_source=keep_source)
    except BaseException:
        _remove_empty_dirs(created)
        raise
    return MoveResult(src, dest, size, digest, mode == "copy", created, keep_source)


# --- moving a group -------------------------------------------------------------------------

def _roll_back(moved: Sequence[tuple[MoveResult, int | None]], journal: Journal | None, why: str) -> None:
    """Put already-moved members back, newest first, so a group is never split."""
    for result, entry_id in reversed(moved):
        if result.kept_source:  # copy mode: the source never left; the copy goes unless it is the last one
            _drop_copy(result, journal, entry_id, why)
            continue
        try:
            move_file(result.dest, result.source, expected_sha256=result.sha256)
        except (MoveError, FileExistsError) as exc:  # stays at dest; the journal still says "done"
            log.error("rollback failed", src=str(result.dest), dest=str(result.source), reason=str(exc))
            continue
        _remove_empty_dirs(result.created_dirs)
        log.warning("moved back", src=str(result.dest), dest=str(result.source), reason=why)
        if journal is not None and entry_id is not None:
            journal.rolled_back(entry_id, why)


def _drop_copy(result: MoveResult, journal: Journal | None, entry_id: int | None, why: str) -> None:
    """Roll back a copy-mode member: remove the copy while the source still holds its bytes."""
    try:
        same = sha256_file(result.source)[0] == result.sha256
    except OSError:
        same = False
    if not same:
        log.error("rollback failed", src=str(result.dest), dest=str(result.source),
                  reason="the source no longer holds these bytes; the copy is kept")
        return
    _remove_quietly(result.dest)
    _remove_empty_dirs(result.created_dirs)
    if journal is not None and entry_id is not None:
        journal.rolled_back(entry_id, why)


def _move_planned(planned: PlannedGroup, entry_ids: Sequence[int | None], journal: Journal | None,
                  finished: list[Finished] | None = None, later: set[Path] | None = None) -> list[MoveResult]:
    """Move every member to its planned name. finished: where to leave the group's "done" rows
    for the caller to write in one transaction with other groups' (None: each is written at
    once). They are left there only when the whole group moved; when a member fails, the rows
    of those already moved are written first, so the journal then tells their way back.
    later: source folders to fsync before those rows are written (see _unlink_source)."""
    group, plan, verdict = planned.group, planned.plan, planned.verdict
    moved: list[tuple[MoveResult, int | None]] = []
    rows: list[Finished] = []
    for i, (member, h, entry_id) in enumerate(zip(group.members, planned.hashed, entry_ids, strict=True)):
        try:
            result = move_file(member, plan[member], expected_sha256=h.sha256, known=h, later=later,
                               keep_source=planned.keep_source)
        except (MoveError, OSError) as exc:
            if journal is not None:
                for folder in {r.source.parent for r, _ in moved} if later is not None else ():
                    _fsync_dir(folder)  # "done" only once the removal is durable
                journal.done_many(rows)
            _abandon(exc, member, plan[member], moved, entry_ids[i:], journal)
            raise
        if journal is not None and entry_id is not None:
            row = Finished(entry_id, result.dest, result.created_dirs)
            if finished is None:
                journal.done_many([row])
            else:
                rows.append(row)
        log.debug("moved", src=str(member), dest=str(result.dest), folder=verdict.folder, score=verdict.score)
        moved.append((result, entry_id))
    if finished is not None:
        finished.extend(rows)
    return [r for r, _ in moved]


def _abandon(exc: Exception, member: Path, dest: Path, moved: Sequence[tuple[MoveResult, int | None]],
             pending: Sequence[int | None], journal: Journal | None) -> None:
    """A member did not move: put the moved ones back and close the journal rows of the rest.
    A taken name is "rolled_back" (the group is re-planned under new rows); anything else "failed"."""
    if isinstance(exc, FileExistsError):
        why = f"{dest.name} was taken meanwhile; re-planned"
    else:
        why = f"group member {member.name} could not be moved: {getattr(exc, 'reason', exc)}"
    _roll_back(moved, journal, why)
    if journal is None:
        return
    for k, entry_id in enumerate(pending):
        if entry_id is None:
            continue
        if isinstance(exc, FileExistsError):
            journal.rolled_back(entry_id, why)
        else:
            journal.failed(entry_id, getattr(exc, "reason", str(exc)) if k == 0 else why)


def _hash_members(group: PhotoGroup, known: Mapping[Path, KnownHash]) -> list[KnownHash]:
    """Each member's hash with the signature taken before hashing (a change during the hash then
    shows as a different signature when the member moves, and it is hashed again there)."""
    hashed = []
    for member in group.members:
        before = _lstat_regular(member)
        given = known.get(member)
        if given is not None and _still_valid(given, before, None):
            hashed.append(given)
            continue
        if given is not None:  # the verdict was made from bytes this file no longer holds
            raise MoveError(member, "changed since it was read for its verdict (replaced or rewritten); "
                                    "not moved, it is looked at again")
        digest, size = _hash_checked(member, None)
        hashed.append(KnownHash(digest, size, file_signature(before)))
    return hashed


@dataclass(frozen=True)
class PlannedGroup:
    """A group checked, hashed and given free names in its folder: ready to be journaled and moved."""

    group: PhotoGroup
    dest_dir: Path
    verdict: Verdict
    plan: dict[Path, Path]
    hashed: tuple[KnownHash, ...]
    keep_source: bool = False  # copy mode: file copies, leave the sources (syncsafety.py)

    def known(self) -> dict[Path, KnownHash]:
        return dict(zip(self.group.members, self.hashed, strict=True))

    def intents(self, group_id: str) -> list[IntentItem]:
        return [IntentItem(m, self.plan[m], h.size, h.sha256, self.verdict, group_id, keep_source=self.keep_source)
                for m, h in zip(self.group.members, self.hashed, strict=True)]


def plan_group(group: PhotoGroup, dest_dir: Path, verdict: Verdict, *, taken: set[Path],
               known: Mapping[Path, KnownHash] | None = None, keep_source: bool = False) -> PlannedGroup:
    """Check and hash a group's members and choose their names in dest_dir, none of them in
    `taken`; the chosen names are added to `taken`, so groups planned together never share one.
    known: hashes taken when the members were read (see move_group). Raises MoveError."""
    dest_dir = Path(dest_dir)
    for member in group.members:
        if member.parent == dest_dir:
            raise MoveError(member, f"is already in the destination folder {dest_dir}")
    hashed = _hash_members(group, known or {})
    try:
        plan = plan_destinations(group.members, dest_dir, reserved=taken)
    except ValueError as exc:  # no free name fits: this group stays, the batch goes on
        raise MoveError(group.primary, f"{exc}; not moved") from None
    taken.update(plan.values())
    return PlannedGroup(group, dest_dir, verdict, plan, tuple(hashed), keep_source)


def move_group(group: PhotoGroup, dest_dir: Path, verdict: Verdict, *, journal: Journal | None,
               run_id: int | None, dry_run: bool = False, reserved: set[Path] | None = None,
               known: Mapping[Path, KnownHash] | None = None, keep_source: bool = False) -> list[MoveResult]:
    """File a photo group into dest_dir: all members, with one shared name suffix, or none.

    Journal intents for every member are written (one transaction) before anything moves.
    reserved: names to treat as taken; a dry run adds its planned names to it so that a
    dry run over many groups reports the names a real run would pick. known: hashes of members
    taken when they were read (read_hashed), trusted while their signature is unchanged; a member
    whose signature changed since is not moved (its verdict was made from other bytes).
    """
    taken = reserved if reserved is not None else set()
    for _attempt in range(MAX_PLAN_ATTEMPTS):
        planned = plan_group(group, dest_dir, verdict, taken=taken, known=known, keep_source=keep_source)
        if dry_run:
            return _dry_run(planned)
        entry_ids: list[int | None] = [None] * len(group.members)
        if journal is not None:
            entry_ids = list(journal.intents(run_id, planned.intents(uuid.uuid4().hex)))
        try:
            return _move_planned(planned, entry_ids, journal)
        except FileExistsError as exc:
            log.info("destination taken, re-planning", path=str(group.primary), dest=str(exc.filename))
            known = planned.known()
    raise MoveError(group.primary, f"free names in {dest_dir} kept being taken "
                                   f"({MAX_PLAN_ATTEMPTS} attempts); not moved")


def move_groups(planned: Sequence[PlannedGroup], *, journal: Journal,
                run_id: int | None) -> list[list[MoveResult] | Exception]:
    """File groups planned together (plan_group, one `taken` set) with two journal transactions
    in all instead of two per group: every intent before anything moves, every "done" after
    the last move; and each source folder fsynced once, not once per file. Each group still
    moves whole or not at all, and a crash at any point leaves intents that start-up recovery
    settles one by one, as for a single group.

    Returns, per group, its moves or the exception that kept it in place (any exception: one
    group's failure never stops the others). A group whose planned name was taken meanwhile is
    filed again on its own (move_group re-plans it)."""
    ids = iter(journal.intents(run_id, [item for p in planned for item in p.intents(uuid.uuid4().hex)]))
    finished: list[Finished] = []
    emptied: set[Path] = set()  # source folders, fsynced once each before "done" is written
    results: list[list[MoveResult] | Exception] = []
    try:
        for p in planned:
            entry_ids: list[int | None] = [next(ids) for _ in p.group.members]
            try:
                results.append(_move_planned(p, entry_ids, journal, finished, emptied))
            except FileExistsError as exc:
                log.info("destination taken, re-planning", path=str(p.group.primary), dest=str(exc.filename))
                try:
                    results.append(move_group(p.group, p.dest_dir, p.verdict, journal=journal, run_id=run_id,
                                              known=p.known(), keep_source=p.keep_source))
                except Exception as again:
                    results.append(again)
            except Exception as exc:
                results.append(exc)
    finally:
        for folder in sorted(emptied):
            _fsync_dir(folder)
        journal.done_many(finished)
    return results


def _dry_run(planned: PlannedGroup) -> list[MoveResult]:
    """What filing the group would do: every member checked and hashed, nothing touched (its
    names are in `taken` already, so the next group of the dry run does not get them)."""
    results = []
    for member, h in zip(planned.group.members, planned.hashed, strict=True):
        result = move_file(member, planned.plan[member], expected_sha256=h.sha256, dry_run=True, known=h)
        log.debug("would move", src=str(member), dest=str(result.dest), folder=planned.verdict.folder,
                  score=planned.verdict.score)
        results.append(result)
    return results
