"""Where nordlys keeps its own state when the config does not say."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def resolved(path: Path | str) -> Path:
    """The one spelling nordlys compares paths in: absolute, `~` expanded, symlinks and `..`
    resolved (the last parts may not exist yet). Watching, scanning and excluding all use it, so
    a folder given as `LINK/inbox` or `x/../inbox` is the same folder as its real path: an output
    root inside an inbox is never taken for new photos under another name."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def is_within(path: Path, folder: Path) -> bool:
    """path is folder or lies under it (both already `resolved`)."""
    return path == folder or folder in path.parents


def state_dir() -> Path:
    """$XDG_STATE_HOME/nordlys (default ~/.local/state/nordlys): the journal's home.

    Under systemd with `StateDirectory=nordlys`, $STATE_DIRECTORY points at /var/lib/nordlys
    and wins, so the service needs no config entry for it.
    """
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nordlys"


def default_journal_path() -> Path:
    return state_dir() / "journal.sqlite"


def bundled_model_path() -> Path:
    """The default model shipped as package data (nordlys/daemon/models/default.onnx)."""
    return Path(str(resources.files("nordlys.daemon.models").joinpath("default.onnx")))
