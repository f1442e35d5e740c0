"""nordlys's own batch sort, and the decode-bound limit it is measured against.

`sort_with_nordlys` builds its parts exactly as `nordlys sort` does (runtime + Pipeline +
sort_tree, journal included) and times the sort itself. `decode_limit` runs only the loader's
reduced-DCT decode of the same files on a pool of one thread per core: no scoring, no moving,
the speed nordlys could reach if everything else were free.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from bench.machine import cpu_seconds, usable_cpus


def sort_with_nordlys(inbox: Path, dest: Path, journal: Path, *, model: Path, threads: int | None = None) -> dict:
    """`nordlys sort INBOX --dest DEST --model MODEL`, timed from scan to the last move.
    threads: model.threads for this run (None: the config default)."""
    from nordlys.daemon import runtime
    from nordlys.daemon.config import Config
    from nordlys.daemon.logs import configure_logging
    from nordlys.daemon.pipeline import Pipeline
    from nordlys.daemon.sorter import sort_tree

    configure_logging(level="warning")  # what `nordlys sort` logs without -v
    config = dataclasses.replace(Config(), journal=journal)
    if threads is not None:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, threads=threads))
    config = runtime.apply_overrides(config, inboxes=[inbox], dest=dest, model=model)
    classifier = runtime.load_classifier(config)
    target = runtime.build_target(config, classifier)
    with runtime.open_journal(config) as jrnl, \
            Pipeline(classifier, jrnl, target, max_pixels=config.model.max_pixels) as pipeline:
        started, cpu = time.perf_counter(), cpu_seconds()
        summary = sort_tree(inbox, pipeline=pipeline, recursive=True, ignore=config.ignore, journal=jrnl,
                            batch_size=config.model.batch_size)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    photos = sum(summary.photos.values())
    return {"images": photos, "seconds": seconds, "images_per_s": photos / seconds,
            "cpu_ms_per_image": 1000 * cpu / max(photos, 1), "folders": dict(summary.photos),
            "failed": len(summary.failed)}


def decode_limit(photos: Sequence[Path], *, size: int = 224, resize: str = "squash") -> dict:
    """Reduced-DCT decode (file read included) of every photo on one thread per core."""
    from nordlys.daemon.loader import load_image

    workers = usable_cpus()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda p: load_image(p, size=size, resize=resize), photos[:workers]))  # warm-up
        started, cpu = time.perf_counter(), cpu_seconds()
        list(pool.map(lambda p: load_image(p, size=size, resize=resize), photos))
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"images": len(photos), "seconds": seconds, "images_per_s": len(photos) / seconds, "threads": workers,
            "cpu_ms_per_image": 1000 * cpu / len(photos)}
