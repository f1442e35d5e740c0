"""Fixtures for the reliability tests: privileges like the systemd unit's, and small file systems.

`green_model` and the thread-leak check come from tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.reliability.harness import TrialDaemon


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="session")
def no_capabilities() -> list[str]:
    """A command prefix that runs the daemon with no capabilities and no_new_privs, as the systemd
    unit does (CapabilityBoundingSet= empty, NoNewPrivileges=yes). Root without CAP_DAC_OVERRIDE
    obeys file modes, so a chmod-000 photo and a 0555 folder mean what they say. Not root: the
    mode bits apply anyway, and the prefix is empty."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--no-new-privs", "--"]
    if shutil.which("setpriv") is None or _run(*prefix, "true").returncode != 0:
        pytest.skip("running as root without setpriv(1): cannot drop CAP_DAC_OVERRIDE, so permission "
                    "bits would not stop the daemon")
    return prefix


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """mount(folder, size): a fresh tmpfs of `size` (e.g. "256k") at folder; unmounted afterwards.
    Skips, saying why, where mounting is not permitted (not root, or a container without
    CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "nordlys-test", str(folder))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root "
                        "with CAP_SYS_ADMIN")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        _run("umount", "-l", str(folder))


@pytest.fixture
def read_only_bind() -> Iterator[Callable[[Path], Path]]:
    """make(folder): turn an existing folder into a read-only bind mount of itself (a read-only
    file system: even root cannot write there); unmounted afterwards. Skips where not permitted."""
    mounted: list[Path] = []

    def make(folder: Path) -> Path:
        if _run("mount", "--bind", str(folder), str(folder)).returncode != 0:
            pytest.skip("cannot bind-mount here: needs root with CAP_SYS_ADMIN")
        mounted.append(folder)
        if _run("mount", "-o", "remount,ro,bind", str(folder)).returncode != 0:
            pytest.skip("cannot remount a bind mount read-only here")
        return folder

    yield make
    for folder in reversed(mounted):
        _run("umount", "-l", str(folder))


@pytest.fixture
def daemons(tmp_path: Path, green_model: Path) -> Iterator[Callable[..., TrialDaemon]]:
    """make(inboxes, dest, **options): a TrialDaemon (not started) with its home in tmp_path and
    the green model; every one made is killed at teardown, so a failed test leaves none running."""
    made: list[TrialDaemon] = []

    def make(inboxes: list, dest: Path | None, **options) -> TrialDaemon:
        daemon = TrialDaemon(options.pop("home", tmp_path), inboxes=inboxes, dest=dest,
                             model=options.pop("model", green_model), **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.kill()
