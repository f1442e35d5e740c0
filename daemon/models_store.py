"""The model history: swapping in a retrained model, keeping the old one, and rolling back.

Torch-free, so `nordlys rollback` and `nordlys status` work without the training extras.

- The live model is the file the daemon loads: `model.path` when set, else the learned model,
  `model.onnx` in nordlys's state folder (beside the journal). With no config at all (the quick
  start) the daemon uses the bundled model until the first `nordlys retrain`, which copies the
  bundled model there and replaces that copy; the bundled file itself is never written.
  A retrained model replaces the live one by an atomic `os.replace` of a finished copy in the same folder, so the daemon never reads half
  a file; a running daemon is then sent SIGHUP (it loads and checks the new model, and keeps
  the old one if the new one fails its probe).
- Every model retrain made, and every model it replaced, is kept under `<state dir>/models/`
  (beside the journal) and recorded in the journal's `models` table with its gate metrics:
  status live, replaced, refused or rolled_back.
- `rollback` puts the file the last live model replaced back, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import structlog

from nordlys.daemon.config import Config
from nordlys.daemon.journal import Journal, ModelRecord
from nordlys.daemon.paths import bundled_model_path, default_journal_path

log = structlog.get_logger(__name__)

LIVE, REPLACED, REFUSED, ROLLED_BACK = "live", "replaced", "refused", "rolled_back"
MIN_CORRECTIONS = 2  # a retrain learns from some and holds at least one out to check the new model


class ModelStoreError(Exception):
    """Nothing to roll back, or the live model cannot be replaced; the message says why."""

    exit_code = 2


def models_dir(journal: Journal) -> Path:
    return journal.path.parent / "models"


def learned_model_path(config: Config) -> Path:
    """Where the learned model lives when model.path is not set: nordlys's state folder, beside
    the journal and its models/ history (~/.local/state/nordlys/model.onnx, or /var/lib/nordlys
    under systemd), so the learning loop needs no config."""
    return (config.journal or default_journal_path()).expanduser().absolute().parent / "model.onnx"


def writable_model(config: Config) -> Path:
    """The model file `retrain` replaces and `rollback` restores: model.path when it is set, else
    the learned model. The first call with no learned model yet copies the bundled one there (the
    same bytes: the daemon's verdicts do not change until a retrained model is installed)."""
    if config.model.path is not None:
        return config.model.path.expanduser().absolute()
    learned = learned_model_path(config)
    if not learned.is_file():
        learned.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(bundled_model_path(), learned)
        log.info("learned model started", path=str(learned), copied_from=str(bundled_model_path()))
    return learned


def _keep(model: Path, folder: Path, name: str) -> Path:
    """Copy `model` into the history folder under a name not used yet."""
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / f"{name}.onnx", 1
    while target.exists():
        n += 1
        target = folder / f"{name}.{n}.onnx"
    shutil.copyfile(model, target)
    return target


def replace_atomically(source: Path, live: Path) -> None:
    """Copy, fsync, rename over `live`: a reader sees the old file or the new one, never a mix."""
    tmp = live.with_name(f".{live.name}.nordlys-new")
    shutil.copyfile(source, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, live)


def install(candidate: Path, live: Path, journal: Journal, *, version: str, old_version: str,
            metrics: dict) -> ModelRecord:
    """Make `candidate` the live model; the model it replaces is kept for `rollback`."""
    if not live.is_file():
        raise ModelStoreError(f"live model {live} is not a file: expected the model the daemon loads (model.path)")
    folder = models_dir(journal)
    previous = _keep(live, folder, old_version)
    kept = _keep(candidate, folder, version)
    replace_atomically(candidate, live)
    for record in journal.models():
        if record.status == LIVE and record.live_path == live:
            journal.set_model_status(record.id, REPLACED)
    model_id = journal.record_model(version=version, status=LIVE, path=kept, previous=previous,
                                    live_path=live, metrics=metrics)
    log.info("model installed", live=str(live), version=version, previous=str(previous))
    signal_daemon(journal)
    return next(r for r in journal.models() if r.id == model_id)


def refuse(candidate: Path, journal: Journal, *, version: str, metrics: dict) -> ModelRecord:
    """Record a model that failed the gate; it is kept (refused/) for a look, never loaded."""
    kept = _keep(candidate, models_dir(journal) / "refused", version)
    model_id = journal.record_model(version=version, status=REFUSED, path=kept, metrics=metrics)
    return next(r for r in journal.models() if r.id == model_id)


def rollback(live: Path, journal: Journal) -> ModelRecord:
    """Put back the model the newest live one replaced; returns the record rolled back."""
    current = [r for r in journal.models() if r.status == LIVE and r.live_path == live]
    if not current or current[-1].previous is None:
        raise ModelStoreError(f"nothing to roll back for {live}: no retrained model is live there "
                              f"(see `nordlys status` for the model history)")
    record = current[-1]
    if not record.previous.is_file():
        raise ModelStoreError(f"the previous model {record.previous} is missing: expected the copy kept "
                              f"when {record.version} was installed")
    replace_atomically(record.previous, live)
    journal.set_model_status(record.id, ROLLED_BACK)
    earlier = [r for r in journal.models() if r.status == REPLACED and r.path.is_file()
               and r.live_path == live and r.id < record.id]
    if earlier and earlier[-1].path.read_bytes() == live.read_bytes():
        journal.set_model_status(earlier[-1].id, LIVE)
    log.info("model rolled back", live=str(live), removed=record.version, restored=str(record.previous))
    signal_daemon(journal)
    return record


def signal_daemon(journal: Journal) -> int | None:
    """SIGHUP the running `nordlys watch` of this journal, if any; returns its pid."""
    run_id = journal.last_run_id("watch")
    pid = journal.live_pid(run_id) if run_id is not None else None
    if pid is None:
        log.info("no daemon to reload", reason="the new model is used at the next start")
        return None
    os.kill(pid, signal.SIGHUP)
    log.info("daemon reloaded", pid=pid)
    return pid


def spawn_retrain(config_file: Path | None, data: Path | None = None) -> subprocess.Popen:
    """`nordlys retrain` as a child at the lowest CPU and I/O priority (watch.retrain_after).

    data (watch.retrain_data): the original training data, so the gate can check the new model
    on the validation split too; without it only the held-out corrections judge it."""
    argv = [sys.executable, "-m", "nordlys.daemon", "retrain", "-v"]  # -v: logs at the config's level, as the daemon
    if config_file is not None:
        argv += ["--config", str(config_file)]
    if data is not None:
        argv += ["--manifest" if data.suffix.lower() == ".csv" else "--data", str(data)]
    log.info("retrain started", argv=argv)
    return subprocess.Popen(argv, preexec_fn=lambda: os.nice(19), start_new_session=True)
