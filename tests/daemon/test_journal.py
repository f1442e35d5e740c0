"""The journal: a real SQLite file in tmp_path, reopened to prove what reached the disk."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nordlys.daemon.journal import (
    DONE, FAILED, INTENT, RESTORED, ROLLED_BACK, SCHEMA_VERSION, UNDONE, IntentItem, Journal, JournalError,
)
from nordlys.daemon.placement import Verdict

SHA = "ab" * 32
AURORA = Verdict("aurora", 0.93, "", "mnv2-test")
OTHER = Verdict("other", 0.12, "", "mnv2-test")


def add(j: Journal, run: int, src: str, dest: str, verdict: Verdict = AURORA, group: str = "g") -> int:
    return j.intent(run, source=Path(src), dest=Path(dest), size=10, sha256=SHA, verdict=verdict, group_id=group)


def test_open_creates_folders_and_uses_wal_with_full_sync(tmp_path):
    path = tmp_path / "state" / "deep" / "journal.sqlite"
    with Journal.open(path) as j:
        assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert j._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_round_trip_survives_reopen(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal.open(path) as j:
        run = j.start_run("sort /inbox")
        eid = add(j, run, "/inbox/a.jpg", "/out/aurora/a.jpg")
        j.done(eid, Path("/out/aurora/a_1.jpg"), created_dirs=[Path("/out/aurora")])
        j.finish_run(run, {"moved": 1})
    with Journal.open(path) as j:
        (e,) = j.entries(run_id=run)
        assert (e.id, e.run_id, e.group_id, e.source, e.dest) == (
            eid, run, "g", Path("/inbox/a.jpg"), Path("/out/aurora/a_1.jpg"))
        assert (e.size, e.sha256, e.score, e.label, e.model_version, e.status) == (
            10, SHA, 0.93, "aurora", "mnv2-test", DONE)
        stamp = datetime.fromisoformat(e.time)
        assert stamp.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=5)
        assert j.created_dirs([run]) == [Path("/out/aurora")]
        summary = j._conn.execute("SELECT summary, finished FROM runs WHERE id = ?", (run,)).fetchone()
        assert summary[0] == '{"moved": 1}' and summary[1]


def test_any_file_name_round_trips(tmp_path):
    odd = [
        Path("/in/new\nline.jpg"),
        Path(os.fsdecode(b"/in/latin1-\xe6\xff.jpg")),  # not UTF-8: stored as raw bytes
        Path("/in/nordlys \u00e6\u00f8\u00e5 \U0001F30C.jpg"),
        Path("/in/  spaces  .JPG.json"),
    ]
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        for p in odd:
            j.done(j.intent(run, source=p, dest=p.with_name("x" + p.name), size=1, sha256=SHA,
                            verdict=AURORA, group_id="g"), p.with_name("x" + p.name))
    with Journal.open(tmp_path / "j.sqlite") as j:
        got = j.entries(run_id=run)
        assert [e.source for e in got] == odd
        assert os.fsencode(got[1].source) == b"/in/latin1-\xe6\xff.jpg"
        assert j.entries(paths=[odd[1]])[0].source == odd[1]


def test_relative_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Journal.open(Path("j.sqlite")) as j:
        run = j.start_run("sort")
        add(j, run, "in/a.jpg", "out/a.jpg")
        (e,) = j.entries(status=INTENT)
    assert e.source == tmp_path / "in" / "a.jpg"
    assert (tmp_path / "j.sqlite").exists()


def test_batch_intents_are_one_transaction(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        good = IntentItem(Path("/in/a.jpg"), Path("/o/a.jpg"), 5, SHA, AURORA, "g1")
        bad = IntentItem(Path("/in/a.xmp"), Path("/o/a.xmp"), 5, "not-a-hash", AURORA, "g1")
        with pytest.raises(ValueError, match="sha256 for /in/a.xmp is 'not-a-hash'; expected 64"):
            j.intents(run, [good, bad])
        assert j.entries(status=None) == []
        ids = j.intents(run, [good, IntentItem(Path("/in/a.xmp"), Path("/o/a.xmp"), 5, SHA, AURORA, "g1")])
        assert [e.id for e in j.interrupted()] == ids


def test_statuses_and_interrupted(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        a, b, c, d = (add(j, run, f"/in/{n}.jpg", f"/o/{n}.jpg") for n in "abcd")
        j.done(a, Path("/o/a.jpg"))
        j.failed(b, "permission denied")
        j.rolled_back(c, "group member failed")
        assert [e.id for e in j.interrupted()] == [d]
        assert j.entry(b).status == FAILED and j.entry(b).detail == "permission denied"
        assert j.entry(c).status == ROLLED_BACK
        j.mark_undone(a)
        assert j.entry(a).status == UNDONE
        assert [e.id for e in j.entries(status=None)] == [a, b, c, d]
        with pytest.raises(KeyError, match="no journal entry with id 999"):
            j.entry(999)


def test_undo_entry_done_marks_the_original_undone(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        orig = add(j, run, "/in/a.jpg", "/o/a.jpg")
        j.done(orig, Path("/o/a.jpg"))
        back = j.start_run("undo")
        rev = j.intent(back, source=Path("/o/a.jpg"), dest=Path("/in/a.jpg"), size=10, sha256=SHA,
                       verdict=AURORA, group_id="g", undoes=orig)
        j.done(rev, Path("/in/a.jpg"))
        assert j.entry(rev).status == RESTORED and j.entry(rev).undoes == orig
        assert j.entry(orig).status == UNDONE and "/in/a.jpg" in j.entry(orig).detail
        assert j.last_run_id(with_status=DONE) is None  # undo entries never count as "done"


def test_last_run_id_filters(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        assert j.last_run_id() is None
        s1 = j.start_run("sort /a")
        j.done(add(j, s1, "/a/x.jpg", "/o/x.jpg"), Path("/o/x.jpg"))
        w = j.start_run("watch")
        s2 = j.start_run("sort /b")  # moved nothing
        assert j.last_run_id() == s2
        assert j.last_run_id("watch") == w
        assert j.last_run_id("sort") == s2
        assert j.last_run_id("sort", with_status=DONE) == s1
        assert j.last_run_id("undo") is None


def test_entries_filters_by_since_and_paths(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        old = add(j, run, "/in/old.jpg", "/out/aurora/2025/old.jpg")
        j._conn.execute("UPDATE entries SET time = ? WHERE id = ?",
                        ((datetime.now(timezone.utc) - timedelta(days=3)).isoformat(timespec="microseconds"), old))
        new = add(j, run, "/in/sub/new.jpg", "/out/other/new.jpg", verdict=OTHER)
        for e in (old, new):
            j.done(e, j.entry(e).dest)
        yesterday = datetime.now(timezone.utc) - timedelta(days=1)
        assert [e.id for e in j.entries(since=yesterday)] == [new]
        naive_local = datetime.now() - timedelta(days=1)  # naive times are local time
        assert [e.id for e in j.entries(since=naive_local)] == [new]
        assert [e.id for e in j.entries(paths=[Path("/out/aurora")])] == [old]
        assert [e.id for e in j.entries(paths=[Path("/in/sub")])] == [new]  # matches the source too
        assert [e.id for e in j.entries(paths=[Path("/in/sub/new.jpg")])] == [new]
        assert j.entries(paths=[Path("/in/su")]) == []  # a prefix of a name is not "under"
        assert [e.id for e in j.entries(since=yesterday, paths=[Path("/out/aurora")])] == []


def test_counts_and_recent(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("sort")
        ids = [add(j, run, f"/in/{i}.jpg", f"/o/{i}.jpg", verdict=AURORA if i % 3 else OTHER) for i in range(7)]
        for i in ids[:-1]:
            j.done(i, j.entry(i).dest)
        j.mark_undone(ids[0])
        assert j.counts() == {"aurora": 4, "other": 1}
        assert [e.id for e in j.recent(3)] == ids[::-1][:3]
        assert j.recent(3)[0].status == INTENT


def test_a_second_thread_can_write(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("watch")
        errors: list[BaseException] = []

        def writer():
            try:
                for i in range(20):
                    add(j, run, f"/in/t{i}.jpg", f"/o/t{i}.jpg")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(j.interrupted()) == 40


def test_refuses_newer_schema_and_non_journal_files(tmp_path):
    newer = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1} .* up to {SCHEMA_VERSION}"):
        Journal.open(newer)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="not a usable nordlys journal"):
        Journal.open(junk)
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal.open(junk / "inside-a-file" / "j.sqlite")


def test_intents_of_a_live_process_are_not_interrupted(tmp_path):
    with Journal.open(tmp_path / "j.sqlite") as j:
        run = j.start_run("watch")
        add(j, run, "/in/a.jpg", "/o/a.jpg")
        parent = os.getppid()  # alive, and not this process
        j._conn.execute("UPDATE runs SET pid = ? WHERE id = ?", (parent, run))
        assert j.interrupted() == []
        assert len(j.interrupted(include_live=True)) == 1
        j.finish_run(run, {})
        assert len(j.interrupted()) == 1  # a finished run is not moving anything any more
