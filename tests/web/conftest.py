"""A real `nordlys web` on a free loopback port, over a real tree that `nordlys sort` filed with
the real tiny green model. Nothing here talks to any address but 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from tests.daemon.test_watch import photo
from tests.waiting import DEADLINE, wait_until

pytest.importorskip("starlette", reason="nordlys[web] is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tree:
    """inbox/, sorted/ (aurora, other, review), a config and a state folder, all under tmp_path."""

    def __init__(self, home: Path, model: Path) -> None:
        self.home, self.inbox, self.root = home, home / "inbox", home / "sorted"
        self.state = home / "xdg-state" / "nordlys"
        self.config = home / "xdg-config" / "nordlys" / "config.yaml"
        self.inbox.mkdir(parents=True)
        self.config.parent.mkdir(parents=True)
        # green photos score ~1 (aurora); grey ones fall in the review band [0, 0.5)
        self.settings: dict[str, Any] = {
            "inboxes": [str(self.inbox)], "output_root": str(self.root),
            "model": {"path": str(model), "review_band": 0.5},
            "watch": {"settle_seconds": 0.3, "batch_wait": 0.05, "reconcile_interval": 300},
            "log": {"format": "json", "level": "debug"}}
        self.write_config()

    def write_config(self) -> None:
        self.config.write_text(yaml.safe_dump(self.settings))

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "XDG_STATE_HOME": str(self.home / "xdg-state"),
               "XDG_CONFIG_HOME": str(self.home / "xdg-config")}
        env.pop("NOTIFY_SOCKET", None)
        for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(proxy, None)
        return env

    @property
    def journal(self) -> Path:
        return self.state / "journal.sqlite"

    def sort(self, *, green: int, grey: int, start: int = 0) -> None:
        """Photos into the inbox, then `nordlys sort` files them (review/ and aurora/)."""
        for i in range(start, start + green + grey):
            (self.inbox / f"IMG_{i:04d}.jpg").write_bytes(photo(i, green=i - start < green))
        proc = subprocess.run([sys.executable, "-m", "nordlys.daemon", "sort", str(self.inbox), "--config",
                               str(self.config)], env=self.env, capture_output=True, text=True, timeout=DEADLINE)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def files(self, key: str) -> list[Path]:
        folder = self.root / key
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class WebServer:
    """`nordlys web` in a subprocess; its log lines (stderr) are kept, its stdout is read for the address."""

    def __init__(self, tree: Tree, *flags: str) -> None:
        self.tree, self.port = tree, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.out: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "nordlys.daemon", "web", "--config", str(tree.config),
                                      "--port", str(self.port), *flags], env=tree.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True)]
        for reader in self.readers:
            reader.start()
        wait_until(self._answers, DEADLINE, f"nordlys web on port {self.port}")

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"nordlys web exited {self.proc.returncode}:\n{''.join(self.out + self.lines)}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=DEADLINE, trust_env=False, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self.readers:
            reader.join(DEADLINE)

    def log_has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.fixture
def tree(tmp_path: Path, green_model: Path) -> Tree:
    return Tree(tmp_path, green_model)


@pytest.fixture
def web(tree: Tree) -> Iterator[Callable[..., WebServer]]:
    started: list[WebServer] = []

    def start(*flags: str) -> WebServer:
        server = WebServer(tree, *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def csrf_of(client: httpx.Client, page: str = "/review") -> str:
    """Load a page as a browser does: the CSRF cookie comes with it."""
    response = client.get(page)
    assert response.status_code == 200, response.text
    return client.cookies["nordlys_csrf"]
