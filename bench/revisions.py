"""`python -m bench.revisions REV [REV ...]`: what a change to the daemon bought, side by side.

Each git revision's `daemon/` is extracted to a temporary folder and imported from there (as
`nordlys.daemon`, through PYTHONPATH) by a fresh process that sorts the same camera JPEGs with
the bundled model, exactly as the main benchmark's nordlys contender does; the decode-bound
limit runs in its own process after every round. Revisions take turns within each round, so a
drifting machine load hits all of them alike; the table gives medians over rounds. "." is the
working tree. docs/PERFORMANCE.md quotes it for each speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BUNDLED = REPO / "daemon" / "models" / "default.onnx"


def extract(rev: str, into: Path) -> Path:
    """The revision's daemon/ as an importable nordlys.daemon under `into`; "." is the working tree."""
    if rev == ".":
        return REPO
    package = into / rev / "nordlys"
    package.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "daemon"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(package)], input=archive, check=True)
    return package.parent


def measure(root: Path, what: str, photos: Sequence[Path], work: Path, burst: int = 0) -> dict:
    """One sort, daemon burst or decode limit in a fresh process that imports nordlys.daemon from `root`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    args = [sys.executable, "-m", "bench.revisions", "--child", what, "--work", str(work), "--burst", str(burst),
            *map(str, photos)]
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(what: str, photos: list[Path], work: Path, burst: int = 0) -> dict:
    from bench.endtoend import decode_limit, sort_with_nordlys
    from bench.staging import stage

    if what == "limit":
        return decode_limit(photos)
    if what == "daemon":  # `nordlys watch` inherits this process's PYTHONPATH, so the revision's daemon runs
        from bench.daemon_latency import daemon_bench

        return daemon_bench(photos, work / "daemon", latency_photos=1, burst=burst)["burst"]
    stage(photos, work / "in")
    result = sort_with_nordlys(work / "in", work / "out", work / "journal.sqlite", model=BUNDLED)
    import nordlys.daemon

    result["imported_from"] = str(Path(nordlys.daemon.__path__[0]))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__.splitlines()[0])
    p.add_argument("revs", nargs="*", help="git revisions, oldest first; '.' is the working tree")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--frame", default="12mp", choices=["12mp", "24mp"])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--data", type=Path, default=SHARED / "data")
    p.add_argument("--cache", type=Path, default=REPO / "bench" / ".cache")
    p.add_argument("--burst", type=int, default=0, help="also run a daemon burst of this many photos per revision")
    p.add_argument("--child", choices=["sort", "limit", "daemon"], help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # internal: the positional arguments are the photos
        print(json.dumps(child(args.child, [Path(x) for x in args.revs], args.work, args.burst)))
        return 0
    if not args.revs:
        p.error("give one or more git revisions (or '.')")
    from bench.photos import camera_photos

    photos = camera_photos(args.data, args.cache / "photos", frame=args.frame, count=args.images)
    runs: dict[str, list[dict]] = {rev: [] for rev in args.revs}
    bursts: dict[str, list[dict]] = {rev: [] for rev in args.revs}
    limits: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="revisions-", dir=args.cache) as tmp:
        roots = {rev: extract(rev, Path(tmp) / "src") for rev in args.revs}
        for _ in range(args.rounds):
            for rev in args.revs:
                with tempfile.TemporaryDirectory(dir=tmp) as work:
                    runs[rev].append(measure(roots[rev], "sort", photos, Path(work)))
                if args.burst:
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        bursts[rev].append(measure(roots[rev], "daemon", photos, Path(work), args.burst))
            limits.append(measure(REPO, "limit", photos, Path(tmp)))
    print(f"{len(photos)} photos of {args.frame}, {args.rounds} rounds, bundled model; medians (range over rounds)\n")
    limit_rate = statistics.median(r["images_per_s"] for r in limits)
    print("| revision | photos/s | CPU ms per photo | % of the decode-bound limit |\n|---|---|---|---|")
    for rev, rs in runs.items():
        pct = [100 * r["images_per_s"] / lim["images_per_s"] for r, lim in zip(rs, limits)]
        print(f"| {rev} | {statistics.median(r['images_per_s'] for r in rs):.1f} | "
              f"{statistics.median(r['cpu_ms_per_image'] for r in rs):.1f} | "
              f"{statistics.median(pct):.1f} ({min(pct):.1f}-{max(pct):.1f}) |")
    print(f"| decode-bound limit | {limit_rate:.1f} | "
          f"{statistics.median(r['cpu_ms_per_image'] for r in limits):.1f} | 100 |")
    if args.burst:
        print(f"\n`nordlys watch`, bursts of {args.burst} photos written into its inbox\n")
        print("| revision | photos/s | daemon CPU ms per photo |\n|---|---|---|")
        for rev, bs in bursts.items():
            print(f"| {rev} | {statistics.median(b['images_per_s'] for b in bs):.1f} | "
                  f"{statistics.median(b['daemon_cpu_ms_per_image'] for b in bs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
