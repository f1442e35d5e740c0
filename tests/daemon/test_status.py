"""`nordlys status`: counts from the journal, the last decisions, and files still waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nordlys.daemon.config import Config, InboxConfig
from nordlys.daemon.status import format_status, gather
from tests.daemon.test_watch import daemon_factory, files_under, moved_to, photo, wait_until  # noqa: F401 (fixture)
from tests.waiting import DEADLINE


def run_status(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(home / "xdg-state"), "XDG_CONFIG_HOME": str(home / "xdg-config")}
    return subprocess.run([sys.executable, "-m", "nordlys.daemon", "status", *args], capture_output=True,
                          text=True, env=env, timeout=DEADLINE)


def test_status_after_the_daemon_ran(tmp_path, daemon_factory):
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    d = daemon_factory([inbox], dest).start()
    (inbox / "green.jpg").write_bytes(photo(1, green=True))
    (inbox / "grey.jpg").write_bytes(photo(2, green=False))
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    wait_until(lambda: len(files_under(dest)) == 3, what="three files filed")
    assert d.stop()[0] == 0
    (inbox / "later-1.jpg").write_bytes(photo(3, green=True))  # arrived while the daemon is down
    (inbox / "later-2.jpg").write_bytes(photo(4, green=True))

    proc = run_status(tmp_path)  # finds the same config file and journal as the daemon
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"journal: {d.journal}" in out
    assert "sorted: 3 files" in out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["aurora", "1"] and str(dest / "aurora") in line for line in lines)
    assert any(line.split()[:2] == ["other", "1"] for line in lines)
    assert any(line.split()[:2] == ["rejected", "1"] for line in lines)
    assert f"{inbox}: 2 files, oldest" in out
    decisions = out.split("last decisions:\n")[1].splitlines()
    assert len(decisions) == 3
    assert any(f"{inbox / 'green.jpg'} -> {moved_to(dest, 'green.jpg')}" in line and " aurora " in line
               for line in decisions)
    assert any("broken.jpg" in line and "rejected" in line and "-" in line.split()[3] for line in decisions)


def test_status_without_a_journal_creates_nothing(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(photo(5, green=False))
    (inbox / ".hidden.jpg").write_bytes(b"ignored")
    journal = tmp_path / "state" / "journal.sqlite"
    config = Config(inboxes=[InboxConfig(inbox)], output_root=tmp_path / "out", journal=journal)
    text = format_status(gather(config))
    assert f"journal: {journal} (none yet: nothing sorted)" in text
    assert "sorted: 0 files" in text
    assert f"{inbox}: 1 file, oldest" in text
    assert not journal.parent.exists()


def test_status_reports_an_unreadable_journal(tmp_path):
    journal = tmp_path / "journal.sqlite"
    journal.write_bytes(b"this is not an SQLite database" * 10)
    config = Config(inboxes=[], journal=journal)
    text = format_status(gather(config))
    assert "cannot read it:" in text and str(journal) in text
    assert "no inboxes configured" in text


def test_status_output_folders_inside_the_inbox_are_not_waiting(tmp_path):
    """Without output_root the folders are made inside the first inbox: they are not 'waiting'."""
    inbox = tmp_path / "inbox"
    (inbox / "aurora").mkdir(parents=True)
    (inbox / "aurora" / "done.jpg").write_bytes(photo(6, green=True))
    (inbox / "new.jpg").write_bytes(photo(7, green=True))
    config = Config(inboxes=[InboxConfig(inbox)], journal=tmp_path / "j.sqlite")
    report = gather(config)
    assert [(w.path, w.files) for w in report.waiting] == [(inbox, 1)]
    assert report.folders["aurora"] == inbox / "aurora"
