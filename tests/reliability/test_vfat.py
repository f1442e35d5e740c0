"""Issue 12 finding 4: filing where link() is refused, on a real loop-mounted vfat file system.

FAT has no hard links, so the mover's link-then-unlink cannot work there; it copies to a temporary
name, fsyncs, and gives the copy its real name with a no-clobber rename. These tests check that
a vfat destination (a camera card, a USB stick) gets every photo, that a name already taken is
never overwritten, and that a SIGKILL in the middle of a copy leaves no truncated file under the
photo's real name, only a temporary file that recovery removes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from nordlys.daemon.fileops import TEMP_PREFIX, _rename_checked, rename_noreplace
from nordlys.daemon.journal import ROLLED_BACK, IntentItem, Journal
from nordlys.daemon.mover import move_file
from nordlys.daemon.placement import Verdict
from nordlys.daemon.undo import RECOVERED_ROLLED_BACK, recover_interrupted
from tests.daemon.test_watch import Daemon, photo, wait_until
from tests.waiting import Gate


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(params=["kernel", "fuse"])
def vfat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fresh 64 MiB vfat file system: loop-mounted by the kernel's vfat driver, and the same
    image through fusefat (FUSE: no hard links and no renameat2 either, so the mover's checked
    rename protocol runs). Each skips, saying why, where it cannot be mounted."""
    if shutil.which("mkfs.vfat") is None:
        pytest.skip("mkfs.vfat not found: apt-get install dosfstools")
    image, mnt = tmp_path / "card.img", tmp_path / "card"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    made = _run("mkfs.vfat", "-n", "NORDLYS", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.vfat failed: {made.stderr.strip()}")
    mnt.mkdir()
    if request.param == "kernel":
        mounted = _run("mount", "-o", "loop", "-t", "vfat", str(image), str(mnt))
        unmount = ["umount", "-l", str(mnt)]
        how = "needs root with CAP_SYS_ADMIN, loop devices and the kernel's vfat driver"
    else:
        if shutil.which("fusefat") is None:
            pytest.skip("fusefat not found: apt-get install fusefat")
        mounted = _run("fusefat", "-o", "rw+", str(image), str(mnt))
        unmount = ["fusermount", "-u", "-z", str(mnt)]
        how = "needs /dev/fuse and the right to mount FUSE file systems"
    if mounted.returncode != 0 or not os.path.ismount(mnt):
        pytest.skip(f"cannot mount a vfat image here ({mounted.stderr.strip() or 'mount failed'}): {how}")
    try:
        yield mnt
    finally:
        _run(*unmount)


def temps(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)] if folder.exists() else []


def test_vfat_really_refuses_hard_links(vfat: Path) -> None:
    """The premise of the tests below: on this mount link() fails, as on every FAT card."""
    (vfat / "a").write_bytes(b"x")
    with pytest.raises(OSError):
        os.link(vfat / "a", vfat / "b")


def test_a_photo_moves_onto_vfat_from_another_file_system(tmp_path: Path, vfat: Path) -> None:
    src = tmp_path / "in" / "IMG_1.jpg"
    src.parent.mkdir()
    src.write_bytes(b"aurora bytes" * 1000)
    result = move_file(src, vfat / "aurora" / "IMG_1.jpg")
    assert (vfat / "aurora" / "IMG_1.jpg").read_bytes() == b"aurora bytes" * 1000
    assert not src.exists() and result.cross_device
    assert temps(vfat / "aurora") == []


def test_a_photo_moves_within_vfat(vfat: Path) -> None:
    """An SD card sorted in place: source and destination on one file system without hard links."""
    src = vfat / "DCIM" / "IMG_2.jpg"
    src.parent.mkdir()
    src.write_bytes(b"card photo")
    move_file(src, vfat / "sorted" / "IMG_2.jpg")
    assert (vfat / "sorted" / "IMG_2.jpg").read_bytes() == b"card photo" and not src.exists()
    assert temps(vfat / "sorted") == []


def test_a_taken_name_on_vfat_is_never_overwritten(tmp_path: Path, vfat: Path) -> None:
    src = tmp_path / "IMG_3.jpg"
    src.write_bytes(b"new")
    (vfat / "IMG_3.jpg").write_bytes(b"already here")
    with pytest.raises(FileExistsError):
        move_file(src, vfat / "IMG_3.jpg")
    assert (vfat / "IMG_3.jpg").read_bytes() == b"already here" and src.read_bytes() == b"new"
    assert temps(vfat) == []


@pytest.mark.parametrize("rename", [rename_noreplace, _rename_checked], ids=["renameat2", "checked"])
def test_no_clobber_rename_on_vfat(vfat: Path, rename) -> None:
    """Both ways of naming a copy refuse a taken name and work on a free one: renameat2's
    RENAME_NOREPLACE, and the checked placeholder protocol used where renameat2 is missing."""
    (vfat / "tmp").write_bytes(b"copy")
    (vfat / "taken").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        rename(vfat / "tmp", vfat / "taken")
    assert (vfat / "taken").read_bytes() == b"someone else's" and (vfat / "tmp").exists()
    rename(vfat / "tmp", vfat / "free")
    assert (vfat / "free").read_bytes() == b"copy" and not (vfat / "tmp").exists()


def test_the_daemon_files_onto_a_vfat_destination(tmp_path: Path, vfat: Path, green_model: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    daemon = Daemon(tmp_path / "home", inboxes=[inbox], dest=vfat / "sorted", model=green_model).start()
    try:
        data = {f"IMG_{i}.jpg": photo(i, green=i % 2 == 0) for i in range(6)}
        for name, content in data.items():
            (inbox / name).write_bytes(content)
        wait_until(lambda: len(daemon.find("sorted")) == len(data), 120, "six photos filed onto vfat")
    finally:
        daemon.stop()
    filed = {p.name: p.read_bytes() for p in (vfat / "sorted").rglob("*.jpg")}
    assert filed == data and list(inbox.iterdir()) == []
    assert {p.parent.name for p in (vfat / "sorted").rglob("*.jpg")} == {"aurora", "other"}


def test_sigkill_mid_copy_leaves_no_truncated_file_under_the_real_name(tmp_path: Path, vfat: Path,
                                                                    green_model: Path) -> None:
    """An SD card as a polled inbox, sorted onto itself (no hard links there, so every photo is
    copied). The daemon is held by the `copy` fault-injection point after the first chunk of an
    8 MiB photo and SIGKILLed there. The real name must not exist, only a temporary one; the
    restarted daemon removes it and files the photo whole, once."""
    data = photo(1, green=True) + os.urandom(8 << 20)  # a JPEG with trailing bytes: still decodes
    inbox, dest = vfat / "DCIM", vfat / "sorted"
    inbox.mkdir()
    gate = Gate(tmp_path / "gates", "copy").close()
    daemon = Daemon(tmp_path / "home", inboxes=[{"path": str(inbox), "polling": True, "poll_interval": 0.5}],
                    dest=dest, model=green_model, env=Gate.env(gate)).start()
    try:
        (inbox / "BIG.jpg").write_bytes(data)
        daemon.wait_for("paused", 120, stage="copy")
        daemon.proc.kill()
        daemon.proc.wait(60)
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
    assert not (dest / "aurora" / "BIG.jpg").exists(), "a truncated file under the photo's real name"
    assert len(temps(dest / "aurora")) == 1  # the half copy, under a temporary name only
    assert (inbox / "BIG.jpg").read_bytes() == data
    gate.open()
    daemon.start()
    try:
        daemon.wait_for("sorted", 120)
    finally:
        daemon.stop()
    assert temps(dest / "aurora") == [] and list(inbox.iterdir()) == []
    assert sha((dest / "aurora" / "BIG.jpg").read_bytes()) == sha(data)


def test_recovery_removes_the_empty_name_the_checked_rename_claimed(tmp_path: Path) -> None:
    """Where renameat2 is missing and there are no hard links, the copy's real name is claimed
    with an empty placeholder just before the rename; a crash in between leaves that empty file.
    Recovery removes it (it holds no bytes) and the photo, intact at its source, is filed again."""
    src, dest = tmp_path / "in" / "IMG_9.jpg", tmp_path / "out" / "IMG_9.jpg"
    src.parent.mkdir()
    dest.parent.mkdir()
    src.write_bytes(b"photo bytes")
    dest.write_bytes(b"")  # the placeholder
    with Journal.open(tmp_path / "journal.sqlite") as journal:
        run = journal.start_run("sort crashed")
        journal.intents(run, [IntentItem(src, dest, len(b"photo bytes"), sha(b"photo bytes"),
                                         Verdict("aurora", 0.9, "", "test"), "g1")])
        (_entry, action), = recover_interrupted(journal)  # this process's own run counts as dead
        assert action == RECOVERED_ROLLED_BACK
        assert [e.status for e in journal.entries(status=None)] == [ROLLED_BACK]
    assert not dest.exists() and src.read_bytes() == b"photo bytes"

