"""structlog set-up: JSON lines under systemd or in pipes, readable lines on a terminal.

Called once by the CLI; library modules only call `structlog.get_logger(__name__)`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

import structlog

from nordlys.daemon.progress import AboveBars

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(*, format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """format: auto (console on a TTY, JSON otherwise), json, or console."""
    out = stream or sys.stderr
    use_json = format == "json" or (format == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=AboveBars(out)),  # never inside a progress bar
        cache_logger_on_first_use=False,
    )
    warnings.showwarning = _log_library_warning


def _log_library_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                         file: object = None, line: str | None = None) -> None:
    """Libraries' warnings (Pillow's "Corrupt EXIF data" on a bad photo, say) become debug events:
    printed raw they would break the JSON-lines log under systemd, and the photo's own outcome is
    logged anyway."""
    structlog.get_logger("py.warnings").debug("library warning", message=str(message),
                                              category=category.__name__, source=f"{filename}:{lineno}")
