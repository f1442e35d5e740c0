"""Turning a loaded config (plus command-line overrides) into the live parts: model, target, journal.

Kept apart from the CLI so that `sort`, `classify`, `undo` and the daemon build their parts the
same way, and so tests can build them without parsing arguments.
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from nordlys.daemon.classifier import Classifier, ModelError
from nordlys.daemon.config import Config, ConfigError, InboxConfig, check_paths
from nordlys.daemon.journal import Journal
from nordlys.daemon.models_store import learned_model_path
from nordlys.daemon.paths import bundled_model_path, default_journal_path, resolved
from nordlys.daemon.pipeline import Target
from nordlys.daemon.syncsafety import inbox_modes


def apply_overrides(config: Config, *, inboxes: list[Path] | None = None, dest: Path | None = None,
                    model: Path | None = None, config_file: Path | None = None, check: bool = True) -> Config:
    """Flags win over the config file. Each path is checked where it came from, so an error names
    the flag or the file that set it. check=False is for `status`, which reports a missing inbox
    (an unmounted share, say) instead of refusing to run."""
    flags = Config(inboxes=[InboxConfig(path=resolved(p)) for p in inboxes or []],
                   output_root=resolved(dest) if dest is not None else None,
                   model=dataclasses.replace(config.model, path=model.expanduser() if model is not None else None))
    from_file = dataclasses.replace(
        config, inboxes=[] if flags.inboxes else config.inboxes,
        output_root=config.output_root if flags.output_root is None else None,
        model=dataclasses.replace(config.model, path=config.model.path if flags.model.path is None else None))
    if check:
        check_paths(from_file, source=str(config_file or "config"))
        check_paths(flags, source="command line")
    return dataclasses.replace(from_file, inboxes=flags.inboxes or from_file.inboxes,
                               output_root=flags.output_root or from_file.output_root,
                               model=dataclasses.replace(config.model, path=flags.model.path or from_file.model.path))


def model_path(config: Config) -> Path:
    """The configured model, else the learned one (retrain's, in the state folder), else the bundled default."""
    if config.model.path is not None:
        return config.model.path
    learned = learned_model_path(config)
    if learned.is_file():
        return learned
    bundled = bundled_model_path()
    if not bundled.is_file():
        raise ModelError(f"no model configured (model.path) and the bundled default model is missing at {bundled}")
    return bundled


def load_classifier(config: Config) -> Classifier:
    """The configured model, loaded and probed (check_model) before any photo depends on it."""
    m = config.model
    classifier = Classifier(model_path(config), providers=m.providers, threads=m.threads, batch_size=m.batch_size)
    check_model(classifier)
    return classifier


def check_model(classifier: Classifier) -> None:
    """The model must score test images to probabilities before it sorts anything (or replaces the
    running model on a reload): a graph that loads but cannot run is refused with exit code 3 at
    start, instead of failing every photo. The probe is one full batch, so it also takes
    onnxruntime's first-run allocations out of the first photos' time."""
    size, count = classifier.meta.input_size, max(classifier.batch_size, 2)
    probe = [np.full((size, size, 3), 128 * (i % 2), dtype=np.uint8) for i in range(count)]
    try:
        scores = classifier.score(probe)
    except Exception as exc:  # onnxruntime raises its own types for a graph that cannot run
        raise ModelError(f"{classifier.path}: cannot score a test image: {exc}") from None
    if scores.shape != (count,) or not np.all(np.isfinite(scores)) or not np.all((scores >= 0) & (scores <= 1)):
        raise ModelError(f"{classifier.path}: test scores {scores.tolist()}: expected {count} probabilities in [0, 1]")


def build_target(config: Config, classifier: Classifier) -> Target:
    """Placement settings; the output root defaults to the first inbox (outputs beside the photos)."""
    root = config.output_root
    if root is None:
        if not config.inboxes:
            raise ConfigError("output_root is not set and there is no inbox to put the folders in: "
                              "expected output_root in the config or --dest")
        root = config.inboxes[0].path
    threshold = config.model.threshold if config.model.threshold is not None else classifier.meta.threshold
    modes = inbox_modes(config.inboxes, syncthing_config=config.syncthing_config)
    return Target(output_root=root, folders=config.folders, keep_subfolders=config.keep_subfolders,
                  threshold=threshold, review_band=config.model.review_band, duplicates=config.duplicates,
                  layout=config.layout,
                  copy_from=frozenset(os.path.realpath(p) for p, m in modes.items() if m.copy))


def journal_path(config: Config) -> Path:
    return config.journal or default_journal_path()


def open_journal(config: Config) -> Journal:
    return Journal.open(journal_path(config))


def parse_since(text: str) -> datetime:
    """`--since`: an ISO date/time (local time unless it has an offset) or an age like 90m, 2h, 3d."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(timezone.utc) - timedelta(**{unit: float(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since = {text!r}: expected an ISO time like 2026-11-25T14:00 or an age like 90m, 2h, 3d") from None
    return when.astimezone(timezone.utc)  # naive times are taken as local time
