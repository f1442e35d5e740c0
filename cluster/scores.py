"""The scores file: one Parquet row per photo, written by `classify --engine ray`, read by
`sort --scores`. Its columns are the contract between the two, so they are named here once.

Why size and mtime_ns (nanoseconds, exact) next to sha256: a resumed run must decide "unchanged"
without reading a million files again; `sort --scores` reads each file anyway (it moves it), so
it also checks the sha256 before it trusts a score.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("path", pa.string()),  # absolute, as the scorer saw it (shared storage: the same on every node)
    ("size", pa.int64()),  # bytes
    ("mtime_ns", pa.int64()),  # st_mtime_ns when it was read
    ("sha256", pa.string()),  # of the bytes that were scored; null when it could not be read whole
    ("label", pa.string()),  # aurora / other / review from the threshold; rejected when unreadable
    ("score", pa.float64()),  # aurora probability; null when it could not be scored
    ("model_version", pa.string()),
    ("error", pa.string()),  # why there is no score; null when there is one
])

Row = dict  # one record with SCHEMA's names


def read_scores(path: Path) -> dict[str, Row]:
    """Rows by path; an absent file is an empty archive (a first run)."""
    if not path.exists():
        return {}
    table = pq.read_table(path, schema=SCHEMA)
    return {row["path"]: row for row in table.to_pylist()}


def write_scores(path: Path, rows: Iterable[Row]) -> None:
    """Write all rows under a temporary name, then rename it into place: a run killed while
    writing leaves the previous scores file whole, so the next run still resumes from it."""
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["path"]), schema=SCHEMA)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, temp)
    os.replace(temp, path)


def unchanged(row: Mapping | None, st: os.stat_result, version: str) -> bool:
    """A row still stands for the file: same model version, size and mtime, and it has a score
    (a file that could not be read is tried again: the reason may have gone away)."""
    return (row is not None and row["score"] is not None and row["model_version"] == version
            and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns)
