"""The mover, on real files: no-clobber, shared suffixes, cross-device copies, failures that
leave the source untouched, and whole-group rollback."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from nordlys.daemon.grouping import PhotoGroup, group_files
from nordlys.daemon.journal import DONE, FAILED, ROLLED_BACK, Journal
from nordlys.daemon.mover import (
    NAME_MAX, TEMP_PREFIX, MoveError, _copy_into_place, move_file, move_group, move_groups, plan_destinations,
    plan_group, sha256_file,
)
from nordlys.daemon.placement import Verdict

AURORA = Verdict("aurora", 0.97, "", "test-model")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def leftovers(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)] if folder.exists() else []


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.fixture
def other_fs(tmp_path):
    """A folder on another file system than tmp_path: /dev/shm (tmpfs) or a fresh tmpfs mount."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        folder = shm / f"nordlys-test-{uuid.uuid4().hex}"
        folder.mkdir()
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
        return
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=64m", "nordlys-test", str(mnt)):
        pytest.skip("no second file system: /dev/shm is not a separate tmpfs and mounting one needs root")
    yield mnt
    _run("umount", str(mnt))


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder that is a read-only bind mount (chmod cannot stop root, a read-only mount can)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    write(folder / "existing.jpg", b"already here")
    if not (_run("mount", "--bind", str(folder), str(folder))
            and _run("mount", "-o", "remount,ro,bind", str(folder))):
        _run("umount", str(folder))
        pytest.skip("cannot make a read-only bind mount (needs root and mount rights)")
    yield folder
    _run("umount", str(folder))


@pytest.fixture
def immutable(tmp_path):
    """chattr +i a path (even root cannot unlink or link it); undone after the test."""
    marked: list[Path] = []

    def mark(path: Path) -> Path:
        if not _run("chattr", "+i", str(path)):
            pytest.skip("chattr +i not available (needs root and ext4/xfs/btrfs)")
        marked.append(path)
        return path

    yield mark
    for path in marked:
        _run("chattr", "-i", str(path))


# --- hashing and naming -----------------------------------------------------------------------

def test_sha256_file_streams_large_files(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    assert sha256_file(write(tmp_path / "big.raw", data)) == (sha(data), len(data))
    assert sha256_file(write(tmp_path / "empty.jpg", b"")) == (sha(b""), 0)


def test_plan_keeps_free_names(tmp_path):
    members = [tmp_path / "in" / "IMG_1.jpg", tmp_path / "in" / "IMG_1.xmp"]
    plan = plan_destinations(members, tmp_path / "out")
    assert plan == {m: tmp_path / "out" / m.name for m in members}


def test_plan_shares_one_suffix_across_the_group(tmp_path):
    out = tmp_path / "out"
    write(out / "IMG_1.jpg", b"x")
    write(out / "IMG_1_1.xmp", b"x")  # _1 is free for the photo but not for its sidecar
    members = [Path("/in/IMG_1.jpg"), Path("/in/IMG_1.xmp"), Path("/in/IMG_1.jpg.json"), Path("/in/img_1.CR2")]
    plan = plan_destinations(members, out)
    assert [p.name for p in plan.values()] == ["IMG_1_2.jpg", "IMG_1_2.xmp", "IMG_1_2.jpg.json", "img_1_2.CR2"]


def test_plan_counts_dangling_symlinks_and_reserved_names_as_taken(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").symlink_to(out / "nowhere")
    plan = plan_destinations([Path("/in/a.jpg")], out, reserved={out / "a_1.jpg"})
    assert plan[Path("/in/a.jpg")] == out / "a_2.jpg"


def test_plan_shortens_long_names_without_breaking_utf8(tmp_path):
    out = tmp_path / "out"
    stem = "nordlys-"
    while len((stem + "\U0001F30C.jpg.json").encode()) <= NAME_MAX:  # fill to the limit, multi-byte
        stem += "\u00e6\U0001F30C"[len(stem) % 2]
    members = [Path("/in") / (stem + ".jpg"), Path("/in") / (stem + ".jpg.json")]
    for m in members:
        write(out / m.name, b"taken")
    planned = [p.name for p in plan_destinations(members, out).values()]
    for name in planned:
        assert len(name.encode("utf-8")) <= NAME_MAX
        name.encode("utf-8").decode("utf-8")  # valid UTF-8, no half characters
    stems = {n.removesuffix(".jpg.json").removesuffix(".jpg") for n in planned}
    assert len(stems) == 1 and stems.pop().endswith("_1")


# --- move_file --------------------------------------------------------------------------------

def test_same_filesystem_move_links_then_unlinks(tmp_path):
    src = write(tmp_path / "in" / "a.jpg", b"aurora bytes")
    ino = os.stat(src).st_ino
    dest = tmp_path / "out" / "aurora" / "2026" / "a.jpg"
    result = move_file(src, dest)
    assert not src.exists() and dest.read_bytes() == b"aurora bytes"
    assert os.stat(dest).st_ino == ino  # the same file, not a copy
    assert (result.source, result.dest, result.size, result.sha256, result.cross_device) == (
        src, dest, 12, sha(b"aurora bytes"), False)
    assert result.created_dirs == (tmp_path / "out", tmp_path / "out" / "aurora", dest.parent)


def test_never_overwrites(tmp_path):
    src = write(tmp_path / "in" / "a.jpg", b"new")
    dest = write(tmp_path / "out" / "a.jpg", b"old")
    with pytest.raises(FileExistsError):
        move_file(src, dest)
    assert src.read_bytes() == b"new" and dest.read_bytes() == b"old"
    dangling = tmp_path / "out" / "b.jpg"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        move_file(src, dangling)
    assert dangling.is_symlink() and src.read_bytes() == b"new"


def test_symlink_source_is_refused(tmp_path):
    target = write(tmp_path / "real.jpg", b"real")
    link = tmp_path / "in" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(MoveError, match="is a symlink") as info:
        move_file(link, tmp_path / "out" / "link.jpg")
    assert info.value.path == link and str(info.value).startswith(f"{link}: ")
    assert link.is_symlink() and target.read_bytes() == b"real"
    assert not (tmp_path / "out").exists()


def test_changed_since_hashed_moves_nothing(tmp_path):
    src = write(tmp_path / "in" / "a.jpg", b"edited after hashing")
    with pytest.raises(MoveError, match="changed since it was hashed"):
        move_file(src, tmp_path / "out" / "a.jpg", expected_sha256=sha(b"original"))
    assert src.read_bytes() == b"edited after hashing" and not (tmp_path / "out").exists()


def test_dry_run_touches_nothing(tmp_path):
    src = write(tmp_path / "in" / "a.jpg", b"abc")
    dest = tmp_path / "out" / "deep" / "a.jpg"
    result = move_file(src, dest, dry_run=True)
    assert (result.dest, result.sha256, result.size, result.cross_device) == (dest, sha(b"abc"), 3, False)
    assert src.read_bytes() == b"abc" and not (tmp_path / "out").exists()


def test_cross_device_move_copies_verifies_and_keeps_times(tmp_path, other_fs):
    data = os.urandom(2 * (1 << 20) + 5)
    src = write(other_fs / "in" / "IMG_9.CR2", data)
    os.chmod(src, 0o644)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    dest = tmp_path / "out" / "IMG_9.CR2"
    result = move_file(src, dest, expected_sha256=sha(data))
    assert result.cross_device and result.sha256 == sha(data) and result.size == len(data)
    assert dest.read_bytes() == data and not src.exists()
    assert os.stat(dest).st_mtime_ns == 1_600_000_000_123_456_789
    assert os.stat(dest).st_mode & 0o777 == 0o644
    assert leftovers(dest.parent) == []


def test_cross_device_no_clobber_and_hash_refusal(tmp_path, other_fs):
    src = write(other_fs / "a.jpg", b"incoming")
    taken = write(tmp_path / "out" / "a.jpg", b"already sorted")
    with pytest.raises(FileExistsError):
        move_file(src, taken)
    with pytest.raises(MoveError, match="changed since it was hashed"):
        move_file(src, tmp_path / "out" / "b.jpg", expected_sha256=sha(b"something else"))
    assert src.read_bytes() == b"incoming" and taken.read_bytes() == b"already sorted"
    assert sorted(os.listdir(tmp_path / "out")) == ["a.jpg"]


def test_no_space_left_leaves_source_and_no_temp(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=64k", "nordlys-small", str(small)):
        pytest.skip("cannot mount a small tmpfs (needs root) to fill a disk for real")
    try:
        src = write(tmp_path / "in" / "big.jpg", os.urandom(400_000))
        with pytest.raises(MoveError, match="no space left on device") as info:
            move_file(src, small / "aurora" / "big.jpg")
        assert info.value.path == src
        assert sha256_file(src)[1] == 400_000
        assert os.listdir(small) == []  # neither the temp copy nor the folder it made
    finally:
        _run("umount", str(small))


def test_read_only_destination(tmp_path, read_only_dir):
    src = write(tmp_path / "in" / "a.jpg", b"keep me")
    for dest in (read_only_dir / "a.jpg", read_only_dir / "new-folder" / "a.jpg"):
        with pytest.raises(MoveError, match="read-only file system"):
            move_file(src, dest)
        assert src.read_bytes() == b"keep me"
    assert sorted(os.listdir(read_only_dir)) == ["existing.jpg"]


def test_source_folder_that_refuses_unlink_keeps_the_file_in_one_place(tmp_path, immutable):
    src = write(tmp_path / "in" / "a.jpg", b"stuck")
    immutable(src.parent)
    with pytest.raises(MoveError, match="operation not permitted"):
        move_file(src, tmp_path / "out" / "a.jpg")
    assert src.read_bytes() == b"stuck"
    assert not (tmp_path / "out").exists()  # the new name and the folder made for it are gone


def test_unlinkable_file_falls_back_to_copy_and_cleans_up(tmp_path, immutable):
    src = write(tmp_path / "in" / "a.jpg", b"immutable")
    immutable(src)  # link() -> EPERM, like a file system without hard links
    with pytest.raises(MoveError, match="operation not permitted"):
        move_file(src, tmp_path / "out" / "a.jpg")
    assert src.read_bytes() == b"immutable" and not (tmp_path / "out").exists()


def test_copy_path_for_filesystems_without_hard_links(tmp_path):
    src = write(tmp_path / "in" / "a.jpg", b"copy me")
    dest = write(tmp_path / "out" / "a.jpg", b"taken")
    before = os.lstat(src)
    with pytest.raises(FileExistsError):
        _copy_into_place(src, dest, before, sha(b"copy me"))
    assert dest.read_bytes() == b"taken" and src.exists()
    free = tmp_path / "out" / "b.jpg"
    with pytest.raises(MoveError, match="changed since it was hashed"):
        _copy_into_place(src, free, before, sha(b"other"))
    assert not free.exists() and src.read_bytes() == b"copy me"
    _copy_into_place(src, free, before, sha(b"copy me"))
    assert free.read_bytes() == b"copy me" and not src.exists() and leftovers(free.parent) == []


# --- move_group -------------------------------------------------------------------------------

def make_group(folder: Path, names: list[str]) -> PhotoGroup:
    for n in names:
        write(folder / n, f"bytes of {n}".encode())
    (group,) = group_files(folder / n for n in names)
    return group


def test_group_moves_with_journal_and_shared_suffix(tmp_path):
    group = make_group(tmp_path / "in", ["IMG_1.JPG", "IMG_1.CR2", "IMG_1.JPG.json"])
    out = tmp_path / "out"
    write(out / "IMG_1.CR2", b"an older raw")
    with Journal.open(tmp_path / "j.sqlite") as j, capture_logs() as logs:
        run = j.start_run("sort")
        results = move_group(group, out, AURORA, journal=j, run_id=run)
        entries = j.entries(run_id=run, status=None)
    assert [r.dest.name for r in results] == ["IMG_1_1.JPG", "IMG_1_1.CR2", "IMG_1_1.JPG.json"]
    assert (out / "IMG_1.CR2").read_bytes() == b"an older raw"
    assert [(e.source, e.dest, e.status, e.label, e.score) for e in entries] == [
        (r.source, r.dest, DONE, "aurora", 0.97) for r in results]
    assert len({e.group_id for e in entries}) == 1
    assert [e.sha256 for e in entries] == [sha(f"bytes of {m.name}".encode()) for m in group.members]
    moved = [e for e in logs if e["event"] == "moved"]
    assert [(e["src"], e["dest"], e["folder"], e["score"]) for e in moved] == [
        (str(r.source), str(r.dest), "aurora", 0.97) for r in results]


def test_failed_member_moves_the_group_back(tmp_path, immutable):
    group = make_group(tmp_path / "in", ["IMG_2.jpg", "IMG_2.xmp"])
    immutable(group.members[1])  # the sidecar cannot move; the photo would already have
    out = tmp_path / "out" / "aurora"
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        with pytest.raises(MoveError, match="operation not permitted"):
            move_group(group, out, AURORA, journal=j, run_id=run)
        photo, sidecar = j.entries(run_id=run, status=None)
    assert [m.read_bytes() for m in group.members] == [b"bytes of IMG_2.jpg", b"bytes of IMG_2.xmp"]
    assert not (tmp_path / "out").exists()
    assert photo.status == ROLLED_BACK and "IMG_2.xmp could not be moved" in photo.detail
    assert sidecar.status == FAILED and "operation not permitted" in sidecar.detail


class RacingJournal(Journal):
    """A real journal; after the first intents are written, another program takes a planned name."""

    intruder: Path | None = None

    def intents(self, run_id, items):
        ids = super().intents(run_id, items)
        if self.intruder is None:
            self.intruder = Path(items[1].dest)  # the sidecar's name: the photo moves first, then backs out
            write(self.intruder, b"someone else's file")
        return ids


def test_name_taken_during_the_move_replans_the_whole_group(tmp_path):
    group = make_group(tmp_path / "in", ["IMG_3.jpg", "IMG_3.xmp"])
    out = tmp_path / "out"
    j = RacingJournal.open(tmp_path / "j.sqlite")
    with j:
        run = j.start_run("sort")
        results = move_group(group, out, AURORA, journal=j, run_id=run)
        statuses = [(e.dest.name, e.status) for e in j.entries(run_id=run, status=None)]
    assert j.intruder is not None and j.intruder.read_bytes() == b"someone else's file"
    assert [r.dest.name for r in results] == ["IMG_3_1.jpg", "IMG_3_1.xmp"]
    assert statuses == [("IMG_3.jpg", ROLLED_BACK), ("IMG_3.xmp", ROLLED_BACK),
                        ("IMG_3_1.jpg", DONE), ("IMG_3_1.xmp", DONE)]
    assert sorted(os.listdir(out)) == ["IMG_3.xmp", "IMG_3_1.jpg", "IMG_3_1.xmp"]


class CountingJournal(Journal):
    """A real journal that counts its write transactions for entries (each one is a commit and an fsync)."""

    calls: Counter

    def intents(self, run_id, items):
        self.calls["intents"] += 1
        return super().intents(run_id, items)

    def done_many(self, items):
        self.calls["done_many"] += 1 if items else 0
        return super().done_many(items)


def test_groups_planned_together_get_distinct_names_and_two_transactions_in_all(tmp_path):
    # three photos named alike in three folders, all bound for one folder: planning together must
    # not hand one free name to two of them, and the journal commits twice, not six times
    groups = [make_group(tmp_path / "in" / d, ["IMG_7.jpg", "IMG_7.xmp"]) for d in ("a", "b", "c")]
    out = tmp_path / "out"
    write(out / "IMG_7.jpg", b"already there")
    j = CountingJournal.open(tmp_path / "j.sqlite")
    j.calls = Counter()
    with j:
        run = j.start_run("sort")
        taken: set[Path] = set()
        planned = [plan_group(g, out, AURORA, taken=taken) for g in groups]
        results = move_groups(planned, journal=j, run_id=run)
        entries = j.entries(run_id=run, status=None)
    assert j.calls == Counter(intents=1, done_many=1)
    names = [[r.dest.name for r in res] for res in results]
    assert names == [["IMG_7_1.jpg", "IMG_7_1.xmp"], ["IMG_7_2.jpg", "IMG_7_2.xmp"], ["IMG_7_3.jpg", "IMG_7_3.xmp"]]
    assert (out / "IMG_7.jpg").read_bytes() == b"already there"
    assert [(e.dest.name, e.status) for e in entries] == [(n, DONE) for group in names for n in group]
    assert len({e.group_id for e in entries}) == 3
    for d, group in zip("abc", names):  # each file's bytes arrived, under its group's shared suffix
        assert (out / group[1]).read_bytes() == b"bytes of IMG_7.xmp" and not (tmp_path / "in" / d / "IMG_7.jpg").exists()


def test_one_group_failing_in_a_batch_leaves_the_others_filed(tmp_path, immutable):
    ok1 = make_group(tmp_path / "in" / "a", ["A.jpg"])
    stuck = make_group(tmp_path / "in" / "b", ["B.jpg", "B.xmp"])
    ok2 = make_group(tmp_path / "in" / "c", ["C.jpg"])
    immutable(stuck.members[1])
    out = tmp_path / "out"
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        taken: set[Path] = set()
        results = move_groups([plan_group(g, out, AURORA, taken=taken) for g in (ok1, stuck, ok2)],
                              journal=j, run_id=run)
        statuses = {e.source.name: e.status for e in j.entries(run_id=run, status=None)}
    assert [r.dest.name for r in results[0]] == ["A.jpg"] and [r.dest.name for r in results[2]] == ["C.jpg"]
    assert isinstance(results[1], MoveError) and "operation not permitted" in str(results[1])
    assert statuses == {"A.jpg": DONE, "B.jpg": ROLLED_BACK, "B.xmp": FAILED, "C.jpg": DONE}
    assert [m.read_bytes() for m in stuck.members] == [b"bytes of B.jpg", b"bytes of B.xmp"]
    assert sorted(os.listdir(out)) == ["A.jpg", "C.jpg"]


def test_a_name_taken_after_batch_planning_refiles_that_group_alone(tmp_path):
    first = make_group(tmp_path / "in" / "a", ["IMG_3.jpg", "IMG_3.xmp"])
    second = make_group(tmp_path / "in" / "b", ["X.jpg"])
    out = tmp_path / "out"
    j = RacingJournal.open(tmp_path / "j.sqlite")
    with j:
        run = j.start_run("sort")
        taken: set[Path] = set()
        results = move_groups([plan_group(g, out, AURORA, taken=taken) for g in (first, second)], journal=j, run_id=run)
        statuses = [(e.dest.name, e.status) for e in j.entries(run_id=run, status=None)]
    assert [r.dest.name for r in results[0]] == ["IMG_3_1.jpg", "IMG_3_1.xmp"]
    assert [r.dest.name for r in results[1]] == ["X.jpg"]
    assert sorted(statuses) == sorted([("IMG_3.jpg", ROLLED_BACK), ("IMG_3.xmp", ROLLED_BACK), ("X.jpg", DONE),
                                       ("IMG_3_1.jpg", DONE), ("IMG_3_1.xmp", DONE)])
    assert (out / "IMG_3.xmp").read_bytes() == b"someone else's file"


def test_group_dry_run_writes_nothing_and_logs_would_move(tmp_path):
    a = make_group(tmp_path / "in", ["a.jpg", "a.xmp"])
    b = make_group(tmp_path / "in" / "sub", ["a.jpg"])
    out = tmp_path / "out"
    reserved: set[Path] = set()
    with Journal.open(tmp_path / "j.sqlite") as j, capture_logs() as logs:
        first = move_group(a, out, AURORA, journal=j, run_id=None, dry_run=True, reserved=reserved)
        second = move_group(b, out, AURORA, journal=j, run_id=None, dry_run=True, reserved=reserved)
        assert j.entries(status=None) == []
    assert [r.dest.name for r in first + second] == ["a.jpg", "a.xmp", "a_1.jpg"]
    assert [e["event"] for e in logs] == ["would move"] * 3
    assert not out.exists() and all(m.exists() for m in a.members + b.members)


def test_group_with_a_symlink_member_is_refused_before_journaling(tmp_path):
    group = make_group(tmp_path / "in", ["c.jpg"])
    (tmp_path / "in" / "c.xmp").symlink_to(tmp_path / "elsewhere.xmp")
    group = PhotoGroup(group.primary, (group.primary, tmp_path / "in" / "c.xmp"))
    with Journal.open(tmp_path / "j.sqlite") as j:
        with pytest.raises(MoveError, match="c.xmp: is a symlink"):
            move_group(group, tmp_path / "out", AURORA, journal=j, run_id=j.start_run("sort"))
        assert j.entries(status=None) == []
    assert group.primary.exists() and not (tmp_path / "out").exists()


def test_group_already_in_destination_is_refused(tmp_path):
    group = make_group(tmp_path / "in", ["d.jpg"])
    with pytest.raises(MoveError, match="already in the destination folder"):
        move_group(group, tmp_path / "in", AURORA, journal=None, run_id=None)
    assert group.primary.read_bytes() == b"bytes of d.jpg"


# --- property: nothing is ever overwritten or lost ------------------------------------------

_stems = st.one_of(
    st.sampled_from(["IMG_1", "img_1", "IMG_1_1", "a b", " x ", "\u00e6\u00f8\u00e5", "\U0001F30C", "n.2",
                     os.fsdecode(b"latin1-\xe6")]),  # not UTF-8
    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=8),
).filter(lambda s: s not in (".", ".."))
_suffixes = st.sampled_from([".jpg", ".JPG", ".png", ".CR2", ".xmp", ".jpg.json", ".JPG.json", ".MOV", ".aae", ".txt"])


def _tags(member: str, dest: str) -> set[int]:
    """Every n such that dest is member's name with "_n" inserted somewhere (0: unchanged)."""
    if dest == member:
        return {0}
    found = set()
    for i in range(len(member) + 1):
        head, tail = member[:i], member[i:]
        middle = dest[len(head):len(dest) - len(tail)] if dest.startswith(head) and dest.endswith(tail) else ""
        if len(dest) == len(head) + len(middle) + len(tail) and middle[:1] == "_" and middle[1:].isdigit():
            found.add(int(middle[1:]))
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sources=st.lists(st.tuples(_stems, _suffixes), min_size=1, max_size=12),
       existing=st.lists(st.tuples(_stems, st.sampled_from(["", "_1", "_2"]), _suffixes), max_size=6))
def test_property_no_overwrite_every_file_once_one_suffix_per_group(tmp_path, sources, existing):
    base = tmp_path / uuid.uuid4().hex
    inbox, out = base / "in", base / "out"
    names = list(dict.fromkeys(s + x for s, x in sources))
    for i, n in enumerate(names):
        write(inbox / n, f"{i}:{n}".encode("utf-8", "surrogateescape"))
    before = {}
    for s, tag, x in existing:
        name = s + tag + x
        before[name] = write(out / name, f"existing {name}".encode("utf-8", "surrogateescape")).read_bytes()
    source_shas = Counter(sha256_file(inbox / n)[0] for n in names)
    for group in group_files(inbox / n for n in names):
        results = move_group(group, out, AURORA, journal=None, run_id=None)
        tags = set.intersection(*(_tags(r.source.name, r.dest.name) for r in results))
        assert tags, [(r.source.name, r.dest.name) for r in results]
    assert os.listdir(inbox) == []
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    arrived = Counter(sha256_file(out / n)[0] for n in os.listdir(out) if n not in before)
    assert arrived == source_shas
    shutil.rmtree(base)
