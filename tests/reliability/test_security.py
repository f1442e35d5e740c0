"""Where nordlys may read and write: never through a symlink out of an inbox, never outside the
output root (whatever the names), and it works inside the hardened systemd unit's sandbox.

The sandbox is rebuilt without systemd: a private mount namespace in which everything but the
inbox, the output root and the journal's folder is read-only (ProtectSystem=strict with
ReadWritePaths=), no network (PrivateNetwork=yes), no capabilities and no_new_privs
(CapabilityBoundingSet=, NoNewPrivileges=yes). The daemon must sort a burst there with no error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nordlys.daemon.mover import plan_destinations
from nordlys.daemon.placement import FOLDER_KEYS, destination_dir
from tests.reliability.harness import (
    AURORA, check_invariant, journal_entries, make_burst, photo, regular_files, wait_for_none, wait_until,
)

SANDBOX = Path(__file__).with_name("sandbox.py")
SYMLINK_REASON = "symlink: left in place (nordlys never follows links out of an inbox)"


def snapshot(root: Path, *, skip: tuple[Path, ...]) -> dict[str, str]:
    """relative path -> what it is (bytes hash, link target, folder) for everything under root."""
    seen = {}
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in dirs + names:
            path = here / name
            if path.is_symlink():
                seen[str(path.relative_to(root))] = "-> " + os.readlink(path)
            elif path.is_file():
                seen[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                seen[str(path.relative_to(root))] = "folder"
    return seen


def test_symlinks_are_never_followed_out_of_an_inbox(tmp_path, daemons):
    """Links to a photo outside, to a folder of photos outside, to /etc/passwd and to the inbox
    itself (a loop): none is followed, none of their targets is read or moved, and each stays in
    place with the symlink reason (a reason from the target's content would prove a read).
    Nothing outside the inbox, the output root and the journal changes."""
    outside, inbox, dest = tmp_path / "outside", tmp_path / "inbox", tmp_path / "sorted"
    outside.mkdir()
    inbox.mkdir()
    (outside / "trip").mkdir()
    for i in range(3):
        (outside / "trip" / f"far_{i}.jpg").write_bytes(photo(9000 + i, green=True))
    (outside / "secret.jpg").write_bytes(photo(9010, green=True))
    links = {"to_photo.jpg": outside / "secret.jpg", "to_passwd.jpg": Path("/etc/passwd"),
             "to_folder": outside / "trip", "to_inbox": inbox, "to_parent.jpg": Path("..")}
    daemon = daemons([inbox], dest)  # writes its config file
    before = snapshot(tmp_path, skip=(inbox, dest, tmp_path / "xdg-state"))
    daemon.start()
    for name, target in links.items():
        (inbox / name).symlink_to(target)
    (inbox / "real.jpg").write_bytes(photo(9020, green=True))
    wait_until(lambda: (dest / AURORA / "real.jpg").exists(), 20, "a real photo sorted beside the links")
    def reasons() -> dict[str, list[str]]:
        return {n: [e["reason"] for e in daemon.find("skipped", path=str(inbox / n))] for n in links}

    wait_for_none(lambda: [n for n, r in reasons().items() if not r], 20, "every link reported")
    assert daemon.stop()[0] == 0
    assert all(set(r) == {SYMLINK_REASON} for r in reasons().values()), reasons()
    assert all((inbox / n).is_symlink() and os.readlink(inbox / n) == str(t) for n, t in links.items())
    assert snapshot(tmp_path, skip=(inbox, dest, tmp_path / "xdg-state")) == before, "something outside changed"
    assert sorted(p.name for p in regular_files(dest)) == ["real.jpg"]
    rows = {r["source"].name: r["detail"] for r in journal_entries(daemon.journal) if r["status"] == "failed"}
    assert {n: rows.get(n) for n in links} == {n: SYMLINK_REASON for n in links}


# --- names: nothing escapes the output root --------------------------------------------------

_part = st.one_of(st.sampled_from(["..", ".", "", "/", "//", "/etc", "a/../..", "..\\..", "~", "$HOME"]),
                  st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12))


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_part, max_size=6), name=_part, folder=st.sampled_from(FOLDER_KEYS),
       keep=st.booleans(), outside=st.booleans())
def test_placement_never_leaves_the_output_root(parts, name, folder, keep, outside):
    """Any source path (relative parts with '..', absolute pieces, a path outside the inbox, names
    that are not normalised) gives a folder inside output_root/folder."""
    inbox, root = PurePosixPath("/srv/inbox"), PurePosixPath("/srv/sorted")
    source = (PurePosixPath("/elsewhere") if outside else inbox).joinpath(*parts, name or "x.jpg")
    target = destination_dir(Path(source), inbox=Path(inbox), output_root=Path(root), folder_name=folder,
                             keep_subfolders=keep)
    resolved = Path(os.path.normpath(target))
    assert resolved == root / folder or (root / folder) in resolved.parents, (source, target)


_file_name = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=300).filter(
    lambda n: n not in (".", "..") and len(os.fsencode(n)) <= 255)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(_file_name, min_size=1, max_size=4, unique=True), taken=st.booleans())
def test_planned_names_stay_in_the_destination_folder(names, taken):
    """Whatever a member is called (255 bytes, unicode, dots, backslashes), its planned name is a
    single name inside the destination folder, never a path."""
    dest = Path("/srv/sorted/aurora")
    members = [Path("/srv/inbox") / n for n in names]
    try:
        plan = plan_destinations(members, dest, reserved={dest / n for n in names} if taken else frozenset())
    except ValueError:  # no numbered variant fits 255 bytes: the file stays where it is
        return
    for planned in plan.values():
        assert planned.parent == dest and planned.name not in ("", ".", "..") and "/" not in planned.name
        assert len(os.fsencode(planned.name)) <= 255


# --- the hardened unit's sandbox, without systemd ----------------------------------------------

@pytest.fixture
def sandbox(no_capabilities) -> Callable[..., list[str]]:
    """prefix(*writable folders): the command prefix. Skips, saying why, where namespaces or
    mounts are not allowed; leaves out MemoryDenyWriteExecute where the kernel lacks it (< 6.3)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    base = ["unshare", "--mount", "--net", sys.executable, str(SANDBOX)]
    probe = subprocess.run([*base, "--", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount and network namespace here: {probe.stderr.strip()[:200]}")
    mdwe = ["--deny-write-execute"] if subprocess.run([*base, "--deny-write-execute", "--", "true"],
                                                      capture_output=True).returncode == 0 else []

    def prefix(*writable: Path) -> list[str]:
        rw = [arg for folder in writable for arg in ("--rw", str(folder))]
        return [*base, *mdwe, *rw, "--", *no_capabilities]

    return prefix


PROBE = """
import mmap, sys
open(sys.argv[1], "w").write("x")
for what, attempt in (("outside", lambda: open(sys.argv[2], "w")),
                      ("network", lambda: __import__("socket").create_connection(("127.0.0.1", 9), 1)),
                      ("write+execute", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC))):
    try:
        attempt()
        print(what, "allowed")
    except OSError as e:
        print(what, "refused:", e.strerror)
"""


def test_the_sandbox_is_real(tmp_path, sandbox):
    """The check below would prove nothing if the sandbox let these through."""
    (tmp_path / "rw").mkdir()
    prefix = sandbox(tmp_path / "rw")
    done = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(tmp_path / "rw" / "ok"), str(tmp_path / "no")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "outside refused: Read-only file system"
    assert lines[1].startswith("network refused")
    if "--deny-write-execute" in prefix:
        assert lines[2].startswith("write+execute refused")
    assert (tmp_path / "rw" / "ok").exists() and not (tmp_path / "no").exists()


def test_daemon_sorts_inside_the_hardened_sandbox(tmp_path, daemons, sandbox):
    inbox, dest, state = tmp_path / "inbox", tmp_path / "sorted", tmp_path / "xdg-state" / "nordlys"
    for folder in (inbox, dest, state):
        folder.mkdir(parents=True)
    burst = make_burst(60, seed=51)
    daemon = daemons([inbox], dest, prefix=sandbox(inbox, dest, state)).start()
    for name, data in burst.files.items():
        (inbox / name).write_bytes(data)
    wait_for_none(lambda: regular_files(inbox), 30, "the burst sorted inside the sandbox")
    assert daemon.stop()[0] == 0
    errors = [line for line in daemon.lines if '"level": "error"' in line or "Traceback" in line]
    assert not errors, errors[:5]
    findings = check_invariant(burst, inbox, dest, daemon.journal)
    assert findings.ok, findings.problems()
