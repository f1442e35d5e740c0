"""Log set-up: JSON lines when not on a terminal, library warnings kept out of the JSON stream."""

from __future__ import annotations

import io
import json
import warnings

import structlog

from nordlys.daemon.logs import configure_logging


def test_json_lines_and_library_warnings_as_debug_events():
    out = io.StringIO()
    saved = warnings.showwarning
    try:
        configure_logging(format="auto", level="debug", stream=out)  # StringIO is no terminal -> JSON
        structlog.get_logger("t").info("sorted", path="/in/a.jpg", label="aurora", score=0.9)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Corrupt EXIF data", UserWarning)
    finally:
        warnings.showwarning = saved
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["event"] == "sorted" and records[0]["label"] == "aurora"
    assert records[1]["event"] == "library warning" and records[1]["message"] == "Corrupt EXIF data"
    assert records[1]["level"] == "debug"


def test_warnings_are_dropped_at_info_level():
    out = io.StringIO()
    saved = warnings.showwarning
    try:
        configure_logging(format="json", level="info", stream=out)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("noise", UserWarning)
    finally:
        warnings.showwarning = saved
    assert out.getvalue() == ""
