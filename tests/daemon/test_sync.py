"""Synced inboxes (issue 17): a sort must never cause a deletion on the sending device, and a photo
is filed once however often it is sent. (An interrupted `rsync --partial`, resumed, is tested with
the truncated-file wait it relies on, in tests/reliability/test_read_path.py.)

Real parts only: syncsafety reads real Syncthing config files and asks a real HTTP server on
loopback; the daemon runs as a subprocess on real folders; `rsync` is the real program; and the
slow tests run two real Syncthing instances on loopback (global discovery, relays, NAT, usage and
crash reporting off; devices introduced by tcp://127.0.0.1:PORT; GUI/API on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from nordlys.daemon.config import ConfigError, InboxConfig
from nordlys.daemon.placement import KEEP, LEAVE, TO_FOLDER, duplicate_rule
from nordlys.daemon.syncsafety import decide_inbox_mode, find_marker
from tests.daemon.test_watch import Daemon, files_under, journal_rows, photo
from tests.waiting import wait_until


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def synced_folder(root: Path) -> Path:
    (root / ".stfolder").mkdir(parents=True)
    return root


def syncthing_xml(folder: Path, folder_type: str, *, gui: str = "127.0.0.1:1", api_key: str = "k") -> str:
    return (f'<configuration version="37"><folder id="photos" path="{folder}" type="{folder_type}"></folder>'
            f'<gui enabled="true" tls="false"><address>{gui}</address><apikey>{api_key}</apikey></gui>'
            f'</configuration>')


# --- deciding move or copy (syncsafety) ------------------------------------------------------

def test_a_plain_folder_is_moved_from(tmp_path: Path) -> None:
    mode = decide_inbox_mode(InboxConfig(tmp_path), syncthing_config=None)
    assert not mode.copy and "not a Syncthing folder" in mode.why


def test_the_marker_is_found_above_the_inbox(tmp_path: Path) -> None:
    root = synced_folder(tmp_path / "phone")
    (root / "DCIM" / "Camera").mkdir(parents=True)
    assert find_marker(root / "DCIM" / "Camera") == root
    assert find_marker(tmp_path) is None


@pytest.mark.parametrize("folder_type, copy", [("sendreceive", True), ("sendonly", True), ("receiveonly", False)])
def test_the_folder_type_in_syncthings_config_decides(tmp_path: Path, folder_type: str, copy: bool) -> None:
    root = synced_folder(tmp_path / "phone")
    config = tmp_path / "config.xml"
    config.write_text(syncthing_xml(root, folder_type))
    mode = decide_inbox_mode(InboxConfig(root / "DCIM"), syncthing_config=config)
    assert mode.copy is copy
    assert mode.syncthing is not None and mode.syncthing.folder_type == folder_type
    assert str(config) in mode.why  # says where the type was learned


def test_an_unknown_folder_type_is_copied_from_and_says_how_to_move(tmp_path: Path) -> None:
    root = synced_folder(tmp_path / "phone")
    mode = decide_inbox_mode(InboxConfig(root), syncthing_config=tmp_path / "missing.xml")
    assert mode.copy and "unknown type" in mode.why and "Receive Only" in mode.why


def test_the_config_can_say_the_sender_is_send_only(tmp_path: Path) -> None:
    root = synced_folder(tmp_path / "phone")
    config = tmp_path / "config.xml"
    config.write_text(syncthing_xml(root, "sendreceive"))
    mode = decide_inbox_mode(InboxConfig(root, sender_send_only=True), syncthing_config=config)
    assert not mode.copy and "sender_send_only" in mode.why


def test_an_explicit_move_from_a_send_receive_folder_is_refused_with_the_way_out(tmp_path: Path) -> None:
    root = synced_folder(tmp_path / "phone")
    config = tmp_path / "config.xml"
    config.write_text(syncthing_xml(root, "sendreceive"))
    with pytest.raises(ConfigError) as caught:
        decide_inbox_mode(InboxConfig(root, mode="move"), syncthing_config=config, source="nordlys.yaml")
    message = str(caught.value)
    assert message.startswith("nordlys.yaml: inboxes[0].mode = 'move'")
    assert "sendreceive" in message and "Receive Only" in message and "mode: copy" in message


def test_copy_mode_is_copy_whatever_the_folder(tmp_path: Path) -> None:
    assert decide_inbox_mode(InboxConfig(tmp_path, mode="copy"), syncthing_config=None).copy


class _FakeSyncthingAPI(http.server.BaseHTTPRequestHandler):
    folders: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/rest/config/folders" or self.headers.get("X-API-Key") != "secret":
            self.send_error(403)
            return
        body = json.dumps(self.folders).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_running_syncthings_answer_wins_over_its_config_file(tmp_path: Path) -> None:
    """The REST API on loopback gives the live type (a folder changed to Receive Only in the GUI a
    moment ago); the config file on disk may be older. The API key comes from that file."""
    root = synced_folder(tmp_path / "phone")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeSyncthingAPI)
    _FakeSyncthingAPI.folders = [{"id": "photos", "path": str(root), "type": "receiveonly"}]
    thread = threading.Thread(target=server.serve_forever, name="fake-syncthing-api")
    thread.start()
    try:
        config = tmp_path / "config.xml"
        config.write_text(syncthing_xml(root, "sendreceive", gui=f"127.0.0.1:{server.server_port}", api_key="secret"))
        mode = decide_inbox_mode(InboxConfig(root), syncthing_config=config)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert not mode.copy and "REST API at 127.0.0.1:" in mode.why


def test_the_duplicate_rules() -> None:
    assert duplicate_rule("leave", copy_mode=False) == LEAVE
    assert duplicate_rule("folder", copy_mode=False) == TO_FOLDER
    assert duplicate_rule("folder", copy_mode=True) == LEAVE  # the source stays anyway: no second copy
    assert duplicate_rule("keep", copy_mode=True) == KEEP
    with pytest.raises(ValueError, match="expected one of"):
        duplicate_rule("delete", copy_mode=False)


# --- copy mode and re-sent photos, through the real daemon -------------------------------------

@pytest.fixture
def daemon_home(tmp_path: Path) -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.kill()


def start_daemon(made: list[Daemon], home: Path, inboxes: list[Any], dest: Path, model: Path,
                 **config: Any) -> Daemon:
    daemon = Daemon(home, inboxes=inboxes, dest=dest, model=model)
    if config:
        daemon.write_config(inboxes=inboxes, model=model, **config)
    made.append(daemon)
    return daemon.start()


def filed(dest: Path) -> dict[str, str]:
    return {str(p.relative_to(dest)): sha(p.read_bytes()) for p in files_under(dest)}


def test_copy_mode_files_copies_once_and_a_restart_reads_nothing_again(tmp_path: Path, green_model: Path,
                                                                       daemon_home: list[Daemon]) -> None:
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    photos = {f"IMG_{i}.jpg": photo(i, green=i % 2 == 0) for i in range(6)}
    for name, data in photos.items():
        (inbox / name).write_bytes(data)
    inboxes = [{"path": str(inbox), "mode": "copy"}]
    daemon = start_daemon(daemon_home, tmp_path / "home", inboxes, dest, green_model)
    wait_until(lambda: len(daemon.find("sorted")) == len(photos), 60, "six photos filed")
    assert daemon.find("inbox mode", mode="copy")
    daemon.stop()
    assert {p.name: p.read_bytes() for p in inbox.iterdir()} == photos  # the sources stay, untouched
    assert sorted(filed(dest).values()) == sorted(sha(d) for d in photos.values())
    # a restart scans the inbox: every file is known by path, size and mtime, and nothing is read
    daemon = start_daemon(daemon_home, tmp_path / "home", inboxes, dest, green_model)
    daemon.wait_for("scanned", 60)
    (inbox / "NEW.jpg").write_bytes(photo(99, green=True))  # queued behind anything the scan offered
    daemon.wait_for("sorted", 60)
    daemon.stop()
    assert [e["path"] for e in daemon.find("sorted")] == [str(inbox / "NEW.jpg")]
    assert daemon.find("left in place") == []  # the six were not even read: no duplicate check ran
    assert len(files_under(dest)) == len(photos) + 1


def test_a_re_sent_photo_is_not_filed_again_by_default(tmp_path: Path, green_model: Path,
                                                       daemon_home: list[Daemon]) -> None:
    """Move mode: the same bytes arrive again (a re-sync, a re-run copy) under the same name and
    under another: both stay in the inbox, each with a journal row saying where the bytes are."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    data = photo(1, green=True)
    daemon = start_daemon(daemon_home, tmp_path / "home", [inbox], dest, green_model)
    (inbox / "IMG_1.jpg").write_bytes(data)
    first = daemon.wait_for("sorted", 60)
    (inbox / "IMG_1.jpg").write_bytes(data)
    (inbox / "copy of IMG_1.jpg").write_bytes(data)
    wait_until(lambda: len(daemon.find("left in place")) == 2, 60, "both re-sent copies left in place")
    daemon.stop()
    assert [p.name for p in files_under(dest)] == ["IMG_1.jpg"] and first["path"].endswith("IMG_1.jpg")
    assert sorted(p.name for p in inbox.iterdir()) == ["IMG_1.jpg", "copy of IMG_1.jpg"]
    reasons = [r[0] for r in journal_rows(daemon.journal, "SELECT detail FROM entries WHERE status = 'failed'")]
    assert len(reasons) == 2 and all("same bytes as" in r and "IMG_1.jpg" in r for r in reasons), reasons


def test_duplicates_folder_rule(tmp_path: Path, green_model: Path, daemon_home: list[Daemon]) -> None:
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    data = photo(2, green=False)
    daemon = start_daemon(daemon_home, tmp_path / "home", [inbox], dest, green_model, duplicates="folder")
    (inbox / "IMG_2.jpg").write_bytes(data)
    daemon.wait_for("sorted", 60, label="other")
    (inbox / "IMG_2.jpg").write_bytes(data)
    daemon.wait_for("sorted", 60, label="duplicates")
    daemon.stop()
    assert sorted(str(p.relative_to(dest)) for p in files_under(dest)) == ["duplicates/IMG_2.jpg", "other/IMG_2.jpg"]
    assert list(inbox.iterdir()) == []


COPIERS = {  # a cron job's copy from the phone's folder into the inbox; prints one line per file it sent
    "rsync": lambda src, dst, home: ["rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/"],
    "rclone": lambda src, dst, home: ["rclone", "copy", "--config", str(home / "rclone.conf"), "-v",
                                      "--stats", "0", str(src), str(dst)],
}


@pytest.mark.parametrize("copier", sorted(COPIERS))
def test_a_copy_run_twice_files_each_photo_once(tmp_path: Path, green_model: Path, daemon_home: list[Daemon],
                                                copier: str) -> None:
    """`rsync -a phone/ inbox/` or `rclone copy phone inbox`, run again: the second run sends
    everything again (the inbox was emptied), and those copies stay in the inbox; a third run then
    finds them there and sends nothing, so the inbox settles as a mirror and nothing is filed twice."""
    if shutil.which(copier) is None:
        pytest.skip(f"{copier} not installed (apt-get install {copier})")
    phone, inbox, dest = tmp_path / "phone", tmp_path / "inbox", tmp_path / "sorted"
    phone.mkdir()
    inbox.mkdir()
    photos = {f"PXL_{i}.jpg": photo(i, green=i % 3 == 0) for i in range(12)}
    for name, data in photos.items():
        (phone / name).write_bytes(data)
    daemon = start_daemon(daemon_home, tmp_path / "home", [inbox], dest, green_model)

    def rsync() -> str:
        done = subprocess.run(COPIERS[copier](phone, inbox, tmp_path), capture_output=True, text=True, check=True)
        return "\n".join(line for line in (done.stdout + done.stderr).splitlines() if ".jpg" in line)

    rsync()
    wait_until(lambda: len(daemon.find("sorted")) == len(photos), 60, "the first run filed")
    assert rsync(), "the second run sent nothing: the premise of this test is gone"
    wait_until(lambda: len(daemon.find("left in place")) == len(photos), 60, "the second run's copies left")
    third = rsync()
    daemon.stop()
    assert len(daemon.find("sorted")) == len(photos)
    assert sorted(filed(dest).values()) == sorted(sha(d) for d in photos.values())  # once each, no _1
    assert third.strip() == "", f"rsync sent again: {third}"
    assert {p.name: p.read_bytes() for p in phone.iterdir()} == photos


def test_status_of_kept_files_survives_a_journal_reopen(tmp_path: Path) -> None:
    """The rescan skip lives in the journal (table `kept`), not only in memory."""
    from nordlys.daemon.journal import Journal
    photo_file = tmp_path / "a.jpg"
    photo_file.write_bytes(b"x")
    with Journal.open(tmp_path / "j.sqlite") as journal:
        journal.remember_kept(photo_file, os.lstat(photo_file), sha(b"x"), tmp_path / "out" / "a.jpg")
    with Journal.open(tmp_path / "j.sqlite") as journal:
        st = os.lstat(photo_file)
        assert journal.kept_signature(photo_file) == (st.st_size, st.st_mtime_ns)
        assert journal.kept_signature(tmp_path / "other.jpg") is None


# --- two real Syncthing instances on loopback --------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_ST_CONFIG = """<configuration version="36">
    <folder id="photos" label="photos" path="{folder}" type="{folder_type}" rescanIntervalS="3600"
            fsWatcherEnabled="true" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">
        <filesystemType>basic</filesystemType>
        <device id="{me}" introducedBy=""></device>
        <device id="{peer}" introducedBy=""></device>
        <minDiskFree unit="%">0</minDiskFree>
        <versioning></versioning>
        <markerName>.stfolder</markerName>
    </folder>
    <device id="{me}" name="self" compression="metadata" introducer="false">
        <address>dynamic</address>
    </device>
    <device id="{peer}" name="peer" compression="metadata" introducer="false">
        <address>tcp://127.0.0.1:{peer_port}</address>
    </device>
    <gui enabled="true" tls="false" debugging="false">
        <address>127.0.0.1:{gui_port}</address>
        <apikey>{api_key}</apikey>
    </gui>
    <options>
        <listenAddress>tcp://127.0.0.1:{port}</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <urAccepted>-1</urAccepted>
        <crashReportingEnabled>false</crashReportingEnabled>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <startBrowser>false</startBrowser>
        <reconnectionIntervalS>1</reconnectionIntervalS>
        <minHomeDiskFree unit="%">0</minHomeDiskFree>
        <setLowPriority>false</setLowPriority>
    </options>
</configuration>
"""


class Syncthing:
    """One real Syncthing instance in a temporary home, talking only to 127.0.0.1."""

    def __init__(self, home: Path, folder: Path) -> None:
        self.home, self.folder = home, folder
        self.port, self.gui_port, self.api_key = free_port(), free_port(), f"key-{home.name}"
        folder.mkdir(parents=True)
        (folder / ".stfolder").mkdir()
        subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                       capture_output=True, check=True, timeout=120)
        text = (home / "config.xml").read_text()
        self.device = text.split('<device id="', 1)[1].split('"', 1)[0]
        self.proc: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.home / "config.xml"

    def configure(self, peer: "Syncthing", folder_type: str) -> None:
        self.config.write_text(_ST_CONFIG.format(folder=self.folder, folder_type=folder_type, me=self.device,
                                                 peer=peer.device, peer_port=peer.port, port=self.port,
                                                 gui_port=self.gui_port, api_key=self.api_key))

    def start(self) -> None:
        env = {**os.environ, "STNOUPGRADE": "1", "STNORESTART": "1", "HOME": str(self.home)}
        env.pop("http_proxy", None)
        env.pop("https_proxy", None)
        self.proc = subprocess.Popen(["syncthing", "serve", f"--home={self.home}", "--no-browser", "--no-restart",
                                      "--no-upgrade", "--no-default-folder", f"--logfile={self.home / 'log.txt'}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_until(lambda: self._answers(), 120, f"Syncthing API on 127.0.0.1:{self.gui_port}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"syncthing exited {self.proc.returncode}: {(self.home / 'log.txt').read_text()[-2000:]}")
        try:
            return self.api("GET", "/rest/system/ping") == {"ping": "pong"}
        except OSError:
            return False

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.gui_port}{path}", method=method,
                                         headers={"X-API-Key": self.api_key})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
        with opener.open(request, timeout=120) as answer:  # POST /rest/db/scan returns when the scan is done
            body = answer.read()
        return json.loads(body) if body.strip() else None

    def connected_to(self, peer: "Syncthing") -> bool:
        return bool(self.api("GET", "/rest/system/connections")["connections"].get(peer.device, {}).get("connected"))

    def idle(self) -> bool:
        status = self.api("GET", "/rest/db/status?folder=photos")
        return status["state"] == "idle" and status["needTotalItems"] == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def syncthing_pair(tmp_path: Path) -> Iterator[Any]:
    """start(a_type, b_type) -> (A, B): A stands for the phone, B for the server; one shared folder."""
    if shutil.which("syncthing") is None:
        pytest.skip("syncthing not installed (apt-get install syncthing)")
    started: list[Syncthing] = []

    def start(a_type: str, b_type: str) -> tuple[Syncthing, Syncthing]:
        a = Syncthing(tmp_path / "st-a", tmp_path / "phone")
        b = Syncthing(tmp_path / "st-b", tmp_path / "server" / "inbox")
        a.configure(b, a_type)
        b.configure(a, b_type)
        for one in (a, b):
            started.append(one)
            one.start()
        wait_until(lambda: a.connected_to(b) and b.connected_to(a), 120, "the two Syncthings connected")
        return a, b

    yield start
    for one in started:
        one.stop()


def drop_burst(folder: Path, count: int, first: int = 0) -> dict[str, bytes]:
    """Photos appear whole (written under a dot name, then renamed), as a camera app saves them."""
    photos = {f"PXL_{i:04d}.jpg": photo(i, green=i % 2 == 0) for i in range(first, first + count)}
    for name, data in photos.items():
        (folder / f".{name}.part").write_bytes(data)
        os.replace(folder / f".{name}.part", folder / name)
    return photos


def synced_through(a: Syncthing, b: Syncthing, tag: str) -> None:
    """A barrier: everything B sent before now has reached A. B rescans (so whatever nordlys did
    there is in its index), a marker file made after that scan must arrive at A, and both must
    then have nothing left to pull."""
    b.api("POST", "/rest/db/scan?folder=photos")
    (b.folder / f".barrier-{tag}").write_bytes(tag.encode())
    b.api("POST", "/rest/db/scan?folder=photos")
    wait_until(lambda: (a.folder / f".barrier-{tag}").exists(), 180, f"barrier {tag} at A")
    wait_until(lambda: a.idle() and b.idle(), 180, "both Syncthings idle")


def photos_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".jpg"}


def sort_a_burst(tmp_path: Path, model: Path, pair: Any, made: list[Daemon], *, b_type: str, count: int,
                 mode: str) -> tuple[Syncthing, Syncthing, Daemon, Path, dict[str, bytes]]:
    """Phone A ("Send & Receive") and server B (b_type) in sync; nordlys watches B's folder and
    must have chosen `mode` for it; a burst taken at A has been sorted by nordlys."""
    a, b = pair("sendreceive", b_type)
    dest = tmp_path / "server" / "sorted"
    daemon = start_daemon(made, tmp_path / "home", [b.folder], dest, model, syncthing_config=str(b.config))
    chosen = daemon.wait_for("inbox mode", 60)
    assert chosen["mode"] == mode, chosen
    sent = drop_burst(a.folder, count)
    a.api("POST", "/rest/db/scan?folder=photos")
    wait_until(lambda: len(daemon.find("sorted")) == len(sent), 300, "nordlys sorted the burst")
    return a, b, daemon, dest, sent


@pytest.mark.slow
def test_syncthing_default_folders_the_phone_keeps_every_photo(tmp_path: Path, green_model: Path,
                                                               syncthing_pair: Any,
                                                               daemon_home: list[Daemon]) -> None:
    """Both folders "Send & Receive" (Syncthing's default): nordlys copies instead of moving, and
    after it has sorted a burst the phone's folder still holds every photo."""
    a, b, daemon, dest, sent = sort_a_burst(tmp_path, green_model, syncthing_pair, daemon_home,
                                            b_type="sendreceive", count=40, mode="copy")
    assert "sendreceive" in daemon.find("inbox mode")[0]["why"]
    synced_through(a, b, "after-sort")
    daemon.stop()
    assert photos_in(a.folder) == sent  # the phone lost nothing
    assert photos_in(b.folder) == sent  # copy mode: the server's synced folder is untouched too
    assert sorted(filed(dest).values()) == sorted(sha(d) for d in sent.values())


@pytest.mark.slow
def test_syncthing_receive_only_moves_and_a_revert_files_nothing_twice(tmp_path: Path, green_model: Path,
                                                                       syncthing_pair: Any,
                                                                       daemon_home: list[Daemon]) -> None:
    """B "Receive Only": nordlys moves photos out (Syncthing keeps B's deletions to itself), the
    phone keeps them; "Revert Local Changes" on B brings them all back, and nordlys files none of
    them a second time: each is left in place, as the same bytes are filed already."""
    a, b, daemon, dest, sent = sort_a_burst(tmp_path, green_model, syncthing_pair, daemon_home,
                                            b_type="receiveonly", count=30, mode="move")
    assert "Receive Only" in daemon.find("inbox mode")[0]["why"]
    assert photos_in(b.folder) == {}  # moved out
    # B sends nothing by design, so the barrier runs the other way: once a change made at A after
    # the sort has reached B, B has scanned its deletions and kept them as local changes
    b.api("POST", "/rest/db/scan?folder=photos")
    synced_through(b, a, "after-sort")
    assert b.api("GET", "/rest/db/status?folder=photos")["receiveOnlyChangedDeletes"] == len(sent)
    assert photos_in(a.folder) == sent  # the deletions stayed on the server
    b.api("POST", "/rest/db/revert?folder=photos")
    wait_until(lambda: len(daemon.find("left in place")) == len(sent), 300, "every re-sent photo left in place")
    daemon.stop()
    assert photos_in(b.folder) == sent and photos_in(a.folder) == sent
    assert sorted(filed(dest).values()) == sorted(sha(d) for d in sent.values())  # no NAME_1, nothing twice


def test_sort_of_a_syncthing_folder_copies_and_says_why(tmp_path: Path, green_model: Path) -> None:
    """`nordlys sort` decides as the daemon does: a Syncthing folder of unknown type is copied from."""
    phone = synced_folder(tmp_path / "phone")
    photos = {f"IMG_{i}.jpg": photo(i, green=i == 0) for i in range(3)}
    for name, data in photos.items():
        (phone / name).write_bytes(data)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "HOME": str(tmp_path)}  # no Syncthing config anywhere: the type is unknown
    done = subprocess.run([sys.executable, "-m", "nordlys.daemon", "sort", str(phone), "--dest", str(tmp_path / "out"),
                           "--model", str(green_model)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "copied instead" in done.stderr  # the reason, as a warning
    assert done.stdout.startswith("copied 3 files (3 photos)"), done.stdout
    assert photos_in(phone) == photos
    assert sorted(filed(tmp_path / "out").values()) == sorted(sha(d) for d in photos.values())


def test_identical_unreadable_files_are_all_rejected_not_left_as_duplicates(tmp_path: Path, green_model: Path,
                                                                             daemon_home: list[Daemon]) -> None:
    """Two empty "photos" share one sha256; the duplicate rule is for photos, so both go to rejected/."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    daemon = start_daemon(daemon_home, tmp_path / "home", [inbox], dest, green_model,
                          watch={"settle_seconds": 0.3, "batch_wait": 0.05, "truncated_wait": 0})
    (inbox / "a.jpg").write_bytes(b"not a jpeg")
    daemon.wait_for("rejected", 60)
    (inbox / "b.jpg").write_bytes(b"not a jpeg")
    wait_until(lambda: len(daemon.find("rejected")) == 2, 60, "the second bad file rejected too")
    daemon.stop()
    assert sorted(p.name for p in files_under(dest / "rejected")) == ["a.jpg", "b.jpg"]


def test_a_synced_folder_inside_a_recursive_inbox_is_copied_from(tmp_path: Path, green_model: Path,
                                                                  daemon_home: list[Daemon]) -> None:
    """An inbox holding a phone's Syncthing folder as one of its sub-folders: photos there are
    copied (the phone keeps them), photos elsewhere in the inbox are moved as usual."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    phone = synced_folder(inbox / "phone")
    (inbox / "card").mkdir()
    (phone / "PXL_1.jpg").write_bytes(photo(1, green=True))
    (inbox / "card" / "DSC_2.jpg").write_bytes(photo(2, green=False))
    daemon = start_daemon(daemon_home, tmp_path / "home", [inbox], dest, green_model)
    assert daemon.find("inbox mode", mode="copy", inbox=str(phone))
    wait_until(lambda: len(daemon.find("sorted")) == 2, 60, "both photos filed")
    daemon.stop()
    assert photos_in(phone) == {"PXL_1.jpg": photo(1, green=True)}  # copied: the phone keeps it
    assert photos_in(inbox / "card") == {}  # moved
    assert sorted(p.name for p in files_under(dest)) == ["DSC_2.jpg", "PXL_1.jpg"]


def test_undo_of_copies_removes_them_and_leaves_the_synced_folder_as_it_was(tmp_path: Path,
                                                                             green_model: Path) -> None:
    """Undo of a copy-mode sort: the sources never left, so undo removes the copies; it does not
    put them back beside their sources as NAME_1 (which Syncthing would send to the phone)."""
    phone = synced_folder(tmp_path / "phone")
    photos = {f"IMG_{i}.jpg": photo(i, green=i == 0) for i in range(2)}
    for name, data in photos.items():
        (phone / name).write_bytes(data)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "HOME": str(tmp_path)}

    def nordlys(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nordlys.daemon", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    assert nordlys("sort", str(phone), "--dest", str(tmp_path / "out"), "--model", str(green_model)).returncode == 0
    assert len(files_under(tmp_path / "out")) == 2
    undone = nordlys("undo")
    assert undone.returncode == 0, undone.stderr
    assert sorted(p.name for p in phone.iterdir() if p.suffix == ".jpg") == sorted(photos)  # no IMG_0_1.jpg
    assert photos_in(phone) == photos and files_under(tmp_path / "out") == []
    status = journal_rows(tmp_path / "state" / "nordlys" / "journal.sqlite", "SELECT status FROM entries")
    assert sorted(r[0] for r in status) == ["undone", "undone"]


def test_status_does_not_count_copy_mode_sources_as_waiting(tmp_path: Path, green_model: Path) -> None:
    phone = synced_folder(tmp_path / "phone")
    (phone / "IMG_1.jpg").write_bytes(photo(1, green=True))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "HOME": str(tmp_path)}
    config = tmp_path / "config" / "nordlys" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"inboxes: ['{phone}']\noutput_root: '{tmp_path / 'out'}'\nmodel: {{path: '{green_model}'}}\n")
    run = [sys.executable, "-m", "nordlys.daemon"]
    assert subprocess.run([*run, "sort", str(phone)], env=env, capture_output=True, timeout=300).returncode == 0
    (phone / "IMG_2.jpg").write_bytes(photo(2, green=True))  # new: this one does wait
    status = subprocess.run([*run, "status"], env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr
    waiting = status.stdout.split("waiting:", 1)[1]
    assert f"{phone}: 1 file" in waiting, status.stdout
