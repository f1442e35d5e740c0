"""`classify --engine ray` and `sort --scores` end to end: the real `nordlys` command in a
subprocess, a real local Ray (2 CPUs, loopback, no dashboard), real photos, the tiny green model.

Each Ray run costs a Ray start-up (seconds on a busy 2-core machine), so each test makes one or
two runs over a few dozen photos; only the agreement test uses a few hundred.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pa = pytest.importorskip("pyarrow")
pytest.importorskip("ray")

from nordlys.cluster.scores import read_scores, write_scores  # noqa: E402
from nordlys.cluster.engine import KILL_ENV  # noqa: E402

GREEN, RED = (20, 230, 40), (230, 30, 20)  # the green model's aurora and other


def make_photos(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    """Small JPEGs of random colours: the green model scores them anywhere in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{i:04d}.jpg"
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (48 + rng.randrange(16), 40), colour).save(path, quality=90)
        paths.append(path)
    return paths


def paint(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (48, 40), colour).save(path, quality=90)


def nordlys(*args: str, home: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config"),
           "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=home)


def ray_classify(src: Path, out: Path, model: Path, home: Path, *extra: str,
                 extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = nordlys("classify", "--engine", "ray", "--workers", "2", "--model", str(model), "--out", str(out),
                   str(src), *extra, home=home, extra_env=extra_env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_ray_agrees_with_classify(tmp_path: Path, green_model: Path) -> None:
    """Same labels as `classify`, scores within 1e-5, and each row describes the bytes scored."""
    src = tmp_path / "archive"
    photos = make_photos(src / "a", 150) + make_photos(src / "b", 150, seed=1)
    (src / "b" / "notes.txt").write_text("not a photo\n")
    out = tmp_path / "scores.parquet"
    proc = ray_classify(src, out, green_model, tmp_path)
    assert proc.returncode == 1  # notes.txt has no score, as plain classify says too
    assert "scored 301 files (1 without a score), kept 0 unchanged" in proc.stdout
    local = nordlys("classify", "--json", "--model", str(green_model), str(src), home=tmp_path)
    expected = {r["path"]: r for r in map(json.loads, local.stdout.splitlines())}
    rows = read_scores(out)
    assert set(rows) == set(expected) and len(rows) == 301
    for path, row in rows.items():
        want = expected[path]
        assert row["label"] == want["label"], path
        assert row["model_version"] == want["model_version"] == "green-test-1"
        if want["score"] is None:
            assert row["score"] is None and row["error"] == want["error"]
            continue
        assert abs(row["score"] - want["score"]) <= 1e-5, path
        st = os.stat(path)
        assert (row["size"], row["mtime_ns"], row["sha256"]) == (st.st_size, st.st_mtime_ns, sha(Path(path)))
    labels = {r["label"] for r in rows.values()}
    assert {"aurora", "other"} <= labels  # the photos really span the threshold
    assert len(photos) == 300


@pytest.mark.slow
def test_resumed_run_scores_only_new_or_changed(tmp_path: Path, green_model: Path) -> None:
    src = tmp_path / "archive"
    photos = make_photos(src, 40)
    out = tmp_path / "scores.parquet"
    ray_classify(src, out, green_model, tmp_path)
    first = read_scores(out)
    paint(photos[3], GREEN)  # changed: new bytes, size and mtime
    os.utime(photos[5], ns=(0, os.stat(photos[5]).st_mtime_ns + 10**9))  # touched: same bytes, newer mtime
    paint(src / "new.jpg", RED)
    proc = ray_classify(src, out, green_model, tmp_path)
    assert "scored 3 files (0 without a score), kept 38 unchanged" in proc.stdout
    second = read_scores(out)
    assert len(second) == 41
    changed = {str(photos[3]), str(photos[5]), str(src / "new.jpg")}
    for path in set(first) - changed:
        assert second[path] == first[path]
    assert second[str(photos[3])]["sha256"] == sha(photos[3]) != first[str(photos[3])]["sha256"]
    assert second[str(photos[3])]["label"] == "aurora" and second[str(src / "new.jpg")]["label"] == "other"
    assert second[str(photos[5])]["mtime_ns"] == os.stat(photos[5]).st_mtime_ns
    # nothing changed since: a third run starts no Ray at all and keeps every row
    proc = ray_classify(src, out, green_model, tmp_path)
    assert "scored 0 files (0 without a score), kept 41 unchanged" in proc.stdout
    assert read_scores(out) == second


@pytest.mark.slow
def test_killed_worker_files_are_retried(tmp_path: Path, green_model: Path) -> None:
    """One actor process is SIGKILLed while it holds a batch; Ray restarts it and every file
    still gets its row, with a score."""
    src = tmp_path / "archive"
    photos = make_photos(src, 120)
    gate = tmp_path / "kill-one-actor"
    gate.write_text("")
    out = tmp_path / "scores.parquet"
    proc = ray_classify(src, out, green_model, tmp_path, extra_env={KILL_ENV: str(gate)})
    assert not gate.exists(), "no actor reached the kill point: the test tested nothing"
    rows = read_scores(out)
    assert set(rows) == {str(p) for p in photos}
    assert all(r["score"] is not None and r["sha256"] == sha(Path(r["path"])) for r in rows.values())
    assert "scored 120 files (0 without a score)" in proc.stdout


@pytest.mark.slow
def test_sort_scores_files_everything_once_and_undo_restores(tmp_path: Path, green_model: Path) -> None:
    src = tmp_path / "archive"
    photos = make_photos(src, 30)
    for i, p in enumerate(photos[:10]):
        paint(p, (230, 30 + i, 20))  # red, each its own bytes (an exact duplicate would stay: duplicates: leave)
    (src / "IMG_0000.xmp").write_text("<x:xmpmeta/>")  # a sidecar travels with its photo
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out = tmp_path / "scores.parquet"
    ray_classify(src, out, green_model, tmp_path)
    rows = read_scores(out)
    # the score in the file is what places a photo whose row still describes it ...
    trusted = str(photos[1])
    assert rows[trusted]["label"] == "other"
    rows[trusted] = {**rows[trusted], "score": 0.99, "label": "aurora"}
    write_scores(out, rows.values())
    # ... and a photo changed since it was scored is scored again here
    paint(photos[2], GREEN)
    paint(src / "late.jpg", (20, 230, 60))  # not scored at all
    before = tree(src)
    dest = tmp_path / "sorted"
    proc = nordlys("sort", "--scores", str(out), "--dest", str(dest), "--model", str(green_model), home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(src.rglob("*.*")) == []
    after = tree(dest)
    assert sorted(after.values()) == sorted(before.values())  # every file once, same bytes
    assert after["aurora/IMG_0001.jpg"] == before["IMG_0001.jpg"]
    assert after["aurora/IMG_0002.jpg"] == before["IMG_0002.jpg"]
    assert after["aurora/late.jpg"] == before["late.jpg"]
    assert after["other/IMG_0000.xmp"] == before["IMG_0000.xmp"]
    assert after["rejected/broken.jpg"] == before["broken.jpg"]
    assert all(f"other/IMG_{i:04d}.jpg" in after for i in (0, 3, 4, 5, 6, 7, 8, 9))
    proc = nordlys("undo", home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"restored {len(before)} files" in proc.stdout
    assert tree(src) == before
    assert tree(dest) == {}


def test_ray_engine_needs_out(tmp_path: Path, green_model: Path) -> None:
    proc = nordlys("classify", "--engine", "ray", "--model", str(green_model), str(tmp_path), home=tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr and ".parquet" in proc.stderr


def test_without_the_extra_the_verbs_name_it(tmp_path: Path, green_model: Path) -> None:
    """ray and pyarrow absent: one line naming nordlys[cluster], exit 2, no traceback."""
    code = ("import sys; sys.modules['ray'] = None; sys.modules['pyarrow'] = None\n"
            "from nordlys.daemon.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    for args in (["classify", "--engine", "ray", "--out", "s.parquet", "--model", str(green_model), str(tmp_path)],
                 ["sort", "--scores", "s.parquet", "--dest", str(tmp_path / "d")]):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})
        assert proc.returncode == 2, proc.stderr
        assert "pip install 'nordlys[cluster]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sort_scores_puts_trusted_photos_in_their_exif_date_folders(tmp_path: Path, green_model: Path) -> None:
    """With a `layout`, a photo filed by its row goes where a plain sort puts it: the folder of its
    EXIF date (read from the same bytes that were hashed), not of its mtime."""
    src = tmp_path / "archive"
    src.mkdir()
    for i, year in enumerate((2019, 2021)):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = f"{year}:02:0{i + 1} 22:10:00"
        Image.new("RGB", (48, 40), (20, 230, 40 + i)).save(src / f"IMG_{i}.jpg", exif=exif.tobytes())
    out = tmp_path / "scores.parquet"
    ray_classify(src, out, green_model, tmp_path)
    config = tmp_path / "nordlys.yaml"
    config.write_text('layout: "{year}/{date}"\n')
    dest = tmp_path / "sorted"
    proc = nordlys("sort", "--scores", str(out), "--dest", str(dest), "--model", str(green_model),
                   "--config", str(config), home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(tree(dest)) == ["aurora/2019/2019-02-01/IMG_0.jpg", "aurora/2021/2021-02-02/IMG_1.jpg"]
