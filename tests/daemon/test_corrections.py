"""Corrections: real daemon, real files, real moves between its output folders.

The daemon's correction worker handles moves in the order they happen, so each test makes the
moves that must NOT count first and a real correction last: once the last one is logged, every
earlier move has been judged.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from structlog.testing import capture_logs

from nordlys.daemon.corrections import CorrectionWorker, Move, folder_key, judge
from nordlys.daemon.journal import Journal
from nordlys.daemon.placement import Verdict
from tests.daemon.test_watch import Daemon, photo, sha, wait_until


def corrections_in(journal: Path) -> list[tuple]:
    with sqlite3.connect(journal) as conn:
        return conn.execute("SELECT path, old_label, new_label, sha256, model_version FROM corrections ORDER BY id").fetchall()


@pytest.fixture
def daemon(tmp_path: Path, green_model: Path) -> Iterator[Daemon]:
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    d = Daemon(tmp_path, inboxes=[inbox], dest=dest, model=green_model)
    yield d
    d.kill()


def file_photos(d: Daemon, photos: dict[str, bytes]) -> None:
    inbox = Path(d.home) / "inbox"
    for name, data in photos.items():
        (inbox / name).write_bytes(data)
    for name, data in photos.items():
        folder = "aurora" if name.startswith("g") else "other"
        wait_until(lambda: (d.dest / folder / name).exists(), what=f"{name} filed into {folder}/")
    d.wait_for("sorted", path=str(inbox / list(photos)[-1]))


def test_moves_between_output_folders_are_corrections_and_others_are_not(daemon, tmp_path):
    d = daemon.start()
    dest = d.dest
    g = {f"g{i}.jpg": photo(i, green=True) for i in range(6)}
    file_photos(d, {**g, "o1.jpg": photo(50, green=False)})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # not corrections: a rename inside aurora/, a move out of the output folders, a copy into
    # other/ (the original stays), a deletion, a move into rejected/
    (dest / "aurora" / "g0.jpg").rename(dest / "aurora" / "renamed.jpg")
    (dest / "aurora" / "g1.jpg").rename(elsewhere / "g1.jpg")
    shutil.copyfile(dest / "aurora" / "g2.jpg", dest / "other" / "g2-copy.jpg")
    (dest / "aurora" / "g3.jpg").unlink()
    (dest / "rejected").mkdir(exist_ok=True)
    (dest / "aurora" / "g4.jpg").rename(dest / "rejected" / "g4.jpg")
    # corrections: aurora -> other (renamed on the way), and other -> aurora
    (dest / "aurora" / "g5.jpg").rename(dest / "other" / "field.jpg")
    (dest / "other" / "o1.jpg").rename(dest / "aurora" / "o1.jpg")
    d.wait_for("correction", path=str(dest / "other" / "field.jpg"))
    d.wait_for("correction", path=str(dest / "aurora" / "o1.jpg"))
    d.stop()
    rows = sorted(corrections_in(d.journal), key=lambda r: Path(r[0]).name)
    assert [(Path(r[0]).name, r[1], r[2]) for r in rows] == [("field.jpg", "aurora", "other"),
                                                           ("o1.jpg", "other", "aurora")]
    assert rows[0][3] == sha(g["g5.jpg"]) and rows[0][4] == "green-test-1"
    assert len(d.find("correction")) == 2


def test_moving_back_is_a_second_correction_and_a_rename_follows_the_photo(daemon):
    d = daemon.start()
    dest = d.dest
    file_photos(d, {"g0.jpg": photo(7, green=True)})
    (dest / "aurora" / "g0.jpg").rename(dest / "other" / "g0.jpg")
    d.wait_for("correction", path=str(dest / "other" / "g0.jpg"))
    (dest / "other" / "g0.jpg").rename(dest / "other" / "meadow.jpg")  # rename: path follows
    (dest / "other" / "meadow.jpg").rename(dest / "aurora" / "meadow.jpg")  # changed my mind
    d.wait_for("correction", path=str(dest / "aurora" / "meadow.jpg"))
    d.stop()
    rows = corrections_in(d.journal)
    assert [(r[1], r[2]) for r in rows] == [("aurora", "other"), ("other", "aurora")]
    assert {Path(r[0]).name for r in rows} == {"meadow.jpg"}  # both follow the photo's current name


def _filed(journal: Journal, path: Path, data: bytes, label: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    entry = journal.intent(None, source=path.parent.parent / "inbox" / path.name, dest=path, size=len(data),
                           sha256=sha(data), verdict=Verdict(label, 0.5, model_version="m1"), group_id="x")
    journal.done(entry, path)
    return entry


def test_the_daemons_own_filing_is_known_without_hashing_but_only_while_it_is_the_same_file(tmp_path):
    root = tmp_path / "sorted"
    folders = {k: root / k for k in ("aurora", "other", "review")}
    ours, replaced = root / "aurora" / "ours.jpg", root / "other" / "replaced.jpg"
    with Journal.open(tmp_path / "j.sqlite") as journal, capture_logs() as logs:
        _filed(journal, ours, b"aurora bytes", "aurora")
        _filed(journal, replaced, b"meadow bytes", "other")
        for path in (ours, replaced):  # filed photos keep their camera's times
            os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
        worker = CorrectionWorker(journal, folders, settle=0.0)
        worker.filed([ours, replaced, root / "rejected" / "x.jpg"])  # rejected/ is not watched: not kept
        assert set(worker.placed) == {ours, replaced}
        replaced.unlink()
        shutil.copyfile(ours, replaced)  # someone else's file now has that name: judged as usual
        worker.start()
        worker.offer(None, ours)
        worker.offer(None, replaced)
        worker.stop()
    reasons = {Path(e["path"]).name: e["reason"] for e in logs if e["event"] == "not a correction"}
    assert reasons == {"ours.jpg": "filed there by this daemon",
                       "replaced.jpg": f"a copy: {ours} is still there"}
    assert worker.placed == {}  # each remembered path is used once


def test_judge_review_to_aurora_edited_files_and_unknown_files(tmp_path):
    root = tmp_path / "sorted"
    folders = {k: root / k for k in ("aurora", "other", "review")}
    with Journal.open(tmp_path / "j.sqlite") as journal:
        data = photo(3, green=True)
        _filed(journal, folders["review"] / "r.jpg", data, "review")
        moved = folders["aurora"] / "r.jpg"
        moved.parent.mkdir(parents=True)
        (folders["review"] / "r.jpg").rename(moved)
        verdict = judge(Move(folders["review"] / "r.jpg", moved, 0.0), sha(data), journal, folders)
        assert verdict.is_correction and (verdict.old_label, verdict.new_label) == ("review", "aurora")
        # review -> review (rename) and aurora -> review are not corrections
        assert not judge(Move(folders["review"] / "a.jpg", folders["review"] / "b.jpg", 0.0), sha(data), journal,
                         folders).is_correction
        assert not judge(Move(moved, folders["review"] / "r.jpg", 0.0), sha(data), journal, folders).is_correction
        # edited (new bytes) and moved: matched through the entry filed at its old path
        other = photo(4, green=False)
        _filed(journal, folders["other"] / "e.jpg", other, "other")
        verdict = judge(Move(folders["other"] / "e.jpg", folders["aurora"] / "e.jpg", 0.0), "f" * 64, journal, folders)
        assert verdict.is_correction and verdict.old_label == "other"
        # never filed by nordlys: ignored
        verdict = judge(Move(folders["other"] / "n.jpg", folders["aurora"] / "n.jpg", 0.0), "e" * 64, journal, folders)
        assert not verdict.is_correction and "not filed" in verdict.reason
    assert folder_key(root / "other" / "sub" / "x.jpg", folders) == "other"
    assert folder_key(root / "x.jpg", folders) is None


def test_old_journals_are_upgraded_and_keep_their_entries(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    from nordlys.daemon import journal as jmod
    for statement in filter(str.strip, jmod._SCHEMA.split(";")):
        conn.execute(statement)
    conn.execute("INSERT INTO entries (group_id, source, dest, size, sha256, label, reason, model_version, time,"
                 " status, updated) VALUES ('g', '/a', '/b', 1, ?, 'aurora', '', 'm0', 't', 'done', 't')", ("a" * 64,))
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with Journal.open(path) as journal:
        assert [e.label for e in journal.entries()] == ["aurora"]
        assert journal.corrections() == [] and journal.models() == []
        journal.record_correction(entry_id=1, path=Path("/b"), sha256="a" * 64, old_label="aurora",
                                  new_label="other", score=0.9, model_version="m0")
        assert journal.corrections()[0].new_label == "other"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == jmod.SCHEMA_VERSION


def test_retrain_after_starts_a_low_priority_retrain(daemon):
    d = daemon
    d.write_config(inboxes=[Path(d.home) / "inbox"], model=Path(d.home) / "models" / "green.onnx",
                   watch={"retrain_after": 2})
    d.start()
    dest = d.dest
    file_photos(d, {"g0.jpg": photo(60, green=True), "g1.jpg": photo(61, green=True)})
    (dest / "aurora" / "g0.jpg").rename(dest / "other" / "g0.jpg")
    d.wait_for("correction", path=str(dest / "other" / "g0.jpg"))
    assert not d.find("retrain started")  # one of two
    (dest / "aurora" / "g1.jpg").rename(dest / "other" / "g1.jpg")
    started = d.wait_for("retrain started")
    assert started["argv"][-2:] == ["--config", str(d.config)]
    retrained = d.wait_for("retrained", 60)  # the child logs to the daemon's stderr; wait for it to finish
    assert retrained["corrections"] == 2 and retrained["held_out"] == 1
    if retrained["passed"]:  # installed: the child sends SIGHUP and the daemon loads the new model
        assert d.wait_for("reloaded", 30)["version"].startswith("green-test-1+r")
    d.stop()
