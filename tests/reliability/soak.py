"""Soak: thousands of photos through one running daemon, its resident memory sampled throughout.

    python -m tests.reliability.soak --photos 5000

Photos (with sidecars and truncated ones, as in the crash trials) arrive in waves of `wave`,
each written as fast as possible once the previous one is filed. The daemon's RSS (VmRSS from
/proc) is sampled every SAMPLE_SECONDS; growth is measured from the end of the warm-up (the
first `warmup` photos: model, caches and allocator pools fill up then) to the end, and must stay
under 10 %. Afterwards the invariant is checked as in the crash trials. Prints a Markdown table;
exit status 1 when memory grew by 10 % or more, or any file was lost, duplicated or altered.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tests.reliability.harness import (
    Findings, TrialDaemon, check_invariant, make_burst, regular_files, table, wait_for_none, write_burst,
)
from tests.tiny_models import make_green_model

SAMPLE_SECONDS = 0.25  # RSS sampling period
MAX_GROWTH = 0.10  # allowed RSS growth after the warm-up, as a fraction


@dataclass
class SoakResult:
    photos: int
    findings: Findings
    samples: list[tuple[int, int]] = field(default_factory=list)  # (photos written so far, RSS KiB)
    rss_ready: int = 0  # KiB, once the daemon said "ready"
    rss_warm: int = 0  # KiB, when the warm-up photos were filed
    rss_end: int = 0  # KiB, when the last photo was filed
    seconds: float = 0.0

    @property
    def growth(self) -> float:
        return (self.rss_end - self.rss_warm) / self.rss_warm if self.rss_warm else float("inf")

    @property
    def rss_peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    @property
    def ok(self) -> bool:
        return self.findings.ok and self.growth < MAX_GROWTH


def _sample(daemon: TrialDaemon, written: list[int], samples: list[tuple[int, int]], stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_SECONDS):
        samples.append((written[0], daemon.rss_kib()))


def run_soak(root: Path, model: Path, *, photos: int, wave: int, warmup: int, seed: int = 0) -> SoakResult:
    """Feed `photos` photos in waves through one daemon in `root` (see the module doc)."""
    inbox, dest = root / "inbox", root / "sorted"
    inbox.mkdir(parents=True)
    burst = make_burst(photos, seed=seed)
    daemon = TrialDaemon(root, inboxes=[inbox], dest=dest, model=model, watch={"reconcile_interval": 60})
    names = list(burst.files)
    waves = [names[i:i + wave] for i in range(0, len(names), wave)]
    written, samples, stop = [0], [], threading.Event()
    result = SoakResult(photos, Findings(), samples)
    started = time.monotonic()
    rng = random.Random(seed)
    try:
        daemon.start()
        result.rss_ready = daemon.rss_kib()
        sampler = threading.Thread(target=_sample, args=(daemon, written, samples, stop), name="soak-rss")
        sampler.start()
        for chunk in waves:
            part = make_burst(0)
            for name in chunk:
                part.add(name, burst.files[name], burst.folder[name])
            write_burst(inbox, part, rng=rng)
            wait_for_none(lambda: regular_files(inbox), 120, "a wave to be filed")
            written[0] += sum(1 for n in chunk if n.endswith(".jpg") and n.startswith("IMG_"))
            rss = daemon.rss_kib()
            samples.append((written[0], rss))
            if not result.rss_warm and written[0] >= warmup:
                result.rss_warm = rss
        result.rss_end = daemon.rss_kib()
        stop.set()
        sampler.join()
        code, _ = daemon.stop()
        if code != 0:
            raise AssertionError(f"the daemon exited with {code} after SIGTERM")
    finally:
        stop.set()
        daemon.kill()
    result.findings = check_invariant(burst, inbox, dest, daemon.journal)
    result.seconds = time.monotonic() - started
    return result


HEADER = ("photos", "files checked", "lost", "duplicated", "altered", "RSS at ready (MiB)",
          "RSS after warm-up (MiB)", "RSS peak (MiB)", "RSS at end (MiB)", "growth after warm-up", "seconds")


def figures(r: SoakResult, warmup: int) -> str:
    f = r.findings
    mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
    return table(HEADER, [(r.photos, f.checked, f.lost, f.duplicated, f.altered, mib(r.rss_ready),
                           f"{mib(r.rss_warm)} (at {warmup} photos)", mib(r.rss_peak), mib(r.rss_end),
                           f"{r.growth * 100:+.1f} %", round(r.seconds))])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=5000, help="photos in all (default 5000)")
    parser.add_argument("--wave", type=int, default=250, help="photos written at once (default 250)")
    parser.add_argument("--warmup", type=int, default=500, help="photos before the baseline RSS (default 500)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the folders go (default: a temp dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nordlys-soak-"))
    model = make_green_model(workdir / "green.onnx")
    print(f"soak: {args.photos} photos in waves of {args.wave}, warm-up {args.warmup}, in {workdir}", flush=True)
    result = run_soak(workdir / "run", model, photos=args.photos, wave=args.wave, warmup=args.warmup)
    print(figures(result, args.warmup))
    step = max(1, len(result.samples) // 20)
    print("\nRSS samples (photos written, MiB): " + ", ".join(
        f"{n}: {rss / 1024:.1f}" for n, rss in result.samples[::step]))
    if not result.findings.ok:
        print(result.findings.problems())
    if result.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
