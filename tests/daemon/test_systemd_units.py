"""systemd integration: the unit files (text, `systemd-analyze verify`, security exposure) and the
sd_notify messages the real daemon sends over a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nordlys.daemon.sdnotify import Notifier, socket_address, watchdog_interval
from tests.daemon.test_watch import daemon_factory, moved_to, photo, wait_until  # noqa: F401 (fixture)

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SYSTEM_UNIT, USER_UNIT = UNITS / "nordlys.service", UNITS / "nordlys-user.service"
WEB_UNIT = UNITS / "nordlys-web.service"  # nordlys web, beside the daemon (issue 15)
ANALYZE = shutil.which("systemd-analyze")


def directives(path: Path) -> dict[str, list[str]]:
    """'Section.Key' -> every value given (systemd allows repeated keys)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def one(d: dict[str, list[str]], key: str) -> str:
    assert key in d, f"missing {key}"
    return d[key][-1]


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_unit_has_the_required_directives(unit):
    d = directives(unit)
    assert one(d, "Service.Type") == "notify"
    assert one(d, "Service.Restart") == "on-failure"
    assert int(one(d, "Service.WatchdogSec")) >= 10
    assert " watch" in one(d, "Service.ExecStart") and one(d, "Service.ExecStart").split()[0].endswith("/nordlys")
    assert "-HUP" in one(d, "Service.ExecReload")
    assert one(d, "Service.ProtectSystem") == "strict"
    assert one(d, "Service.ReadWritePaths")
    assert one(d, "Service.NoNewPrivileges") == "yes"
    assert one(d, "Service.PrivateTmp") == "yes"
    assert one(d, "Service.ProtectHome") in ("yes", "read-only", "tmpfs")
    assert one(d, "Service.RestrictAddressFamilies") == "AF_UNIX"
    assert one(d, "Service.CapabilityBoundingSet") == ""
    assert one(d, "Service.StateDirectory") == "nordlys"
    assert "Install.WantedBy" in d


def test_system_unit_runs_as_a_fixed_user_with_its_config_in_etc():
    d = directives(SYSTEM_UNIT)
    assert one(d, "Service.User") == "nordlys" and "Service.DynamicUser" not in d
    assert one(d, "Service.AmbientCapabilities") == ""
    assert "--config /etc/nordlys/config.yaml" in one(d, "Service.ExecStart")
    assert one(d, "Install.WantedBy") == "multi-user.target"
    assert one(directives(USER_UNIT), "Install.WantedBy") == "default.target"


def test_web_unit_is_hardened_like_the_daemons_and_firewalled_to_loopback():
    d, daemon = directives(WEB_UNIT), directives(SYSTEM_UNIT)
    assert " web " in one(d, "Service.ExecStart") + " " and "--config /etc/nordlys/config.yaml" in one(d, "Service.ExecStart")
    assert "--host" not in one(d, "Service.ExecStart")  # loopback unless the admin opens it (then a token)
    assert one(d, "Service.User") == one(daemon, "Service.User")  # the same journal and output root
    assert one(d, "Service.StateDirectory") == "nordlys" and one(d, "Service.Restart") == "on-failure"
    assert one(d, "Service.RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert one(d, "Service.IPAddressDeny") == "any" and one(d, "Service.IPAddressAllow") == "localhost"
    shared = [k for k in daemon if k.startswith("Service.") and (k.startswith("Service.Protect")
              or k.startswith("Service.Private") or k.startswith("Service.Restrict") or k.startswith("Service.SystemCall")
              or k in ("Service.NoNewPrivileges", "Service.CapabilityBoundingSet", "Service.LockPersonality",
                       "Service.MemoryDenyWriteExecute", "Service.ProcSubset", "Service.DevicePolicy"))]
    differ = {k: (daemon[k], d.get(k)) for k in shared if d.get(k) != daemon[k]
              and k not in ("Service.RestrictAddressFamilies", "Service.PrivateNetwork")}
    assert not differ, differ
    assert "Service.PrivateNetwork" not in d  # it serves TCP; IPAddressAllow keeps it to loopback


def installed_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit as installed: ExecStart pointing at this environment's `nordlys` (verify checks
    that the program exists and is executable)."""
    program = Path(sys.executable).with_name("nordlys")
    if not program.exists():
        program = Path(shutil.which("nordlys") or "")
    if not program.is_file():
        pytest.skip("the nordlys console script is not installed in this environment")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={program}", unit.read_text(), flags=re.M)
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


def analyze(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    runtime_dir = tmp_path / "runtime"  # --user needs a runtime directory, even offline
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd)")
@pytest.mark.parametrize("unit,mode", [(SYSTEM_UNIT, []), (USER_UNIT, ["--user"]), (WEB_UNIT, [])],
                         ids=["system", "user", "web"])
def test_systemd_analyze_verify(unit, mode, tmp_path):
    copy = installed_copy(unit, tmp_path)
    proc = analyze(*mode, "verify", str(copy), tmp_path=tmp_path)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if copy.name in line or str(copy) in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def analyze_version() -> int:
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout  # type: ignore[list-item]
    match = re.search(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd)")
@pytest.mark.parametrize("unit,mode", [(SYSTEM_UNIT, []), (USER_UNIT, ["--user"]), (WEB_UNIT, [])],
                         ids=["system", "user", "web"])
def test_security_exposure_is_at_most_2(unit, mode, tmp_path):
    if analyze_version() < 250:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or newer")
    proc = analyze(*mode, "security", "--offline=yes", "--no-pager", str(installed_copy(unit, tmp_path)),
                   tmp_path=tmp_path)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    print(f"\nsystemd-analyze security {' '.join(mode)} {unit.name}: exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.0


# --- sd_notify ---------------------------------------------------------------------------------

def test_socket_address_and_watchdog_interval():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@nordlys/notify") == b"\0nordlys/notify"
    assert socket_address("") is None and socket_address("vsock:2:9") is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def receive_all(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_datagrams(tmp_path, abstract):
    name = f"@nordlys-test-{os.getpid()}-{time.monotonic_ns()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(socket_address(name))  # type: ignore[arg-type]
        server.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": name})
        assert notifier.ready("starting") and notifier.watchdog()
        assert notifier.status("sorted 1") and not notifier.status("sorted 1")  # unchanged: not sent again
        assert receive_all(server) == ["READY=1\nSTATUS=starting", "WATCHDOG=1", "STATUS=sorted 1"]
    assert not Notifier({}).ready()  # outside systemd: a no-op


class NotifyListener:
    """A notify socket read continuously, as systemd reads it (a socket nobody reads fills after
    net.unix.max_dgram_qlen datagrams, 10 by default)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, name="test-notify-listener")
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        self.done.set()
        self.thread.join()
        self.messages += receive_all_nonblocking(self.sock)
        self.sock.close()
        return self.messages


def receive_all_nonblocking(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    return receive_all(sock)


def test_daemon_talks_to_systemd(tmp_path, daemon_factory):
    """READY=1 after start-up, STATUS= with counts, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    path = tmp_path / "notify"
    listener = NotifyListener(path)
    try:
        d = daemon_factory([inbox], dest, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}).start()
        (inbox / "a.jpg").write_bytes(photo(1, green=True))
        wait_until(lambda: moved_to(dest, "a.jpg"), what="a.jpg filed")
        wait_until(lambda: listener.messages.count("WATCHDOG=1") >= 3, what="three watchdog pings")
        assert d.stop()[0] == 0
    finally:
        messages = listener.close()
    assert any(m.startswith("READY=1") for m in messages)
    assert "STATUS=sorted 1 (aurora 1, other 0, rejected 0), waiting 0" in messages
    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    assert ready < messages.index("STOPPING=1")


def test_a_notify_socket_nobody_reads_does_not_stop_the_daemon(tmp_path, daemon_factory):
    """The notify socket's queue is full (nobody reads it): the daemon still files photos and
    stops cleanly on SIGTERM, instead of blocking in sendto."""
    inbox, dest = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        filler.setblocking(False)
        try:
            while True:  # fill the queue up to the kernel's limit
                filler.sendto(b"X=1", str(path))
        except BlockingIOError:
            pass
        finally:
            filler.close()
        d = daemon_factory([inbox], dest, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}).start()
        (inbox / "a.jpg").write_bytes(photo(2, green=True))
        (inbox / "b.jpg").write_bytes(photo(3, green=False))
        wait_until(lambda: moved_to(dest, "a.jpg") and moved_to(dest, "b.jpg"), what="both filed")
        assert d.stop()[0] == 0
    assert d.find("sd_notify failed")
