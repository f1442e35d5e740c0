"""Measure `classify --engine ray` against plain `classify` (docs/PERFORMANCE.md, "Scaling out").

    .venv/bin/python -m tests.cluster.measure_scaling ../shared/data/images --photos 600

Each run is the real command in a subprocess, timed from start to exit, with the bundled model.
Every engine is run on all N photos and on 1 photo: the 1-photo run is the fixed cost (Python,
model load; for Ray also ray.init and the actors), and the difference over N-1 photos is the cost
per file. Plain classify on one CPU (taskset) is the fair partner of one Ray worker.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nordlys.daemon.scan import scan_inbox


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args[:8])} ...: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--photos", type=int, default=600)
    args = parser.parse_args()
    photos = [str(p) for p in scan_inbox(args.folder, recursive=True, ignore=[]).files
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")][:args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CONFIG_HOME": tmp, "XDG_STATE_HOME": tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        cli = [sys.executable, "-m", "nordlys.daemon", "classify"]
        engines = {
            "classify, 2 CPUs": lambda files: cli + files,
            "classify, 1 CPU (taskset)": lambda files: ["taskset", "-c", "0"] + cli + files,
            "ray, 1 worker": lambda files: cli + ["--engine", "ray", "--workers", "1", "--out", fresh(tmp)] + files,
            "ray, 2 workers": lambda files: cli + ["--engine", "ray", "--workers", "2", "--out", fresh(tmp)] + files,
        }
        print(f"{len(photos)} photos from {args.folder}, load average {os.getloadavg()[0]:.1f}")
        print("| engine | 1 photo (s) | N photos (s) | photos/s over N | per photo beyond the fixed cost (ms) |")
        print("|---|---|---|---|---|")
        for name, command in engines.items():
            one = timed(command(photos[:1]), env)
            many = timed(command(photos), env)
            per = (many - one) / (len(photos) - 1)
            print(f"| {name} | {one:.1f} | {many:.1f} | {len(photos) / many:.1f} | {per * 1000:.1f} |", flush=True)


def fresh(tmp: str) -> str:
    """A new scores file per run: a resumed run would score nothing."""
    return str(Path(tempfile.mkdtemp(dir=tmp)) / "scores.parquet")


if __name__ == "__main__":
    main()
