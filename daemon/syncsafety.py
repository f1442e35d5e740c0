"""Synced inboxes: whether moving a file out of an inbox could delete it on the device that sent it.

Why this exists (issue 17): a Syncthing folder of the default type, "Send & Receive", sends every
deletion to the other devices. nordlys moving a photo out of such an inbox is a deletion there, so
the phone loses its copy, and with versioning off (the default) it is gone for good. Syncthing
marks every folder it syncs with a `.stfolder` folder at its root, so a synced inbox can be told
from a plain one; its type can be learned from Syncthing itself.

What is decided, per inbox (`InboxMode`), and why:
- `mode: copy`: copy. The user asked for it.
- no `.stfolder` at or above the inbox: move. Nothing syncs deletions back (Nextcloud's
  auto-upload, rsync, rclone and SD cards only send).
- a Syncthing folder of type "Receive Only" on this machine: move. Syncthing never sends a
  receive-only folder's local changes; it shows them as "Local Additions/Deletions" instead.
- `sender_send_only: true`: move. The user says the sending device's folder is "Send Only", and
  a send-only folder ignores every change made elsewhere.
- any other Syncthing folder ("Send & Receive", "Send Only" here, or a type that could not be
  learned): with `mode: auto` (the default), copy: the photo is filed and the phone keeps its own;
  with `mode: move`, refuse to start (exit 2), saying how to make moving safe. Copying is the
  default rather than refusing because the daemon then still does its job on the README's setup,
  and nothing is lost either way; refusing is kept for a user who asked for moves explicitly.

How the type is learned, most trusted first: Syncthing's REST API on loopback
(`GET /rest/config/folders`, the running configuration), then its config.xml. The config.xml
found first of: `syncthing_config` from nordlys's config, the Syncthing homes under
$XDG_STATE_HOME / $XDG_CONFIG_HOME / ~, and the same under the home of the user who owns the
synced folder (Syncthing usually runs as that user). The API key is read from that config.xml;
nothing is ever sent anywhere but 127.0.0.1 / ::1.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import pwd
import ssl
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import structlog

from nordlys.daemon.config import ConfigError, InboxConfig

log = structlog.get_logger(__name__)

MARKER = ".stfolder"  # Syncthing's folder marker (a folder since 1.9, a file before)
RECEIVE_ONLY, SEND_ONLY, SEND_RECEIVE = "receiveonly", "sendonly", "sendreceive"
API_TIMEOUT = 3.0  # seconds for one REST call on loopback
HOW_TO_MAKE_SAFE = ("to let nordlys move files out of it, set this folder to \"Receive Only\" in Syncthing on "
                    "this machine (Folder > Edit > Advanced > Folder Type), or set the phone's folder to "
                    "\"Send Only\" and add `sender_send_only: true` to this inbox in nordlys's config; or use "
                    "`mode: copy` (the phone keeps its photos, nordlys files copies)")


@dataclass(frozen=True)
class SyncthingFolder:
    """A Syncthing folder an inbox lies in, and its type where it could be learned."""

    root: Path  # the folder holding .stfolder
    folder_type: str | None  # receiveonly, sendonly, sendreceive, receiveencrypted; None: unknown
    learned_from: str  # "REST API at 127.0.0.1:8384", "config.xml at ...", or why it is unknown


@dataclass(frozen=True)
class InboxMode:
    """How files leave one inbox: moved, or copied with the source left where it is."""

    copy: bool
    why: str
    syncthing: SyncthingFolder | None = None


def find_marker(inbox: Path) -> Path | None:
    """The nearest folder at or above `inbox` holding Syncthing's `.stfolder` marker."""
    for folder in (inbox, *inbox.parents):
        if os.path.lexists(folder / MARKER):
            return folder
    return None


def decide_inbox_mode(inbox: InboxConfig, *, syncthing_config: Path | None, source: str = "config",
                      index: int = 0) -> InboxMode:
    """Move or copy for one inbox (module doc: the cases and why). Raises ConfigError for an
    explicit `mode: move` on a synced folder that would send the deletions back."""
    if inbox.mode == "copy":
        return InboxMode(True, "mode: copy")
    path = Path(os.path.realpath(inbox.path))
    root = find_marker(path)
    if root is None:
        return InboxMode(False, "not a Syncthing folder (no .stfolder at or above it)")
    folder = learn_folder(root, syncthing_config)
    if folder.folder_type == RECEIVE_ONLY:
        return InboxMode(False, f"Syncthing folder {root} is Receive Only here ({folder.learned_from}): "
                                "its deletions are never sent", folder)
    if inbox.sender_send_only:
        return InboxMode(False, f"Syncthing folder {root}: the config says the sender is Send Only "
                                "(sender_send_only: true)", folder)
    kind = f"of type {folder.folder_type}" if folder.folder_type else "of unknown type"
    danger = (f"{root} is a Syncthing folder {kind} ({folder.learned_from}): moving a photo out of it "
              "would reach the sending device as a deletion")
    if inbox.mode == "move":
        raise ConfigError(f"{source}: inboxes[{index}].mode = 'move' on '{inbox.path}': {danger}; {HOW_TO_MAKE_SAFE}")
    return InboxMode(True, f"{danger}, so it is copied instead; {HOW_TO_MAKE_SAFE}", folder)


def learn_folder(root: Path, syncthing_config: Path | None) -> SyncthingFolder:
    """The Syncthing folder at `root` with its type: from the REST API, else from config.xml."""
    tried: list[str] = []
    for config_file in _config_candidates(root, syncthing_config):
        try:
            parsed = _read_config(config_file)
        except (OSError, ElementTree.ParseError) as exc:
            tried.append(f"{config_file}: {exc.strerror if isinstance(exc, OSError) else exc}")
            continue
        folders, address, api_key, tls = parsed
        if address and api_key:
            live = _folders_from_api(address, api_key, tls)
            if live is not None and (found := _type_of(root, live)) is not None:
                return SyncthingFolder(root, found, f"REST API at {address}")
        if (found := _type_of(root, folders)) is not None:
            return SyncthingFolder(root, found, f"config.xml at {config_file}")
        tried.append(f"{config_file}: no folder with this path")
    why = "; ".join(tried) if tried else "no readable Syncthing config.xml found"
    return SyncthingFolder(root, None, f"type unknown: {why}")


def _config_candidates(root: Path, explicit: Path | None) -> list[Path]:
    if explicit is not None:
        return [explicit]
    homes = [Path.home()]
    try:
        homes.append(Path(pwd.getpwuid(os.stat(root).st_uid).pw_dir))
    except (KeyError, OSError):
        pass
    found: list[Path] = []
    for variable, default in (("XDG_STATE_HOME", ".local/state"), ("XDG_CONFIG_HOME", ".config")):
        if os.environ.get(variable):
            found.append(Path(os.environ[variable]) / "syncthing" / "config.xml")
        found += [home / default / "syncthing" / "config.xml" for home in homes]
    unique = list(dict.fromkeys(found))
    return [p for p in unique if p.is_file()]


def _read_config(path: Path) -> tuple[list[tuple[Path, str]], str, str, bool]:
    """(folders as (path, type), GUI address, API key, whether the GUI uses TLS) from config.xml."""
    tree = ElementTree.parse(path)
    folders = [(Path(f.get("path", "")).expanduser(), f.get("type", SEND_RECEIVE))
               for f in tree.getroot().iter("folder") if f.get("path")]
    gui = tree.getroot().find("gui")
    address = (gui.findtext("address") or "").strip() if gui is not None else ""
    api_key = (gui.findtext("apikey") or "").strip() if gui is not None else ""
    tls = gui is not None and gui.get("tls", "false").lower() == "true"
    return folders, address, api_key, tls


def _type_of(root: Path, folders: Iterable[tuple[Path, str]]) -> str | None:
    for path, folder_type in folders:
        if os.path.realpath(path) == os.path.realpath(root):
            return folder_type
    return None


def _loopback_url(address: str, tls: bool) -> str | None:
    """The GUI address as a loopback URL, or None when it is not on this machine's loopback
    (nothing is ever sent elsewhere). 0.0.0.0 / [::] listen on loopback too."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return None
    if host in ("", "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not ip.is_loopback:
        return None
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _folders_from_api(address: str, api_key: str, tls: bool) -> list[tuple[Path, str]] | None:
    """The running Syncthing's folders, or None when it does not answer (not running, other key)."""
    url = _loopback_url(address, tls)
    if url is None:
        return None
    request = urllib.request.Request(url + "/rest/config/folders", headers={"X-API-Key": api_key})
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never through a proxy
    if tls:  # its own self-signed certificate, on loopback
        handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=API_TIMEOUT) as answer:
            data = json.load(answer)
    except (OSError, ValueError) as exc:
        log.debug("syncthing API not usable", url=url, reason=str(exc))
        return None
    return [(Path(f["path"]).expanduser(), str(f.get("type", SEND_RECEIVE))) for f in data
            if isinstance(f, dict) and f.get("path")]


def nested_markers(inbox: Path) -> list[Path]:
    """Syncthing folders inside a recursive inbox (a phone's folder synced into a sub-folder of a
    larger inbox): the folders below `inbox` that hold `.stfolder`. Dot folders are not entered
    (nordlys never files from them)."""
    found = []
    for folder, dirs, files in os.walk(inbox):
        if folder != os.fspath(inbox) and (MARKER in dirs or MARKER in files):
            found.append(Path(folder))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return found


def inbox_modes(inboxes: Sequence[InboxConfig], *, syncthing_config: Path | None,
                source: str = "config") -> dict[Path, InboxMode]:
    """The mode of each inbox, and of each Syncthing folder found inside a recursive inbox that
    is moved from (its files are copied when that folder is not safe to move from), keyed by
    folder; each logged once with its reason. ConfigError as decide_inbox_mode. A Syncthing
    folder made inside an inbox later is seen at the next start or reload."""
    modes = {}
    for i, inbox in enumerate(inboxes):
        mode = decide_inbox_mode(inbox, syncthing_config=syncthing_config, source=source, index=i)
        found = {inbox.path: mode}
        if inbox.recursive and not mode.copy and inbox.path.is_dir():
            for root in nested_markers(inbox.path):
                found[root] = decide_inbox_mode(dataclasses.replace(inbox, path=root),
                                                syncthing_config=syncthing_config, source=source, index=i)
        for folder, chosen in found.items():
            (log.warning if chosen.copy and inbox.mode != "copy" else log.info)(
                "inbox mode", inbox=str(folder), mode="copy" if chosen.copy else "move", why=chosen.why)
        modes.update(found)
    return modes


def copies_from(path: Path, copy_roots: frozenset[str]) -> bool:
    """Whether a file at `path` is copied rather than moved: it lies in a folder (resolved) that
    inbox_modes found unsafe to move from."""
    folder = os.path.realpath(path.parent)
    return any(folder == root or folder.startswith(root.rstrip(os.sep) + os.sep) for root in copy_roots)
