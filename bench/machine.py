"""What the benchmark ran on: the figures only mean something next to these."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD extensions int8 and fp32 kernels choose between."""
    wanted = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "sha_ni"}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return sorted(wanted & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def usable_cpus() -> int:
    """CPUs this process may run on (taskset, cpusets): what nordlys's decode pool uses too."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time of this process (or of process `pid`, from /proc/PID/stat), all threads, user +
    system. Unlike wall time it barely moves when other processes share the cores, so it shows
    what a change costs even on a busy box."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # after the name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("onnxruntime", "torch", "torchvision", "pillow", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe() -> dict:
    return {"nproc": os.cpu_count(), "usable_cpus": usable_cpus(), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
            "loadavg": list(os.getloadavg()), "platform": platform.platform(), "versions": versions()}
