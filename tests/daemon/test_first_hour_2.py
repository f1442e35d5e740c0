"""Issue 14, the first hour, part 2 (points 5, 7, 8), through the real `nordlys` command: the
on_aurora hook's environment and the "sorted" line naming the destination (real daemon),
`status --json`, and `sort` as a person at a terminal sees it (a real pseudo-terminal): log lines
above the progress bar, the plan of a dry run, Ctrl-C's summary, folders a sort emptied."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.daemon.test_first_hour import DEADLINE, GREEN, GREY, isolated_env, nordlys
from tests.daemon.test_watch import Daemon, daemon_factory, folders, photo  # noqa: F401 (fixtures)
from tests.train.photos import flat_photo
from tests.waiting import wait_until


# --- 8. the hook and the "sorted" line ------------------------------------------------------

def test_hook_gets_label_score_and_destination_and_the_sorted_line_names_the_destination(
        tmp_path, folders, daemon_factory):
    inbox, dest = folders
    record = tmp_path / "hook.json"
    script = ("import json, os, sys; json.dump({'argv': sys.argv[1:], **{k: v for k, v in os.environ.items() "
              "if k.startswith('NORDLYS_')}}, open(%r, 'w'))" % str(record))
    d = daemon_factory([inbox], dest, watch={"on_aurora": [sys.executable, "-c", script], "hook_timeout": 30}).start()
    (inbox / "sky.jpg").write_bytes(photo(80, green=True))
    d.wait_for("hook ran")
    sorted_line = d.wait_for("sorted", path=str(inbox / "sky.jpg"))
    assert d.stop()[0] == 0
    filed = dest / "aurora" / "sky.jpg"
    assert sorted_line["dest"] == str(filed)
    got = json.loads(record.read_text())
    assert got["argv"] == [str(filed)]  # the old one-argument form is unchanged
    assert got["NORDLYS_PATH"] == str(filed)
    assert got["NORDLYS_SOURCE"] == str(inbox / "sky.jpg")
    assert got["NORDLYS_LABEL"] == "aurora"
    assert float(got["NORDLYS_SCORE"]) == sorted_line["score"]


# --- 8. status --json, 5. corrections in status --------------------------------------------

def test_status_json_has_the_text_facts_and_says_how_many_corrections_a_retrain_needs(tmp_path, green_model):
    inbox = tmp_path / "inbox"
    flat_photo(inbox / "a.jpg", GREEN)
    flat_photo(inbox / "o.jpg", GREY)
    result = nordlys(tmp_path, "sort", str(inbox), "--model", str(green_model))
    assert result.returncode == 0, result.stderr
    flat_photo(inbox / "late.jpg", GREY)
    result = nordlys(tmp_path, "status", "--json", "--inbox", str(inbox))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sorted"]["aurora"] == {"files": 1, "path": str(inbox / "aurora")}
    assert report["sorted"]["other"]["files"] == 1
    assert report["waiting"] == [{"inbox": str(inbox), "files": 1, "oldest_seconds": report["waiting"][0][
        "oldest_seconds"], "error": None}]
    assert report["corrections"] == {"count": 0, "usable": 0, "needed": 2, "more_needed": 2}
    assert {e["dest"] for e in report["recent"]} == {str(inbox / "aurora" / "a.jpg"), str(inbox / "other" / "o.jpg")}
    text = nordlys(tmp_path, "status", "--inbox", str(inbox)).stdout
    assert "next retrain: needs 2 more" in text
