"""Hostile files through the running daemon: each ends in rejected/, in its right folder, or stays
where it is, with a one-line reason in the log and in the journal, and the daemon keeps sorting.

Every kind is made by the test (Pillow, pillow-heif, os.mkfifo, symlinks, sockets) and dropped
into the inbox of a daemon that runs like the systemd unit: no capabilities, no_new_privs. Images
that are odd but valid (1x1, CMYK, 16-bit, animated, broken EXIF) are sorted by their content;
files that cannot be read as images go to rejected/; files that must not be touched (links,
FIFOs, sockets, devices, unreadable files, names no free variant of fits) stay in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pillow_heif
from PIL import Image, features

from tests.daemon.test_loader import exif_with_orientation, png_declaring
from tests.daemon.test_watch import GREEN, GREY
from tests.reliability.harness import (
    AURORA, OTHER, REJECTED, TrialDaemon, journal_entries, noise_jpeg, photo, table, wait_for_none, wait_until,
)

IN_PLACE = "in place"
PLACE_EVENTS = ("skipped", "left in place")  # the daemon's log events for a file it leaves alone


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def flat(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


def animated(fmt: str) -> bytes:
    """First frame green (what the loader reads), second grey."""
    return encode(flat(GREEN), fmt, save_all=True, append_images=[flat(GREY)], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    grey = Image.fromarray(np.full((48, 64), 30000, dtype=np.uint16))
    return encode(grey, "PNG")


def noise(width: int, height: int, seed: int) -> Image.Image:
    """Random pixels: an image that compresses badly, so a cut really removes pixel data."""
    return Image.frombytes("RGB", (width, height), random.Random(seed).randbytes(width * height * 3))


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def heic() -> bytes:
    pillow_heif.register_heif_opener()
    return encode(noise(256, 192, 4), "HEIF", quality=80)


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF header claiming width x height, with one 1x1 frame."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b";"


JPEG = photo(7, green=True, size=(320, 240))
NOISE = noise_jpeg(200, 150, seed=3)


@dataclass(frozen=True)
class Kind:
    """One bad input: the name it gets in the inbox, where it must end, and what it is: its bytes
    (written in one go, created with `mode`), or a function that makes a special file."""

    name: str
    expect: str  # AURORA / OTHER (valid, sorted by content), REJECTED, or IN_PLACE
    data: bytes | None = None
    make: Callable[[Path], None] | None = None
    mode: int = 0o644
    needs: str = ""  # "mknod": left out (the test says so) where device nodes cannot be made

    def create(self, path: Path) -> None:
        if self.make is not None:
            self.make(path)
            return
        assert self.data is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)  # born unreadable if asked
        with open(fd, "wb") as f:
            f.write(self.data)


def fifo(path: Path) -> None:
    os.mkfifo(path)


def unix_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(path))


def char_device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))  # /dev/null's numbers


SPARSE_SIZE = 64 << 20  # bytes of nothing in a sparse file named like a photo


def sparse(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(SPARSE_SIZE)


LONG_SUFFIX = "x." + "j" * 253  # 255 bytes, nearly all "extension": no numbered variant fits


def kinds() -> list[Kind]:
    """The hostile inputs, at least 30 kinds."""
    cut = [Kind(f"cut_at_{n}.jpg", REJECTED, NOISE[:n]) for n in (2, 100, 1000)]
    cut += [Kind(f"cut_at_{p}pct.jpg", REJECTED, NOISE[: len(NOISE) * p // 100]) for p in (25, 50, 90)]
    cut.append(Kind("no_end_marker.jpg", REJECTED, NOISE[:-2]))
    bad_crc = bytearray(encode(flat(GREEN), "PNG"))
    bad_crc[29] ^= 0xFF
    found = cut + [
        Kind("zero_bytes.jpg", REJECTED, b""),
        Kind("random_bytes.jpg", REJECTED, random.Random(5).randbytes(20_000)),
        Kind("page.jpg", REJECTED, b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n"),
        Kind("document.jpg", REJECTED, b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"),
        Kind("notes.txt", REJECTED, b"shopping list\n"),
        Kind("sparse_64MiB.jpg", REJECTED, make=sparse),
        Kind("bomb_30000x30000.png", REJECTED, png_declaring(30000, 30000)),
        Kind("bomb_65535x65535.gif", REJECTED, gif_declaring(65535, 65535)),
        Kind("bad_crc.png", REJECTED, bytes(bad_crc)),
        Kind("cut.png", REJECTED, cut_in_half(encode(noise(64, 48, 5), "PNG"))),
        Kind("cut.gif", REJECTED, cut_in_half(encode(noise(64, 48, 5), "GIF"))),
        Kind("cut.webp", REJECTED, cut_in_half(encode(noise(64, 48, 6), "WEBP"))),
        Kind("cut.heic", REJECTED, cut_in_half(heic())),
        Kind("header_only.nef", REJECTED, b"II*\0" + b"\0" * 4000),
        Kind("lone.xmp", REJECTED, b"<x:xmpmeta/>"),  # a sidecar with no photo, after 10 s
        Kind("one_pixel.jpg", AURORA, encode(flat(GREEN, (1, 1)), "JPEG")),
        Kind("one_pixel.png", OTHER, encode(flat(GREY, (1, 1)), "PNG")),
        Kind("cmyk.jpg", AURORA, encode(flat(GREEN).convert("CMYK"), "JPEG")),
        Kind("sixteen_bit.png", OTHER, sixteen_bit_png()),
        Kind("animated.gif", AURORA, animated("GIF")),
        Kind("animated.webp", AURORA, animated("WEBP")),
        Kind("orientation_9.jpg", AURORA, encode(flat(GREEN), "JPEG", exif=exif_with_orientation(9))),
        Kind("garbage_exif.jpg", AURORA,
             encode(flat(GREEN), "JPEG", exif=b"Exif\0\0" + random.Random(7).randbytes(300))),
        Kind("png_named.jpg", OTHER, encode(flat(GREY), "PNG")),
        Kind("trailing_garbage.jpg", AURORA, JPEG + random.Random(8).randbytes(5000)),
        Kind("new\nline.jpg", AURORA, photo(9, green=True)),
        Kind("nordlys_æøå_🌌.jpg", AURORA, photo(10, green=True)),
        Kind(os.fsdecode(b"latin1_\xe6\xf8.jpg"), OTHER, photo(11, green=False)),
        Kind("\x1b[31mred\x1b[0m.jpg", OTHER, photo(12, green=False)),
        Kind("evil\\..\\..\\etc.jpg", OTHER, photo(13, green=False)),
        Kind("L" * 251 + ".jpg", AURORA, photo(14, green=True)),
        Kind("T" * 251 + ".jpg", AURORA, photo(15, green=True)),  # taken in aurora/ already
        Kind(LONG_SUFFIX, IN_PLACE, b"not a photo, and its name is taken in rejected/"),
        Kind("passwd.jpg", IN_PLACE, make=lambda p: p.symlink_to("/etc/passwd")),
        Kind("loop.jpg", IN_PLACE, make=lambda p: p.symlink_to(p.name)),
        Kind("dangling.jpg", IN_PLACE, make=lambda p: p.symlink_to(p.parent / "nowhere.jpg")),
        Kind("pipe.jpg", IN_PLACE, make=fifo),
        Kind("socket.jpg", IN_PLACE, make=unix_socket),
        Kind("device.jpg", IN_PLACE, make=char_device, needs="mknod"),
        Kind("unreadable.jpg", IN_PLACE, photo(8, green=True), mode=0),
    ]
    if features.check("avif"):
        found.append(Kind("cut.avif", REJECTED, cut_in_half(encode(noise(256, 192, 7), "AVIF"))))
    return found


def can_mknod(folder: Path) -> bool:
    try:
        char_device(folder / ".probe")
    except OSError:
        return False
    os.unlink(folder / ".probe")
    return True


# --- checking one kind ------------------------------------------------------------------------

def log_reason(daemon: TrialDaemon, path: Path, expect: str) -> str | None:
    """The reason the log gives for `path`, or None while there is no line for it yet."""
    if expect == IN_PLACE:
        events = [e for name in PLACE_EVENTS for e in daemon.find(name, path=str(path))]
    else:
        events = daemon.find("rejected" if expect == REJECTED else "sorted", path=str(path))
    if not events:
        return None
    return events[-1].get("reason") or events[-1].get("label")


def journal_reason(rows: list[dict], path: Path, expect: str, dest: Path) -> str | None:
    """The journal's reason for `path`: the rejection, the folder, or why it stayed."""
    mine = [r for r in rows if r["source"] == path]
    if expect == IN_PLACE:
        return next((r["detail"] for r in mine if r["status"] == "failed" and r["detail"]), None)
    done = [r for r in mine if r["status"] == "done" and r["dest"].parent == dest / expect]
    if not done:
        return None
    return done[0]["reason"] if expect == REJECTED else done[0]["label"]


def on_disk(kind: Kind, inbox: Path, dest: Path, identity: tuple) -> bool:
    """The kind is where it must be, unchanged: in place, or exactly once in its folder."""
    source = inbox / kind.name
    if kind.expect == IN_PLACE:
        return os.path.lexists(source) and _identity(source) == identity
    filed = [p for p in (dest / kind.expect).iterdir() if _identity(p) == identity]
    return not os.path.lexists(source) and len(filed) == 1


def expected_identity(kind: Kind, path: Path) -> tuple:
    """What must not change about the kind: its bytes, or for a special file what it is."""
    if kind.data is not None:
        return "file", hashlib.sha256(kind.data).hexdigest()
    if kind.make is sparse:
        return "file", hashlib.sha256(bytes(SPARSE_SIZE)).hexdigest()
    return _identity(path)  # links, FIFOs, sockets, devices: never moved, so safe to look now


def _identity(path: Path) -> tuple:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return "file", hashlib.sha256(path.read_bytes()).hexdigest()
    if stat.S_ISLNK(st.st_mode):
        return "link", os.readlink(path)
    return stat.S_IFMT(st.st_mode), st.st_ino, stat.S_IMODE(st.st_mode)


# --- the test ---------------------------------------------------------------------------------

def test_every_bad_input_ends_in_its_place_with_a_reason_and_the_daemon_keeps_sorting(
        tmp_path, daemons, no_capabilities):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    chosen = [k for k in kinds() if k.needs != "mknod" or can_mknod(inbox)]
    assert len(chosen) >= 30
    (dest / AURORA).mkdir(parents=True)
    (dest / REJECTED).mkdir()
    taken = {dest / AURORA / ("T" * 251 + ".jpg"): b"already filed", dest / REJECTED / LONG_SUFFIX: b"already here"}
    for path, data in taken.items():
        path.write_bytes(data)
    daemon = daemons([inbox], dest, prefix=no_capabilities).start()
    (inbox / "x.jpg").mkdir()  # a folder named like a photo is a folder: the photo inside is sorted
    before = {}
    for kind in chosen:
        kind.create(inbox / kind.name)
        before[kind.name] = expected_identity(kind, inbox / kind.name)
    (inbox / "x.jpg" / "inside.jpg").write_bytes(photo(16, green=True))

    def silent() -> list[str]:
        return [k.name for k in chosen if not log_reason(daemon, inbox / k.name, k.expect)]

    wait_for_none(silent, 40, "a log line for every bad input")
    (inbox / "good.jpg").write_bytes(photo(17, green=True))
    wait_until(lambda: (dest / AURORA / "good.jpg").exists(), 20, "a good photo sorted after the bad ones")
    assert (dest / AURORA / "inside.jpg").exists() and (inbox / "x.jpg").is_dir()
    code, _ = daemon.stop()
    assert code == 0
    not_json = [line for line in daemon.lines if not _is_json_object(line)]
    assert not not_json, "every log line is one JSON object:\n" + "".join(not_json[:5])

    rows = journal_entries(daemon.journal)
    outcomes = []
    for kind in chosen:
        path = inbox / kind.name
        outcomes.append((kind, on_disk(kind, inbox, dest, before[kind.name]), log_reason(daemon, path, kind.expect),
                         journal_reason(rows, path, kind.expect, dest)))
    failed = [(k.name, k.expect, placed, log, jr) for k, placed, log, jr in outcomes if not (placed and log and jr)]
    assert not failed, "\n".join(map(repr, failed))
    for path, data in taken.items():
        assert path.read_bytes() == data, f"{path} was overwritten"
    print("\n" + table(("bad input", "expected", "log reason", "journal"),
                       [(repr(k.name)[:40], k.expect, log, jr) for k, _, log, jr in outcomes]))
    print(f"bad-input kinds survived: {len(outcomes)} of {len(outcomes)}")

    # A restart finds the same files by its start-up scan: they stay, with no second journal row.
    daemon.start()
    in_place = [k for k in chosen if k.expect == IN_PLACE]
    wait_for_none(lambda: [k.name for k in in_place if not log_reason(daemon, inbox / k.name, k.expect)],
                  20, "the start-up scan to report the files left in place")
    assert daemon.stop()[0] == 0
    again = journal_entries(daemon.journal)
    assert len(again) == len(rows), [r for r in again if r["id"] > rows[-1]["id"]]
    assert all(_identity(inbox / k.name) == before[k.name] for k in in_place)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


# --- destinations that refuse ------------------------------------------------------------------

def _left_in_place_with_reason(daemon: TrialDaemon, path: Path, words: str) -> None:
    """One log line and one journal row say why `path` stayed, naming `words`."""
    logged = [e["reason"] for e in daemon.find("left in place", path=str(path))]
    assert logged and all(words in r for r in logged), (path.name, logged)
    rows = [r for r in journal_entries(daemon.journal) if r["source"] == path and r["status"] == "failed"]
    assert rows and words in rows[-1]["detail"], (path.name, rows)


def test_read_only_and_unwritable_destinations_leave_photos_in_place(tmp_path, daemons, read_only_bind,
                                                                      no_capabilities):
    """other/ is a read-only mount and rejected/ a folder without write permission: what would go
    there stays in the inbox with the reason, aurora/ still fills, and once the folders are
    writable again a restart files the rest."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    (dest / OTHER).mkdir(parents=True)
    (dest / REJECTED).mkdir()
    read_only_bind(dest / OTHER)
    (dest / REJECTED).chmod(0o555)
    daemon = daemons([inbox], dest, prefix=no_capabilities).start()
    grey, green, text = photo(20, green=False), photo(21, green=True), b"not a photo\n"
    (inbox / "grey.jpg").write_bytes(grey)
    (inbox / "grey.xmp").write_bytes(b"<x:xmpmeta/>")
    (inbox / "notes.txt").write_bytes(text)
    (inbox / "green.jpg").write_bytes(green)
    wait_until(lambda: (dest / AURORA / "green.jpg").exists(), 20, "green.jpg filed while other/ refuses")
    wait_until(lambda: daemon.find("left in place", path=str(inbox / "notes.txt"))
               and daemon.find("left in place", path=str(inbox / "grey.jpg")), 20, "both refusals logged")
    assert daemon.stop()[0] == 0
    _left_in_place_with_reason(daemon, inbox / "grey.jpg", "read-only file system")
    _left_in_place_with_reason(daemon, inbox / "notes.txt", "permission denied")
    assert (inbox / "grey.jpg").read_bytes() == grey and (inbox / "notes.txt").read_bytes() == text
    assert (inbox / "grey.xmp").exists(), "the sidecar stays with its photo"
    assert not [p for p in (dest / REJECTED).iterdir()] and not [p for p in (dest / OTHER).iterdir()]
    subprocess.run(["umount", "-l", str(dest / OTHER)], check=True)
    (dest / REJECTED).chmod(0o755)
    daemon.start()
    wait_for_none(lambda: [p for p in inbox.iterdir()], 20, "the rest filed once the folders are writable")
    assert daemon.stop()[0] == 0
    assert (dest / OTHER / "grey.jpg").read_bytes() == grey and (dest / OTHER / "grey.xmp").exists()
    assert (dest / REJECTED / "notes.txt").read_bytes() == text


def test_a_full_destination_leaves_the_photo_whole_and_no_partial_copy(tmp_path, daemons, tmpfs):
    """The output root is a 256 KiB tmpfs (so every move is a copy): a 400 KB photo hits ENOSPC
    mid-copy, stays in the inbox with the reason, leaves no temporary behind, and small photos
    are still filed."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dest = tmpfs(tmp_path / "small-fs", "256k")
    big = noise_jpeg(640, 480, seed=9, quality=95)
    assert len(big) > 300_000
    daemon = daemons([inbox], dest).start()
    (inbox / "big.jpg").write_bytes(big)
    wait_until(lambda: daemon.find("left in place", path=str(inbox / "big.jpg")), 20, "the full disk reported")
    (inbox / "small.jpg").write_bytes(photo(22, green=True))
    wait_until(lambda: (dest / AURORA / "small.jpg").exists(), 20, "a small photo filed after the ENOSPC")
    assert daemon.stop()[0] == 0
    _left_in_place_with_reason(daemon, inbox / "big.jpg", "no space left on device")
    assert (inbox / "big.jpg").read_bytes() == big
    assert [p.name for p in dest.rglob("*") if p.is_file()] == ["small.jpg"], "a partial copy was left"
