"""`nordlys classify --engine ray`: score an archive with Ray Data, one Parquet row per file.

The driver builds the file list and drops what an earlier run already scored (same model
version, size and mtime: scores.unchanged); Ray Data spreads the rest in batches over actors that
each hold one Classifier (one onnxruntime session) and decode with the daemon's loader through a
dry-run Pipeline, exactly as `classify` does on one machine. Ray Data restarts an actor that dies
(a killed process, a lost node) and runs its batch again, so a dead worker's files are retried.

The rows come back to the driver as they are scored; every `CHECKPOINT_SECONDS` the scores file is
rewritten (atomically), so a run that is stopped resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from nordlys.cluster.scores import SCHEMA, Row, read_scores, unchanged, write_scores
from nordlys.daemon import runtime
from nordlys.daemon.config import Config
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.pipeline import Decoded, Pipeline, Target, usable_cpus
from nordlys.daemon.placement import REJECTED, Verdict
from nordlys.daemon.progress import ProgressBar

if TYPE_CHECKING:
    from ray.data import Dataset

CHECKPOINT_SECONDS = 60.0  # how much scoring a stopped run can lose
BATCH_SIZE = 32  # files per Ray task: large enough that Ray's per-task cost is small beside decoding
KILL_ENV = "NORDLYS_TEST_KILL_ACTOR"  # tests only: FILE; the actor that removes FILE first SIGKILLs itself


class ClusterError(Exception):
    """The Ray run failed as a whole (a cluster that cannot be reached, retries used up). The rows
    scored until then are in the scores file, so running the same command again resumes."""

    exit_code = 1  # files were left unscored, as when classify cannot read some


class ScoreActor:
    """One per Ray worker process: one Classifier, and one decode thread per CPU Ray gave it."""

    def __init__(self, config: Config, target: Target, cpus: int) -> None:
        model = dataclasses.replace(config.model, threads=config.model.threads or cpus)
        classifier = runtime.load_classifier(dataclasses.replace(config, model=model))
        self.pipeline = Pipeline(classifier, None, target, max_pixels=config.model.max_pixels,
                                 max_file_bytes=config.model.max_file_bytes, dry_run=True, decode_workers=cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        kill_point()
        groups = [PhotoGroup(Path(p), (Path(p),)) for p in batch["path"]]
        version = self.pipeline.classifier.version
        rows = [score_row(g.primary, d, v, version) for g, (d, v) in zip(groups, self.pipeline.scored(groups))]
        return pa.Table.from_pylist(rows, schema=SCHEMA)


def kill_point() -> None:
    """A test's way to kill a worker for real while it holds a batch (see KILL_ENV): the unlink
    succeeds in one process only, so exactly one actor dies, once."""
    gate = os.environ.get(KILL_ENV)
    if gate:
        try:
            os.unlink(gate)
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def score_row(path: Path, decoded: Decoded, verdict: Verdict, version: str) -> Row:
    """The scores file's row for one photo: size, mtime and sha256 of the bytes that were scored."""
    if decoded.known is not None:
        size, mtime_ns, sha = decoded.known.size, decoded.known.signature[3], decoded.known.sha256
    else:  # not read whole (unreadable, too large, changed while read): describe what is there now
        try:
            st = os.stat(path)
            size, mtime_ns, sha = st.st_size, st.st_mtime_ns, None
        except OSError:
            size, mtime_ns, sha = -1, -1, None
    return {"path": str(path), "size": size, "mtime_ns": mtime_ns, "sha256": sha,
            "label": verdict.folder if verdict.score is not None else REJECTED, "score": verdict.score,
            "model_version": version, "error": verdict.reason if verdict.score is None else None}


@dataclasses.dataclass
class ClassifyReport:
    scored: int = 0  # rows written by this run
    kept: int = 0  # unchanged files whose earlier row was kept
    failed: int = 0  # rows of this run without a score
    seconds: float = 0.0  # from ray.init to the scores file written


def start_ray(address: str | None, workers: int | None) -> None:
    """Connect to `address` (a cluster), else start a local Ray: loopback only, no dashboard,
    no usage statistics sent anywhere."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers or usable_cpus(), include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)


def classify_archive(files: Sequence[Path], out: Path, *, config: Config, target: Target, version: str,
                     address: str | None = None, workers: int | None = None,
                     batch_size: int = BATCH_SIZE) -> ClassifyReport:
    """Score `files` with Ray into `out`, keeping earlier rows of files that did not change."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray.data

    started = time.perf_counter()
    earlier = read_scores(out)
    rows: dict[str, Row] = dict(earlier)  # rows of files outside this run's list stay too
    todo: list[str] = []
    kept = 0
    for path in files:
        key = str(path.absolute())
        try:
            st = os.stat(key)
        except OSError:
            st = None
        if st is not None and unchanged(earlier.get(key), st, version):
            kept += 1
        else:
            todo.append(key)
    report = ClassifyReport(kept=kept)
    if todo:
        start_ray(address, workers)
        pool = workers or max(int(ray.available_resources().get("CPU", 1)), 1)
        tests_env = {k: v for k, v in os.environ.items() if k.startswith("NORDLYS_TEST_")}
        dataset = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=-(-len(todo) // batch_size))
        scored = dataset.map_batches(ScoreActor, fn_constructor_kwargs={"config": config, "target": target, "cpus": 1},
                                     batch_size=batch_size, batch_format="numpy", concurrency=pool, num_cpus=1,
                                     runtime_env={"env_vars": tests_env} if tests_env else None)
        try:
            report = collect(scored, rows, out, report, total=len(todo))
        except Exception as exc:  # Ray raises many types; what the user needs is the same
            write_scores(out, rows.values())
            raise ClusterError(f"the Ray run failed ({type(exc).__name__}: {str(exc)[:300]}); {report.scored} "
                               f"files were scored and kept in {out}: run the same command again to resume") from exc
    write_scores(out, rows.values())
    report.seconds = time.perf_counter() - started
    return report


def collect(scored: Dataset, rows: dict[str, Row], out: Path, report: ClassifyReport, *, total: int) -> ClassifyReport:
    """Take the rows as Ray hands them back: progress on the terminal, a checkpoint now and then."""
    last_checkpoint = time.monotonic()
    with ProgressBar(total, label="scoring", stream=sys.stderr) as bar:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                rows[row["path"]] = row
                report.scored += 1
                report.failed += row["score"] is None
            bar.advance(batch.num_rows)
            if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                write_scores(out, rows.values())
                last_checkpoint = time.monotonic()
    return report


def format_report(report: ClassifyReport, out: Path) -> str:
    """The closing line of `classify --engine ray`."""
    return (f"scored {report.scored} files ({report.failed} without a score), kept {report.kept} unchanged, "
            f"in {report.seconds:.1f} s: {out}")
