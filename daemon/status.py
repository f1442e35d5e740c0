"""`nordlys status`: what the journal says was sorted, and what still waits in the inboxes.

Read-only: the journal is opened only when it exists (a status query must not create state),
and the inboxes are scanned the same way the daemon scans them, so "waiting" means exactly the
files the daemon would pick up.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from nordlys.daemon.config import Config
from nordlys.daemon.journal import Correction, Entry, Journal, JournalError, ModelRecord
from nordlys.daemon.paths import default_journal_path
from nordlys.daemon.models_store import MIN_CORRECTIONS
from nordlys.daemon.placement import AURORA, FOLDER_KEYS, OTHER
from nordlys.daemon.scan import scan_inbox


@dataclass
class InboxWaiting:
    path: Path
    files: int
    oldest_seconds: float | None  # age of the oldest waiting file, by mtime
    error: str = ""  # the inbox could not be read


@dataclass
class StatusReport:
    journal: Path
    journal_exists: bool
    journal_error: str = ""  # the journal exists but cannot be read
    counts: dict[str, int] = field(default_factory=dict)  # folder key -> files filed there ("done")
    folders: dict[str, Path] = field(default_factory=dict)  # folder key -> its path
    recent: list[Entry] = field(default_factory=list)  # newest first
    waiting: list[InboxWaiting] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)  # photos the user moved to another folder
    models: list[ModelRecord] = field(default_factory=list)  # retrained models, oldest first


def output_folders(config: Config) -> dict[str, Path]:
    """Folder key -> path, as placement makes them (the output root defaults to the first inbox)."""
    root = config.output_root or (config.inboxes[0].path if config.inboxes else None)
    names = dataclasses.asdict(config.folders)
    return {key: root / names[key] for key in FOLDER_KEYS} if root is not None else {}


def waiting_in(config: Config, *, now: float | None = None,
               kept: Callable[[Path], bool] | None = None) -> list[InboxWaiting]:
    """Files in each inbox that the daemon would still file (output folders excluded; kept: files
    left in place on purpose whose content is filed, Journal.kept_unchanged)."""
    now = time.time() if now is None else now
    exclude = list(output_folders(config).values())
    result = []
    for inbox in config.inboxes:
        if not inbox.path.is_dir():  # reported, not refused: status is how one finds an unmounted share
            what = "is not a folder" if inbox.path.exists() else "does not exist (not mounted?)"
            result.append(InboxWaiting(inbox.path, 0, None, error=f"missing: {what}"))
            continue
        files = scan_inbox(inbox.path, recursive=inbox.recursive, ignore=config.ignore, exclude=exclude).files
        files = [f for f in files if kept is None or not kept(f)]
        mtimes = []
        for path in files:
            try:
                mtimes.append(path.lstat().st_mtime)
            except OSError:
                continue
        result.append(InboxWaiting(inbox.path, len(files), now - min(mtimes) if mtimes else None))
    return result


def gather(config: Config, *, recent: int = 10) -> StatusReport:
    journal_path = config.journal or default_journal_path()
    report = StatusReport(journal_path, journal_path.is_file(), folders=output_folders(config),
                          waiting=waiting_in(config))
    if report.journal_exists:
        try:
            with Journal.open(journal_path) as journal:
                report.counts = journal.counts()
                report.recent = journal.recent(recent)
                report.corrections = journal.corrections()
                report.models = journal.models()
                report.waiting = waiting_in(config, kept=journal.kept_unchanged)  # copy mode: its sources stay
        except JournalError as exc:
            report.journal_error = str(exc)
    return report


def format_status(report: StatusReport) -> str:
    note = "" if report.journal_exists else " (none yet: nothing sorted)"
    lines = [f"journal: {report.journal}{note}"]
    if report.journal_error:
        lines.append(f"  cannot read it: {report.journal_error}")
    total = sum(report.counts.values())
    lines.append(f"sorted: {total} files")
    for key in FOLDER_KEYS:
        if report.counts.get(key) or key in ("aurora", "other"):
            where = f"  {report.folders[key]}" if key in report.folders else ""
            lines.append(f"  {key:<9}{report.counts.get(key, 0):>7}{where}")
    lines.append("waiting:")
    if not report.waiting:
        lines.append("  (no inboxes configured: pass --inbox DIR or set `inboxes` in the config)")
    for inbox in report.waiting:
        lines.append(f"  {inbox.path}: " + (inbox.error or _waiting_text(inbox)))
    lines.extend(format_learning(report.corrections, report.models))
    if report.recent:
        lines.append("last decisions:")
        lines.extend(f"  {format_entry(e)}" for e in report.recent)
    return "\n".join(lines)


def format_learning(corrections: list[Correction], models: list[ModelRecord]) -> list[str]:
    """Corrections per move (old -> new label) and the model history with its gate metrics."""
    moves: dict[str, int] = {}
    for c in corrections:
        key = f"{c.old_label} -> {c.new_label}"
        moves[key] = moves.get(key, 0) + 1
    lines = [f"corrections: {len(corrections)}" + (f" ({', '.join(f'{k} {n}' for k, n in moves.items())})"
                                                   if moves else ""),
             f"  {retrain_readiness(corrections)}"]
    if models:
        lines.append("models:")
    for m in models:
        when = datetime.fromisoformat(m.time).astimezone().strftime("%Y-%m-%d %H:%M")
        shown = {k: m.metrics[k] for k in ("held_out_right_before", "held_out_right_after",
                                           "val_balanced_accuracy_before", "val_balanced_accuracy_after")
                 if k in m.metrics}
        lines.append(f"  {when}  {m.status:<11} {m.version}  " + " ".join(f"{k}={v}" for k, v in shown.items()))
    return lines


def usable_corrections(corrections: list[Correction]) -> int:
    """What `nordlys retrain` learns from: the newest correction of each photo (by content) that
    names aurora or other."""
    latest = {c.sha256: c for c in corrections}
    return sum(c.new_label in (AURORA, OTHER) for c in latest.values())


def retrain_readiness(corrections: list[Correction]) -> str:
    """How many corrections the next `nordlys retrain` has, and how many more it needs."""
    have = usable_corrections(corrections)
    if have >= MIN_CORRECTIONS:
        return f"next retrain: ready, {have} usable (at least {MIN_CORRECTIONS} needed): run `nordlys retrain`"
    return (f"next retrain: needs {MIN_CORRECTIONS - have} more (at least {MIN_CORRECTIONS}: one to learn "
            f"from, one to check; move a misfiled photo between aurora/ and other/ to make one)")


def report_dict(report: StatusReport) -> dict:
    """`nordlys status --json`: the same facts as the text, in stable keys."""
    return {
        "journal": {"path": str(report.journal), "exists": report.journal_exists, "error": report.journal_error},
        "sorted": {key: {"files": report.counts.get(key, 0),
                         "path": str(report.folders[key]) if key in report.folders else None} for key in FOLDER_KEYS},
        "waiting": [{"inbox": str(w.path), "files": w.files, "oldest_seconds": w.oldest_seconds,
                     "error": w.error or None} for w in report.waiting],
        "corrections": {"count": len(report.corrections), "usable": usable_corrections(report.corrections),
                        "needed": MIN_CORRECTIONS,
                        "more_needed": max(MIN_CORRECTIONS - usable_corrections(report.corrections), 0)},
        "models": [{"version": m.version, "status": m.status, "time": m.time, "path": str(m.path),
                    "metrics": m.metrics} for m in report.models],
        "recent": [{"time": e.time, "label": e.label, "score": e.score, "source": str(e.source),
                    "dest": str(e.dest), "status": e.status, "reason": e.reason or None} for e in report.recent],
    }


def _waiting_text(inbox: InboxWaiting) -> str:
    if not inbox.files:
        return "0 files"
    oldest = f", oldest {_age(inbox.oldest_seconds)}" if inbox.oldest_seconds is not None else ""
    return f"{inbox.files} file{'s' if inbox.files != 1 else ''}{oldest}"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def format_entry(entry: Entry) -> str:
    """One decision: local time, status, folder, score, and where the file went."""
    when = datetime.fromisoformat(entry.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    score = "-" if entry.score is None else f"{entry.score:.4f}"
    tail = f"{entry.source} -> {entry.dest}"
    if entry.status != "done":
        tail += f" [{entry.status}{': ' + entry.detail if entry.detail else ''}]"
    elif entry.reason:
        tail += f" ({entry.reason})"
    return f"{when}  {entry.label:<8} {score:>6}  {tail}"


def status_text(config: Config, *, recent: int = 10, as_json: bool = False) -> str:
    """The whole `nordlys status` output (as_json: one JSON object, report_dict)."""
    report = gather(config, recent=recent)
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) if as_json else format_status(report)

