"""Writers the daemon must not trip over: slow ones, renaming ones, many at once, files deleted or
replaced between their event and their processing, and an output root on another file system.

test_watch.py covers one slow writer and each temp-then-rename convention on its own; here they
all write at once, and every check is the invariant: each input once, same bytes, right folder,
journal agreeing with the disk.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.daemon.test_watch import GREEN, GREY
from tests.reliability.harness import (
    AURORA, OTHER, Burst, Gate, check_invariant, files_under, journal_entries, make_burst, noise_jpeg, photo,
    regular_files, sha, wait_for_none, wait_until,
)

PAUSE = 0.5  # seconds a slow writer stops between chunks: longer than the daemon's settle_seconds (0.3)
TEMP_NAMES = (".syncthing.{}.tmp", ".{}.Xa81Qz", "{}.part", "{}.crdownload")  # Syncthing, rsync, Nextcloud, browsers


def slow_write(target: Path, data: bytes, chunks: int, touched: list[str], dest: Path) -> None:
    """Write in chunks with pauses longer than settle_seconds; note if the file moves while open."""
    step = len(data) // chunks + 1
    with open(target, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(PAUSE)
            if not target.exists() or any(p.name == target.name for p in files_under(dest)):
                touched.append(target.name)


def renamed_write(target: Path, data: bytes, rng: random.Random) -> None:
    """A partial file under a temporary name, then the rest, then a rename into place."""
    temp = target.parent / rng.choice(TEMP_NAMES).format(target.name)
    temp.write_bytes(data[:100])
    time.sleep(rng.uniform(0, 0.4))
    with open(temp, "ab") as f:
        f.write(data[100:])
    os.rename(temp, target)


def test_slow_renaming_and_fast_writers_at_once(tmp_path, daemons):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    burst = make_burst(160, seed=11, first=0)
    slow = {f"SLOW_{i}.jpg": photo(5000 + i, green=i % 2 == 0, size=(640, 480)) for i in range(3)}
    for name, data in slow.items():
        burst.add(name, data, AURORA if int(name[5]) % 2 == 0 else OTHER)
    names = [n for n in burst.files if n not in slow]
    touched: list[str] = []
    daemon = daemons([inbox], dest).start()
    writers = [threading.Thread(target=slow_write, args=(inbox / n, d, 4, touched, dest)) for n, d in slow.items()]
    writers += [threading.Thread(target=_write_share, args=(inbox, burst, names[k::4], random.Random(k), k))
                for k in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    wait_for_none(lambda: regular_files(inbox), what="every file filed")
    assert daemon.stop()[0] == 0
    assert not touched, f"moved while its writer still had it open: {touched}"
    findings = check_invariant(burst, inbox, dest, daemon.journal)
    assert findings.ok, findings.problems()


def _write_share(inbox: Path, burst: Burst, names: list[str], rng: random.Random, style: int) -> None:
    """One of four writers: plain writes, renames, copies, or a mix with pauses."""
    for name in names:
        data, target = burst.files[name], inbox / name
        if style == 1:
            renamed_write(target, data, rng)
        elif style == 2:
            staged = inbox.parent / "staging" / name
            staged.parent.mkdir(exist_ok=True)
            staged.write_bytes(data)
            shutil.copyfile(staged, target)
        else:
            target.write_bytes(data)
            if style == 3:
                time.sleep(rng.uniform(0, 0.05))


def test_files_deleted_between_event_and_processing(tmp_path, daemons):
    """Rounds of 10 photos, deleted one by one 0-150 ms after they were written: before they are
    noticed, while they settle, or while they are decoded or moved. Whatever the moment, a file is
    filed (the daemon won) or gone (its owner won), never half, and the journal agrees with the
    disk: a file that is in sorted/ has its "done" row, one that is gone has none.

    Who wins a random round depends on the machine's speed, so the first round is made exact: the
    batch gate holds a lane with a batch of these photos claimed, they are all deleted, and then
    the lane goes on with a batch whose files are gone."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    gate = Gate(tmp_path / "gates", "batch")
    daemon = daemons([inbox], dest, env=Gate.env(gate)).start()
    rng = random.Random(21)
    deleted, written = set(), {}
    gate.close()
    for i in range(10):
        written[f"HELD_{i}.jpg"] = data = photo(6500 + i, green=i % 2 == 0)
        (inbox / f"HELD_{i}.jpg").write_bytes(data)
    daemon.wait_for("paused", stage="batch")
    for i in range(10):
        os.unlink(inbox / f"HELD_{i}.jpg")
        deleted.add(f"HELD_{i}.jpg")
    gate.open()
    for first in range(0, 300, 10):
        for i in range(first, first + 10):
            written[f"DEL_{i:03d}.jpg"] = data = photo(6000 + i, green=i % 2 == 0)
            (inbox / f"DEL_{i:03d}.jpg").write_bytes(data)
        time.sleep(rng.uniform(0.0, 0.15))
        for i in rng.sample(range(first, first + 10), 10):
            try:
                os.unlink(inbox / f"DEL_{i:03d}.jpg")
                deleted.add(f"DEL_{i:03d}.jpg")
            except FileNotFoundError:
                pass  # filed already
            time.sleep(rng.uniform(0, 0.005))
    (inbox / "after.jpg").write_bytes(photo(6999, green=True))
    wait_until(lambda: (dest / AURORA / "after.jpg").exists(), what="a photo filed after the deletions")
    wait_for_none(lambda: regular_files(inbox), what="the inbox to be drained")
    assert daemon.stop()[0] == 0
    assert not [p for p in files_under(dest) if p.name.startswith("HELD_")], "a deleted file was filed"
    filed = {p.name: p for p in files_under(dest)}
    for name, data in written.items():
        assert name in deleted or filed[name].read_bytes() == data, f"{name} lost or altered"
    _assert_journal_matches_disk(daemon, dest)
    rows = journal_entries(daemon.journal)
    assert not [r for r in rows if r["status"] == "failed" and r["source"].name in deleted and r["detail"]
                and r["dest"] == r["source"]], "a deleted file journaled as left in place"
    errors = [e for e in daemon.events if e.get("level") == "error"]
    assert all(Path(e["path"]).name in deleted and "no such file" in e["reason"] for e in errors), errors


def textured(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A JPEG of `colour` with noise on it: slow enough to decode that a batch takes a while."""
    rng = np.random.default_rng(seed)
    pixels = np.array(colour, dtype=np.int16) + rng.integers(-25, 25, (size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_files_replaced_between_event_and_processing(tmp_path, daemons):
    """Rounds of 8 green photos, each replaced (atomic rename over it) by a grey one within a few
    tens of ms, while its batch is being decoded, scored and moved. Each version that is filed
    must land in the folder its own bytes call for: the verdict of the old bytes must never
    travel with the new ones; and no replacement may be lost."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    pairs = [(textured(GREEN, i), textured(GREY, 1000 + i)) for i in range(48)]
    colour = {sha(green): AURORA for green, _ in pairs} | {sha(grey): OTHER for _, grey in pairs}
    daemon = daemons([inbox], dest).start()
    rng = random.Random(31)
    for first in range(0, len(pairs), 8):
        for i in range(first, first + 8):
            (inbox / f"REP_{i:02d}.jpg").write_bytes(pairs[i][0])
        for i in rng.sample(range(first, first + 8), 8):
            time.sleep(rng.uniform(0.0, 0.03))
            (inbox / f".REP_{i:02d}.new").write_bytes(pairs[i][1])
            os.replace(inbox / f".REP_{i:02d}.new", inbox / f"REP_{i:02d}.jpg")
        time.sleep(0.3)
    wait_for_none(lambda: regular_files(inbox), what="the inbox to be drained")
    assert daemon.stop()[0] == 0
    misfiled = [str(p.relative_to(dest)) for p in files_under(dest) if p.parent.name != colour[sha(p.read_bytes())]]
    assert not misfiled, f"filed by the verdict of bytes they no longer hold: {misfiled}"
    assert {sha(grey) for _, grey in pairs} <= {sha(p.read_bytes()) for p in files_under(dest)}, \
        "a replacement was lost"
    _assert_journal_matches_disk(daemon, dest)


def _assert_journal_matches_disk(daemon, dest: Path) -> None:
    rows = journal_entries(daemon.journal)
    assert not [r for r in rows if r["status"] == "intent"]
    done = {r["dest"]: r["sha256"] for r in rows if r["status"] == "done"}
    on_disk = {p: sha(p.read_bytes()) for p in files_under(dest)}
    assert done == on_disk, {"journal only": set(done) - set(on_disk), "disk only": set(on_disk) - set(done),
                             "differ": {p for p in set(done) & set(on_disk) if done[p] != on_disk[p]}}


def test_output_root_on_another_file_system_survives_a_kill(tmp_path, daemons, tmpfs):
    """Outputs on a tmpfs of their own: every move is a copy to a temporary name, verified, then
    named. SIGKILL in the middle, restart: no temporary left, every input once. The kill lands
    at the unlink gate after 40 files: the 41st is copied and named, its source not yet removed."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dest = tmpfs(tmp_path / "other-fs", "64m")
    assert os.stat(dest).st_dev != os.stat(inbox).st_dev
    burst = make_burst(300, seed=41, first=0)
    burst.files.update({f"BIG_{i}.jpg": _big(i) for i in range(6)})
    burst.folder.update({f"BIG_{i}.jpg": OTHER for i in range(6)})
    gate = Gate(tmp_path / "gates", "unlink").close(after=40)
    daemon = daemons([inbox], dest, env=Gate.env(gate)).start()
    for name, data in burst.files.items():
        (inbox / name).write_bytes(data)
    daemon.wait_for("paused", stage="unlink")
    daemon.stop(signal.SIGKILL)
    gate.open()
    assert regular_files(inbox), "the kill came too late to test anything"
    daemon.start()
    wait_for_none(lambda: regular_files(inbox), what="the rest filed after the restart")
    assert daemon.stop()[0] == 0
    findings = check_invariant(burst, inbox, dest, daemon.journal)
    assert findings.ok, findings.problems()


def _big(i: int) -> bytes:
    """A 2-megapixel noise JPEG (grey on average: other) of about 1.5 MB: copies long enough to be cut."""
    return noise_jpeg(1600, 1200, seed=8000 + i, quality=85)


# --- the same races, made exact -----------------------------------------------------------------

def _linked(tmp_path: Path, data: bytes) -> tuple[Path, Path, os.stat_result]:
    """A source with a second name at its destination: a same-file-system move just before the
    source's name is removed."""
    src, dest = tmp_path / "in" / "a.jpg", tmp_path / "out" / "a.jpg"
    src.parent.mkdir()
    dest.parent.mkdir()
    src.write_bytes(data)
    os.link(src, dest)
    return src, dest, os.lstat(src)


def test_a_version_renamed_over_the_source_during_its_move_is_kept(tmp_path):
    """A sync client renames version 2 over the name while version 1 is being moved: removing the
    old name must not delete version 2, which exists nowhere else."""
    from nordlys.daemon.mover import _unlink_source

    src, dest, moved = _linked(tmp_path, b"version 1")
    (src.parent / ".a.jpg.tmp").write_bytes(b"version 2")
    os.replace(src.parent / ".a.jpg.tmp", src)
    _unlink_source(src, moved)
    assert src.read_bytes() == b"version 2" and dest.read_bytes() == b"version 1"
    assert sorted(os.listdir(src.parent)) == ["a.jpg"]


def test_a_source_deleted_during_its_move_counts_as_moved(tmp_path):
    from nordlys.daemon.mover import _unlink_source

    src, dest, moved = _linked(tmp_path, b"version 1")
    os.unlink(src)
    _unlink_source(src, moved)  # no MoveError: the file is at its destination, so the move is done
    assert dest.read_bytes() == b"version 1" and os.listdir(src.parent) == []


def test_recovery_settles_names_set_aside_by_a_crash(tmp_path):
    """Killed between renaming a source aside and removing it: the moved file's old name goes, a
    newer file that had taken the name gets it back, and both moves count as done."""
    from nordlys.daemon.journal import Journal
    from nordlys.daemon.mover import ASIDE_PREFIX, aside_tag
    from nordlys.daemon.placement import Verdict
    from nordlys.daemon.undo import recover_interrupted

    dead = subprocess.Popen(["true"])
    dead.wait()
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    out.mkdir()
    with Journal.open(tmp_path / "journal.sqlite") as journal:
        run = journal.start_run("watch")
        for name, aside_holds in (("mine.jpg", b"moved"), ("theirs.jpg", b"newer version")):
            (out / name).write_bytes(b"moved")
            aside = inbox / f"{ASIDE_PREFIX}{dead.pid}-{aside_tag(name)}-0a0b"
            if aside_holds == b"moved":
                os.link(out / name, aside)
            else:
                aside.write_bytes(aside_holds)
            journal.intent(run, source=inbox / name, dest=out / name, size=5, sha256=sha(b"moved"),
                           verdict=Verdict(AURORA, 0.9, "", "m"), group_id=name)
        actions = [action for _, action in recover_interrupted(journal)]
    assert actions == ["done", "done"]
    assert sorted(os.listdir(inbox)) == ["theirs.jpg"] and (inbox / "theirs.jpg").read_bytes() == b"newer version"
    assert (out / "mine.jpg").read_bytes() == (out / "theirs.jpg").read_bytes() == b"moved"
