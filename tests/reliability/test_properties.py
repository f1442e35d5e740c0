"""Properties: placement and the mover over any sequence of arrivals, and the loader under a hard
per-image time limit.

tests/daemon/test_mover.py already checks one round of groups against pre-existing names, and
tests/daemon/test_loader.py fuzzes the loader in-process (exceptions only). Added here: several rounds of arrivals whose names repeat what earlier rounds filed,
late sidecars following their photo, the journal checked against the disk, then undo putting
everything back; and the loader fuzzed in a child process that is killed when one image takes
longer than the limit, so a real hang fails the test instead of stalling it.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nordlys.daemon.grouping import group_files, split_name
from nordlys.daemon.journal import DONE, Journal
from nordlys.daemon.mover import move_group, sha256_file
from nordlys.daemon.placement import FOLDER_KEYS, Verdict
from nordlys.daemon.undo import undo
from tests.waiting import DEADLINE

# --- the mover over rounds of arrivals ----------------------------------------------------------

_stems = st.sampled_from(["IMG_1", "img_1", "IMG_1_1", "IMG_2", "a b", "\u00e6\u00f8\u00e5", "n.2", "x" * 240])
_suffixes = st.sampled_from([".jpg", ".JPG", ".png", ".CR2", ".xmp", ".jpg.json", ".MOV", ".txt"])
_arrival = st.tuples(_stems, _suffixes, st.booleans())  # (stem, suffix, arrives one round late)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _folder_of(primary: Path, verdicts: dict[str, str]) -> str:
    """One folder per stem: a late sidecar follows its photo there, as the daemon makes it."""
    stem = split_name(primary.name)[0].casefold()
    return verdicts.setdefault(stem, FOLDER_KEYS[len(stem) % 3])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(_arrival, min_size=1, max_size=6), min_size=1, max_size=4),
       existing=st.lists(st.tuples(_stems, st.sampled_from(["", "_1"]), _suffixes), max_size=4))
def test_rounds_of_arrivals_never_overwrite_or_lose_and_undo_restores(tmp_path, rounds, existing):
    """Names arrive in rounds (the same names again after earlier rounds were filed; some files
    a round late, as sidecars from a sync client do); what was in the output folders before is
    never touched, every arrival is filed once with its bytes, the journal's "done" rows are
    exactly the files on disk, and undo brings every arrival back to the inbox."""
    base = tmp_path / uuid.uuid4().hex
    inbox, out = base / "in", base / "out"
    inbox.mkdir(parents=True)
    before = {}
    for i, (stem, tag, suffix) in enumerate(existing):
        path = out / FOLDER_KEYS[i % 3] / f"{stem}{tag}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"existing " + path.name.encode())
        before[path] = path.read_bytes()
    arrived: Counter[str] = Counter()
    verdicts: dict[str, str] = {}
    late: list[tuple[str, bytes]] = []
    with Journal.open(base / "journal.sqlite") as journal:
        run = journal.start_run("sort property")
        for number, arrivals in enumerate([*rounds, []]):
            batch, late = late, []
            for k, (stem, suffix, delayed) in enumerate(arrivals):
                data = f"round {number} file {k} {stem}{suffix}".encode()
                (late if delayed else batch).append((stem + suffix, data))
            for name, data in dict(batch).items():
                (inbox / name).write_bytes(data)
                arrived[_sha(data)] += 1
            for group in group_files(p for p in inbox.iterdir()):
                folder = _folder_of(group.primary, verdicts)
                move_group(group, out / folder, Verdict(folder, 0.5, "", "m"), journal=journal, run_id=run)
        assert list(inbox.iterdir()) == []
        for path, data in before.items():
            assert path.read_bytes() == data, f"{path} was overwritten"
        filed = {p: sha256_file(p)[0] for p in out.rglob("*") if p.is_file() and p not in before}
        assert Counter(filed.values()) == arrived
        assert {e.dest: e.sha256 for e in journal.entries(status=DONE)} == filed
        report = undo(journal, run_id=run)
    assert not report.skipped, report.skipped
    assert Counter(sha256_file(p)[0] for p in inbox.iterdir()) == arrived
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    shutil.rmtree(base)


# --- the loader with a hard time limit ----------------------------------------------------------

PER_IMAGE_SECONDS = 10.0  # a child that takes longer on one image has hung: it is killed, the test fails
MAX_PIXELS = 20_000_000  # as in test_loader: a mutated header must not make a shared CI box allocate GBs


def _loader_worker(conn) -> None:
    """Child process: load each (name, bytes) it is sent, answer with what happened. Says "ready"
    once its imports are done, so their cost never counts against an image's time limit."""
    from nordlys.daemon.loader import ImageLoadError, load_image

    conn.send("ready")
    while (job := conn.recv()) is not None:
        name, data = job
        if name == "__sleep__":  # the time limit's own test: a worker that never answers in time
            time.sleep(float(data))
            continue
        try:
            load_image(Path(name), size=32, data=data, max_pixels=MAX_PIXELS)
            conn.send("ok")
        except ImageLoadError as exc:
            conn.send(f"ImageLoadError: {exc.reason}")
        except BaseException as exc:  # noqa: BLE001 - the point is to report anything else
            conn.send(f"ESCAPED {type(exc).__name__}: {exc}")


class Loader:
    """A loader in a child process, restarted after a hang so one hang fails one example."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.start()

    def start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.proc = self.context.Process(target=_loader_worker, args=(child,), daemon=True)
        self.proc.start()
        assert self.conn.poll(DEADLINE) and self.conn.recv() == "ready", "the loader process did not start"

    def load(self, name: str, data: bytes | str, *, limit: float | None = None) -> str:
        """What loading one image came to; limit: seconds before the child counts as hung
        (PER_IMAGE_SECONDS unless given)."""
        self.conn.send((name, data))
        if self.conn.poll(PER_IMAGE_SECONDS if limit is None else limit):
            try:
                return self.conn.recv()
            except EOFError:  # the child died: a decoder crashed the process
                outcome = f"CRASHED with exit status {self.proc.join() or self.proc.exitcode}"
        else:
            outcome = f"HUNG for more than {PER_IMAGE_SECONDS if limit is None else limit} s"
        self.proc.kill()
        self.proc.join()
        self.start()
        return outcome

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)


@pytest.fixture(scope="module")
def loader() -> Iterator[Loader]:
    worker = Loader()
    yield worker
    worker.close()


def _seeds() -> dict[str, bytes]:
    """Formats and modes the loader's own fuzzing does not start from."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))

    def enc(image: Image.Image, fmt: str, **options) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        return buf.getvalue()

    return {
        "progressive.jpg": enc(noise, "JPEG", progressive=True),
        "cmyk.jpg": enc(noise.convert("CMYK"), "JPEG"),
        "grey16.png": enc(Image.fromarray(rng.integers(0, 65535, (48, 64), dtype=np.uint16)), "PNG"),
        "palette.png": enc(noise.convert("P"), "PNG", transparency=0),
        "anim.gif": enc(noise, "GIF", save_all=True, append_images=[noise.rotate(90)]),
        "anim.webp": enc(noise, "WEBP", save_all=True, append_images=[noise.rotate(90)]),
        "a.bmp": enc(noise, "BMP"),
        "lzw.tif": enc(noise, "TIFF", compression="tiff_lzw"),
    }


SEEDS = _seeds()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SEEDS)), edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                      st.integers(0, 255)), max_size=16),
       keep=st.floats(0.02, 1.0), tail=st.binary(max_size=64))
def test_mutated_images_only_raise_the_typed_error_and_never_hang(loader, name, edits, keep, tail):
    data = bytearray(SEEDS[name])
    for where, value in edits:
        data[int(where * len(data))] = value
    outcome = loader.load(name, bytes(data[: max(1, int(len(data) * keep))]) + tail)
    assert outcome == "ok" or outcome.startswith("ImageLoadError: "), outcome


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png", ".heic", ".gif", ".nef", ".dng"]))
def test_random_bytes_only_raise_the_typed_error_and_never_hang(loader, data, suffix):
    outcome = loader.load("fuzz" + suffix, data)
    assert outcome == "ok" or outcome.startswith("ImageLoadError: "), outcome


def test_the_time_limit_is_real(loader):
    """A worker stuck past the limit is reported as hung and replaced, not waited for: it sleeps
    for an hour, so an answer within the test's life means the limit cut it short. The new
    worker then gets the usual limit (a busy machine may take seconds to start a process)."""
    assert loader.load("__sleep__", "3600", limit=0.5).startswith("HUNG")
    assert loader.load("z.jpg", b"").startswith("ImageLoadError"), "the worker was not replaced"
