"""Issue 12, findings 1, 5, 7 and 8: path aliases, one daemon per journal, a journal that fails for
a while, and inboxes that change under the running daemon. Every test runs the real daemon (or
the real CLI) as a subprocess on real folders, real mounts and a real SQLite journal.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.harness import journal_entries
from tests.daemon.test_watch import files_under, photo, wait_until

DEADLINE = 60.0  # seconds; generous: the machine is busy
LOCK_HELD = 35.0  # seconds another process holds the journal's write lock (SQLite waits 30 s)


def write_photos(inbox: Path, first: int, count: int) -> dict[str, bytes]:
    """`count` unique JPEGs (even numbers green: aurora) written into inbox; name -> bytes."""
    written = {}
    for i in range(first, first + count):
        data = photo(i, green=i % 2 == 0)
        (inbox / f"IMG_{i:04d}.jpg").write_bytes(data)
        written[f"IMG_{i:04d}.jpg"] = data
    return written


def filed(dest: Path, written: dict[str, bytes]) -> bool:
    """Every written photo is in aurora/ or other/ under its own name, with its bytes."""
    for name, data in written.items():
        path = dest / ("aurora" if int(name[4:8]) % 2 == 0 else "other") / name
        if not path.exists() or path.read_bytes() != data:
            return False
    return True


def done_rows(journal: Path) -> list[dict]:
    return [r for r in journal_entries(journal) if r["status"] == "done"]


def run_cli(home: Path, *args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m nordlys.daemon ARGS` with the test daemon's config and state folders."""
    env = {**os.environ, "XDG_STATE_HOME": str(home / "xdg-state"), "XDG_CONFIG_HOME": str(home / "xdg-config")}
    env.pop("NOTIFY_SOCKET", None)
    try:
        return subprocess.run([*(prefix or []), sys.executable, "-m", "nordlys.daemon", *args], env=env,
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"nordlys {' '.join(args)} still running after 120 s:\n{exc.stderr}") from None


def message_lines(stderr: str) -> list[str]:
    """stderr less the JSON log lines: what a person reads."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing is left to fail at close
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


# --- finding 1: path aliases ---------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["symlinked parent", "dot-dot"])
def test_an_output_root_inside_the_inbox_is_excluded_however_the_inbox_is_spelled(tmp_path, daemons, spelling):
    """`--inbox LINK/inbox --dest REAL/inbox/sorted` (or `REAL/x/../inbox`): each photo is filed
    once, never picked up again from the output folders under their other spelling."""
    real = tmp_path / "real"
    (real / "inbox").mkdir(parents=True)
    if spelling == "symlinked parent":
        (tmp_path / "link").symlink_to(real)
        inbox = tmp_path / "link" / "inbox"
    else:
        (real / "x").mkdir()
        inbox = Path(f"{real}/x/../inbox")
    dest = real / "inbox" / "sorted"
    daemon = daemons([inbox], dest).start()
    first = write_photos(inbox, 0, 6)
    wait_until(lambda: filed(dest, first), DEADLINE, "the first photos filed")
    second = write_photos(inbox, 6, 6)  # events on the output folders come before these are done
    wait_until(lambda: filed(dest, second), DEADLINE, "the second photos filed")
    assert daemon.stop()[0] == 0
    names = sorted(p.name for p in files_under(dest))
    assert names == sorted([*first, *second]), f"filed more than once: {names}"
    assert len(done_rows(daemon.journal)) == 12
    assert len(daemon.find("sorted")) == 12


# --- finding 8: inboxes that change under the daemon ---------------------------------------------

def test_a_symlinked_inbox_gets_events(tmp_path, daemons):
    """The inbox itself is a symlink: the resolved folder is watched, so new photos are filed
    at once, not at the reconcile scan 300 s later."""
    real = tmp_path / "real-inbox"
    real.mkdir()
    link = tmp_path / "inbox"
    link.symlink_to(real)
    dest = tmp_path / "sorted"
    daemon = daemons([link], dest).start()
    written = write_photos(link, 0, 3)
    wait_until(lambda: filed(dest, written), DEADLINE, "photos written through the link filed")
    assert daemon.stop()[0] == 0


def test_an_inbox_deleted_and_made_again_is_watched_again(tmp_path, daemons):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    daemon = daemons([inbox], dest).start()
    shutil.rmtree(inbox)
    inbox.mkdir()
    event = daemon.wait_for("inbox replaced", DEADLINE)
    assert event["inbox"] == str(inbox)
    written = write_photos(inbox, 0, 3)
    wait_until(lambda: filed(dest, written), DEADLINE, "photos in the new inbox filed")
    assert daemon.stop()[0] == 0


def test_a_file_system_mounted_onto_the_inbox_is_watched(tmp_path, daemons, tmpfs):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    daemon = daemons([inbox], dest).start()
    tmpfs(inbox, "4m")
    daemon.wait_for("inbox replaced", DEADLINE, inbox=str(inbox))
    written = write_photos(inbox, 0, 3)
    wait_until(lambda: filed(dest, written), DEADLINE, "photos on the mounted inbox filed")
    assert daemon.stop()[0] == 0


def test_overlapping_inboxes_are_not_reported_as_unwatched(tmp_path, daemons):
    """An inbox inside another needs no watch of its own: the kernel gives one folder one watch."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    (inbox / "phone" / "2026").mkdir(parents=True)
    daemon = daemons([inbox, inbox / "phone"], dest).start()
    written = write_photos(inbox / "phone" / "2026", 0, 2)
    wait_until(lambda: filed(dest, written), DEADLINE, "photos in the inner inbox filed")
    assert daemon.stop()[0] == 0
    assert not daemon.find("not every folder is watched")
    assert len(done_rows(daemon.journal)) == 2


# --- finding 5: one daemon per journal -----------------------------------------------------------

def test_one_daemon_per_journal_and_sort_refuses_a_watched_folder(tmp_path, daemons):
    inbox, dest, other = tmp_path / "inbox", tmp_path / "sorted", tmp_path / "card"
    inbox.mkdir()
    other.mkdir()
    first = daemons([inbox], dest).start()
    assert first.proc is not None
    second = run_cli(tmp_path, "watch")
    assert second.returncode == 2, second.stderr
    said = message_lines(second.stderr)
    assert len(said) == 1 and f"PID {first.proc.pid}" in said[0] and str(first.journal) in said[0], said

    first.proc.kill()  # kill -9: the kernel drops the lock with the process
    first.proc.wait()
    again = daemons([inbox], dest).start()
    assert again.proc is not None

    (inbox / "watched.jpg").write_bytes(photo(1, green=True))
    refused = run_cli(tmp_path, "sort", str(inbox), "--dest", str(tmp_path / "elsewhere"))
    assert refused.returncode == 2, refused.stderr
    said = message_lines(refused.stderr)
    assert len(said) == 1 and f"PID {again.proc.pid}" in said[0] and str(inbox) in said[0], said

    card = write_photos(other, 10, 2)  # a folder the daemon does not watch: sort goes ahead
    done = run_cli(tmp_path, "sort", str(other), "--dest", str(tmp_path / "trip"))
    assert done.returncode == 0, done.stderr
    assert filed(tmp_path / "trip", card)
    wait_until(lambda: (dest / "aurora" / "watched.jpg").exists(), DEADLINE, "the daemon files its own photo")
    assert again.stop()[0] == 0
    assert not (tmp_path / "elsewhere").exists()


# --- finding 7: a journal that fails for a while -------------------------------------------------

def test_a_full_journal_disk_delays_filing_until_space_returns(tmp_path, daemons, tmpfs):
    """The journal's file system fills up (and the inbox holds a symlink, whose left-in-place row
    cannot be written either): the daemon keeps running, retries, and files everything once
    space returns, without a restart."""
    state = tmpfs(tmp_path / "xdg-state", "1m")
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    card = tmp_path / "card"  # a folder moved in: the dispatcher scans it and meets the symlink
    card.mkdir()
    (card / "link.jpg").symlink_to(tmp_path / "nowhere.jpg")
    daemon = daemons([inbox], dest).start()
    filler = fill(state)
    written = {**write_photos(inbox, 0, 20), **write_photos(card, 20, 5)}
    os.rename(card, inbox / "card")
    daemon.wait_for("journal unavailable", DEADLINE)
    assert daemon.alive()
    filler.unlink()
    wait_until(lambda: filed(dest, written), 2 * DEADLINE, "photos filed once the journal has room")
    wait_until(lambda: daemon.find("skipped", path=str(inbox / "card" / "link.jpg")), DEADLINE,
               "the symlink reported")
    assert not daemon.find("dispatcher failed") and not daemon.find("batch failed")
    assert daemon.stop()[0] == 0
    rows = journal_entries(daemon.journal)
    assert not [r for r in rows if r["status"] == "intent"]
    assert sorted(r["source"].name for r in rows if r["status"] == "done") == sorted(written)
    assert [r["source"].name for r in rows if r["status"] == "failed"] == ["link.jpg"]


def test_a_journal_locked_for_35_seconds_delays_filing_only(tmp_path, daemons):
    """Another process holds the journal's write lock longer than SQLite waits: the batch is
    tried again once the lock is gone, without a restart."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    daemon = daemons([inbox], dest).start()
    holder = sqlite3.connect(daemon.journal, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, until ROLLBACK
    try:
        written = write_photos(inbox, 0, 5)
        daemon.wait_for("journal unavailable", LOCK_HELD + DEADLINE)
        assert daemon.alive()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: filed(dest, written), 2 * DEADLINE, "photos filed once the lock is gone")
    assert daemon.stop()[0] == 0
    rows = journal_entries(daemon.journal)
    assert not [r for r in rows if r["status"] in ("intent", "failed")]
    assert sorted(r["source"].name for r in rows if r["status"] == "done") == sorted(written)


def test_a_corrupt_journal_exits_2_naming_the_file_and_is_kept(tmp_path, daemons):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    daemon = daemons([inbox], dest)
    daemon.journal.parent.mkdir(parents=True)
    garbage = b"this is not a SQLite file\n" * 200
    daemon.journal.write_bytes(garbage)
    for args in (["watch"], ["sort", str(inbox)], ["undo"]):
        done = run_cli(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        said = message_lines(done.stderr)
        assert len(said) == 1 and str(daemon.journal) in said[0] and "move it aside" in said[0], said
    assert daemon.journal.read_bytes() == garbage


def test_an_unwritable_journal_folder_exits_2_naming_it(tmp_path, daemons, no_capabilities):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    daemon = daemons([inbox], dest)
    folder = daemon.journal.parent
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        done = run_cli(tmp_path, "watch", prefix=no_capabilities)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = message_lines(done.stderr)
    assert len(said) == 1 and str(folder) in said[0] and "writable" in said[0], said
    assert list(folder.iterdir()) == []


# --- the parts on their own -----------------------------------------------------------------------

def test_a_held_write_lock_is_a_passing_error_and_the_journal_works_after_it(tmp_path):
    from nordlys.daemon.journal import Journal, JournalUnavailable

    with Journal.open(tmp_path / "journal.sqlite") as journal:
        holder = sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(JournalUnavailable, match="journal.sqlite: cannot write the journal now"):
            journal.check_writable()
        assert journal.transient_errors == 1
        holder.execute("ROLLBACK")
        holder.close()
        journal.check_writable()
        assert journal.start_run("sort") > 0
        assert journal.transient_errors == 1


def test_the_journal_lock_names_its_holder_and_is_free_once_released(tmp_path):
    from nordlys.daemon.journal_lock import JournalBusy, JournalLock, holder

    journal = tmp_path / "state" / "journal.sqlite"
    assert holder(journal) is None
    lock = JournalLock.acquire(journal, [tmp_path / "inbox"])
    try:
        assert holder(journal) is not None and holder(journal).pid == os.getpid()  # type: ignore[union-attr]
        with pytest.raises(JournalBusy, match=f"PID {os.getpid()}"):
            JournalLock.acquire(journal, [tmp_path / "other"])  # flock: a second open file, even here
    finally:
        lock.release()
    assert holder(journal) is None
    JournalLock.acquire(journal, []).release()


def test_undo_finds_moves_by_a_path_spelled_through_a_symlink(tmp_path, daemons):
    """Moves are journaled under resolved paths; `undo LINK/sorted` still finds them."""
    real = tmp_path / "real"
    (real / "inbox").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    link = tmp_path / "link"
    daemons([real / "inbox"], None)  # writes the config (model path) the CLI finds; not started
    written = write_photos(real / "inbox", 0, 2)
    done = run_cli(tmp_path, "sort", str(link / "inbox"), "--dest", str(link / "sorted"))
    assert done.returncode == 0, done.stderr
    assert filed(real / "sorted", written)
    undone = run_cli(tmp_path, "undo", str(link / "sorted"))
    assert undone.returncode == 0, undone.stderr
    assert "restored 2 files" in undone.stdout, undone.stdout
    assert sorted(p.name for p in (real / "inbox").iterdir()) == sorted(written)
