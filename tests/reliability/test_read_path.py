"""The read path (issue 12 findings 2, 3 and 6; issue 17 point 3), through the real CLI and daemon.

- One photo that makes its decoder raise (a real RAW whose LibRaw decode has one channel) must
  cost nothing to its batch-mates, in `sort` and in `watch`; a monochrome RAW decodes.
- No file is read whole because it is in an inbox: sparse multi-GB files (a video, a "JPEG", an
  archive) are filed or left with the daemon's peak RSS far below their size; videos follow the
  `videos` setting and a Live Photo's clip still travels with its photo.
- A file that stops early while its writer may come back (a writer reopening it per chunk, an
  interrupted `rsync --partial`, a writer hidden from the daemon's /proc) is judged again, not
  filed in rejected/ as a fragment.

Every wait polls with the generous deadline of tests/waiting.py; the tests set the pace themselves
(files in place before the daemon starts, a writer that waits for the daemon's verdict on each
chunk before it writes the next).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nordlys.daemon.loader import load_image
from nordlys.daemon.settle import CHANGED, CLOSED, Settler
from tests.daemon.test_watch import photo
from tests.reliability.harness import files_under, noise_jpeg, regular_files, sha
from tests.waiting import wait_until

GiB = 1 << 30
MiB = 1 << 20
RSS_LIMIT_KIB = 500 * 1024  # the daemon's peak resident memory must stay below this with 3 GB files waiting


# --- inputs --------------------------------------------------------------------------------------

def one_channel_dng(samples: Path) -> bytes:
    """The Blackmagic CinemaDNG sample with its CFAPattern (tag 33422) set to one colour: LibRaw then
    counts one colour, as for a monochrome sensor, and its demosaic returns (h, w, 1) pixels, which
    the loader once handed to Image.fromarray(..., "RGB") (a TypeError that sank the batch)."""
    source = samples / "raw" / "blackmagic_cinemadng.dng"
    if not source.is_file():
        pytest.skip(f"{source} is missing (see ../shared/samples/README.md)")
    data = bytearray(source.read_bytes())
    assert data[:4] == b"II*\0", "expected a little-endian TIFF"
    ifd, = struct.unpack_from("<I", data, 4)
    count, = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack_from("<HHI", data, entry)
        if tag == 33422:  # CFAPattern: 4 bytes inline, one CFA colour index each
            assert (kind, n) == (1, 4)
            data[entry + 8:entry + 12] = bytes(4)  # red, red, red, red
            return bytes(data)
    raise AssertionError("no CFAPattern tag in the sample DNG")


def sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of `size` bytes that starts with `head` and holds no data blocks beyond it."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


MP4_HEAD = struct.pack(">I", 20) + b"ftypqt  " + b"\0\0\0\0" + b"qt  " + struct.pack(">I", 8) + b"mdat"
JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")  # SOI + a JFIF APP0


def journal_reasons(journal: Path) -> dict[str, str]:
    """file name -> the reason of its newest "failed" (left in place) row."""
    with sqlite3.connect(journal) as conn:
        rows = conn.execute("SELECT source, detail FROM entries WHERE status = 'failed' ORDER BY id").fetchall()
    return {Path(source).name: detail for source, detail in rows}


def nordlys(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config")}
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def batch_of_seven_and_a_one_channel_raw(folder: Path, samples: Path) -> dict[str, bytes]:
    files = {f"IMG_{i:04d}.jpg": photo(i, green=i % 2 == 0, size=(320, 240)) for i in range(7)}
    files["MONO_0001.dng"] = one_channel_dng(samples)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def filed_once(files: dict[str, bytes], dest: Path, *, not_in: str = "rejected") -> None:
    """Each file is under dest exactly once, same bytes, and none in `not_in`."""
    found = {p.name: p for p in files_under(dest)}
    assert sorted(found) == sorted(files), f"filed: {sorted(found)}"
    for name, data in files.items():
        assert sha(found[name].read_bytes()) == sha(data), name
        assert found[name].parent.name != not_in, f"{name} went to {found[name].parent}"


# --- finding 2: one bad file never sinks its batch ---------------------------------------------------

def test_a_one_channel_raw_decodes_as_grey(tmp_path, shared_samples):
    path = tmp_path / "MONO.dng"
    path.write_bytes(one_channel_dng(shared_samples))
    pixels = load_image(path, size=64)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    assert pixels.std() > 1, "a real picture, not a flat fill"


def test_sort_files_the_batch_mates_of_a_one_channel_raw_and_prints_its_summary(tmp_path, shared_samples,
                                                                                green_model):
    source, dest = tmp_path / "card", tmp_path / "sorted"
    files = batch_of_seven_and_a_one_channel_raw(source, shared_samples)
    done = nordlys("sort", str(source), "--dest", str(dest), "--model", str(green_model), home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.startswith("moved 8 files (8 photos)"), done.stdout
    filed_once(files, dest)
    assert not regular_files(source)


def test_watch_files_the_batch_mates_of_a_one_channel_raw(tmp_path, shared_samples, daemons):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    files = batch_of_seven_and_a_one_channel_raw(inbox, shared_samples)  # in place before start: one batch of 8
    daemon = daemons([inbox], dest).start()
    wait_until(lambda: not regular_files(inbox), what="the whole batch filed")
    filed_once(files, dest)
    assert not daemon.find("batch failed"), daemon.find("batch failed")
    assert daemon.alive()


# --- finding 3: nothing is read whole because it is in the inbox ------------------------------------

def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had (kibibytes)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_multi_gigabyte_files_are_filed_without_being_read_whole(tmp_path, daemons, green_model):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    sparse(inbox / "CLIP_0001.MOV", MP4_HEAD, 3 * GiB)  # a phone video with no photo beside it
    sparse(inbox / "HUGE_0001.jpg", JPEG_HEAD, 3 * GiB)  # claims to be a JPEG: too large to read
    sparse(inbox / "backup.bin", os.urandom(4096), 400 * MiB)  # under max_file_bytes, but no image
    (inbox / "IMG_0001.jpg").write_bytes(photo(1, green=True))
    daemon = daemons([inbox], dest)
    daemon.write_config(inboxes=[inbox], model=green_model, watch={"sidecar_wait": 0.5}, videos="review")
    daemon.start()
    names = ("CLIP_0001.MOV", "HUGE_0001.jpg", "backup.bin", "IMG_0001.jpg")
    wait_until(lambda: all(verdicts_on(daemon, n) for n in names), what="a verdict on every file")
    peak = peak_rss_kib(daemon.proc.pid)
    print(f"\ndaemon peak RSS (VmHWM) with 6.4 GB of files filed: {peak / 1024:.0f} MiB")
    assert peak < RSS_LIMIT_KIB, f"peak RSS {peak / 1024:.0f} MiB"
    where = {p.name: p.parent.name for p in files_under(dest)}
    assert where == {"CLIP_0001.MOV": "review", "HUGE_0001.jpg": "rejected", "backup.bin": "rejected",
                     "IMG_0001.jpg": "aurora"}, where
    reasons = {e["path"].rpartition("/")[2]: e.get("reason") for e in daemon.find("rejected")}
    assert reasons["HUGE_0001.jpg"].startswith("file too large (3072 MiB > max_file_bytes"), reasons
    assert reasons["backup.bin"] == "not an image", reasons


def test_videos_stay_unless_told_and_a_live_photo_clip_travels_with_its_photo(tmp_path, green_model):
    source, dest = tmp_path / "phone", tmp_path / "sorted"
    source.mkdir()
    sparse(source / "VID_0002.mp4", MP4_HEAD, 2 * GiB)
    (source / "IMG_0003.jpg").write_bytes(photo(3, green=False))
    (source / "IMG_0004.jpg").write_bytes(photo(4, green=True))
    (source / "IMG_0004.MOV").write_bytes(MP4_HEAD + b"live photo clip")
    done = nordlys("sort", str(source), "--dest", str(dest), "--model", str(green_model), home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr  # a video left by the setting is no failure
    assert f"skipped: {source / 'VID_0002.mp4'}: a video: not classified (videos: leave)" in done.stdout, done.stdout
    assert [p.name for p in regular_files(source)] == ["VID_0002.mp4"]
    assert {p.name: p.parent.name for p in files_under(dest)} == {
        "IMG_0003.jpg": "other", "IMG_0004.jpg": "aurora", "IMG_0004.MOV": "aurora"}
    journal = tmp_path / "state" / "nordlys" / "journal.sqlite"  # sort journals what it left, as watch does
    assert journal_reasons(journal) == {"VID_0002.mp4": "a video: not classified (videos: leave)"}


# --- finding 6 and issue 17 point 3: a file whose writer may come back is judged again --------------

def test_the_settler_looks_again_at_its_time_or_at_once_when_the_file_changes(tmp_path):
    now = [100.0]  # the settler's clock, moved by the test: no sleeping, no race
    settler = Settler(0.0, capacity=10, clock=lambda: now[0])
    path = tmp_path / "DSC_0002.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 the first chunk")

    def judged_and_left(at: float) -> None:
        """The pipeline's part: the path was claimed, judged truncated, and is to be seen at `at`."""
        settler.offer(path, tmp_path, CLOSED)
        settler.check()
        assert settler.claim([path])
        settler.look_again([path], tmp_path, at)
        settler.done([path])

    judged_and_left(at=160.0)
    settler.check()
    assert not settler.ready() and settler.next_due() == 160.0, "not before its time"
    now[0] = 160.0
    settler.check()  # first look: notes size and mtime
    settler.check()  # still the same: complete
    assert [p for p, _ in settler.ready()] == [path]

    judged_and_left(at=1000.0)
    with open(path, "ab") as f:
        f.write(b" the second chunk")
    settler.offer(path, tmp_path, CHANGED)  # what the watcher does on the write
    settler.check()
    settler.check()
    assert [p for p, _ in settler.ready()] == [path], "a change is looked at at once, not at 1000"


def verdicts_on(daemon, name: str) -> int:
    """How many times the daemon has decided about this file: left it, rejected it or filed it."""
    return sum(1 for event in ("left in place", "rejected", "sorted") for e in daemon.find(event)
               if e.get("path", "").endswith("/" + name))


def test_a_writer_that_reopens_the_file_for_each_chunk_gets_one_photo(tmp_path, daemons):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    data = noise_jpeg(800, 600, seed=6)
    daemon = daemons([inbox], dest, watch={"truncated_wait": 600}).start()
    target, chunks = inbox / "DSC_0001.jpg", 6
    step = len(data) // chunks + 1
    for k, start in enumerate(range(0, len(data), step)):
        with open(target, "ab") as f:  # opened and closed for every chunk: each close is IN_CLOSE_WRITE
            f.write(data[start:start + step])
        if start + step < len(data):  # the pace: the daemon has judged this fragment before the next
            wait_until(lambda: verdicts_on(daemon, target.name) > k, what=f"a verdict on fragment {k + 1}")
    wait_until(lambda: not regular_files(inbox), what="the photo filed")
    filed = files_under(dest)
    assert [p.name for p in filed] == ["DSC_0001.jpg"] and filed[0].parent.name != "rejected", filed
    assert sha(filed[0].read_bytes()) == sha(data)
    assert not daemon.find("rejected")


def rsync(*args: str) -> list[str]:
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install rsync)")
    return ["rsync", "-a", "--partial", *args]


def test_an_interrupted_rsync_partial_is_not_filed_and_the_resumed_copy_is(tmp_path, daemons):
    source, inbox, dest = tmp_path / "phone", tmp_path / "inbox", tmp_path / "sorted"
    source.mkdir()
    inbox.mkdir()
    data = noise_jpeg(1600, 1200, seed=17)  # about 2 MB: at 100 kB/s the transfer takes ~20 s
    (source / "IMG_2024.jpg").write_bytes(data)
    daemon = daemons([inbox], dest, watch={"truncated_wait": 600}).start()
    transfer = subprocess.Popen(rsync("--bwlimit=100", str(source / "IMG_2024.jpg"), f"{inbox}/"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the pace: interrupt once some bytes are in rsync's hidden temporary file
        wait_until(lambda: any(p.name.startswith(".IMG_2024.jpg.") and p.stat().st_size > 0
                               for p in inbox.iterdir()), what="rsync's temporary file")
    finally:
        transfer.send_signal(signal.SIGTERM)  # as Ctrl-C or a dropped connection does: rsync keeps the partial
        transfer.wait(60)
    fragment = inbox / "IMG_2024.jpg"
    assert fragment.is_file() and fragment.stat().st_size < len(data), "rsync --partial keeps the fragment"
    wait_until(lambda: verdicts_on(daemon, fragment.name), what="the daemon's verdict on the fragment")
    assert not files_under(dest), f"the fragment was filed: {files_under(dest)}"
    assert fragment.is_file()
    resumed = subprocess.run(rsync(str(source / "IMG_2024.jpg"), f"{inbox}/"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: not regular_files(inbox), what="the resumed photo filed")
    filed = files_under(dest)
    assert [p.name for p in filed] == ["IMG_2024.jpg"] and filed[0].parent.name != "rejected", filed
    assert sha(filed[0].read_bytes()) == sha(data)
    assert not [p for p in inbox.rglob("*") if p.is_file()], "no fragment or temporary file left behind"


def own_pid_namespace() -> list[str]:
    """A prefix that runs the daemon in a PID namespace of its own with its own /proc: every other
    process (the test's writer) is invisible to its /proc check, as another user's processes are to
    the service under ProtectProc=invisible."""
    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a PID namespace here (needs unshare(1) and CAP_SYS_ADMIN)")
    return prefix


def test_a_writer_hidden_from_proc_gets_its_photo_filed_intact(tmp_path, daemons):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    data = noise_jpeg(800, 600, seed=23)
    daemon = daemons([inbox], dest, watch={"truncated_wait": 600}, prefix=own_pid_namespace()).start()
    target = inbox / "IMG_HIDDEN.jpg"
    with open(target, "wb") as f:  # held open for writing throughout: only /proc could tell
        f.write(data[:len(data) // 2])
        f.flush()
        # the pace: the writer pauses until the daemon, which cannot see it, has judged the half file
        wait_until(lambda: verdicts_on(daemon, target.name), what="the daemon's verdict on the half file")
        f.write(data[len(data) // 2:])
    wait_until(lambda: not regular_files(inbox), what="the photo filed")
    filed = files_under(dest)
    assert [p.name for p in filed] == ["IMG_HIDDEN.jpg"] and filed[0].parent.name != "rejected", filed
    assert sha(filed[0].read_bytes()) == sha(data)
