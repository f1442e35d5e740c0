"""The daemon as a service runs it: `nordlys watch` in a subprocess, photos written into its inbox.

Three figures:
- latency: a photo is written and closed on an idle daemon; the time until it appears in its
  target folder (polled every 2 ms) is the close -> moved time;
- burst: many photos written back to back, as a camera import does; photos per second from the
  first write to the last move;
- memory: the daemon's peak resident set (VmHWM in /proc/PID/status) over all of it, and its
  resident set when idle after start-up.
The daemon runs with the default config (settle, batch wait, threads), only the folders set.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import yaml

from bench.machine import cpu_seconds

FOLDERS = ("aurora", "other", "review", "rejected")
POLL = 0.002  # seconds between looks for a moved photo
IDLE_GAP = 0.4  # seconds between latency photos, so every one meets an idle daemon
MOVE_TIMEOUT = 60.0  # seconds a photo may take before the run is declared broken


class MemoryWatch:
    """Samples VmRSS every 20 ms on a thread; VmHWM (the kernel's own peak) is read at the end."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_rss_kb = pid, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def status(self) -> dict[str, int]:
        fields = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        return fields

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.peak_rss_kb = max(self.peak_rss_kb, self.status().get("VmRSS", 0))
            except OSError:
                return

    def __enter__(self) -> "MemoryWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def start_daemon(work: Path, *, model: Path | None) -> tuple[subprocess.Popen, Path, Path, Path]:
    """`nordlys watch` on work/inbox -> work/sorted, logging JSON to work/daemon.log; waits for ready."""
    inbox, dest, log = work / "inbox", work / "sorted", work / "daemon.log"
    inbox.mkdir(parents=True)
    config = {"inboxes": [str(inbox)], "output_root": str(dest), "log": {"format": "json"},
              "journal": str(work / "journal.sqlite")}
    if model is not None:
        config["model"] = {"path": str(model)}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nordlys.daemon", "watch", "--config", str(work / "config.yaml")],
                                stdout=subprocess.DEVNULL, stderr=out, env=env)
    deadline = time.monotonic() + 120
    while b'"ready"' not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"nordlys watch did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return proc, inbox, dest, log


def write_photo(path: Path, data: bytes) -> float:
    """Write and close like a camera import or an upload; returns the monotonic time of the close.
    The bytes get a JPEG comment naming the file, so photos reused from a small set are still
    unique: the daemon leaves a photo whose bytes it filed before in place (duplicates: leave)."""
    with open(path, "wb") as fh:
        fh.write(unique_jpeg(data, path.name))
    return time.monotonic()


def unique_jpeg(data: bytes, tag: str) -> bytes:
    """The same JPEG with a COM segment holding `tag` right after SOI: same pixels, other bytes."""
    payload = tag.encode()[:60000]
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def wait_moved(name: str, dest: Path) -> float:
    targets = [dest / folder / name for folder in FOLDERS]
    deadline = time.monotonic() + MOVE_TIMEOUT
    while not any(os.path.exists(t) for t in targets):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} was not moved within {MOVE_TIMEOUT} s")
        time.sleep(POLL)
    return time.monotonic()


def count_moved(dest: Path) -> int:
    return sum(len(os.listdir(dest / f)) for f in FOLDERS if (dest / f).is_dir())


def measure_latency(photos: Sequence[bytes], inbox: Path, dest: Path, count: int) -> list[float]:
    seconds = []
    for i in range(count):
        name = f"latency_{i:04d}.jpg"
        closed = write_photo(inbox / name, photos[i % len(photos)])
        seconds.append(wait_moved(name, dest) - closed)
        time.sleep(IDLE_GAP)
    return seconds


def measure_burst(photos: Sequence[bytes], inbox: Path, dest: Path, count: int, *, pid: int | None = None) -> dict:
    """Photos per second from the first write to the last move; with pid, the daemon's CPU per photo."""
    before = count_moved(dest)
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    started = time.monotonic()
    for i in range(count):
        write_photo(inbox / f"burst_{i:05d}.jpg", photos[i % len(photos)])
    written = time.monotonic()
    deadline = written + MOVE_TIMEOUT + count  # generous: a stall fails loudly instead of hanging
    while count_moved(dest) < before + count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"burst: {count_moved(dest) - before} of {count} photos moved in time")
        time.sleep(0.02)
    done = time.monotonic()
    result = {"photos": count, "seconds": done - started, "images_per_s": count / (done - started),
              "write_seconds": written - started}
    if pid is not None:
        result["daemon_cpu_ms_per_image"] = 1000 * (cpu_seconds(pid) - cpu) / count
    return result


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def daemon_bench(photos: Sequence[Path], work: Path, *, latency_photos: int, burst: int,
                 model: Path | None = None) -> dict:
    """Start the daemon, measure latency, then the burst, then stop it with SIGTERM."""
    data = [p.read_bytes() for p in photos]
    proc, inbox, dest, log = start_daemon(work, model=model)
    try:
        with MemoryWatch(proc.pid) as memory:
            time.sleep(1.0)  # start-up scan done, model warm
            idle = memory.status()
            latency = measure_latency(data, inbox, dest, latency_photos)
            burst_result = measure_burst(data, inbox, dest, burst, pid=proc.pid)
            final = memory.status()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    return {
        "latency_s": {"median": statistics.median(latency), "p95": p95(latency), "max": max(latency),
                      "photos": len(latency), "samples": [round(s, 4) for s in latency]},
        "burst": burst_result,
        "rss_mb": {"idle": idle.get("VmRSS", 0) / 1024, "peak": max(final.get("VmHWM", 0), memory.peak_rss_kb) / 1024},
        "exit_code": code, "model": str(model) if model else "bundled default",
        "photo_bytes": round(statistics.mean(len(d) for d in data)),
    }
