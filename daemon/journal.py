"""The journal: every move is written down before it happens and after it happened.

SQLite (stdlib, WAL, synchronous=FULL) so a crash at any instant leaves a row saying what was
about to happen; `undo.recover_interrupted` finishes or rolls back those rows from what is on disk,
and `nordlys undo` reads the finished ones to put files back.

One row per file. An entry's life: "intent" -> "done" | "failed" (file stayed at its source) |
"rolled_back" (moved, then put back, or never moved); a "done" entry later becomes "undone" when
`nordlys undo` restores it. A file the daemon leaves where it is without trying to move it (a
symlink, a FIFO, an unreadable photo) gets a row born "failed", with the reason (`left_in_place`).
Undo's own moves are entries too (status "restored", `undoes` points at the entry they reverse),
so a crash in the middle of an undo is recovered the same way.

Paths are stored as text when they are valid UTF-8 and as the raw file-name bytes otherwise
(SQLite keeps a BLOB in a TEXT column as is), so every name a file system allows round-trips.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import structlog

from nordlys.daemon.paths import resolved
from nordlys.daemon.placement import Verdict

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 3  # 2: corrections + models tables; 3: copy mode (see _MIGRATIONS)
INTENT, DONE, FAILED, ROLLED_BACK, UNDONE, RESTORED = (
    "intent", "done", "failed", "rolled_back", "undone", "restored")
STATUSES = (INTENT, DONE, FAILED, ROLLED_BACK, UNDONE, RESTORED)

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started TEXT NOT NULL,      -- UTC ISO 8601
    finished TEXT,
    summary TEXT,               -- JSON
    pid INTEGER NOT NULL,       -- lets recovery leave a still-running process's moves alone
    host TEXT NOT NULL
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs(id),
    group_id TEXT NOT NULL,
    source TEXT NOT NULL,       -- text, or BLOB of raw bytes for names that are not UTF-8
    dest TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    score REAL,
    label TEXT NOT NULL,        -- Verdict.folder
    reason TEXT NOT NULL,       -- Verdict.reason
    model_version TEXT NOT NULL,
    time TEXT NOT NULL,         -- UTC ISO 8601, when the intent was written
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',   -- why it failed / was rolled back / where it was restored
    updated TEXT NOT NULL,
    undoes INTEGER REFERENCES entries(id)
);
CREATE INDEX entries_status ON entries(status);
CREATE INDEX entries_run ON entries(run_id);
CREATE INDEX entries_time ON entries(time);
CREATE TABLE created_dirs (
    run_id INTEGER,
    path TEXT NOT NULL,
    UNIQUE (run_id, path)
);
"""


# Additive upgrades: the statements that take a journal from version N-1 to N. Old rows stay as
# they are, so a journal written by an older nordlys keeps working after the upgrade.
_MIGRATIONS = {
    2: """
CREATE TABLE corrections (
    id INTEGER PRIMARY KEY,
    entry_id INTEGER REFERENCES entries(id),   -- the filing the user corrected
    path TEXT NOT NULL,         -- where the photo is now (updated when it is renamed again)
    sha256 TEXT NOT NULL,
    old_label TEXT NOT NULL,    -- folder key it was moved out of: aurora, other, review
    new_label TEXT NOT NULL,    -- folder key it was moved into: aurora, other
    score REAL,
    model_version TEXT NOT NULL,
    time TEXT NOT NULL          -- UTC ISO 8601
);
CREATE INDEX corrections_sha ON corrections(sha256);
CREATE INDEX entries_sha ON entries(sha256);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    time TEXT NOT NULL,         -- UTC ISO 8601
    status TEXT NOT NULL,       -- live, refused, rolled_back, replaced
    path TEXT NOT NULL,         -- kept copy of this model
    previous TEXT NOT NULL DEFAULT '',  -- kept copy of the model it replaced ('' if none)
    live_path TEXT NOT NULL DEFAULT '', -- the file the daemon loads
    metrics TEXT NOT NULL DEFAULT '{}'  -- JSON: gate numbers
);
""",
    3: """
ALTER TABLE entries ADD COLUMN keeps_source INTEGER NOT NULL DEFAULT 0;  -- 1: a copy, the source stays (copy mode)
CREATE TABLE kept (
    path TEXT PRIMARY KEY,      -- an inbox file left where it is on purpose: its content is filed
    size INTEGER NOT NULL,      -- its size and mtime when that was checked: a rescan skips it
    mtime_ns INTEGER NOT NULL,  -- while both are unchanged, without reading it again
    sha256 TEXT NOT NULL,
    dest TEXT NOT NULL,         -- where its content is filed
    time TEXT NOT NULL          -- UTC ISO 8601
);
""",
}


@dataclass(frozen=True)
class Correction:
    """The user moved a filed photo to another folder: a labelled example for the next model."""

    id: int
    entry_id: int | None
    path: Path
    sha256: str
    old_label: str
    new_label: str
    score: float | None
    model_version: str
    time: str


@dataclass(frozen=True)
class ModelRecord:
    """One model the retrainer made: live, refused, rolled back or replaced."""

    id: int
    version: str
    time: str
    status: str
    path: Path
    previous: Path | None
    live_path: Path | None
    metrics: dict


class JournalError(Exception):
    """The journal file cannot be used (not a journal, written by a newer nordlys, or in a folder
    nordlys cannot write to): exit code 2, with a message naming the file and the way out."""

    exit_code = 2


class Backoff:
    """When to try an unavailable journal again: after 1 s, then twice as long each time it is
    still unavailable, at most `most` seconds; `recovered` starts over. Not thread-safe: the
    daemon holds its own lock around it."""

    def __init__(self, first: float = 1.0, most: float = 30.0) -> None:
        self.first, self.most = first, most
        self.delay = 0.0  # 0: the journal works
        self.until = 0.0  # monotonic time of the next try

    @property
    def active(self) -> bool:
        return self.delay > 0

    def failed(self, now: float) -> float:
        self.delay = min(self.most, self.delay * 2 or self.first)
        self.until = now + self.delay
        return self.delay

    def recovered(self) -> None:
        self.delay = 0.0


class JournalUnavailable(JournalError):
    """A write failed for a reason that passes (the disk is full, another process holds the
    write lock longer than SQLite waits, an I/O error): the caller keeps the files where they
    are and tries again later, rather than recording them as failed."""


# SQLite's primary result codes for a write that may work later: BUSY, LOCKED, IOERR, FULL
_TRANSIENT_CODES = {5, 6, 10, 13}
# ... and for a journal nordlys cannot open for writing: PERM, READONLY, CANTOPEN
_UNWRITABLE_CODES = {3, 8, 14}


def _sqlite_code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def _unwritable(path: Path, exc: Exception) -> JournalError:
    return JournalError(f"{path}: cannot open the journal ({exc}): expected a writable folder for it; "
                        f"give this user write access to {path.parent} (and the file), or set `journal:` "
                        f"in the config to a path it can write")


def _corrupt(path: Path, exc: Exception) -> JournalError:
    return JournalError(f"{path}: not a usable nordlys journal ({exc}): to recover, move it aside "
                        f"(mv '{path}' '{path}.broken') and start again: a new journal is made, and the "
                        f"old file keeps the history of past moves (try `sqlite3 '{path}.broken' .recover`)")


@dataclass(frozen=True)
class Entry:
    """One file's journal row."""

    id: int
    run_id: int | None
    group_id: str
    source: Path
    dest: Path
    size: int
    sha256: str
    score: float | None
    label: str
    reason: str
    model_version: str
    time: str  # UTC ISO 8601
    status: str
    detail: str = ""
    undoes: int | None = None
    keeps_source: bool = False  # a copy (copy mode): the source stays; recovery never removes it


@dataclass(frozen=True)
class IntentItem:
    """One planned move, for `Journal.intents` (a whole photo group in one transaction)."""

    source: Path
    dest: Path
    size: int
    sha256: str
    verdict: Verdict
    group_id: str
    undoes: int | None = None
    keep_source: bool = False  # copy mode: the file is copied and its source stays


@dataclass(frozen=True)
class Finished:
    """One finished move, for `Journal.done_many`."""

    entry_id: int
    dest: Path
    created_dirs: tuple[Path, ...] = ()
    detail: str = ""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _iso_utc(moment: datetime) -> str:
    """Same text form as stored times, so SQL can compare strings; naive times are local time."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _path_in(path: Path | str) -> str | bytes:
    text = os.fspath(Path(path).absolute())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: keep the exact bytes
        return os.fsencode(text)
    return text


def _path_out(value: str | bytes) -> Path:
    return Path(os.fsdecode(value) if isinstance(value, bytes) else value)


def _is_under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _validate(item: IntentItem) -> None:
    digest = item.sha256
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"sha256 for {item.source} is {digest!r}; expected 64 lowercase hex digits")
    if item.size < 0:
        raise ValueError(f"size for {item.source} is {item.size}; expected 0 or more bytes")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Journal:
    """The move journal. One connection, guarded by a lock, so a writer thread may share it."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        # writes refused for a passing reason so far (JournalUnavailable): a caller that sees this
        # move during its work knows its failures may be the journal's, not the files'
        self.transient_errors = 0
        self.last_unavailable = ""  # the last such error, for the log

    @classmethod
    def open(cls, path: Path) -> "Journal":
        """Open or create the journal at `path` (parent folders are created)."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(os.fspath(path), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise _unwritable(path, exc) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            cls._ensure_schema(conn, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            code = _sqlite_code(exc)
            if code in _UNWRITABLE_CODES:
                raise _unwritable(path, exc) from exc
            if code in _TRANSIENT_CODES:
                raise JournalUnavailable(f"{path}: cannot open the journal now ({exc}): expected room on "
                                         f"its file system and no other process holding it") from exc
            raise _corrupt(path, exc) from exc
        except JournalError:
            conn.close()
            raise
        if str(mode).lower() != "wal":  # e.g. on network file systems; still correct, just slower
            log.warning("journal not in WAL mode", path=str(path), mode=mode)
        return cls(conn, path)

    @staticmethod
    def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
        """Create the tables on first use; refuse a journal from a newer nordlys."""
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a new journal: one creates it
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"{path}: journal schema version {version} was written by a newer "
                                   f"nordlys; this one reads versions up to {SCHEMA_VERSION}")
            if version == 0:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                version = 1
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[step].split(";")):
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it reaches the disk, or none of it."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if _sqlite_code(exc) not in _TRANSIENT_CODES:
                    raise
                self.transient_errors += 1
                self.last_unavailable = f"{exc}"
                raise JournalUnavailable(f"{self.path}: cannot write the journal now ({exc})") from exc

    def check_writable(self) -> None:
        """One real write (the header page, rewritten with the value it holds), waiting at most
        0.2 s for another process's lock: raises JournalUnavailable while the disk is full or
        the journal is locked. The daemon asks this before it files again after an outage."""
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout = 200")  # the dispatcher asks: never wait 30 s
            try:
                with self._tx() as conn:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    conn.execute(f"PRAGMA user_version = {int(version)}")
            finally:
                self._conn.execute("PRAGMA busy_timeout = 30000")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- runs -------------------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        """Record one sort/watch/undo invocation; its id ties the entries together."""
        with self._tx() as conn:
            cur = conn.execute("INSERT INTO runs (command, started, pid, host) VALUES (?, ?, ?, ?)",
                               (command, utc_now(), os.getpid(), socket.gethostname()))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, summary: dict) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                         (utc_now(), json.dumps(summary, default=str, sort_keys=True), run_id))

    def last_run_id(self, command_prefix: str | None = None, *, with_status: str | None = None,
                    moved: bool = False) -> int | None:
        """Newest run whose command starts with `command_prefix` (any run when None).

        with_status: only runs that still have an entry in that status. moved: only runs that
        journaled any move at all, whatever became of it (bare undo: the last sort that did
        something, even when that was undone already).
        """
        sql, params = "SELECT id, command FROM runs", []
        if with_status is not None:
            sql += " WHERE EXISTS (SELECT 1 FROM entries e WHERE e.run_id = runs.id AND e.status = ?)"
            params.append(with_status)
        elif moved:
            sql += " WHERE EXISTS (SELECT 1 FROM entries e WHERE e.run_id = runs.id)"
        for run_id, command in self._query(sql + " ORDER BY id DESC", params):
            if command_prefix is None or command.startswith(command_prefix):
                return int(run_id)
        return None

    def live_pid(self, run_id: int) -> int | None:
        """The pid of that run's process when it is still running on this host (SIGHUP target)."""
        rows = self._query("SELECT pid, host, finished FROM runs WHERE id = ?", (run_id,))
        if not rows or rows[0][2] is not None or rows[0][1] != socket.gethostname():
            return None
        pid = int(rows[0][0])
        return pid if _process_alive(pid) else None

    def _run_is_live(self, run_id: int | None) -> bool:
        """True when the run belongs to another process still running on this host."""
        if run_id is None:
            return False
        rows = self._query("SELECT pid, host, finished FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return False
        pid, host, finished = rows[0]
        if finished is not None or host != socket.gethostname() or pid == os.getpid():
            return False
        return _process_alive(int(pid))

    # --- entries ----------------------------------------------------------------------------

    def intent(self, run_id: int | None, *, source: Path, dest: Path, size: int, sha256: str,
               verdict: Verdict, group_id: str, undoes: int | None = None) -> int:
        """Write down a move about to happen; returns the entry id (status "intent")."""
        return self.intents(run_id, [IntentItem(source, dest, size, sha256, verdict, group_id, undoes)])[0]

    def intents(self, run_id: int | None, items: Sequence[IntentItem]) -> list[int]:
        """Batch `intent`: all rows in one transaction (a photo group is planned as a whole)."""
        for item in items:
            _validate(item)
        now = utc_now()
        ids = []
        with self._tx() as conn:
            for it in items:
                v = it.verdict
                cur = conn.execute(
                    "INSERT INTO entries (run_id, group_id, source, dest, size, sha256, score, label,"
                    " reason, model_version, time, status, updated, undoes, keeps_source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, it.group_id, _path_in(it.source), _path_in(it.dest), it.size, it.sha256,
                     v.score, v.folder, v.reason, v.model_version, now, INTENT, now, it.undoes,
                     int(it.keep_source)))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def done(self, entry_id: int, dest: Path, *, created_dirs: Sequence[Path] = (), detail: str = "") -> None:
        """The file is at `dest`. created_dirs: folders the move had to make (undo removes them
        again when empty). For an undo entry this also marks the entry it reverses "undone"."""
        self.done_many([Finished(entry_id, dest, tuple(created_dirs), detail)])

    def done_many(self, items: Sequence["Finished"]) -> None:
        """`done` for many entries in one transaction (the pipeline closes a whole batch at once:
        one commit, so one fsync, instead of one per photo)."""
        if not items:
            return
        now = utc_now()
        with self._tx() as conn:
            for item in items:
                run_id, undoes = conn.execute("SELECT run_id, undoes FROM entries WHERE id = ?",
                                              (item.entry_id,)).fetchone()
                status = RESTORED if undoes is not None else DONE
                conn.execute("UPDATE entries SET status = ?, dest = ?, detail = ?, updated = ? WHERE id = ?",
                             (status, _path_in(item.dest), item.detail, now, item.entry_id))
                if undoes is not None:
                    conn.execute("UPDATE entries SET status = ?, detail = ?, updated = ? WHERE id = ?",
                                 (UNDONE, f"restored to {item.dest} (entry {item.entry_id})", now, undoes))
                conn.executemany("INSERT OR IGNORE INTO created_dirs (run_id, path) VALUES (?, ?)",
                                 [(run_id, _path_in(d)) for d in item.created_dirs])

    def failed(self, entry_id: int, reason: str) -> None:
        """The move did not happen; the file stayed at its source."""
        self._set_status(entry_id, FAILED, reason)

    def rolled_back(self, entry_id: int, reason: str) -> None:
        """The file is back at (or never left) its source."""
        self._set_status(entry_id, ROLLED_BACK, reason)

    def last_id(self) -> int:
        """The newest entry's id (0 for an empty journal): a mark to ask "written since?" against."""
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM entries")[0][0])

    def left_in_place(self, run_id: int | None, path: Path, reason: str, *, since_id: int | None = None) -> int | None:
        """A file that was looked at and left where it is (a symlink, a FIFO, an unreadable photo, a
        name with no free variant): a "failed" row with the reason, so the journal accounts for every
        file, not only the moved ones. Its sha256 is empty: such a file is often not readable.

        Nothing is written when the newest row for `path` already says "failed" for the same
        reason (a restart or rescan finding it again), or is newer than entry `since_id` (the mover
        journaled this attempt itself). Returns the new entry's id, or None.
        """
        source = _path_in(path)
        try:
            size = os.lstat(path).st_size
        except OSError:
            size = 0
        with self._tx() as conn:
            last = conn.execute("SELECT id, status, detail FROM entries WHERE source = ? ORDER BY id DESC LIMIT 1",
                                (source,)).fetchone()
            if last is not None and ((last[1], last[2]) == (FAILED, reason)
                                     or (since_id is not None and last[0] > since_id)):
                return None
            now = utc_now()
            cur = conn.execute(
                "INSERT INTO entries (run_id, group_id, source, dest, size, sha256, score, label, reason,"
                " model_version, time, status, detail, updated)"
                " VALUES (?, '', ?, ?, ?, '', NULL, '', '', '', ?, ?, ?, ?)",
                (run_id, source, source, size, now, FAILED, reason, now))
            return int(cur.lastrowid or 0)

    def mark_undone(self, entry_id: int, detail: str = "") -> None:
        self._set_status(entry_id, UNDONE, detail)

    def _set_status(self, entry_id: int, status: str, detail: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE entries SET status = ?, detail = ?, updated = ? WHERE id = ?",
                         (status, detail, utc_now(), entry_id))

    def entry(self, entry_id: int) -> Entry:
        rows = self._select("WHERE id = ?", (entry_id,))
        if not rows:
            raise KeyError(f"no journal entry with id {entry_id}")
        return rows[0]

    def interrupted(self, *, include_live: bool = False) -> list[Entry]:
        """Entries still at "intent": a crash happened mid-move. Entries of runs whose process is
        still alive on this host (another nordlys moving right now) are left out unless asked."""
        pending = self._select("WHERE status = ? ORDER BY id", (INTENT,))
        if include_live:
            return pending
        live = {r for r in {e.run_id for e in pending} if self._run_is_live(r)}
        return [e for e in pending if e.run_id not in live]

    def entries(self, *, run_id: int | None = None, since: datetime | None = None,
                paths: Sequence[Path] = (), status: str | None = DONE,
                match: Callable[[Entry], bool] | None = None) -> list[Entry]:
        """Entries matching every filter given, oldest first.

        since: written at or after this moment (naive = local time). paths: entries whose source
        or dest is one of these paths or lies under one of them. status None: any status.
        match: keep only the entries it accepts. The path and match filters are applied row by
        row as the rows are read, so a question about a few files never holds the whole journal
        in memory (the daemon asks one for every late sidecar).
        """
        clauses, params = [], []
        for sql, value in (("run_id = ?", run_id), ("time >= ?", since and _iso_utc(since)),
                           ("status = ?", status)):
            if value is not None:
                clauses.append(sql)
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        # as given and resolved: rows keep the spelling their run used (resolved since issue 12),
        # and a user may name a folder through a symlink either way
        roots = list(dict.fromkeys(q for p in paths for q in (Path(p).absolute(), resolved(p))))

        def keep(e: Entry) -> bool:
            return ((not roots or _is_under(e.source, roots) or _is_under(e.dest, roots))
                    and (match is None or match(e)))

        return self._select(f"{where} ORDER BY id", params, keep=keep)

    def counts(self, *, status: str = DONE) -> dict[str, int]:
        """Files per label (folder key) currently in that status: what `nordlys status` shows."""
        rows = self._query("SELECT label, COUNT(*) FROM entries WHERE status = ? GROUP BY label ORDER BY label",
                           (status,))
        return {label: int(n) for label, n in rows}

    def recent(self, limit: int = 20) -> list[Entry]:
        """Newest entries first, any status."""
        return self._select("ORDER BY id DESC LIMIT ?", (limit,))

    def created_dirs(self, run_ids: Sequence[int | None]) -> list[Path]:
        """Folders that moves of these runs created (recorded through `done`)."""
        found: list[Path] = []
        for run_id in dict.fromkeys(run_ids):
            rows = self._query("SELECT path FROM created_dirs WHERE run_id IS ? ORDER BY rowid", (run_id,))
            found.extend(_path_out(r[0]) for r in rows)
        return found

    def _select(self, tail: str, params: Sequence[Any],
                keep: Callable[[Entry], bool] | None = None) -> list[Entry]:
        found = []
        with self._lock:
            for r in self._conn.execute(
                    "SELECT id, run_id, group_id, source, dest, size, sha256, score, label, reason,"
                    f" model_version, time, status, detail, undoes, keeps_source FROM entries {tail}", params):
                entry = Entry(id=r[0], run_id=r[1], group_id=r[2], source=_path_out(r[3]), dest=_path_out(r[4]),
                              size=r[5], sha256=r[6], score=r[7], label=r[8], reason=r[9], model_version=r[10],
                              time=r[11], status=r[12], detail=r[13], undoes=r[14], keeps_source=bool(r[15]))
                if keep is None or keep(entry):
                    found.append(entry)
        return found

    # --- corrections and models (schema 2) ---------------------------------------------------

    def filed_by_sha(self, sha256: str) -> list[Entry]:
        """"done" entries of photos with these bytes, oldest first (a correction's origin)."""
        return self._select("WHERE sha256 = ? AND status = ? ORDER BY id", (sha256, DONE))

    # --- inbox files left in place on purpose (schema 3): copy mode and re-sent duplicates ------

    def remember_kept(self, path: Path, st: os.stat_result, sha256: str, dest: Path) -> None:
        """`path` stays in its inbox although its content is filed at `dest`; a rescan skips it
        while its size and mtime are still those of `st` (Service._scan, inbox.mode: copy)."""
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO kept (path, size, mtime_ns, sha256, dest, time)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (_path_in(path), st.st_size, st.st_mtime_ns, sha256, _path_in(dest), utc_now()))

    def kept_signature(self, path: Path) -> tuple[int, int] | None:
        """(size, mtime_ns) of `path` when it was last left in place on purpose, or None."""
        rows = self._query("SELECT size, mtime_ns FROM kept WHERE path = ?", (_path_in(path),))
        return (rows[0][0], rows[0][1]) if rows else None

    def kept_unchanged(self, path: Path) -> bool:
        """Left in its inbox on purpose (copy mode, a re-sent duplicate) and unchanged since: its
        content is filed, so neither a rescan nor `status` counts it as waiting."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return self.kept_signature(path) == (st.st_size, st.st_mtime_ns)

    def record_correction(self, *, entry_id: int | None, path: Path, sha256: str, old_label: str,
                          new_label: str, score: float | None, model_version: str) -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO corrections (entry_id, path, sha256, old_label, new_label, score, model_version, time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (entry_id, _path_in(path), sha256, old_label, new_label, score, model_version, utc_now()))
            return int(cur.lastrowid or 0)

    def move_correction(self, sha256: str, path: Path) -> None:
        """A corrected photo was renamed or moved inside its folder: remember where it is now."""
        with self._tx() as conn:
            conn.execute("UPDATE corrections SET path = ? WHERE sha256 = ?", (_path_in(path), sha256))

    def drop_correction(self, correction_id: int) -> None:
        """A correction taken back (`nordlys web`'s undo): the photo is where it was filed again."""
        with self._tx() as conn:
            conn.execute("DELETE FROM corrections WHERE id = ?", (correction_id,))

    def corrections(self, *, since: str | None = None) -> list[Correction]:
        """Every correction, oldest first (since: UTC ISO time, exclusive)."""
        rows = self._query("SELECT id, entry_id, path, sha256, old_label, new_label, score, model_version, time"
                           " FROM corrections WHERE time > ? ORDER BY id", (since or "",))
        return [Correction(r[0], r[1], _path_out(r[2]), *r[3:]) for r in rows]

    def record_model(self, *, version: str, status: str, path: Path, previous: Path | None = None,
                     live_path: Path | None = None, metrics: dict | None = None) -> int:
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO models (version, time, status, path, previous, live_path, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (version, utc_now(), status, _path_in(path), _path_in(previous) if previous else "",
                 _path_in(live_path) if live_path else "", json.dumps(metrics or {}, default=str, sort_keys=True)))
            return int(cur.lastrowid or 0)

    def set_model_status(self, model_id: int, status: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE models SET status = ? WHERE id = ?", (status, model_id))

    def models(self) -> list[ModelRecord]:
        """The model history, oldest first."""
        rows = self._query("SELECT id, version, time, status, path, previous, live_path, metrics FROM models ORDER BY id")
        return [ModelRecord(r[0], r[1], r[2], r[3], _path_out(r[4]), _path_out(r[5]) if r[5] else None,
                            _path_out(r[6]) if r[6] else None, json.loads(r[7] or "{}")) for r in rows]
