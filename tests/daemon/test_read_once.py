"""Each photo is read once: the pipeline hashes the bytes it decodes, and the mover trusts that
hash only while the file's signature (device, inode, size, mtime) is what it was at the read.

Real files in tmp_path, a real journal, a real onnxruntime model (the green test model).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading

import pytest

from nordlys.daemon.classifier import Classifier
from nordlys.daemon.config import FoldersConfig
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.journal import Journal
from nordlys.daemon.fileops import KnownHash, read_hashed
from nordlys.daemon.mover import MoveError, move_file, move_group
from nordlys.daemon.pipeline import Pipeline, Target
from nordlys.daemon.placement import Verdict
from tests.daemon.test_watch import photo

AURORA = Verdict("aurora", 0.97, "", "test-model")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_read_hashed_returns_the_bytes_and_their_hash(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"photo bytes")
    data, known = read_hashed(path)
    assert data == b"photo bytes"
    assert known is not None and (known.sha256, known.size) == (sha(b"photo bytes"), 11)
    assert known.signature[1:3] == (os.stat(path).st_ino, 11)


def test_read_hashed_refuses_symlinks_and_fifos_without_blocking(tmp_path):
    (tmp_path / "real.jpg").write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    for name in ("link.jpg", "pipe.jpg"):
        with pytest.raises(OSError):
            read_hashed(tmp_path / name)  # a FIFO with no writer would block a plain open()


def test_a_hash_of_unchanged_bytes_is_trusted_without_reading_again(tmp_path):
    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"abc")
    _, known = read_hashed(src)
    assert known is not None
    marked = KnownHash("f" * 64, known.size, known.signature)  # a digest only the caller could know
    result = move_file(src, tmp_path / "out" / "a.jpg", expected_sha256=marked.sha256, known=marked)
    assert result.sha256 == "f" * 64 and (tmp_path / "out" / "a.jpg").read_bytes() == b"abc"


def test_a_file_changed_after_its_read_is_not_moved_on_the_old_verdict(tmp_path):
    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"old bytes")
    _, known = read_hashed(src)
    src.write_bytes(b"new bytes")  # same size, new content
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # however coarse the clock
    with Journal.open(tmp_path / "j.sqlite") as journal:
        with pytest.raises(MoveError, match="changed since it was read"):
            move_group(PhotoGroup(src, (src,)), tmp_path / "out", AURORA, journal=journal,
                       run_id=journal.start_run("test"), known={src: known})
    assert src.read_bytes() == b"new bytes" and not (tmp_path / "out").exists()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (0,)  # refused before any intent


def test_pipeline_journals_the_hash_of_the_bytes_it_decoded(tmp_path, green_model):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    photos = {f"IMG_{i}.jpg": photo(i, green=i % 2 == 1) for i in range(20)}  # unique bytes: no duplicates
    for name, data in photos.items():
        (inbox / name).write_bytes(data)
    (inbox / "IMG_3.xmp").write_bytes(b"<xmp/>")  # a sidecar: hashed by the mover itself
    classifier = Classifier(green_model, batch_size=4)
    target = Target(output_root=out, folders=FoldersConfig(), keep_subfolders=False,
                    threshold=classifier.meta.threshold, review_band=0.0)
    groups = [PhotoGroup(inbox / n, (inbox / n, inbox / "IMG_3.xmp") if n == "IMG_3.jpg" else (inbox / n,))
              for n in sorted(photos)]
    with Journal.open(tmp_path / "j.sqlite") as journal, \
            Pipeline(classifier, journal, target, max_pixels=10**8, decode_workers=2) as pipeline:
        batches = [groups[i:i + 4] for i in range(0, len(groups), 4)]
        outcomes = [o for batch in pipeline.process_batches(batches, inbox=inbox, run_id=None) for o in batch]
    assert [o.group for o in outcomes] == groups  # in order, every group once
    moved = {r.dest.name: r for o in outcomes for r in o.moved}
    assert {n: moved[n].sha256 for n in photos} == {n: sha(d) for n, d in photos.items()}
    assert moved["IMG_3.xmp"].sha256 == sha(b"<xmp/>") and not list(inbox.iterdir())
    assert {r.dest.parent.name for r in moved.values()} == {"aurora", "other"}
    assert not [t for t in threading.enumerate() if t.name.startswith("nordlys-decode")]
