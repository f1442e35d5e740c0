"""Fault-injection points: a stage of the daemon waits while a file named by the environment exists.

Why: a test that must stop or kill the daemon in the middle of its work cannot win that race by
timing. The daemon gets faster, or the machine gets busier, and the moment is missed; the test
then tests nothing, or fails for no reason. With a pause point the test holds the daemon at a
known stage for as long as it likes, acts (SIGTERM, SIGKILL, deleting a file), then lets it go.

    NORDLYS_TEST_PAUSE="batch=/tmp/gate-a;unlink=/tmp/gate-b"

Stages (each named where it is called):
- batch:  a lane holds a batch of complete photos and has not started decoding it (service.py);
          a stopping daemon is released, so SIGTERM still finishes the batch in flight;
- unlink: a file's new name is durable and its source name is about to be removed (mover.py):
          a kill here leaves the file under both names, with the journal's intent row.
- copy:   a chunk of a copy has been written under its temporary name (mover.py; each chunk is
          one pass): a kill here leaves a half copy that must never appear under the real name.

While the gate file exists, every thread that reaches the stage logs `paused` once (with the
stage) and waits; removing the file lets them all go. A gate file holding a number N lets N more
passes through first (each pass counts one down), so a test can say "file three batches, then
hold the fourth" without racing the daemon. Without the variable each call is one dictionary
look-up. Users never set it; it is documented here and in tests/waiting.py.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Mapping

import structlog

log = structlog.get_logger(__name__)

ENV = "NORDLYS_TEST_PAUSE"
STAGES = ("batch", "unlink", "copy")
POLL_SECONDS = 0.01


def parse_gates(value: str) -> dict[str, str]:
    """"stage=path;stage=path" -> {stage: path}; unknown stages are an error, so a typo in a test
    fails loudly instead of never pausing."""
    gates = {}
    for item in filter(None, (part.strip() for part in value.split(";"))):
        stage, sep, path = item.partition("=")
        if not sep or stage not in STAGES or not path:
            raise ValueError(f"{ENV}: {item!r}: expected STAGE=PATH with STAGE one of {', '.join(STAGES)}")
        gates[stage] = path
    return gates


_GATES: Mapping[str, str] = parse_gates(os.environ.get(ENV, ""))
_COUNTING = threading.Lock()  # threads count passes down one at a time


def _closed(gate: str) -> bool:
    """Whether the gate holds this pass: it exists and has no passes left to give (a number in
    the file is the passes left; one is used up here)."""
    with _COUNTING:
        try:
            text = Path(gate).read_text().strip()
        except FileNotFoundError:
            return False
        if text.isdigit() and int(text) > 0:
            Path(gate).write_text(str(int(text) - 1))
            return False
        return True


def pause_point(stage: str, *, release: threading.Event | None = None) -> None:
    """Wait here while this stage's gate file exists (tests only); `release` set ends the wait too."""
    gate = _GATES.get(stage)
    if gate is None or not _closed(gate):
        return
    log.info("paused", stage=stage, gate=gate, reason=f"fault-injection point ({ENV})")
    while not (release is not None and release.is_set()) and _closed(gate):
        time.sleep(POLL_SECONDS)
    log.info("resumed", stage=stage)
