"""How tests wait: generous deadlines, and gates instead of races.

A test that waits on the daemon, a thread or a subprocess either polls for a condition with
`wait_until` (the deadline only bounds a failure; a passing test never waits it out), or holds the
daemon at a known stage with a `Gate` (daemon/faults.py) while it acts. No test asserts how long
something took: these machines are shared, and a busy one may be ten times slower than an idle one.

NORDLYS_TEST_DEADLINE (seconds, default 120) sets the least any polling wait allows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

DEADLINE = float(os.environ.get("NORDLYS_TEST_DEADLINE", "120"))
POLL = 0.02  # seconds between looks


def wait_until(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "a condition") -> Any:
    """Poll until condition() is truthy and return its value. The deadline is max(timeout,
    DEADLINE): a small number at a call site says what the test expects on an idle machine, never
    what it tolerates on a busy one."""
    limit = max(timeout, DEADLINE)
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(POLL)


class Gate:
    """One fault-injection point of the daemon (daemon/faults.py): while the gate is closed, the
    daemon's threads that reach `stage` wait there (and log `paused`); opening it lets them go."""

    def __init__(self, folder: Path, stage: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stage, self.path = stage, folder / f"gate-{stage}"

    def close(self, *, after: int = 0) -> "Gate":
        """Close the gate, after `after` more passes (a batch, a file: whatever the stage counts)."""
        self.path.write_text(str(after))
        return self

    def open(self) -> None:
        self.path.unlink(missing_ok=True)

    @staticmethod
    def env(*gates: "Gate") -> dict[str, str]:
        """The environment that tells a daemon where these gates are (set before it starts)."""
        return {"NORDLYS_TEST_PAUSE": ";".join(f"{g.stage}={g.path}" for g in gates)}
