"""`nordlys rollback`: put back the model the last `nordlys retrain` replaced (torch-free)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nordlys.daemon import models_store
from nordlys.daemon.config import Config, ConfigError, find_config_file, load_config
from nordlys.daemon.journal import Journal, JournalError
from nordlys.daemon.paths import default_journal_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config file (default: as `nordlys watch` finds it)")


def run(args: argparse.Namespace) -> int:
    try:
        path = find_config_file(args.config)
        config = load_config(path) if path is not None else Config()
        # model.path, else the learned model in the state folder (the one `nordlys retrain` replaced)
        live = (config.model.path.expanduser().absolute() if config.model.path is not None
                else models_store.learned_model_path(config))
        with Journal.open(config.journal or default_journal_path()) as journal:
            record = models_store.rollback(live, journal)
    except (ConfigError, JournalError, models_store.ModelStoreError) as exc:
        print(f"nordlys rollback: {exc}", file=sys.stderr)
        return 2
    print(f"nordlys rollback: removed {record.version}; {live} is the previous model again")
    return 0
