"""The `layout` template (issue 14, point 10): dated folders under aurora/, other/, review/.

Through the real `nordlys sort` and `undo` commands and the real daemon: a photo goes into the
folders of its EXIF DateTimeOriginal, or of its mtime when it has none; its sidecar goes with
it whatever the sidecar's own mtime; a late sidecar follows the folder its photo landed in;
undo puts everything back and removes the dated folders it made; a move out of a dated folder
into other/ is a correction; a bad template is refused at load with the key, value and fields.
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml
from PIL import Image

from nordlys.daemon.loader import date_taken
from nordlys.daemon.placement import check_layout, destination_dir, expand_layout
from tests.daemon.test_sort_cli import tree
from tests.daemon.test_watch import Daemon, files_under, moved_to, photo, wait_until

TAKEN = "2025:07:04 23:10:00"  # the camera's local time, in EXIF's own format
OLD = datetime(2024, 2, 29, 12, 0).timestamp()  # an mtime on another day than TAKEN and than today


def exif_photo(i: int, *, green: bool, taken: str = TAKEN) -> bytes:
    """test_watch.photo(i) with an EXIF DateTimeOriginal."""
    image = Image.open(io.BytesIO(photo(i, green=green)))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = taken
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def nordlys(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "no-config")}
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def write_config(path: Path, **settings: object) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def test_expanding_a_template_and_where_it_goes():
    taken = datetime(2026, 11, 30, 21, 5)
    assert expand_layout("{year}/{date}", taken) == ["2026", "2026-11-30"]
    assert expand_layout("{year}/{month}/{day}", taken) == ["2026", "11", "30"]
    assert expand_layout("photos-{year}", taken) == ["photos-2026"]
    root, inbox = Path("/out"), Path("/in")
    assert destination_dir(inbox / "trip" / "a.jpg", inbox=inbox, output_root=root, folder_name="aurora",
                           keep_subfolders=True, layout="{year}/{date}", taken=taken) == \
        root / "aurora" / "2026" / "2026-11-30" / "trip"
    for bad in ("{yr}", "{year:04}", "{folder}/{year}", "../{year}", "{year}//{date}", "/{year}", "{year"):
        assert check_layout(bad) is not None, bad
    assert check_layout("") is None and check_layout("{year}/{date}") is None


def test_a_bad_layout_is_refused_naming_the_key_the_value_and_the_fields(tmp_path, green_model):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(photo(1, green=True))
    config = write_config(tmp_path / "config.yaml", layout="{year}/{dat}", model={"path": str(green_model)})
    result = nordlys(tmp_path, "sort", str(inbox), "--dest", str(tmp_path / "out"), "--config", str(config))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "layout" in message and "'{year}/{dat}'" in message and "{year}, {month}, {day}, {date}" in message
    assert "Traceback" not in result.stderr
    assert (inbox / "a.jpg").exists() and not (tmp_path / "out").exists()


def test_sort_files_by_exif_date_else_mtime_and_undo_removes_the_folders(tmp_path, green_model):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "trip").mkdir(parents=True)
    (inbox / "dated.jpg").write_bytes(exif_photo(1, green=True))
    (inbox / "dated.xmp").write_text("<x:xmpmeta/>")
    os.utime(inbox / "dated.jpg", (OLD, OLD))  # the EXIF date wins over the photo's mtime...
    os.utime(inbox / "dated.xmp", (OLD, OLD))  # ...and the sidecar goes where its photo goes
    (inbox / "undated.jpg").write_bytes(photo(2, green=False))
    os.utime(inbox / "undated.jpg", (OLD, OLD))
    (inbox / "trip" / "far.jpg").write_bytes(exif_photo(3, green=True, taken="2023:01:02 03:04:05"))
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    before = tree(inbox)
    config = write_config(tmp_path / "config.yaml", layout="{year}/{date}", keep_subfolders=True,
                          model={"path": str(green_model)})
    result = nordlys(tmp_path, "sort", str(inbox), "--dest", str(out), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert set(tree(out)) == {"aurora/2025/2025-07-04/dated.jpg", "aurora/2025/2025-07-04/dated.xmp",
                              "other/2024/2024-02-29/undated.jpg", "aurora/2023/2023-01-02/trip/far.jpg",
                              "rejected/broken.jpg"}  # rejected/ is a to-do list, not an archive: flat
    assert sorted(tree(out).values()) == sorted(before.values())
    with sqlite3.connect(tmp_path / "state" / "nordlys" / "journal.sqlite") as conn:
        dests = {Path(d).relative_to(out).as_posix() for (d,) in conn.execute("SELECT dest FROM entries WHERE status = 'done'")}
    assert "aurora/2025/2025-07-04/dated.jpg" in dests and "other/2024/2024-02-29/undated.jpg" in dests

    result = nordlys(tmp_path, "undo", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert tree(inbox) == before
    assert not files_under(out)
    leftovers = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []
    assert not [p for p in leftovers if p.count("/") >= 1], leftovers  # the dated folders are gone


def test_daemon_late_sidecar_follows_its_photo_and_a_move_out_of_a_dated_folder_is_a_correction(tmp_path, green_model):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    d = Daemon(tmp_path, inboxes=[inbox], dest=dest, model=green_model, watch={"sidecar_wait": 3600})
    d.write_config(inboxes=[inbox], model=green_model, watch={"sidecar_wait": 3600}, layout="{year}/{date}")
    try:
        d.start()
        (inbox / "DSC_1.JPG").write_bytes(exif_photo(51, green=True))
        wait_until(lambda: moved_to(dest, "DSC_1.JPG"), what="the JPEG filed")
        folder = dest / "aurora" / "2025" / "2025-07-04"
        assert (folder / "DSC_1.JPG").exists()
        (inbox / "DSC_1.xmp").write_text("<x:xmpmeta/>")  # late, and its mtime is today, not 2025-07-04
        (inbox / "DSC_1.NEF").write_bytes(b"II*\0" + b"\0" * 5000)  # a RAW with no preview: follows too
        wait_until(lambda: moved_to(dest, "DSC_1.xmp") and moved_to(dest, "DSC_1.NEF"), what="late files filed")
        assert {p.name for p in folder.iterdir()} == {"DSC_1.JPG", "DSC_1.xmp", "DSC_1.NEF"}
        assert {p.relative_to(dest).parts[0] for p in files_under(dest)} == {"aurora"}

        (dest / "other").mkdir(exist_ok=True)
        (folder / "DSC_1.JPG").rename(dest / "other" / "DSC_1.JPG")  # the user says: not an aurora
        d.wait_for("correction", path=str(dest / "other" / "DSC_1.JPG"))
        with sqlite3.connect(d.journal) as conn:
            rows = conn.execute("SELECT old_label, new_label FROM corrections").fetchall()
        assert rows == [("aurora", "other")]
        assert d.stop()[0] == 0
    finally:
        d.kill()


def test_exif_dates_of_device_heics_and_raws(shared_samples, tmp_path):
    """The date comes from the bytes already read: pillow-heif's EXIF for HEIC, LibRaw's shot time
    for a RAW; None (the caller's mtime) when a file has none."""
    def taken(path: Path) -> datetime | None:
        return date_taken(path, path.read_bytes())

    assert taken(shared_samples / "heic" / "iphone13pro_pug.heic") == datetime(2023, 2, 21, 14, 33, 8)
    assert taken(shared_samples / "raw" / "kodak_dc50.kdc") == datetime(1997, 4, 23, 8, 0, 47)
    assert taken(shared_samples / "raw" / "blackmagic_cinemadng.dng") is None  # a video frame: no shot time
    assert date_taken(Path("a.jpg"), exif_photo(1, green=True)) == datetime(2025, 7, 4, 23, 10)
    assert date_taken(Path("a.jpg"), exif_photo(1, green=True, taken="0000:00:00 00:00:00")) is None
    assert date_taken(Path("a.jpg"), photo(1, green=True)) is None
