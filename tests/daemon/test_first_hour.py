"""Issue 14, the first hour, through the real `nordlys` command in a subprocess: pipes that close
early, the verbs that need extras (in a fresh venv without them), `eval` with no --model, and the
consistency points (who is blamed for a bad path, `status` with a missing inbox, YAML errors,
--config and -v on every verb)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from nordlys.daemon.paths import bundled_model_path
from tests.train.photos import flat_photo

REPO = Path(__file__).resolve().parents[2]
GREEN, GREY = (40, 200, 60), (120, 120, 120)
DEADLINE = 600  # seconds a CLI call may take on a busy 2-core machine; none should come close


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """No real config, journal or state of the person running the tests is read or written."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_STATE_HOME": str(home / "state"), "XDG_DATA_HOME": str(home / "data")}
    env.update(extra)
    return env


def nordlys(home: Path, *args: str, stdout: int | None = subprocess.PIPE,
            exe: tuple[str, ...] = (sys.executable, "-m", "nordlys.daemon"), **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*exe, *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          env=isolated_env(home, **env), timeout=DEADLINE, cwd=home)


def photos(folder: Path, *, green: int, grey: int) -> Path:
    for i in range(green):
        flat_photo(folder / f"g{i}.jpg", GREEN)
    for i in range(grey):
        flat_photo(folder / f"o{i}.jpg", GREY)
    return folder


def labelled(root: Path) -> Path:
    """root/aurora (3 green) and root/other (3 grey): the green model gets all six right."""
    photos(root / "aurora", green=3, grey=0)
    photos(root / "other", green=0, grey=3)
    return root


# --- 1. pipes -------------------------------------------------------------------------------

def closed_pipe_run(home: Path, *args: str) -> subprocess.CompletedProcess:
    """stdout is a pipe whose reader has already gone, as after `| head` read its lines: the very
    first write fails, so no timing decides whether the command notices."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return nordlys(home, *args, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("verb", ["classify", "undo", "status"])
def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path, green_model: Path, verb: str) -> None:
    inbox = photos(tmp_path / "inbox", green=5, grey=5)
    args = {"classify": ["classify", str(inbox), "--model", str(green_model)],
            "undo": ["undo", "--dry-run"],
            "status": ["status", "--inbox", str(inbox)]}[verb]
    if verb == "undo":  # something to undo, so the dry run has a plan to print
        sorted_ = nordlys(tmp_path, "sort", str(inbox), "--dest", str(tmp_path / "out"), "--model", str(green_model))
        assert sorted_.returncode == 0, sorted_.stderr
    result = closed_pipe_run(tmp_path, *args)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr  # as a Unix tool killed by SIGPIPE


def test_a_pipe_that_stays_open_gets_everything(tmp_path: Path, green_model: Path) -> None:
    inbox = photos(tmp_path / "inbox", green=3, grey=2)
    result = nordlys(tmp_path, "classify", str(inbox), "--model", str(green_model))
    assert result.returncode == 0, result.stderr
    assert sorted(line.split("\t")[0] for line in result.stdout.splitlines()) == ["aurora"] * 3 + ["other"] * 2


# --- 3. eval without --model ----------------------------------------------------------------

def test_eval_uses_the_bundled_model_by_default(tmp_path: Path) -> None:
    data = labelled(tmp_path / "data")
    result = nordlys(tmp_path, "eval", "--data", str(data), "--report", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert Path(metrics["model"]) == bundled_model_path() and metrics["count"] == 6


def test_eval_uses_the_configured_model_and_takes_config_and_v(tmp_path: Path, green_model: Path) -> None:
    data = labelled(tmp_path / "data")
    config = tmp_path / "nordlys.yaml"
    config.write_text(f"model:\n  path: {green_model}\n")
    result = nordlys(tmp_path, "eval", "--config", str(config), "-v", "--data", str(data),
                     "--report", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert Path(metrics["model"]) == green_model and metrics["accuracy"] == 1.0
    assert "evaluated" in result.stderr  # -v: the decisions are logged (to stderr, never into the output)


# --- 9. consistency -------------------------------------------------------------------------

def test_a_missing_inbox_from_the_config_file_is_blamed_on_the_file(tmp_path: Path, green_model: Path) -> None:
    config = tmp_path / "nordlys.yaml"
    config.write_text(f"inboxes:\n  - {tmp_path / 'nas'}\nmodel:\n  path: {green_model}\n")
    result = nordlys(tmp_path, "classify", "--config", str(config), str(green_model))
    assert result.returncode == 2
    assert f"{config}: inboxes[0].path = '{tmp_path / 'nas'}' does not exist" in result.stderr
    assert "command line" not in result.stderr


def test_a_missing_path_from_a_flag_is_blamed_on_the_command_line(tmp_path: Path) -> None:
    result = nordlys(tmp_path, "sort", str(tmp_path), "--model", str(tmp_path / "nope.onnx"), "--dry-run")
    assert result.returncode == 2
    assert f"command line: model.path = '{tmp_path / 'nope.onnx'}' is not a file" in result.stderr


def test_status_reports_a_missing_inbox_instead_of_refusing(tmp_path: Path) -> None:
    present = photos(tmp_path / "inbox", green=2, grey=0)
    config = tmp_path / "nordlys.yaml"
    config.write_text(f"inboxes:\n  - {tmp_path / 'nas'}\n  - {present}\noutput_root: {tmp_path / 'sorted'}\n")
    result = nordlys(tmp_path, "status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'nas'}: missing: does not exist (not mounted?)" in result.stdout
    assert f"{present}: 2 files" in result.stdout


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    config = tmp_path / "nordlys.yaml"
    config.write_text("model:\n  threshold: 0.5\n   review_band: 0.1\n")
    result = nordlys(tmp_path, "status", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"nordlys status: {config}: line 3, column 15: not valid YAML: "
                                     "mapping values are not allowed here")


@pytest.mark.parametrize("verb", ["watch", "status", "classify", "sort", "undo", "train", "export", "eval",
                                  "retrain", "rollback"])
def test_every_verb_takes_config_and_v(tmp_path: Path, verb: str) -> None:
    """README: every verb takes --config FILE and -v. A bad config file proves --config was read
    (not refused by the argument parser, which would say 'unrecognized arguments')."""
    config = tmp_path / "nordlys.yaml"
    config.write_text("no_such_key: 1\n")
    result = nordlys(tmp_path, verb, "--config", str(config), "-v", *VERB_ARGS[verb])
    assert "unrecognized arguments" not in result.stderr, result.stderr
    assert result.returncode == 2 and f"{config}: unknown key 'no_such_key'" in result.stderr, result.stderr


VERB_ARGS = {"watch": [], "status": [], "classify": ["x.jpg"], "sort": ["."], "undo": ["--dry-run"],
             "train": ["--data", "d", "--output-dir", "o", "--weights", "none"], "export": ["run", "--out", "m.onnx"],
             "eval": ["--data", "d", "--report", "r"], "retrain": ["--dry-run"], "rollback": []}


# --- 2. a fresh install without the extras --------------------------------------------------

@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv made from scratch (no system site-packages) with `pip install .`: the README's quick
    start, no extras. The checkout is copied first, because pip builds in the source folder."""
    root = tmp_path_factory.mktemp("plain")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                              "__pycache__", ".pytest_cache", ".hypothesis", "runs"))
    venv.create(root / "venv", with_pip=True)
    pip = subprocess.run([str(root / "venv" / "bin" / "pip"), "install", "-q", str(src)], capture_output=True,
                         text=True, timeout=1800)
    if pip.returncode != 0:
        pytest.skip(f"pip cannot install nordlys here (no package index?): {pip.stderr.strip()[-300:]}")
    return root / "venv" / "bin"


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["train", "export"])
def test_a_verb_that_needs_the_extras_says_so_in_one_line(plain_install: Path, tmp_path: Path, verb: str) -> None:
    result = nordlys(tmp_path, verb, *VERB_ARGS[verb], exe=(str(plain_install / "nordlys"),))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"nordlys {verb}: needs the training extras (")
    assert "pip install 'nordlys[train]'" in result.stderr
    helped = nordlys(tmp_path, verb, "--help", exe=(str(plain_install / "nordlys"),))
    assert helped.returncode == 0 and "--config" in helped.stdout  # its options can be read before installing


@pytest.mark.slow
def test_eval_works_without_the_extras(plain_install: Path, tmp_path: Path) -> None:
    python = str(plain_install / "python")
    probe = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('torch', 'matplotlib', "
                            "'onnx') if u.find_spec(m)])"], capture_output=True, text=True, timeout=DEADLINE)
    assert probe.stdout.strip() == "[]"  # really none of them
    data = labelled(tmp_path / "data")
    result = nordlys(tmp_path, "eval", "--data", str(data), "--report", str(tmp_path / "report"),
                     exe=(str(plain_install / "nordlys"),))
    assert result.returncode == 0, result.stderr
    assert "<svg" in (tmp_path / "report" / "report.html").read_text()
