"""`nordlys retrain`: the user's corrections in, a better live model out (or a clear refusal).

Arguments and config in, one call to `retrain.retrain`, then `models_store.install` or
`models_store.refuse`. Exit status: 0 installed (or passed, with --dry-run), 1 refused by the
gate, 2 nothing to do or cannot (fewer than 2 corrections, bad data).

The model it replaces is model.path when set, else the learned model in the state folder (the
first retrain copies the bundled model there: models_store.writable_model), so the loop needs
no config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from nordlys.daemon import models_store
from nordlys.daemon.classifier import Classifier
from nordlys.daemon.config import Config, ConfigError, find_config_file, load_config
from nordlys.daemon.journal import Journal
from nordlys.daemon.paths import default_journal_path
from nordlys.daemon.placement import AURORA, OTHER
from nordlys.train import data
from nordlys.train.retrain import CORRECTION_WEIGHT, Labelled, RetrainError, retrain

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config file (default: as `nordlys watch` finds it)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="original training data: folder with aurora/ and other/")
    src.add_argument("--manifest", type=Path, help="original training data: CSV file,label[,group,...]")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="validation share, as `nordlys train` split it")
    parser.add_argument("--seed", type=int, default=0, help="split seed, as `nordlys train` used it")
    parser.add_argument("--holdout", type=float, default=0.25, help="share of corrections held out for the gate")
    parser.add_argument("--correction-weight", type=float, default=CORRECTION_WEIGHT,
                        help="how many training photos one correction counts for")
    parser.add_argument("--dry-run", action="store_true", help="retrain and judge, but do not swap the live model")


def corrected_photos(journal: Journal) -> list[Labelled]:
    """The newest correction of each photo (by content), where the photo still is."""
    latest = {c.sha256: c for c in journal.corrections()}
    photos = []
    for c in latest.values():
        if c.new_label not in (AURORA, OTHER):
            continue
        if not c.path.is_file():
            log.warning("correction skipped", path=str(c.path), reason="the photo is no longer there")
            continue
        photos.append(Labelled(c.path, 1 if c.new_label == AURORA else 0))
    return photos


def original_data(data_dir: Path | None, manifest: Path | None, *, val_fraction: float,
                  seed: int) -> tuple[list[Labelled], list[Labelled]]:
    """(train, validation) as `nordlys train` split them (same grouping, fraction and seed)."""
    if data_dir is None and manifest is None:
        log.warning("no validation data", reason="pass --data or --manifest to check the new model on the "
                    "original validation split; only held-out corrections are checked")
        return [], []
    samples = data.assign_hash_groups(data.read_samples(data_dir=data_dir, manifest=manifest))
    train, val = data.split_by_group(samples, val_fraction=val_fraction, seed=seed)
    return [Labelled(s.path, s.target) for s in train], [Labelled(s.path, s.target) for s in val]




def run(args: argparse.Namespace) -> int:
    path = find_config_file(args.config)
    try:
        config = load_config(path) if path is not None else Config()
        train, val = original_data(args.data, args.manifest, val_fraction=args.val_fraction, seed=args.seed)
        with Journal.open(config.journal or default_journal_path()) as journal:
            corrections = corrected_photos(journal)
            if len(corrections) < models_store.MIN_CORRECTIONS:  # before the learned model is started
                raise RetrainError(f"{len(corrections)} correction(s): expected at least "
                                   f"{models_store.MIN_CORRECTIONS} (one to learn from, one to check); "
                                   "`nordlys status` counts them")
            live = models_store.writable_model(config)
            candidate = models_store.models_dir(journal) / "candidate.onnx"
            outcome = retrain(live, candidate, corrections=corrections, train=train, val=val,
                              holdout=args.holdout, correction_weight=args.correction_weight)
            metrics = {**outcome.gate.metrics, "gate": outcome.gate.reason}
            if not outcome.gate.passed:
                models_store.refuse(candidate, journal, version=outcome.version, metrics=metrics)
                print(f"nordlys retrain: refused {outcome.version}: {outcome.gate.reason}; "
                      f"the live model {live} is unchanged", file=sys.stderr)
                return 1
            if args.dry_run:
                print(f"nordlys retrain: {outcome.version} passes the gate ({outcome.gate.reason}); "
                      f"--dry-run: not installed")
                return 0
            old_version = Classifier(live, providers=("CPUExecutionProvider",)).version
            models_store.install(candidate, live, journal, version=outcome.version, old_version=old_version,
                                 metrics=metrics)
            candidate.unlink(missing_ok=True)
        print(f"nordlys retrain: installed {outcome.version} at {live} ({outcome.gate.reason}); "
              f"`nordlys rollback` restores {old_version}")
        return 0
    except (ConfigError, RetrainError, data.DataError, models_store.ModelStoreError) as exc:
        print(f"nordlys retrain: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nordlys retrain", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
