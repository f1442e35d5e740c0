"""Configuration: YAML in, typed dataclasses out, and errors that say exactly what is wrong.

Every section is a dataclass whose fields are the allowed keys, so the schema, the defaults and
the documentation live in one place. Loading walks the YAML against those fields: an unknown key
(a typo) or a value of the wrong type is a `ConfigError` naming the file, the dotted key, the value
and what would have been accepted. The config is loaded once by the CLI and passed down; nothing
reads it from a global.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nordlys.daemon.placement import check_layout

EXIT_CONFIG = 2  # exit code for a bad config or bad arguments

DEFAULT_IGNORE = (
    ".*",  # dotfiles and hidden temp files: .DS_Store, .syncthing.*.tmp, rsync's .name.XXXXXX
    "*.part",  # Nextcloud / Firefox partial downloads
    "*.crdownload",  # Chromium partial downloads
    "*.tmp",
    "*.temp",
    "*.partial",
    "~*",  # office lock files and editors' backups
    "Thumbs.db",
    "desktop.ini",
)


class ConfigError(Exception):
    """A config value is wrong; the message names the key, the value and what was expected."""

    exit_code = EXIT_CONFIG


@dataclass
class InboxConfig:
    path: Path  # folder to sort / watch
    recursive: bool = True  # also sort photos in sub-folders
    polling: bool = False  # poll instead of inotify (NFS, CIFS, SSHFS send no inotify events)
    poll_interval: float = 5.0  # seconds between polls when polling is on
    mode: Literal["auto", "move", "copy"] = "auto"  # auto: move, but copy from a Syncthing folder that would send
    #   the deletion back to the phone (syncsafety.py); copy: file a copy, leave the source; move: always move
    sender_send_only: bool = False  # the device sending into this Syncthing folder has it as "Send Only"


@dataclass
class FoldersConfig:
    aurora: str = "aurora"  # folder names under output_root
    other: str = "other"
    review: str = "review"  # scores inside the uncertainty band
    rejected: str = "rejected"  # files that could not be read as images
    duplicates: str = "duplicates"  # photos whose exact bytes were filed before (duplicates: folder)


@dataclass
class ModelConfig:
    path: Path | None = None  # ONNX model; null = the bundled default model
    threshold: float | None = None  # aurora if score >= threshold; null = the model's own threshold
    review_band: float = 0.0  # scores in [threshold - band, threshold) go to review/; 0 = no review
    providers: list[str] = field(default_factory=lambda: ["auto"])  # auto, or onnxruntime provider names
    threads: int = 0  # onnxruntime intra-op threads; 0 = one per core
    batch_size: int = 8  # photos scored per onnxruntime call
    max_pixels: int = 200_000_000  # refuse images larger than this (decompression-bomb limit)
    max_file_bytes: int = 512 * 1024 * 1024  # refuse larger files unread (bytes; bigger than any camera's RAW)


@dataclass
class LogConfig:
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, JSON lines otherwise
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass
class WatchConfig:
    settle_seconds: float = 1.0  # a file is complete once its size and mtime held still this long (seconds)
    reconcile_interval: float = 300.0  # seconds between full rescans of every inbox (missed events); 0 = off
    batch_wait: float = 0.2  # seconds to wait for more complete files to fill a batch
    queue_size: int = 1000  # photos waiting in memory at most; more wait on disk for the next scan
    on_aurora: list[str] = field(default_factory=list)  # argv run per new aurora photo, its path appended; [] = off
    hook_timeout: float = 30.0  # seconds before an on_aurora command is killed
    sidecar_wait: float = 10.0  # seconds a sidecar with no photo waits for one (sync clients send in any order)
    retrain_after: int = 0  # run `nordlys retrain` (at low priority) after this many new corrections; 0 = never
    retrain_data: Path | None = None  # original training data for retrain's validation gate: manifest CSV or folder
    truncated_wait: float = 600.0  # seconds a truncated file must be still before it is rejected (a writer may resume)


@dataclass
class Config:
    inboxes: list[InboxConfig] = field(default_factory=list)  # folders to sort / watch
    output_root: Path | None = None  # where aurora/, other/, ... are made; null = inside the first inbox
    folders: FoldersConfig = field(default_factory=FoldersConfig)
    keep_subfolders: bool = False  # inbox/trip/a.jpg -> aurora/trip/a.jpg instead of aurora/a.jpg
    layout: str = ""  # dated folders under aurora/, other/, review/: e.g. "{year}/{date}" -> aurora/2026/2026-11-30/
    #   fields: {year} {month} {day} {date}, from EXIF DateTimeOriginal, else the file's mtime; "" = none
    model: ModelConfig = field(default_factory=ModelConfig)
    ignore: list[str] = field(default_factory=lambda: list(DEFAULT_IGNORE))  # fnmatch patterns on file names
    journal: Path | None = None  # SQLite journal; null = $XDG_STATE_HOME/nordlys/journal.sqlite
    duplicates: Literal["leave", "folder", "keep"] = "leave"  # a photo whose exact bytes (sha256) were filed
    #   before: leave it where it is, move it to folders.duplicates, or keep it (filed again as NAME_1)
    syncthing_config: Path | None = None  # Syncthing's config.xml, to learn folder types; null = the usual places
    log: LogConfig = field(default_factory=LogConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    videos: Literal["leave", "review", "rejected"] = "leave"  # a video with no photo beside it: stays, or review/, rejected/


def load_config(path: Path) -> Config:
    """Read and validate a YAML config file; relative paths in it are taken relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    if raw is None:
        raw = {}
    config = parse_config(raw, source=str(path), base_dir=path.parent)
    return config


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line with the place and the problem: PyYAML's own text names the parsed string
    ("<unicode string>"), not the file, and spans several lines."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{where}not valid YAML: {problem}" + (f" ({context})" if context else "")


def parse_config(raw: Any, *, source: str = "config", base_dir: Path | None = None) -> Config:
    """Build a Config from already-parsed YAML (a dict); every problem is a ConfigError."""
    config = _build(Config, raw, key="", source=source, base_dir=base_dir or Path.cwd())
    check_values(config, source=source)
    return config


def check_values(config: Config, *, source: str = "config") -> None:
    """Range checks that types alone cannot express."""
    m = config.model

    def fail(key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"{source}: {key} = {value!r}: expected {expected}")

    if m.threshold is not None and not 0.0 <= m.threshold <= 1.0:
        fail("model.threshold", m.threshold, "a number from 0 to 1, or null for the model's own")
    if not 0.0 <= m.review_band < 1.0:
        fail("model.review_band", m.review_band, "a number from 0 (no review folder) to below 1")
    if m.threads < 0:
        fail("model.threads", m.threads, "0 (one per core) or a positive number of threads")
    if not 1 <= m.batch_size <= 256:
        fail("model.batch_size", m.batch_size, "an integer from 1 to 256")
    if m.max_pixels < 1:
        fail("model.max_pixels", m.max_pixels, "a positive number of pixels")
    if m.max_file_bytes < 1:
        fail("model.max_file_bytes", m.max_file_bytes, "a positive number of bytes")
    names = dataclasses.asdict(config.folders)
    for key, name in names.items():
        if not name or "/" in name or name in (".", ".."):
            fail(f"folders.{key}", name, "a plain folder name (no '/', not '.' or '..')")
    if len(set(names.values())) != len(names):
        fail("folders", names, f"{len(names)} different folder names")
    problem = check_layout(config.layout)
    if problem is not None:
        fail("layout", config.layout, f"{problem}, e.g. '{{year}}/{{date}}' or '{{year}}/{{month}}'")
    w = config.watch
    for key in ("settle_seconds", "batch_wait", "hook_timeout", "sidecar_wait", "truncated_wait"):
        if getattr(w, key) < 0:
            fail(f"watch.{key}", getattr(w, key), "a number of seconds, 0 or more")
    if w.reconcile_interval < 0:
        fail("watch.reconcile_interval", w.reconcile_interval, "seconds between rescans, or 0 for none")
    if w.queue_size < 1:
        fail("watch.queue_size", w.queue_size, "a positive number of photos")
    if w.retrain_after < 0:
        fail("watch.retrain_after", w.retrain_after, "a number of corrections, or 0 for never")
    for i, inbox in enumerate(config.inboxes):
        if inbox.poll_interval <= 0:
            fail(f"inboxes[{i}].poll_interval", inbox.poll_interval, "a positive number of seconds")


def check_paths(config: Config, *, source: str = "config") -> None:
    """Paths must exist and be of the right kind before any file is touched."""
    for i, inbox in enumerate(config.inboxes):
        if not inbox.path.is_dir():
            what = "does not exist" if not inbox.path.exists() else "is not a directory"
            raise ConfigError(f"{source}: inboxes[{i}].path = '{inbox.path}' {what}: expected an existing folder")
    root = config.output_root
    if root is not None and root.exists() and not root.is_dir():
        raise ConfigError(f"{source}: output_root = '{root}' is not a directory: expected a folder (it is made if missing)")
    if root is not None and not root.exists() and not _nearest_existing(root).is_dir():
        raise ConfigError(f"{source}: output_root = '{root}': its parent is not a folder")
    model = config.model.path
    if model is not None and not model.is_file():
        raise ConfigError(f"{source}: model.path = '{model}' is not a file: expected an ONNX model file")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --- the generic walker: dataclass fields are the schema --------------------------------------

def _build(cls: type, raw: Any, *, key: str, source: str, base_dir: Path) -> Any:
    where = key or "top level"
    if not isinstance(raw, dict):
        if cls is InboxConfig and isinstance(raw, str):  # `- /path` is short for `- path: /path`
            raw = {"path": raw}
        else:
            raise ConfigError(f"{source}: {where} = {raw!r}: expected a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for name, value in raw.items():
        dotted = f"{key}.{name}" if key else str(name)
        if name not in allowed:
            raise ConfigError(f"{source}: unknown key {dotted!r}: expected one of {allowed}")
        values[name] = _coerce(hints[name], value, key=dotted, source=source, base_dir=base_dir)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in values]
    if missing:
        raise ConfigError(f"{source}: {key + '.' if key else ''}{missing[0]} is missing: it is required")
    return cls(**values)


def _coerce(hint: Any, value: Any, *, key: str, source: str, base_dir: Path) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{source}: {key} = {value!r}: expected {expected}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key=key, source=source, base_dir=base_dir)
    if origin is Literal:
        if value not in args:
            fail(f"one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            fail("a list")
        return [_coerce(args[0], v, key=f"{key}[{i}]", source=source, base_dir=base_dir)
                for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key=key, source=source, base_dir=base_dir)
    if hint is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            fail("a path (a non-empty string)")
        path = Path(os.path.expandvars(value)).expanduser()
        return path if path.is_absolute() else (base_dir / path)
    raise TypeError(f"config schema uses an unsupported type {hint!r} at {key}")  # a bug, not user error


def find_config_file(explicit: Path | None) -> Path | None:
    """The config to use: --config, else $XDG_CONFIG_HOME/nordlys/config.yaml, else /etc/nordlys/config.yaml."""
    if explicit is not None:
        return explicit
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (xdg / "nordlys" / "config.yaml", Path("/etc/nordlys/config.yaml")):
        if candidate.is_file():
            return candidate
    return None
