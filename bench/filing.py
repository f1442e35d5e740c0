"""`python -m bench.filing [--dir PATH]`: what filing costs per photo, and how many fsyncs.

Files small photos with nordlys's own mover and journal, twice: one group at a time
(`move_group`: two journal transactions per photo, as before the batch journal) and in batches
(`plan_group` + `move_groups`, as the pipeline files now). Counts journal commits (each is an
fsync of SQLite's write-ahead log, synchronous=FULL) and directory fsyncs (the mover's, which
make a new name durable before the old one goes). The counts do not depend on the machine; the
milliseconds do: point --dir at the disk your photos live on (a USB disk, an SD card) to see
what a commit costs there. No model, no decoding: filing alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from nordlys.daemon import mover
from nordlys.daemon.grouping import group_files
from nordlys.daemon.journal import Journal
from nordlys.daemon.logs import configure_logging
from nordlys.daemon.placement import Verdict

VERDICT = Verdict("aurora", 0.9, "", "bench-filing")


class CountingJournal(Journal):
    """The real journal, counting its write transactions."""

    commits: Counter

    def _tx(self):  # type: ignore[override]
        self.commits["commits"] += 1
        return super()._tx()


def _counting(counter: Counter):
    """mover._fsync_dir, counting its calls (each is one directory fsync)."""
    real = mover._fsync_dir

    def fsync_dir(folder: Path) -> None:
        counter["fsyncs"] += 1
        real(folder)
    return real, fsync_dir


def file_photos(root: Path, photos: int, batch: int) -> dict:
    """ms per photo, commits and directory fsyncs per photo, filing `photos` files `batch` at a time."""
    inbox, out = root / "in", root / "out"
    inbox.mkdir(parents=True)
    for i in range(photos):
        (inbox / f"IMG_{i:05d}.jpg").write_bytes(os.urandom(4096))
    groups = group_files(sorted(inbox.iterdir()))
    counts: Counter = Counter()
    journal = CountingJournal.open(root / "journal.sqlite")
    journal.commits = counts
    run = journal.start_run("bench-filing")
    real, counting = _counting(counts)
    counts.clear()
    mover._fsync_dir = counting
    try:
        started = time.perf_counter()
        for i in range(0, len(groups), batch):
            chunk = groups[i:i + batch]
            if batch == 1:
                mover.move_group(chunk[0], out, VERDICT, journal=journal, run_id=run)
            else:
                taken: set[Path] = set()
                mover.move_groups([mover.plan_group(g, out, VERDICT, taken=taken) for g in chunk],
                                  journal=journal, run_id=run)
        seconds = time.perf_counter() - started
    finally:
        mover._fsync_dir = real
        journal.close()
    return {"ms_per_photo": 1000 * seconds / photos, "commits_per_photo": counts["commits"] / photos,
            "dir_fsyncs_per_photo": counts["fsyncs"] / photos}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.filing", description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="where to make the inbox, outputs and journal (default: a temp folder)")
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--batch", type=int, default=8, help="photos per batch, as model.batch_size")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    configure_logging(level="warning")
    rows: dict[str, list[dict]] = {"one group at a time": [], f"batches of {args.batch}": []}
    for _ in range(args.rounds):
        for name, batch in zip(rows, (1, args.batch)):
            root = Path(tempfile.mkdtemp(prefix="nordlys-bench-filing-", dir=args.dir))
            try:
                rows[name].append(file_photos(root, args.photos, batch))
            finally:
                shutil.rmtree(root, ignore_errors=True)
    print(f"{args.photos} photos filed, {args.rounds} rounds, in {args.dir or tempfile.gettempdir()}\n")
    print("| filing | ms per photo (best round) | journal commits per photo | directory fsyncs per photo |")
    print("|---|---|---|---|")
    for name, results in rows.items():
        best = min(results, key=lambda r: r["ms_per_photo"])
        print(f"| {name} | {best['ms_per_photo']:.2f} | {best['commits_per_photo']:.3f} | {best['dir_fsyncs_per_photo']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
