"""The progress bar of long batch jobs (sort, eval, training epochs), and the log stream that
keeps log lines above it.

The bar is tqdm's (a base dependency: pure Python, no dependencies of its own). It draws only
when its stream is a terminal, so logs and pipes stay clean, and tqdm is imported only then: the
daemon, which never draws one, never imports it.

A log line written while a bar is on the screen must not land inside the bar's line (issue 14,
point 7). So the CLI's log handler writes through `AboveBars` (logs.configure_logging): whole
lines go through `tqdm.write`, which clears the bar, prints the line and draws the bar again
below it.
"""

from __future__ import annotations

import shutil
import sys
import threading
from typing import Any, TextIO

_active: list[Any] = []  # tqdm bars on the screen now (at most one in practice)
_lock = threading.Lock()


class ProgressBar:
    """`with ProgressBar(total, label=...) as bar: ... bar.advance(n)`; a no-op off a terminal."""

    def __init__(self, total: int, *, label: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.label = max(total, 0), label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm  # only at a terminal: see the module docstring

            # the size as the terminal says, else $COLUMNS and $LINES, else 80x24: a terminal that
            # says 0x0 (a fresh pty, some CI consoles) would make tqdm draw nothing at all
            size = shutil.get_terminal_size()
            self._bar = tqdm(total=self.total, desc=label, file=self.stream, unit="", ncols=size.columns,
                             nrows=size.lines,
                             bar_format="{desc} |{bar:" + str(width) + "}| {n_fmt}/{total_fmt} "
                                        "[{elapsed}<{remaining}, {rate_fmt}] {postfix}",
                             mininterval=0.1, leave=True)
            with _lock:
                _active.append(self._bar)

    def advance(self, n: int = 1, *, suffix: str = "") -> None:
        self.done += n
        if self._bar is not None:
            if suffix:
                self._bar.set_postfix_str(suffix, refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            with _lock:
                if self._bar in _active:
                    _active.remove(self._bar)
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AboveBars:
    """A text stream for log lines: each whole line is printed above any bar on the screen.

    structlog's PrintLogger writes a line's text and its newline separately; a line is passed
    on only when it is complete, so a bar redrawn in between can never split it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" not in self._pending:
                return len(text)
            complete, self._pending = self._pending.rsplit("\n", 1)
        with _lock:
            bars = bool(_active)
        if bars:
            from tqdm import tqdm

            for line in complete.split("\n"):
                tqdm.write(line, file=self.stream)
        else:
            self.stream.write(complete + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()
