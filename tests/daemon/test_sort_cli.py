"""End to end through the real `nordlys` command: sort 300 real photos plus broken files, then undo.

The invariant checked is the project's promise: every input ends in exactly one place with the
same bytes, nothing is overwritten, the journal says where, and undo restores the tree byte for byte.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from nordlys.daemon.paths import bundled_model_path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file (symlinks listed by their target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link->" + os.readlink(path)
        elif path.is_file():
            out[rel] = sha(path)
    return out


def run_nordlys(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def broken_files(sample_jpeg: bytes) -> dict[str, bytes]:
    """20 kinds of unreadable input, each a name -> bytes."""
    png = Image.new("RGB", (4, 4))
    import io
    buf = io.BytesIO()
    png.save(buf, "PNG")
    files = {f"broken/truncated_{n}.jpg": sample_jpeg[:n] for n in (2, 100, 600, 2000, len(sample_jpeg) // 2)}
    files.update({
        "broken/empty.jpg": b"",
        "broken/random.jpg": random.Random(1).randbytes(5000),
        "broken/page.jpg": b"<!DOCTYPE html><html><body>404 not found</body></html>",
        "broken/notes.txt": b"shopping list\n",
        "broken/lonely.json": b'{"title": "sidecar without a photo"}',
        "broken/png_truncated.png": buf.getvalue()[:30],
        "broken/fake.heic": b"\x00\x00\x00\x18ftypheic" + b"\x00" * 40,
        "broken/fake.dng": b"II*\x00" + b"\x00" * 100,
        "broken/zeros.png": b"\x00" * 4096,
        "broken/gif_header_only.gif": b"GIF89a",
        "broken/bmp_header.bmp": b"BM" + b"\x00" * 10,
        "broken/tiff_header.tif": b"MM\x00*" + b"\xff" * 20,
        "broken/webp_riff.webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8,
        "broken/script.jpeg": b"#!/bin/sh\necho hi\n",
        "broken/double.jpg.jpg": sample_jpeg[: len(sample_jpeg) // 3],
    })
    assert len(files) == 20
    return files


@pytest.fixture
def photo_tree(tmp_path: Path, shared_data: Path) -> tuple[Path, int]:
    """300 real photos in nested folders, colliding names, some XMP sidecars, 20 broken files."""
    rows = list(csv.DictReader(open(shared_data / "manifest.csv")))
    rng = random.Random(42)
    aurora = [r for r in rows if r["label"] == "aurora"]
    other = [r for r in rows if r["label"] == "other"]
    chosen = rng.sample(aurora, 100) + rng.sample(other, 200)
    inbox = tmp_path / "inbox"
    for i, row in enumerate(chosen):
        # 30 folders with IMG_0000..IMG_0009 each: the same names collide in the output folders
        target = inbox / f"card{i // 10:02d}" / f"IMG_{i % 10:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / row["file"], target)
        if i % 7 == 0:
            target.with_suffix(".xmp").write_text(f"<x:xmpmeta>{i}</x:xmpmeta>")
    sample = (inbox / "card00" / "IMG_0001.jpg").read_bytes()
    for rel, data in broken_files(sample).items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data)
    return inbox, 20


@pytest.mark.slow
def test_sort_300_photos_then_undo_restores_everything(tmp_path, photo_tree, green_model):
    inbox, n_broken = photo_tree
    dest = tmp_path / "sorted"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    before = tree(inbox)
    inputs = Counter(before.values())

    proc = run_nordlys("sort", str(inbox), "--dest", str(dest), "--model", str(green_model), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "moved" in proc.stdout and "rejected:" in proc.stdout

    after = {**{f"inbox/{k}": v for k, v in tree(inbox).items()}, **{f"sorted/{k}": v for k, v in tree(dest).items()}}
    assert Counter(after.values()) == inputs, "every input exactly once, same bytes, nothing new"
    assert not tree(inbox), "the inbox is empty after a sort"
    rejected = [k for k in after if k.startswith("sorted/rejected/")]
    assert len(rejected) == n_broken
    assert {k.split("/")[1] for k in after} <= {"aurora", "other", "rejected"}
    assert len([k for k in after if k.startswith("sorted/aurora/") and k.endswith(".jpg")]) > 0

    # every XMP sidecar sits beside a photo with the same stem
    for key in after:
        if key.endswith(".xmp"):
            assert key[:-4] + ".jpg" in after, key

    # the journal says where every file went, and the reasons for the rejected ones
    db = sqlite3.connect(tmp_path / "state" / "nordlys" / "journal.sqlite")
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM entries WHERE status = 'done'").fetchall()
    assert len(rows) == len(before)
    for row in rows:
        assert Path(row["dest"]).is_file() and sha(Path(row["dest"])) == row["sha256"]
    reasons = [r["reason"] for r in rows if r["label"] == "rejected"]
    assert len(reasons) == n_broken and all(reasons)
    db.close()

    proc = run_nordlys("undo", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree(inbox) == before, "undo restores the original tree byte for byte"
    assert not tree(dest)


def test_dry_run_moves_nothing(tmp_path, green_model, make_tree):
    inbox = make_tree({"in/a.jpg": b"not really", "in/sub/b.txt": b"x"}) / "in"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    before = tree(tmp_path)
    proc = run_nordlys("sort", str(inbox), "--model", str(green_model), "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "would move 2 files" in proc.stdout
    assert tree(tmp_path) == before


def test_a_model_that_cannot_score_is_refused_before_anything_moves(tmp_path, make_tree):
    from tests.tiny_models import make_nan_model
    inbox = make_tree({"in/a.jpg": b"not really", "in/b.txt": b"x"}) / "in"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    before = tree(tmp_path)
    proc = run_nordlys("sort", str(inbox), "--model", str(make_nan_model(tmp_path / "nan.onnx")), env=env)
    assert proc.returncode == 3, proc.stderr
    assert "nan.onnx: test scores" in proc.stderr and "expected 8 probabilities" in proc.stderr
    assert tree(tmp_path) == {**before, "nan.onnx": sha(tmp_path / "nan.onnx")}


def test_classify_json_lines(tmp_path, green_model):
    Image.new("RGB", (300, 200), (10, 220, 30)).save(tmp_path / "green.jpg")
    Image.new("RGB", (300, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    (tmp_path / "bad.jpg").write_bytes(b"<html>")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    proc = run_nordlys("classify", str(tmp_path), "--model", str(green_model), "--json", env=env)
    assert proc.returncode == 1  # one file could not be read
    records = {Path(r["path"]).name: r for r in map(json.loads, proc.stdout.splitlines())}
    assert records["green.jpg"]["label"] == "aurora" and records["green.jpg"]["score"] > 0.9
    assert records["grey.png"]["label"] == "other"
    assert records["bad.jpg"]["score"] is None and records["bad.jpg"]["error"] == "not an image"


@pytest.mark.skipif(not bundled_model_path().is_file(), reason="the bundled default model is not built yet")
def test_classify_uses_the_bundled_model_without_config(tmp_path, shared_data):
    rows = list(csv.DictReader(open(shared_data / "manifest.csv")))
    photos = [shared_data / r["file"] for r in rows if r["label"] == "aurora"][:3]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    proc = run_nordlys("classify", *map(str, photos), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 3 and all(0.0 <= r["score"] <= 1.0 for r in records)
    assert all(r["model_version"] for r in records)
