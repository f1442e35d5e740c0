"""Crash trials: SIGKILL the daemon at random moments of a photo burst, restart it, lose nothing.

    python -m tests.reliability.crash_trials --trials 20 --photos 1000

One trial: a fresh inbox and output root; a burst of `photos` unique JPEGs (plus an .xmp sidecar
for every tenth and a truncated JPEG for every fiftieth) written as fast as possible while the
daemon runs; `kills` times the daemon is killed with SIGKILL and started again at once. The first
kill lands mid-move whatever the machine's speed: the unlink gate (daemon/faults.py) lets a random
number of files through and holds the next one with its new name made and its old one not yet
removed. The others come after a random delay (which may land in start-up, in crash recovery,
mid-batch or mid-move); then it runs
until the inbox is empty, is stopped with SIGTERM, and `harness.check_invariant` compares the
disk and the journal with what was written. A kill ends the process only, not the machine, so
what it tests is the journal's intents and recovery, not the disk's write-back cache.

Prints one row per trial and a totals row (Markdown); exit status 1 when any trial found a file
lost, duplicated, altered or misplaced, or the journal disagreeing with the disk.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tests.reliability.harness import (
    Findings, Gate, TrialDaemon, check_invariant, make_burst, regular_files, table, wait_until, write_burst,
)
from tests.tiny_models import make_green_model

PHOTOS_PER_SECOND = 500  # about the daemon's rate here: kills spread over the burst, most while it runs
DRAIN_SECONDS = 120.0  # after the last restart, the time the rest of the burst may take at most


@dataclass
class TrialResult:
    seed: int
    findings: Findings
    output_fs: str = "same as inbox"  # or "tmpfs": every move is then a copy with a temporary name
    kills: int = 0
    kills_mid_burst: int = 0  # kills that found photos still waiting in the inbox
    kills_before_ready: int = 0  # kills during start-up (model load, recovery, first scan)
    recovered: int = 0  # interrupted moves finished or rolled back at a restart
    errors: list[str] = field(default_factory=list)  # error-level log lines, and a bad exit status
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.findings.ok and not self.errors


def _kill(daemon: TrialDaemon, inbox: Path, result: TrialResult) -> None:
    """SIGKILL now, and note what the kill interrupted."""
    result.kills += 1
    result.kills_mid_burst += bool(regular_files(inbox))
    result.kills_before_ready += not daemon.find("ready")
    daemon.kill()
    _collect(daemon, result)


def _collect(daemon: TrialDaemon, result: TrialResult) -> None:
    """Recoveries and errors of the run that just ended (start() clears the events)."""
    result.recovered += len(daemon.find("recovered"))
    result.errors += [line.strip() for line in daemon.lines if '"level": "error"' in line]


def run_trial(root: Path, model: Path, *, photos: int, kills: int, seed: int, other_fs: bool = False) -> TrialResult:
    """One trial in `root` (see the module doc). other_fs: the output root is a tmpfs of its own
    when one can be mounted (root only), so moves are copies."""
    rng = random.Random(seed)
    inbox, dest = root / "inbox", root / "sorted"
    inbox.mkdir(parents=True)
    mounted = other_fs and _mount_tmpfs(dest)
    burst = make_burst(photos, seed=seed)
    gate = Gate(root / "gates", "unlink").close(after=rng.randrange(photos // 2))
    daemon = TrialDaemon(root, inboxes=[inbox], dest=dest, model=model, env=Gate.env(gate))
    writer = threading.Thread(target=write_burst, args=(inbox, burst), kwargs={"rng": random.Random(seed + 1)},
                              name="trial-writer")
    result = TrialResult(seed, Findings(), output_fs="tmpfs" if mounted else "same as inbox")
    started = time.monotonic()
    try:
        daemon.spawn()
        writer.start()
        for k in range(kills):
            if k == 0:
                daemon.wait_for("paused", stage="unlink")
            else:
                time.sleep(rng.uniform(0.0, 0.5 + photos / PHOTOS_PER_SECOND))
            _kill(daemon, inbox, result)
            gate.open()
            daemon.spawn()
        writer.join()
        daemon.wait_for("ready", 60)
        try:
            wait_until(lambda: not regular_files(inbox), DRAIN_SECONDS, "the inbox to be drained")
        except AssertionError as exc:  # counted as "misplaced" (still waiting) by the invariant below
            result.errors.append(str(exc).splitlines()[0])
        code, _ = daemon.stop()
        _collect(daemon, result)
        if code != 0:
            result.errors.append(f"exit status {code} after SIGTERM")
        result.findings = check_invariant(burst, inbox, dest, daemon.journal, root=root)
    finally:
        daemon.kill()
        if writer.is_alive():
            writer.join()
        if mounted:
            subprocess.run(["umount", "-l", str(dest)], capture_output=True)
    result.seconds = time.monotonic() - started
    return result


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "nordlys-trial", str(folder)],
                          capture_output=True)
    return done.returncode == 0


def run_trials(workdir: Path, model: Path, *, trials: int, photos: int, kills: int, seed: int,
               report: bool = False) -> list[TrialResult]:
    """`trials` trials, each in its own folder under workdir; a passing trial's folder is removed.
    Every other trial puts the output root on a tmpfs of its own, where one can be mounted."""
    results = []
    for n in range(trials):
        root = workdir / f"trial-{n:03d}"
        result = run_trial(root, model, photos=photos, kills=kills, seed=seed + n, other_fs=n % 2 == 1)
        results.append(result)
        if result.ok:
            shutil.rmtree(root, ignore_errors=True)
        if report:
            print(_row(n, result) if result.ok else f"trial {n} FAILED (kept in {root}): "
                  f"{result.findings.problems()}\n" + "\n".join(result.errors[:10]), flush=True)
    return results


HEADER = ("trial", "seed", "output root", "kills (mid-burst, in start-up)", "moves recovered", "files checked",
          "lost", "duplicated", "altered or stray", "misplaced", "journal disagreements", "error lines", "seconds")


def _row(n: int | str, r: TrialResult) -> str:
    return table(HEADER, [_cells(n, r)]).splitlines()[-1]


def _cells(n: int | str, r: TrialResult) -> list[object]:
    f = r.findings
    return [n, r.seed, r.output_fs, f"{r.kills} ({r.kills_mid_burst}, {r.kills_before_ready})", r.recovered,
            f.checked, f.lost, f.duplicated, f.altered + len(f.stray), f.misplaced + f.waiting, len(f.journal),
            len(r.errors), round(r.seconds, 1)]


def figures(results: Sequence[TrialResult]) -> str:
    """The totals as a Markdown table (the figures docs/RELIABILITY.md quotes)."""
    kinds = sorted({r.output_fs for r in results})
    total = TrialResult(seed=results[0].seed if results else 0, findings=Findings(), output_fs=" / ".join(kinds))
    for r in results:
        f, t = r.findings, total.findings
        total.kills += r.kills
        total.kills_mid_burst += r.kills_mid_burst
        total.kills_before_ready += r.kills_before_ready
        total.recovered += r.recovered
        total.errors += r.errors
        total.seconds += r.seconds
        t.checked, t.lost, t.duplicated = t.checked + f.checked, t.lost + f.lost, t.duplicated + f.duplicated
        t.altered, t.misplaced, t.waiting = t.altered + f.altered, t.misplaced + f.misplaced, t.waiting + f.waiting
        t.journal += f.journal
        t.stray += f.stray
    return table(HEADER, [_cells(f"all {len(results)}", total)])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.crash_trials", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    parser.add_argument("--photos", type=int, default=1000, help="photos per burst (default 1000)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="first trial's seed (default: random)")
    parser.add_argument("--workdir", type=Path, default=None, help="where trial folders go (default: a temp dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nordlys-crash-"))
    model = make_green_model(workdir / "green.onnx")
    print(f"{args.trials} trials of {args.photos} photos, {args.kills} SIGKILLs each, first seed {seed}, "
          f"in {workdir}\n", flush=True)
    print(table(HEADER, []), flush=True)
    results = run_trials(workdir, model, trials=args.trials, photos=args.photos, kills=args.kills, seed=seed,
                         report=True)
    print("\n" + figures(results))
    failed = [r for r in results if not r.ok]
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
