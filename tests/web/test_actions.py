"""Web actions go through the one mover and journal, record a correction once, and the real
daemon's corrections watcher (another process) does not count it a second time."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.daemon.test_watch import Daemon
from tests.waiting import wait_until
from tests.web.conftest import csrf_of

JSON = {"accept": "application/json"}


def corrections(journal: Path) -> list[tuple]:
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT path, old_label, new_label FROM corrections ORDER BY id").fetchall()


def test_web_moves_are_one_correction_each_and_the_daemon_does_not_count_them_again(tree, web, green_model):
    tree.sort(green=0, grey=3)
    daemon = Daemon(tree.home, inboxes=[tree.inbox], dest=tree.root, model=green_model)
    tree.write_config()  # the tree's settings (review band, debug log) for the daemon too
    daemon.start()
    try:
        server = web()
        first, second, third = tree.files("review")
        with server.client() as client:
            token = csrf_of(client)
            moves = [(first, "aurora"), (second, "other"), (third, "aurora")]
            for photo, to in moves:
                response = client.post("/act/move", data={"rel": photo.relative_to(tree.root).as_posix(), "to": to,
                                                          "csrf": token}, headers=JSON)
                assert response.status_code == 200, response.text
                assert response.json()["correction"] is not None
            undone = client.post("/act/undo", data={"csrf": token}, headers=JSON)
            assert undone.status_code == 200, undone.text
            assert undone.json()["restored"] == [third.relative_to(tree.root).as_posix()]
        # the daemon saw each file appear in its new folder and judged it; wait until it has (its
        # worker takes events in order, so the last one judged means all were; the third photo may
        # be back in review/ before the worker looks at aurora/, then there is nothing to judge there)
        for photo, to in moves[:2]:
            daemon.wait_for("not a correction", path=str((tree.root / to / photo.name).resolve()),
                            reason="placed by nordlys itself")
        daemon.wait_for("not a correction", path=str(third.resolve()), reason="destination is not aurora/ or other/")
        assert daemon.find("correction") == []
        assert corrections(tree.journal) == [(str((tree.root / "aurora" / first.name).resolve()), "review", "aurora"),
                                             (str((tree.root / "other" / second.name).resolve()), "review", "other")]
        assert third.exists() and not (tree.root / "aurora" / third.name).exists()
        assert (tree.root / "aurora" / first.name).exists() and (tree.root / "other" / second.name).exists()
    finally:
        daemon.stop()


def test_a_move_takes_its_sidecars_and_never_overwrites(tree, web):
    tree.sort(green=0, grey=1)
    photo = tree.files("review")[0]
    sidecar = photo.with_suffix(".xmp")
    sidecar.write_text("<xmp/>")
    taken = tree.root / "aurora" / photo.name
    taken.parent.mkdir(parents=True, exist_ok=True)
    taken.write_bytes(b"someone else's photo")
    before = photo.read_bytes()
    server = web()
    with server.client() as client:
        response = client.post("/act/move", data={"rel": photo.relative_to(tree.root).as_posix(), "to": "aurora",
                                                  "csrf": csrf_of(client)}, headers=JSON)
    assert response.status_code == 200, response.text
    moved = tree.root / response.json()["rel"]
    assert moved != taken and moved.read_bytes() == before and taken.read_bytes() == b"someone else's photo"
    assert moved.with_suffix(".xmp").read_text() == "<xmp/>" and not sidecar.exists()


def test_undo_with_nothing_to_undo_says_so(tree, web):
    tree.sort(green=0, grey=1)
    server = web()
    with server.client() as client:
        response = client.post("/act/undo", data={"csrf": csrf_of(client)}, headers=JSON)
    assert response.status_code == 409 and "nothing to undo" in response.json()["error"]


def test_the_retrain_button_runs_retrain_and_shows_the_gates_verdict(tree, web):
    pytest.importorskip("onnx", reason="retrain needs the training extras: pip install 'nordlys[train]'")
    tree.sort(green=2, grey=4)
    server = web()
    with server.client() as client:
        token = csrf_of(client)
        for photo in tree.files("review"):  # grey photos the user calls aurora: corrections to learn from
            rel = photo.relative_to(tree.root).as_posix()
            assert client.post("/act/move", data={"rel": rel, "to": "aurora", "csrf": token},
                               headers=JSON).status_code == 200
        assert client.post("/act/retrain", data={"csrf": token}, headers=JSON).json() == {"state": "running"}
        verdict = wait_until(lambda: re.search(r'id="verdict">Last retrain: (.*?)</p>', client.get("/").text),
                             what="the retrain's verdict on the overview")
    with sqlite3.connect(tree.journal) as db:
        status, version, metrics = db.execute("SELECT status, version, metrics FROM models ORDER BY id DESC").fetchone()
    shown = html.unescape(verdict.group(1))
    assert shown.startswith(f"{status}: {version} (") and json.loads(metrics)["gate"] in shown
