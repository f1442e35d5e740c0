"""The on_aurora hook: run a command for each new aurora photo, off the worker's critical path.

The command is an argv list with the photo's new path appended; no shell is involved, so a file
name can never be interpreted as shell syntax. What nordlys knows about the photo comes in
environment variables (NORDLYS_PATH, NORDLYS_SOURCE, NORDLYS_LABEL, NORDLYS_SCORE), not in more
arguments: a script written for the one-argument form keeps working unchanged. One small thread runs the commands one after the
other from a bounded queue: a slow or hanging notifier delays only other notifications, never
the sorting, and a burst of aurora photos cannot pile up processes. A command that fails, times
out or cannot be started is logged and forgotten: the hook is a courtesy, the move already
happened.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import structlog

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 100  # photos whose notification may wait; more are logged and skipped
_STOP = None


class HookRunner:
    """Runs `argv + [path]` for each submitted path, each limited to `timeout` seconds."""

    def __init__(self, argv: Sequence[str], *, timeout: float) -> None:
        self.argv, self.timeout = list(argv), timeout
        self.queue: queue.Queue[tuple[Path, dict[str, str]] | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        if self.argv:
            self.thread = threading.Thread(target=self._run, name="nordlys-hook", daemon=True)
            self.thread.start()

    def submit(self, path: Path, *, label: str = "", score: float | None = None, source: Path | None = None) -> None:
        """Queue a notification without waiting; a full queue drops it with a log line."""
        if self.thread is None or self.stopping.is_set():
            return
        try:
            self.queue.put_nowait((path, hook_environment(path, label=label, score=score, source=source)))
        except queue.Full:
            log.warning("hook skipped", path=str(path), reason=f"{QUEUE_LIMIT} notifications already waiting")

    def close(self, timeout: float = 2.0) -> None:
        """Stop taking work; a command still running after `timeout` seconds is killed."""
        if self.thread is None:
            return
        self.stopping.set()
        try:
            self.queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the thread sees `stopping` after its current command
        self.thread.join(timeout + 1.0)
        left = self.queue.qsize()
        if left:
            log.warning("hooks not run", count=left, reason="shutting down")

    def _run(self) -> None:
        while not self.stopping.is_set():
            item = self.queue.get()
            if item is _STOP:
                return
            run_hook(self.argv, item[0], timeout=self.timeout, cancel=self.stopping, env=item[1])


def hook_environment(path: Path, *, label: str, score: float | None, source: Path | None) -> dict[str, str]:
    """The NORDLYS_* variables a hook command gets: where the photo went, where it came from,
    the label and the model's score (4 decimals, as the log prints it; empty when unknown)."""
    return {"NORDLYS_PATH": str(path), "NORDLYS_SOURCE": "" if source is None else str(source),
            "NORDLYS_LABEL": label, "NORDLYS_SCORE": "" if score is None else f"{score:.4f}"}


def run_hook(argv: Sequence[str], path: Path, *, timeout: float, cancel: threading.Event | None = None,
             env: dict[str, str] | None = None) -> int | None:
    """Run one command; returns its exit status, or None when it could not run or was killed."""
    command = [*argv, str(path)]
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: a chatty command cannot block on it
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    close_fds=True, start_new_session=True, env={**os.environ, **(env or {})})
        except OSError as exc:
            log.error("hook failed", command=command[0], path=str(path), reason=f"cannot start: {exc.strerror or exc}")
            return None
        killed = _wait(proc, deadline=started + timeout, cancel=cancel)
        output.seek(0)
        text = output.read()[-500:].decode(errors="replace").strip()
    ms = round((time.monotonic() - started) * 1000, 1)
    if killed:
        log.error("hook failed", command=command[0], path=str(path), reason=killed, ms=ms)
        return None
    if proc.returncode != 0:
        log.error("hook failed", command=command[0], path=str(path), reason=f"exit status {proc.returncode}",
                  output=text, ms=ms)
    else:
        log.info("hook ran", command=command[0], path=str(path), ms=ms)
    return proc.returncode


def _wait(proc: subprocess.Popen, *, deadline: float, cancel: threading.Event | None) -> str:
    """Wait for the command; kill it at the deadline or on cancel. Returns why it was killed, or ''."""
    while True:
        try:
            proc.wait(timeout=0.05)
            return ""
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            why = "killed: nordlys is shutting down"
        elif time.monotonic() >= deadline:
            why = "killed: took longer than watch.hook_timeout"
        else:
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: whatever it started goes too
        except ProcessLookupError:
            pass
        proc.wait()
        return why
