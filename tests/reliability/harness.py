"""What every reliability trial shares: photo bursts with known bytes, the real daemon, the invariant.

The daemon is `tests.daemon.test_watch.Daemon` (the real `python -m nordlys.daemon watch` in a
subprocess with its JSON log collected); `TrialDaemon` only adds what trials need on top: a start
that does not wait for "ready" (so a kill can land in start-up recovery), and the process's RSS.

The invariant, checked after every trial from the disk and the journal alone:
- every input's sha256 is found exactly once across the inbox and the output root (sidecars too);
- nothing else appeared there (no temporary copy, no half-written file);
- each file kept its name and went to the folder its content calls for;
- the journal agrees with the disk: no move left at "intent", every "done" row names a file that
  is there with the journaled sha256, and every filed file has exactly one such row.
"""

from __future__ import annotations

import io
import os
import random
import sqlite3
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from PIL import Image

from tests.daemon.test_watch import Daemon, files_under, photo, sha
from tests.waiting import DEADLINE, Gate, wait_until

__all__ = ["DEADLINE", "Burst", "Findings", "Gate", "TrialDaemon", "check_invariant", "files_under", "journal_entries",
           "make_burst", "photo", "sha", "table", "wait_for_none", "wait_until", "write_burst"]

PHOTO_SIZE = (320, 240)  # pixels: small enough for bursts of thousands, big enough to be a real JPEG
AURORA, OTHER, REJECTED = "aurora", "other", "rejected"


@dataclass
class Burst:
    """Files to drop into an inbox: relative name -> bytes, and the folder each must end in."""

    files: dict[str, bytes] = field(default_factory=dict)
    folder: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, data: bytes, folder: str) -> None:
        self.files[name], self.folder[name] = data, folder


def make_burst(photos: int, *, seed: int = 0, first: int = 0, sidecar_every: int = 10,
               broken_every: int = 50) -> Burst:
    """`photos` unique JPEGs (every third green, so aurora), an .xmp sidecar for every
    `sidecar_every`-th and a truncated JPEG (rejected) for every `broken_every`-th.

    first: number of the first photo, so successive bursts never share bytes or names.
    """
    rng = random.Random(seed)
    burst = Burst()
    for i in range(first, first + photos):
        green = i % 3 == 0
        data = photo(i, green=green, size=PHOTO_SIZE)
        burst.add(f"IMG_{i:05d}.jpg", data, AURORA if green else OTHER)
        if sidecar_every and i % sidecar_every == 0:
            burst.add(f"IMG_{i:05d}.xmp", f'<x:xmpmeta id="{i}"/>\n'.encode(), AURORA if green else OTHER)
        if broken_every and i % broken_every == 0:
            whole = barcode_jpeg(i)
            burst.add(f"CUT_{i:05d}.jpg", whole[: rng.randrange(len(whole) // 2, len(whole) - 20)], REJECTED)
    return burst


def barcode_jpeg(i: int) -> bytes:
    """A JPEG whose first row of blocks spells i in black and white: photos made by `photo` differ
    only where their marker block is, so two cut short before it would be the same bytes."""
    image = Image.new("RGB", PHOTO_SIZE, (120, 120, 120))
    for bit in range(PHOTO_SIZE[0] // 8):
        if i >> bit & 1:
            image.paste((255, 255, 255), (bit * 8, 0, bit * 8 + 8, 8))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_burst(inbox: Path, burst: Burst, *, rng: random.Random, rename_share: float = 0.2) -> None:
    """Write every file as fast as possible; a share of them the way Syncthing does (a hidden
    temporary name, then a rename into place)."""
    for name, data in burst.files.items():
        target = inbox / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if rng.random() < rename_share:
            temp = target.parent / f".syncthing.{target.name}.tmp"
            temp.write_bytes(data)
            os.rename(temp, target)
        else:
            target.write_bytes(data)


def noise_jpeg(width: int, height: int, *, seed: int = 0, quality: int = 95) -> bytes:
    """A JPEG that compresses badly: random pixels, for files that must be large."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def wait_for_none(pending: Callable[[], list], timeout: float = DEADLINE, what: str = "nothing pending") -> None:
    """Wait until `pending()` is empty; on time-out, say which items were still pending. The
    deadline is at least DEADLINE, as for wait_until."""
    limit = max(timeout, DEADLINE)
    deadline = time.monotonic() + limit
    while (left := pending()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"timed out after {limit:.0f} s waiting for {what}; still pending: {left[:20]!r}"


class TrialDaemon(Daemon):
    """The test_watch daemon plus what trials need."""

    def spawn(self) -> "TrialDaemon":
        """Start without waiting for "ready", so a kill can land in start-up recovery too."""
        return self.start(wait_ready=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        """Resident memory of the daemon process, from /proc (kibibytes)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.proc.pid}")


# --- the invariant ----------------------------------------------------------------------------

@dataclass
class Findings:
    """What the disk and the journal say after a trial; all counts but `checked` must be 0."""

    checked: int = 0  # input files whose bytes were looked for
    lost: int = 0  # inputs found nowhere
    duplicated: int = 0  # extra copies of an input
    altered: int = 0  # files whose bytes match no input (half-written copies, temporaries)
    stray: list[Path] = field(default_factory=list)  # files that appeared outside inbox, outputs and state
    misplaced: int = 0  # an input in the wrong folder, or under another name
    waiting: int = 0  # inputs still in the inbox (never expected after a drained trial)
    journal: list[str] = field(default_factory=list)  # disagreements between journal and disk

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.altered or self.misplaced or self.waiting
                    or self.journal or self.stray)

    def problems(self) -> str:
        counts = {k: getattr(self, k) for k in ("lost", "duplicated", "altered", "misplaced", "waiting")}
        lines = [", ".join(f"{k} {v}" for k, v in counts.items())] + self.journal[:20]
        lines += [f"stray file: {path}" for path in self.stray[:20]]
        return "\n".join(lines)


def regular_files(*roots: Path) -> list[Path]:
    """Every regular file under the roots, hidden ones too (a leftover temporary counts)."""
    found = []
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                try:
                    if stat.S_ISREG(os.lstat(Path(folder) / name).st_mode):
                        found.append(Path(folder) / name)
                except FileNotFoundError:  # moved by the running daemon while we looked
                    continue
    return found


def journal_entries(journal: Path) -> list[dict]:
    """Every journal row as a dict (paths decoded the way the daemon stored them)."""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM entries ORDER BY id")]
    for row in rows:
        for key in ("source", "dest"):
            value = row[key]
            row[key] = Path(os.fsdecode(value) if isinstance(value, bytes) else value)
    return rows


def check_invariant(burst: Burst, inbox: Path, dest: Path, journal: Path, *,
                    folder_names: dict[str, str] | None = None, root: Path | None = None) -> Findings:
    """Compare the disk and the journal with what was written (see the module doc). root: a
    folder holding inbox, outputs and the daemon's state, in which nothing else may appear."""
    names = folder_names or {AURORA: AURORA, OTHER: OTHER, REJECTED: REJECTED}
    expected = {sha(data): name for name, data in burst.files.items()}
    assert len(expected) == len(burst.files), "a burst must not hold the same bytes twice"
    found: dict[str, list[Path]] = {}
    findings = Findings(checked=len(burst.files))
    for path in regular_files(inbox, dest):
        found.setdefault(sha(path.read_bytes()), []).append(path)
    for digest, name in expected.items():
        places = found.get(digest, [])
        findings.lost += not places
        findings.duplicated += max(0, len(places) - 1)
        for place in places:
            if place.is_relative_to(inbox) and not place.is_relative_to(dest):
                findings.waiting += 1
            elif place != dest / names[burst.folder[name]] / name:
                findings.misplaced += 1
                findings.journal.append(f"{name} ({burst.folder[name]}) is at {place}")
    findings.altered = sum(len(paths) for digest, paths in found.items() if digest not in expected)
    findings.journal += journal_disagreements(journal, found, dest)
    if root is not None:
        findings.stray = stray_files(root, inbox, dest, journal)
    return findings


def stray_files(root: Path, inbox: Path, dest: Path, journal: Path) -> list[Path]:
    """Files under root that are neither in the inbox or outputs, nor the journal (with its WAL
    and shared-memory files), nor a config file the test wrote."""
    return [p for p in regular_files(root)
            if not (p.is_relative_to(inbox) or p.is_relative_to(dest) or p.suffix in (".yaml", ".onnx")
                    or (p.parent == journal.parent and p.name.startswith(journal.name)))]


def journal_disagreements(journal: Path, found: dict[str, list[Path]], dest: Path) -> list[str]:
    """Where the journal and the disk disagree (`found`: sha256 -> the files that hold it)."""
    problems = []
    where = {path: digest for digest, paths in found.items() for path in paths}
    done: Counter[Path] = Counter()
    for row in journal_entries(journal):
        if row["status"] == "intent":
            problems.append(f"entry {row['id']} still at intent: {row['source']} -> {row['dest']}")
        elif row["status"] == "done":
            done[row["dest"]] += 1
            if where.get(row["dest"]) != row["sha256"]:
                problems.append(f"entry {row['id']} says {row['dest']} holds {row['sha256'][:12]}, "
                                f"the disk says {str(where.get(row['dest']))[:12]}")
    problems += [f"{path} has {n} 'done' entries" for path, n in done.items() if n > 1]
    return problems + [f"{path} was filed without a 'done' entry" for path in where
                       if path.is_relative_to(dest) and path not in done]


# --- figures ----------------------------------------------------------------------------------

def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table, so the printed figures can be pasted into docs/RELIABILITY.md."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
