"""Crash recovery and undo, on real file trees: every state a crash can leave, and undo that
gives back a byte-identical inbox."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from structlog.testing import capture_logs

from nordlys.daemon.grouping import group_files
from nordlys.daemon.journal import DONE, FAILED, INTENT, RESTORED, ROLLED_BACK, UNDONE, Journal
from nordlys.daemon.mover import TEMP_PREFIX, move_group, sha256_file
from nordlys.daemon.placement import Verdict, destination_dir
from nordlys.daemon.undo import (
    RECOVERED_CONTENT_DIFFERS, RECOVERED_DONE, RECOVERED_LEFT_BOTH, RECOVERED_MISSING, RECOVERED_ROLLED_BACK,
    RECOVERED_SOURCE_REMOVED, recover_interrupted, undo,
)

from tests.daemon.test_watch import daemon_factory, moved_to, photo, wait_until  # noqa: F401 (fixture)
from tests.waiting import DEADLINE

AURORA = Verdict("aurora", 0.91, "", "test-model")

TREE = {
    "2026/trip/IMG_1.JPG": b"jpeg of a green sky",
    "2026/trip/IMG_1.CR2": b"raw of a green sky",
    "2026/trip/IMG_1.xmp": b"<xmp/>",
    "2026/trip/IMG_1.JPG.json": b'{"takeout": 1}',
    "2026/cat.png": b"a cat",
    "b\u00e6r \U0001F30C.jpg": b"unicode name",
    "new\nline.jpg": b"a newline in the name",
}


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p)[0] for p in sorted(root.rglob("*")) if p.is_file()}


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def sort_into(inbox: Path, out: Path, journal: Journal, *,
              folder_of: Callable[[Path], str] = lambda p: "aurora", command: str = "sort") -> int:
    """What the sorter does, minus the model: group, decide a folder, move_group, journal."""
    run = journal.start_run(command)
    for group in group_files(files_under(inbox)):
        verdict = Verdict(folder_of(group.primary), 0.9, "", "test-model")
        dest = destination_dir(group.primary, inbox=inbox, output_root=out, folder_name=verdict.folder,
                               keep_subfolders=True)
        move_group(group, dest, verdict, journal=journal, run_id=run)
    journal.finish_run(run, {})
    return run


@pytest.fixture
def journal(tmp_path):
    with Journal.open(tmp_path / "state" / "journal.sqlite") as j:
        yield j


@pytest.fixture
def inbox(tmp_path, make_tree):
    return make_tree(TREE, tmp_path / "inbox")


# --- crash recovery ---------------------------------------------------------------------------

def crashed_intent(journal: Journal, src: Path, dest: Path, data: bytes, undoes: int | None = None) -> int:
    run = journal.start_run("sort (crashed)")
    return journal.intent(run, source=src, dest=dest, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                          verdict=AURORA, group_id="g", undoes=undoes)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_crash_before_the_move_rolls_back(tmp_path, journal):
    src = write(tmp_path / "in" / "a.jpg", b"photo")
    eid = crashed_intent(journal, src, tmp_path / "out" / "a.jpg", b"photo")
    [(entry, action)] = recover_interrupted(journal)
    assert (entry.id, action) == (eid, RECOVERED_ROLLED_BACK)
    assert journal.entry(eid).status == ROLLED_BACK and src.read_bytes() == b"photo"


def test_crash_after_link_before_unlink_finishes_the_move(tmp_path, journal):
    src = write(tmp_path / "in" / "a.jpg", b"photo")
    dest = tmp_path / "out" / "a.jpg"
    dest.parent.mkdir()
    os.link(src, dest)
    eid = crashed_intent(journal, src, dest, b"photo")
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_SOURCE_REMOVED]
    assert not src.exists() and dest.read_bytes() == b"photo"
    assert journal.entry(eid).status == DONE


def test_crash_after_the_move_marks_it_done(tmp_path, journal):
    dest = write(tmp_path / "out" / "a.jpg", b"photo")
    eid = crashed_intent(journal, tmp_path / "in" / "a.jpg", dest, b"photo")
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_DONE]
    assert journal.entry(eid).status == DONE and dest.read_bytes() == b"photo"


def test_dest_only_with_other_content_is_done_but_flagged(tmp_path, journal):
    dest = write(tmp_path / "out" / "a.jpg", b"edited later")
    eid = crashed_intent(journal, tmp_path / "in" / "a.jpg", dest, b"photo")
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_CONTENT_DIFFERS]
    assert journal.entry(eid).detail == "content differs from the journaled sha256"


def test_finished_cross_device_copy_removes_source_and_temp_leftovers(tmp_path, journal):
    src = write(tmp_path / "in" / "a.jpg", b"photo")
    dest = write(tmp_path / "out" / "a.jpg", b"photo")  # a separate, identical copy
    stale = write(tmp_path / "out" / f"{TEMP_PREFIX}999999999-abc", b"pho")  # a dead process's temp
    live = write(tmp_path / "out" / f"{TEMP_PREFIX}{os.getppid()}-def", b"ph")  # a running one's
    eid = crashed_intent(journal, src, dest, b"photo")
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_SOURCE_REMOVED]
    assert not src.exists() and dest.read_bytes() == b"photo" and journal.entry(eid).status == DONE
    assert not stale.exists() and live.exists()


def test_partial_copy_is_cleaned_and_the_source_kept(tmp_path, journal):
    src = write(tmp_path / "in" / "a.jpg", b"photo")
    temp = write(tmp_path / "out" / f"{TEMP_PREFIX}999999999-0a1b2c", b"ph")
    crashed_intent(journal, src, tmp_path / "out" / "a.jpg", b"photo")
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_ROLLED_BACK]
    assert src.read_bytes() == b"photo" and not temp.exists()
    assert os.listdir(tmp_path / "out") == []


def test_both_present_but_different_are_both_kept(tmp_path, journal):
    src = write(tmp_path / "in" / "a.jpg", b"photo")
    dest = write(tmp_path / "out" / "a.jpg", b"someone else's")
    eid = crashed_intent(journal, src, dest, b"photo")
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_LEFT_BOTH]
    assert src.read_bytes() == b"photo" and dest.read_bytes() == b"someone else's"
    assert journal.entry(eid).status == ROLLED_BACK


def test_missing_everywhere_is_reported_loudly(tmp_path, journal):
    eid = crashed_intent(journal, tmp_path / "in" / "a.jpg", tmp_path / "out" / "a.jpg", b"photo")
    with capture_logs() as logs:
        assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_MISSING]
    assert journal.entry(eid).status == FAILED
    assert any(e["event"] == "missing after crash" and e["log_level"] == "error" for e in logs)


def test_crash_in_the_middle_of_an_undo(tmp_path, journal):
    sorted_file = write(tmp_path / "out" / "a.jpg", b"photo")
    home = tmp_path / "in" / "a.jpg"
    orig = crashed_intent(journal, home, sorted_file, b"photo")
    journal.done(orig, sorted_file)
    home.parent.mkdir()
    os.link(sorted_file, home)  # undo linked the file home, then the power went
    back = crashed_intent(journal, sorted_file, home, b"photo", undoes=orig)
    assert [a for _, a in recover_interrupted(journal)] == [RECOVERED_SOURCE_REMOVED]
    assert home.read_bytes() == b"photo" and not sorted_file.exists()
    assert journal.entry(back).status == RESTORED and journal.entry(orig).status == UNDONE


def test_nothing_interrupted_means_nothing_done(inbox, tmp_path, journal):
    sort_into(inbox, tmp_path / "out", journal)
    assert recover_interrupted(journal) == []


# --- undo -------------------------------------------------------------------------------------

def test_undo_restores_a_byte_identical_tree_and_removes_folders_it_made(inbox, tmp_path, journal):
    before = tree_hashes(inbox)
    out = tmp_path / "out"
    (out / "aurora").mkdir(parents=True)  # the user's folder: exists before the sort, must stay
    run = sort_into(inbox, out, journal)
    assert files_under(inbox) == [] and len(files_under(out)) == len(TREE)
    report = undo(journal)
    assert report.skipped == [] and report.renamed == []
    assert sorted(src for _, src in report.restored) == sorted(inbox / rel for rel in TREE)
    assert tree_hashes(inbox) == before
    assert [p for p in out.rglob("*")] == [out / "aurora"]  # only the user's own folder is left
    assert {e.status for e in journal.entries(run_id=run, status=None)} == {UNDONE}
    undo_run = journal.last_run_id("undo")
    assert {e.status for e in journal.entries(run_id=undo_run, status=None)} == {RESTORED}
    assert undo(journal).restored == []  # nothing left to undo


def test_undo_without_arguments_takes_the_latest_sort_that_moved_something_once(tmp_path, journal, make_tree):
    """Issue 12, finding 9: a second bare undo used to reach back to an older, unrelated sort."""
    first = make_tree({"one.jpg": b"1"}, tmp_path / "in1")
    second = make_tree({"two.jpg": b"2"}, tmp_path / "in2")
    first_run = sort_into(first, tmp_path / "out", journal)
    sort_into(second, tmp_path / "out", journal)
    journal.finish_run(journal.start_run("sort (found nothing)"), {})
    assert [src for _, src in undo(journal).restored] == [second / "two.jpg"]
    again = undo(journal)
    assert again.restored == [] and "nothing left to undo" in again.nothing
    assert (tmp_path / "out" / "aurora" / "one.jpg").read_bytes() == b"1"  # the older sort stays sorted
    assert [src for _, src in undo(journal, run_id=first_run).restored] == [first / "one.jpg"]
    assert (first / "one.jpg").read_bytes() == b"1" and (second / "two.jpg").read_bytes() == b"2"


def test_undo_finds_a_sorted_file_renamed_or_moved_within_the_output_root(inbox, tmp_path, journal):
    """Issue 12, finding 9: a sorted file the user renamed was reported "missing", although the
    journal knows its hash."""
    out = tmp_path / "out"
    sort_into(inbox, out, journal)
    renamed = (out / "aurora" / "2026" / "cat.png").rename(out / "aurora" / "2026" / "the best cat.png")
    (out / "other").mkdir(exist_ok=True)
    moved = (out / "aurora" / "new\nline.jpg").rename(out / "other" / "newline.jpg")
    (out / "other" / "same size, other bytes.jpg").write_bytes(b"x" * len(TREE["new\nline.jpg"]))
    report = undo(journal)
    assert report.skipped == []
    assert dict(report.found) == {out / "aurora" / "2026" / "cat.png": renamed,
                                  out / "aurora" / "new\nline.jpg": moved}
    assert tree_hashes(inbox) == {rel: hashlib.sha256(data).hexdigest() for rel, data in TREE.items()}
    assert [p.name for p in files_under(out)] == ["same size, other bytes.jpg"]


def test_bare_undo_never_sweeps_back_a_daemon_run(tmp_path, journal, make_tree):
    sorted_once = make_tree({"one.jpg": b"1"}, tmp_path / "in1")
    watched = make_tree({"two.jpg": b"2"}, tmp_path / "in2")
    sort_into(sorted_once, tmp_path / "out", journal)
    sort_into(watched, tmp_path / "out", journal, command=f"watch {watched}")
    assert [src for _, src in undo(journal).restored] == [sorted_once / "one.jpg"]
    assert undo(journal).restored == []  # the daemon's moves need --since or a path
    assert [src for _, src in undo(journal, paths=[watched]).restored] == [watched / "two.jpg"]


def test_undo_since_a_moment(tmp_path, journal, make_tree):
    early = make_tree({"early.jpg": b"e"}, tmp_path / "in")
    sort_into(early, tmp_path / "out", journal)
    moment = datetime.now(timezone.utc)
    make_tree({"late.jpg": b"l", "later.jpg": b"ll"}, tmp_path / "in")
    sort_into(early, tmp_path / "out", journal)
    report = undo(journal, since=moment)
    assert sorted(src.name for _, src in report.restored) == ["late.jpg", "later.jpg"]
    assert sorted(p.name for p in files_under(tmp_path / "in")) == ["late.jpg", "later.jpg"]
    assert (tmp_path / "out" / "aurora" / "early.jpg").read_bytes() == b"e"


def test_undo_only_given_paths(inbox, tmp_path, journal):
    out = tmp_path / "out"
    sort_into(inbox, out, journal, folder_of=lambda p: "other" if p.suffix == ".png" else "aurora")
    report = undo(journal, paths=[out / "other"])
    assert [src for _, src in report.restored] == [inbox / "2026" / "cat.png"]
    report = undo(journal, paths=[inbox / "2026" / "trip"])  # a source folder works too
    assert sorted(src.name for _, src in report.restored) == sorted(
        Path(rel).name for rel in TREE if rel.startswith("2026/trip/"))
    assert sorted(p.name for p in files_under(out)) == sorted(["b\u00e6r \U0001F30C.jpg", "new\nline.jpg"])


def test_undo_next_to_a_taken_name_keeps_the_group_together(inbox, tmp_path, journal):
    sort_into(inbox, tmp_path / "out", journal)
    newcomer = write(inbox / "2026" / "trip" / "IMG_1.JPG", b"a new photo with the old name")
    report = undo(journal)
    trip = inbox / "2026" / "trip"
    assert newcomer.read_bytes() == b"a new photo with the old name"
    assert sorted(p.name for p in trip.iterdir()) == [
        "IMG_1.JPG", "IMG_1_1.CR2", "IMG_1_1.JPG", "IMG_1_1.JPG.json", "IMG_1_1.xmp"]
    assert (trip / "IMG_1_1.JPG").read_bytes() == TREE["2026/trip/IMG_1.JPG"]
    assert (trip / "IMG_1_1.CR2").read_bytes() == TREE["2026/trip/IMG_1.CR2"]
    assert len(report.renamed) == 4 and all("is taken; restored next to it" in why for _, why in report.renamed)
    assert report.skipped == []


def test_undo_leaves_changed_and_reports_missing_files(inbox, tmp_path, journal):
    out = tmp_path / "out"
    run = sort_into(inbox, out, journal)
    edited = out / "aurora" / "2026" / "cat.png"
    edited.write_bytes(b"a cat, retouched after sorting")
    gone = out / "aurora" / "new\nline.jpg"
    gone.unlink()
    report = undo(journal)
    assert dict(report.skipped) == {
        edited: "changed since it was sorted (sha256 differs); left in place",
        gone: "missing: no longer at its sorted place, and no file in its output folders holds its bytes",
    }
    assert edited.read_bytes() == b"a cat, retouched after sorting"
    assert len(report.restored) == len(TREE) - 2
    still = {e.dest: e.status for e in journal.entries(run_id=run, status=None)}
    assert still[edited] == DONE and still[gone] == DONE  # a later undo may try again


def test_undo_dry_run_changes_nothing(inbox, tmp_path, journal):
    run = sort_into(inbox, tmp_path / "out", journal)
    sorted_tree = tree_hashes(tmp_path / "out")
    write(inbox / "2026" / "cat.png", b"newcomer")
    report = undo(journal, dry_run=True)
    assert len(report.restored) == len(TREE)
    assert (tmp_path / "out" / "aurora" / "2026" / "cat.png", inbox / "2026" / "cat_1.png") in report.restored
    assert tree_hashes(tmp_path / "out") == sorted_tree
    assert journal.last_run_id() == run  # no undo run was recorded
    assert {e.status for e in journal.entries(status=None)} == {DONE}


def test_intent_rows_stay_until_recovered(tmp_path, journal):
    src = write(tmp_path / "in" / "a.jpg", b"photo")
    eid = crashed_intent(journal, src, tmp_path / "out" / "a.jpg", b"photo")
    assert undo(journal).restored == []  # an unfinished move is recovery's business, not undo's
    assert journal.entry(eid).status == INTENT


# --- undo beside a running daemon -------------------------------------------------------------

def test_files_undone_into_a_watched_inbox_stay_where_undo_put_them(tmp_path, daemon_factory):
    """Issue 12, finding 9: `undo` while the daemon runs restored files that the daemon filed
    again a second later. Undo writes each restored file to the journal's kept table before it
    moves it, and the daemon leaves a kept file alone while it is unchanged."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    d = daemon_factory([inbox], dest).start()
    photos = {f"U{i}.jpg": photo(300 + i, green=i == 0) for i in range(3)}
    for name, data in photos.items():
        (inbox / name).write_bytes(data)
    wait_until(lambda: all(moved_to(dest, n) for n in photos), what="three photos filed")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg-state"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    done = subprocess.run([sys.executable, "-m", "nordlys.daemon", "undo", "--since", "1h"], capture_output=True,
                          text=True, env=env, timeout=DEADLINE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restored 3 files" in done.stdout
    (inbox / "after.jpg").write_bytes(photo(310, green=False))  # written after them: filed after they would be
    wait_until(lambda: moved_to(dest, "after.jpg"), what="a photo written after the undo filed")
    d.wait_for("left in place")
    assert {p.name: p.read_bytes() for p in inbox.iterdir()} == photos
    assert d.stop()[0] == 0
