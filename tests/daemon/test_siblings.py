"""Late siblings (daemon/siblings.py): which late RAW or sidecar follows a filed photo.

Issue 12, finding 9: a RAW named like an unrelated photo filed up to 24 h earlier (camera counters
repeat: IMG_0001.dng after IMG_0001.jpg) followed it unclassified, logged with the JPEG's score.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
from nordlys.daemon.placement import Verdict
from nordlys.daemon.siblings import FOLLOW_WINDOW, SiblingFinder
from tests.daemon.test_loader import green_sensor, make_dng
from tests.daemon.test_watch import daemon_factory, moved_to, photo, wait_until  # noqa: F401 (fixture)


def _filed(journal: Journal, inbox: Path, name: str, label: str, *, ago: float) -> None:
    """A journaled, finished move of inbox/name into label/, written `ago` seconds in the past."""
    entry = journal.intent(None, source=inbox / name, dest=inbox.parent / label / name, size=1, sha256="0" * 64,
                           verdict=Verdict(label, 0.2, "", "m1"), group_id=name)
    journal.done(entry, inbox.parent / label / name)
    when = (datetime.now(timezone.utc) - timedelta(seconds=ago)).isoformat(timespec="microseconds")
    with sqlite3.connect(journal.path) as conn:
        conn.execute("UPDATE entries SET time = ? WHERE id = ?", (when, entry))


def test_a_late_sidecar_follows_only_a_photo_filed_within_the_window(tmp_path):
    inbox = tmp_path / "inbox"
    with Journal.open(tmp_path / "journal.sqlite") as journal:
        _filed(journal, inbox, "IMG_0001.JPG", "other", ago=60)
        _filed(journal, inbox, "IMG_0002.JPG", "aurora", ago=FOLLOW_WINDOW + 3600)
        _filed(journal, tmp_path / "elsewhere", "IMG_0003.JPG", "aurora", ago=60)
        finder = SiblingFinder(journal, capacity=100)
        follows = finder.follows(PhotoGroup(inbox / "IMG_0001.xmp", (inbox / "IMG_0001.xmp",)), 0)
        assert follows is not None and follows.folder == "other"
        assert finder.follows(PhotoGroup(inbox / "IMG_0002.xmp", (inbox / "IMG_0002.xmp",)), 0) is None  # too old
        assert finder.follows(PhotoGroup(inbox / "IMG_0003.xmp", (inbox / "IMG_0003.xmp",)), 0) is None  # other folder
        assert finder.follows(PhotoGroup(inbox / "IMG_0001.png", (inbox / "IMG_0001.png",)), 0) is None  # a photo


def test_a_late_raw_with_its_own_preview_is_classified_on_its_own(tmp_path, daemon_factory):
    """IMG_0001.jpg (grey: other/) is filed; then IMG_0001.dng, whose preview is green, arrives
    under the same name: it goes to aurora/ by its own pixels. (A sidecar and a RAW without a
    preview still follow: test_watch.py::test_late_raw_and_sidecar_follow_their_filed_photo.)"""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    d = daemon_factory([inbox], dest).start()
    (inbox / "IMG_0001.jpg").write_bytes(photo(1, green=False))
    wait_until(lambda: moved_to(dest, "IMG_0001.jpg"), what="the JPEG filed")
    assert moved_to(dest, "IMG_0001.jpg") == dest / "other" / "IMG_0001.jpg"
    (inbox / "IMG_0001.dng").write_bytes(make_dng(green_sensor(), preview=photo(2, green=True, size=(400, 300))))
    wait_until(lambda: moved_to(dest, "IMG_0001.dng"), what="the RAW filed")
    assert moved_to(dest, "IMG_0001.dng") == dest / "aurora" / "IMG_0001.dng"
    raw = d.wait_for("sorted", path=str(inbox / "IMG_0001.dng"))
    assert raw["label"] == "aurora" and raw["score"] > 0.5  # its own score, not the JPEG's
    assert d.stop()[0] == 0
