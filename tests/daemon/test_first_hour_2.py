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
import sys
import time
from pathlib import Path

import yaml

from nordlys.daemon.paths import bundled_model_path
from tests.daemon.test_first_hour import DEADLINE, GREEN, GREY, isolated_env, nordlys
from tests.daemon.test_watch import daemon_factory, folders, photo  # noqa: F401 (fixtures)
from tests.train.photos import flat_photo


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


# --- 7. sort at a terminal ------------------------------------------------------------------

def unique_photo(path: Path, i: int, *, green: bool) -> Path:
    """A photo whose bytes no other has (a repeated one would be left in place as a duplicate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(photo(i, green=green))
    return path


def run_in_terminal(home: Path, *args: str, interrupt_when: Path | None = None,
                    **env: str) -> tuple[int, str]:
    """Run `nordlys ARGS` with a pseudo-terminal as stdin, stdout and stderr, as a person's shell
    would; returns (exit status, everything the terminal received). interrupt_when: a file whose
    content turning "0" (a fault-injection gate that has let its passes through) makes the test
    type Ctrl-C, once."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: session leader with the pty as its controlling terminal
        os.chdir(home)
        os.execve(sys.executable, [sys.executable, "-m", "nordlys.daemon", *args],
                  isolated_env(home, COLUMNS="120", LINES="40", TERM="xterm", **env))
    received, typed = bytearray(), False
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if interrupt_when is not None and not typed and interrupt_when.read_text().strip() == "0":
            os.write(fd, b"\x03")  # the terminal turns it into SIGINT for the foreground job
            typed = True
            interrupt_when.unlink()  # let the held move go: the batch it belongs to finishes
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        received += chunk
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"nordlys {' '.join(args)} still running after {DEADLINE} s:\n{received.decode()}")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), received.decode(errors="replace")


def screen_lines(output: str) -> list[str]:
    """What stays on the screen of each line: the text after its last carriage return (a bar
    redrawn in place, or a line cleared and overwritten, shows only its last state)."""
    return [line.split("\r")[-1].rstrip() for line in output.replace("\r\n", "\n").split("\n")]


def test_warnings_are_printed_above_the_progress_bar_never_inside_it(tmp_path, green_model):
    card = tmp_path / "card"
    for i in range(24):
        unique_photo(card / f"p{i:02d}.jpg", i, green=i % 2 == 1)
    for i in range(6):
        # named to come last: filed in later batches, so the bar is on the screen when they are logged
        (card / f"z_broken{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg " * (i + 1))
    code, output = run_in_terminal(tmp_path, "sort", str(card), "--model", str(green_model))
    assert code == 0, output
    assert "sorting" in output  # a bar was drawn at all
    lines = screen_lines(output)
    warnings = [line for line in lines if "rejected" in line and "reason" in line]  # the log's, not the summary's
    assert len(warnings) == 6, output
    for line in warnings:  # each one whole on its own line, no bar text before or after it
        assert "sorting" not in line and "%" not in line and "it/s" not in line, repr(line)
    bars = [line for line in lines if line.startswith("sorting")]
    assert bars and "30/30" in bars[-1], output  # the finished bar stays below the log lines
    assert lines.index(bars[-1]) > max(lines.index(w) for w in warnings)


def test_counts_say_1_photo_1_file(tmp_path, green_model):
    card = tmp_path / "card"
    flat_photo(card / "one.jpg", GREEN)
    result = nordlys(tmp_path, "sort", str(card), "--model", str(green_model))
    assert result.returncode == 0, result.stderr
    assert "moved 1 file (1 photo)" in result.stdout
    assert f"{card / 'aurora'}: 1 photo, 1 file" in result.stdout
    assert "photos" not in result.stdout and "files" not in result.stdout


def test_dry_run_prints_a_readable_plan_without_v(tmp_path, green_model):
    card = tmp_path / "card"
    flat_photo(card / "DCIM" / "100" / "a.jpg", GREEN)
    (card / "DCIM" / "100" / "a.jpg.xmp").write_text("<x/>")
    flat_photo(card / "DCIM" / "100" / "b.jpg", GREY)
    before = sorted(p for p in card.rglob("*"))
    result = nordlys(tmp_path, "sort", str(card), "--dry-run", "--model", str(green_model))
    assert result.returncode == 0, result.stderr
    assert sorted(p for p in card.rglob("*")) == before  # nothing moved, no folder made
    out = result.stdout.splitlines()
    assert "  DCIM/100/a.jpg → aurora/a.jpg" in out
    assert "  DCIM/100/a.jpg.xmp → aurora/a.jpg.xmp" in out
    assert "  DCIM/100/b.jpg → other/b.jpg" in out
    assert any(line.startswith("would move 3 files (2 photos)") for line in out), result.stdout
    assert "{" not in result.stdout + result.stderr  # no JSON log lines


def test_ctrl_c_stops_after_the_batch_in_hand_and_says_what_moved_and_how_to_undo_or_resume(tmp_path, green_model):
    card = tmp_path / "card"
    for i in range(40):
        unique_photo(card / "DCIM" / f"p{i:02d}.jpg", i, green=i % 2 == 1)
    config = tmp_path / "config" / "nordlys" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"model": {"path": str(green_model), "batch_size": 8}}))
    gate = tmp_path / "gate"
    gate.write_text("3")  # three files move, the fourth waits at the unlink point (faults.py)
    code, output = run_in_terminal(tmp_path, "sort", str(card), interrupt_when=gate,
                                   NORDLYS_TEST_PAUSE=f"unlink={gate}")
    assert code == 130, output
    filed = sorted(p.name for p in card.glob("aurora/*")) + sorted(p.name for p in card.glob("other/*"))
    assert len(filed) == 8, output  # the first batch of 8 finished; nothing after it started
    assert len(list((card / "DCIM").glob("*.jpg"))) == 32
    text = "\n".join(screen_lines(output))
    assert "interrupted: moved 8 files (8 photos) of 40 photos" in text, output
    assert "32 photos not sorted yet" in text
    assert f"to resume, run it again: nordlys sort {card}" in text
    undo_line = next(line for line in screen_lines(output) if "to undo this sort: nordlys undo --since " in line)
    since = undo_line.split("--since ")[1].split()[0]
    undone = nordlys(tmp_path, "undo", "--since", since)
    assert undone.returncode == 0, undone.stderr
    assert "restored 8 files" in undone.stdout
    assert len(list((card / "DCIM").glob("*.jpg"))) == 40


# --- 8. folders a sort emptied ----------------------------------------------------------------

def test_folders_a_sort_emptied_are_removed_and_undo_brings_them_back(tmp_path, green_model):
    card = tmp_path / "card1"
    flat_photo(card / "DCIM" / "100CANON" / "a.jpg", GREEN)
    flat_photo(card / "DCIM" / "101CANON" / "b.jpg", GREY)
    (card / "DCIM" / "101CANON" / ".DS_Store").write_text("x")  # ignored (config `ignore`): stays, so does its folder
    (card / "MISC").mkdir()  # empty before the sort: not the sort's to remove
    result = nordlys(tmp_path, "sort", str(card), "--model", str(green_model))
    assert result.returncode == 0, result.stderr
    assert not (card / "DCIM" / "100CANON").exists()
    assert (card / "DCIM" / "101CANON" / ".DS_Store").is_file() and (card / "MISC").is_dir()
    assert "removed 1 emptied folder" in result.stdout
    undone = nordlys(tmp_path, "undo", str(card))
    assert undone.returncode == 0, undone.stderr
    assert (card / "DCIM" / "100CANON" / "a.jpg").is_file() and (card / "DCIM" / "101CANON" / "b.jpg").is_file()


def test_keep_empty_folders_leaves_them(tmp_path, green_model):
    card = tmp_path / "card1"
    flat_photo(card / "DCIM" / "100CANON" / "a.jpg", GREEN)
    result = nordlys(tmp_path, "sort", str(card), "--keep-empty-folders", "--model", str(green_model))
    assert result.returncode == 0, result.stderr
    assert (card / "DCIM" / "100CANON").is_dir() and not any((card / "DCIM" / "100CANON").iterdir())
    assert "emptied" not in result.stdout


# --- 5. the learning loop with no config ------------------------------------------------------

def readme_loop() -> dict[str, str]:
    """README's Corrections loop: verb -> the comment beside its command line."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("The whole loop on the quick-start setup", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return {line.split()[1]: line.split("#", 1)[1].strip() for line in block.splitlines() if line.startswith("nordlys ")}


def test_readme_corrections_loop_uses_verbs_and_flags_the_cli_has(tmp_path):
    loop = readme_loop()
    assert list(loop) == ["watch", "status", "retrain", "rollback"]
    for verb in loop:
        assert nordlys(tmp_path, verb, "--help").returncode == 0


def test_the_learning_loop_runs_on_the_quick_start_setup_with_no_config(tmp_path):
    """No config file at all: status counts the corrections, retrain replaces the learned model in
    the state folder, classify uses it, rollback restores it byte for byte."""
    from tests.train.test_retrain import AURORA as DARK_GREEN, FIELD, GREY as GREY_SKY, jpeg, seed_corrections, write
    from tests.tiny_models import make_green_model

    state = tmp_path / "state" / "nordlys"
    learned = make_green_model(state / "model.onnx", size=32)  # as a first retrain leaves it: see the next test
    original = learned.read_bytes()
    data = tmp_path / "data"
    for i in range(12):
        write(data / "aurora" / f"a{i}.jpg", jpeg(DARK_GREEN, 1000 + i))
        write(data / "other" / f"g{i}.jpg", jpeg(GREY_SKY, 2000 + i))
    field = write(tmp_path / "unseen" / "field.jpg", jpeg(FIELD, 9000))
    assert nordlys(tmp_path, "classify", str(field)).stdout.startswith("aurora\t")  # the learned model's mistake

    seed_corrections(tmp_path, state / "journal.sqlite", FIELD, 1, old="aurora", new="other")
    shown = nordlys(tmp_path, "status").stdout
    promised = readme_loop()["status"].split("; ")  # what README's Corrections loop says status prints
    assert promised == ["corrections: 1 (aurora -> other 1)", "next retrain: needs 1 more"]
    assert all(text in shown for text in promised), shown
    seed_corrections(tmp_path, state / "journal.sqlite", FIELD, 7, old="aurora", new="other", seed=1)
    assert "next retrain: ready, 8 usable" in nordlys(tmp_path, "status").stdout

    done = nordlys(tmp_path, "retrain", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert "installed green-test-1+r" in done.stdout and f"at {learned}" in done.stdout
    assert "model installed" not in done.stderr  # an info line: without -v, warnings only, as every verb
    assert nordlys(tmp_path, "classify", str(field)).stdout.startswith("other\t")  # learned from the corrections

    back = nordlys(tmp_path, "rollback")
    assert back.returncode == 0, back.stderr
    assert learned.read_bytes() == original and "model rolled back" not in back.stderr
    assert nordlys(tmp_path, "classify", str(field)).stdout.startswith("aurora\t")


def test_the_first_retrain_copies_the_bundled_model_into_the_state_folder(tmp_path):
    from tests.train.test_retrain import FIELD, seed_corrections

    state = tmp_path / "state" / "nordlys"
    too_few = nordlys(tmp_path, "retrain")
    assert too_few.returncode == 2 and "expected at least 2" in too_few.stderr
    assert not (state / "model.onnx").exists()  # nothing to learn: nothing started
    seed_corrections(tmp_path, state / "journal.sqlite", FIELD, 4, old="aurora", new="other")
    tried = nordlys(tmp_path, "retrain", "--dry-run")  # judged, never installed: pass (0) or refused (1)
    assert tried.returncode in (0, 1), tried.stderr
    assert (state / "model.onnx").read_bytes() == bundled_model_path().read_bytes()
    assert "model.path is not set" not in tried.stderr
