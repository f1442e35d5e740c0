"""`nordlys watch`: the daemon that files each new photo within a second of it being complete.

Threads, each with one job:
- watchdog observers (inotify, or polling for network mounts) only filter and queue paths into
  the Settler (watcher.py);
- the dispatcher decides when files are complete (settle.py), scans the inboxes at start-up and
  every reconcile_interval (files that arrived while it was down, events the kernel dropped),
  gathers complete photo groups into batches of up to model.batch_size (batching.py decides
  which: late siblings, kept files, watch.batch_wait) and pings the systemd watchdog;
- two lanes run Pipeline.process on batches, so one batch decodes while the other is scored;
  the hand-over queue holds one batch, so a 1,000-photo dump never holds more than a few
  batches of pixels in memory;
- the main thread handles signals: SIGTERM/SIGINT stop, SIGHUP reloads config and model.

Exactly once: a path is in the Settler (waiting) or in flight, never both, and never twice; a
path is filed only if it still exists when its batch starts; the mover journals every move, so a
crash is finished or rolled back by recover_interrupted at the next start.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import structlog

from nordlys.daemon import runtime
from nordlys.daemon.batching import Batcher, BatchRules
from nordlys.daemon.classifier import Classifier
from nordlys.daemon.config import Config, ConfigError, load_config
from nordlys.daemon.corrections import CorrectionWorker
from nordlys.daemon.faults import pause_point
from nordlys.daemon.grouping import PhotoGroup
from nordlys.daemon.hooks import HookRunner
from nordlys.daemon.journal import Backoff, Journal, JournalError, JournalUnavailable
from nordlys.daemon.journal_lock import JournalLock
from nordlys.daemon.pipeline import Outcome, Pipeline, Target
from nordlys.daemon.placement import AURORA, FOLDER_KEYS, Verdict
from nordlys.daemon.scan import not_regular_reason, scan_inbox
from nordlys.daemon.sdnotify import Notifier
from nordlys.daemon.settle import SCAN, FileState, Settler, file_state
from nordlys.daemon.sorter import output_dirs
from nordlys.daemon.undo import recover_interrupted
from nordlys.daemon.models_store import spawn_retrain
from nordlys.daemon.paths import resolved
from nordlys.daemon.watcher import (
    folder_identity, start_observers, start_output_observer, stop_observers, watched_folders,
)

log = structlog.get_logger(__name__)

LANES = 2  # batches processed at once: one decodes while the other is scored
STOP_SECONDS = 8.0  # SIGTERM to exit, well inside systemd's and the 10 s
FAILED_MEMORY = 10_000  # files left in place that rescans skip until they change
MIN_TICK = 0.01  # seconds; the dispatcher never spins faster than this


@dataclass
class ConfigSource:
    """Where the config comes from, so SIGHUP reads it again with the same flags on top."""

    file: Path | None  # YAML file, or None for defaults
    inboxes: list[Path] | None = None  # --inbox flags
    dest: Path | None = None  # --dest
    model: Path | None = None  # --model

    def load(self) -> Config:
        config = load_config(self.file) if self.file is not None else Config()
        config = runtime.apply_overrides(config, inboxes=self.inboxes, dest=self.dest, model=self.model,
                                         config_file=self.file)
        if not config.inboxes:
            raise ConfigError(f"{self.file or 'command line'}: nothing to watch: expected `inboxes` in the "
                              f"config file or at least one --inbox DIR")
        inboxes = [dataclasses.replace(i, path=resolved(i.path)) for i in config.inboxes]  # finding 1: one spelling
        root = resolved(config.output_root) if config.output_root is not None else None
        return dataclasses.replace(config, inboxes=inboxes, output_root=root)


@dataclass
class Parts:
    """What one config + model make: swapped as a whole on SIGHUP."""

    config: Config
    classifier: Classifier
    target: Target
    pipeline: Pipeline
    hooks: HookRunner
    exclude: list[Path]  # output folders, never watched or scanned
    active: int = 0  # batches using these parts right now (guarded by the service lock)

    def close(self) -> None:
        self.hooks.close()
        self.pipeline.close()


def build_parts(config: Config, journal: Journal) -> Parts:
    classifier = runtime.load_classifier(config)  # probed: it scores test images before it is used
    target = runtime.build_target(config, classifier)
    pipeline = Pipeline(classifier, journal, target, max_pixels=config.model.max_pixels,
                        max_file_bytes=config.model.max_file_bytes, videos=config.videos,
                        truncated_wait=config.watch.truncated_wait)
    hooks = HookRunner(config.watch.on_aurora, timeout=config.watch.hook_timeout)
    return Parts(config, classifier, target, pipeline, hooks, output_dirs(target))


@dataclass
class Batch:
    parts: Parts
    inbox: Path
    groups: list[PhotoGroup]
    follows: dict[Path, Verdict] = field(default_factory=dict)  # primary -> its filed photo's verdict

    @property
    def paths(self) -> list[Path]:
        return [m for g in self.groups for m in g.members]


@dataclass
class Tally:
    """What this daemon did since it started: the STATUS= line and the run summary."""

    photos: Counter = field(default_factory=Counter)  # photo groups per folder key
    failed: int = 0  # groups left in place

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.verdict is None:
                self.failed += 1
            else:
                self.photos[outcome.verdict.folder] += 1

    def status_line(self, waiting: int) -> str:
        parts = [f"{key} {self.photos[key]}" for key in FOLDER_KEYS
                 if self.photos[key] or key in ("aurora", "other", "rejected")]
        line = f"sorted {sum(self.photos.values())} ({', '.join(parts)}), waiting {waiting}"
        return line + (f", left in place {self.failed}" if self.failed else "")


class Service:
    """The running daemon; `run_daemon` drives it from the main thread (signals live there)."""

    def __init__(self, source: ConfigSource, config: Config, *, notifier: Notifier | None = None) -> None:
        self.source, self.config = source, config
        self.notifier = notifier or Notifier()
        self.lock = threading.Lock()  # parts swap, active counts, tally, failure memory, folder list
        self.stopping = threading.Event()
        self.broken = threading.Event()  # the dispatcher died: run_daemon exits 1 (systemd restarts)
        self.rescan = threading.Event()  # set: scan every inbox at the next turn (start-up, reload)
        self.rescan.set()
        self.settler = Settler(config.watch.settle_seconds, config.watch.queue_size)
        self.batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.tally = Tally()
        self.failed: OrderedDict[Path, FileState | None] = OrderedDict()
        self.folders: list[tuple[Path, Path]] = []  # (folder, inbox): folders that appeared
        self.skips_reported: set[Path] = set()
        self.batcher: Batcher | None = None  # batching.py; made with the journal
        self.busy_since: list[float | None] = [None] * LANES
        self.journal: Journal | None = None
        self.journal_lock: JournalLock | None = None  # one daemon per journal (journal_lock.py)
        self.outage = Backoff()  # the journal refused a write: no batches until it takes one again
        self.inbox_ids: dict[Path, tuple[int, int] | None] = {}  # inbox -> (device, inode) when watched
        self.inbox_watched: set[Path] = set()  # inboxes the kernel had an inotify watch on then
        self.parts: Parts | None = None
        self.next_parts: Parts | None = None
        self.retired: list[Parts] = []
        self.observers: list = []
        self.threads: list[threading.Thread] = []
        self.run_id: int | None = None
        self.scan_at = 0.0
        self.overflowed = False
        self.next_ping = 0.0
        self.corrector: CorrectionWorker | None = None  # corrections.py: moves between output folders
        self.new_corrections = 0  # since start or the last automatic retrain (watch.retrain_after)
        self.retrain: object | None = None  # the running automatic retrain (a Popen)
        self.output_observer: list = []  # the observer on the output root, for corrections

    # --- lifecycle (main thread) ----------------------------------------------------------

    def start(self) -> None:
        """Lock the journal, recover interrupted moves, load and check the model, watch, then scan
        and serve."""
        self.journal_lock = JournalLock.acquire(runtime.journal_path(self.config),
                                                [i.path for i in self.config.inboxes])
        try:
            self.journal = runtime.open_journal(self.config)
        except BaseException:
            self.journal_lock.release()
            raise
        self.batcher = Batcher(self.settler, self.journal, capacity=self.config.watch.queue_size)
        try:
            recover_interrupted(self.journal)  # logs one line per move it finishes or rolls back
            self.parts = build_parts(self.config, self.journal)
            self.observers = self._watch(self.parts)
            self._watch_corrections(self.parts)
        except BaseException:
            self._stop_corrections()
            stop_observers(self.observers)
            if self.parts is not None:
                self.parts.close()
            self.journal.close()
            self.journal_lock.release()
            raise
        self.run_id = self.journal.start_run("watch " + " ".join(str(i.path) for i in self.config.inboxes))
        self.threads = [threading.Thread(target=self._dispatch, name="nordlys-dispatch", daemon=True)]
        self.threads += [threading.Thread(target=self._lane, args=(i,), name=f"nordlys-lane-{i}", daemon=True)
                         for i in range(LANES)]
        for thread in self.threads:
            thread.start()
        c = self.parts.classifier
        log.info("ready", model=str(c.path), version=c.version, provider=c.provider,
                 inboxes=[str(i.path) for i in self.config.inboxes], output_root=str(self.parts.target.output_root),
                 settle_seconds=self.config.watch.settle_seconds, batch_size=self.config.model.batch_size)
        self.notifier.ready(self.status_line())

    def _watch(self, parts: Parts) -> list:
        """Observers on the inboxes that are there now (an inbox that is gone is watched again once
        check_inboxes sees it back); their identities are taken first, so a change during the
        start is noticed too."""
        self.inbox_ids = {i.path: folder_identity(i.path) for i in parts.config.inboxes if not i.polling}
        present = [i for i in parts.config.inboxes if i.polling or self.inbox_ids[i.path] is not None]
        observers = start_observers(present, ignore=parts.config.ignore, exclude=parts.exclude,
                                    sink=self.settler.offer, on_folder=self._folder_appeared)
        kernel = watched_folders()
        self.inbox_watched = {path for path, identity in self.inbox_ids.items() if identity in kernel}
        return observers

    def check_inboxes(self) -> None:
        """Main thread, every second: an inbox deleted and made again, or with a file system
        mounted onto it (or taken off it), is a new folder under the same path; the old watch
        sees nothing of it. Watch it again and scan it, saying so (issue 12, finding 8)."""
        parts = self.parts
        if parts is None:
            return
        # polled inboxes are listed by path at every poll, so they need no check; they are network
        # mounts, where a stat on this (the signal-handling) thread could hang with the server
        now = {i.path: folder_identity(i.path) for i in parts.config.inboxes if not i.polling}
        kernel = watched_folders() if self.inbox_watched else set()  # deleted folders lose their watch
        changed = [path for path, identity in now.items()
                   if identity != self.inbox_ids.get(path) or (path in self.inbox_watched and identity not in kernel)]
        if not changed:
            return
        stop_observers(self.observers)
        try:
            self.observers = self._watch(parts)
        except ConfigError as exc:
            log.error("inbox not watched", reason=str(exc))
            self.observers = []
            self.inbox_ids, self.inbox_watched = now, set()  # tried again when an inbox changes again
        for path in changed:  # as the new watch found them (an inbox may be back already)
            if self.inbox_ids.get(path) is None:
                log.warning("inbox missing", inbox=str(path), reason="deleted or unmounted; watched again once it is back")
            else:
                log.warning("inbox replaced", inbox=str(path),
                            reason="a new folder under this path (made again, or a file system mounted onto it "
                                   "or taken off it): watching it again and scanning it")
        self.rescan.set()
        self.settler.wake()

    def _watch_corrections(self, parts: Parts) -> None:
        """Moves between aurora/, other/ and review/ teach the next model (corrections.py). The
        watch stays on the start-up output root; a reload that moves it needs a restart."""
        assert self.journal is not None
        target = parts.target
        folders = {key: target.output_root / target.folder_name(key) for key in ("aurora", "other", "review")}
        for key in ("aurora", "other"):
            folders[key].mkdir(parents=True, exist_ok=True)
        self.corrector = CorrectionWorker(self.journal, folders, settle=parts.config.watch.settle_seconds,
                                          on_recorded=self._correction_recorded)
        try:
            self.output_observer = [start_output_observer(target.output_root, list(folders.values()),
                                                          ignore=parts.config.ignore, sink=self.corrector.offer)]
        except ConfigError as exc:  # sorting matters more than learning: carry on without it
            log.error("corrections not watched", reason=str(exc))
            self.corrector = None
            return
        self.corrector.start()

    def _stop_corrections(self) -> None:
        stop_observers(self.output_observer, timeout=1.0)
        if self.corrector is not None:
            self.corrector.stop()

    def _correction_recorded(self) -> None:
        """watch.retrain_after: start `nordlys retrain` (lowest priority) every N new corrections."""
        every = self.config.watch.retrain_after
        self.new_corrections += 1
        if not every or self.new_corrections < every:
            return
        if self.retrain is not None and self.retrain.poll() is None:  # type: ignore[attr-defined]
            return  # one at a time; the next correction tries again
        self.new_corrections = 0
        self.retrain = spawn_retrain(self.source.file, self.config.watch.retrain_data)

    def reload(self) -> bool:
        """SIGHUP: read the config again, load and check the model, then swap; on any error keep
        running with what we had."""
        self.notifier.reloading()
        try:
            config = self.source.load()
            assert self.journal is not None and self.parts is not None
            parts = build_parts(config, self.journal)
        except Exception as exc:  # whatever is wrong with the new config or model, the old one keeps working
            log.error("reload failed", reason=str(exc), keeping=str(self.parts.classifier.path if self.parts else ""))
            self.notifier.ready(self.status_line())
            return False
        if not self._rewatch(parts):
            parts.close()
            self.notifier.ready(self.status_line())
            return False
        if config.journal != self.config.journal:
            log.warning("journal path changed", reason="the new journal is used after a restart")
        if self.journal_lock is not None:
            self.journal_lock.describe([i.path for i in config.inboxes])
        self.settler.settle, self.settler.capacity = config.watch.settle_seconds, config.watch.queue_size
        with self.lock:
            self.config, self.next_parts = config, parts
        self.rescan.set()
        self.settler.wake()
        log.info("reloaded", model=str(parts.classifier.path), version=parts.classifier.version,
                 inboxes=[str(i.path) for i in config.inboxes])
        self.notifier.ready(self.status_line())
        return True

    def _rewatch(self, parts: Parts) -> bool:
        """New observers when the watched set changed; the old ones stay if the new ones fail."""
        old = self.parts
        assert old is not None
        same = (old.config.inboxes, old.config.ignore, old.exclude) == (parts.config.inboxes, parts.config.ignore,
                                                                      parts.exclude)
        if same:
            return True
        stop_observers(self.observers)
        try:
            self.observers = self._watch(parts)
        except ConfigError as exc:
            log.error("reload failed", reason=str(exc), keeping="the previous folders")
            self.observers = self._watch(old)
            return False
        return True

    def stop(self) -> bool:
        """Stop taking files, finish the batches in flight, close the journal. False when a batch
        did not finish in time (its moves are finished or rolled back at the next start)."""
        deadline = time.monotonic() + STOP_SECONDS
        self.notifier.stopping()
        log.info("stopping", waiting=sum(self.settler.counts()))
        stop_observers(self.observers, timeout=1.0)
        self._stop_corrections()
        self.stopping.set()
        self.settler.wake()
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            log.error("stop timed out", threads=stuck, reason="moves in flight are finished or rolled back at the next start")
            return False
        self._close()
        return True

    def _close(self) -> None:
        for parts in [p for p in (self.parts, self.next_parts, *self.retired) if p is not None]:
            parts.close()
        if self.journal is not None:
            if self.run_id is not None:
                try:
                    self.journal.finish_run(self.run_id, {"photos": dict(self.tally.photos),
                                                          "failed": self.tally.failed})
                except JournalError as exc:  # a full disk at exit: the run just stays unfinished
                    log.warning("run not closed in the journal", reason=str(exc))
            self.journal.close()
        if self.journal_lock is not None:
            self.journal_lock.release()
        log.info("stopped", **{"sorted": sum(self.tally.photos.values()), "left_in_place": self.tally.failed})

    def status_line(self) -> str:
        waiting, in_flight = self.settler.counts()
        with self.lock:
            return self.tally.status_line(waiting + in_flight)

    def _folder_appeared(self, folder: Path, inbox: Path) -> None:
        """Observer thread: a folder was made or moved in; the dispatcher scans it."""
        with self.lock:
            self.folders.append((folder, inbox))
        self.settler.wake()

    # --- the dispatcher thread -------------------------------------------------------------

    def _dispatch(self) -> None:
        """Scan, settle, batch, hand over, ping: until stopped."""
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                self._ping(now)
                self.notifier.status(self.status_line())  # sent only when it changed
                self._swap_parts()
                if self._journal_paused(now):
                    self._sleep(self.outage.until)
                    continue
                try:
                    self._scan_if_due(now)
                except JournalUnavailable as exc:  # a left-in-place row could not be written: later
                    self._journal_down(str(exc))
                    continue
                self.settler.check()
                batch, retry_at = self._next_batch(now)
                if batch is not None:
                    self._hand_over(batch)
                    continue
                self._sleep(retry_at)
        except Exception:
            log.exception("dispatcher failed", reason="stopping with exit status 1")
            self.notifier.send(STATUS="dispatcher failed; see the log")
            self.broken.set()
        finally:
            self._drain()

    def _sleep(self, retry_at: float | None) -> None:
        """Wait for an event, or for the next thing that is due (at most a second)."""
        now = time.monotonic()
        wake = [now + 1.0, self.scan_at]
        if retry_at is not None:
            wake.append(retry_at)
        if self.notifier.watchdog_seconds:
            wake.append(self.next_ping)
        with self.settler.lock:  # next_due and wait under one lock: an offer in between wakes us
            due = self.settler.next_due()
            if due is not None:
                wake.append(due)
            if not self.stopping.is_set():
                self.settler.lock.wait(max(MIN_TICK, min(wake) - now))

    def _ping(self, now: float) -> None:
        """WATCHDOG=1, but only while no lane is stuck: a hung move must let systemd restart us."""
        interval = self.notifier.watchdog_seconds
        if not interval or now < self.next_ping:
            return
        if any(since is not None and now - since > 2 * interval for since in self.busy_since):
            return
        self.notifier.watchdog()
        self.next_ping = now + interval

    def _swap_parts(self) -> None:
        """Take a reloaded config/model between batches; close old parts once no batch uses them."""
        with self.lock:
            if self.next_parts is not None:
                assert self.parts is not None
                self.retired.append(self.parts)
                self.parts, self.next_parts = self.next_parts, None
            idle = [p for p in self.retired if p.active == 0]
            self.retired = [p for p in self.retired if p.active]
        for parts in idle:
            parts.close()

    def _scan_if_due(self, now: float) -> None:
        """New folders now; every inbox at start-up, on reload, every reconcile_interval, and
        once the queue has room again after it overflowed."""
        with self.lock:
            folders, self.folders = self.folders, []
        for folder, inbox in folders:
            self._scan(folder, inbox, recursive=True)
        dropped = self.settler.take_dropped()
        if dropped:
            log.warning("queue full", dropped=dropped, queue_size=self.settler.capacity,
                        reason="left on disk; found by the next scan")
            self.overflowed = True
        waiting, in_flight = self.settler.counts()
        room = waiting + in_flight < self.settler.capacity // 2
        if not (self.rescan.is_set() or now >= self.scan_at or (self.overflowed and room)):
            return
        first = self.scan_at == 0.0
        self.rescan.clear()
        self.overflowed = False
        assert self.parts is not None
        for inbox in self.parts.config.inboxes:
            self._scan(inbox.path, inbox.path, recursive=inbox.recursive, loud=first)
        interval = self.parts.config.watch.reconcile_interval
        self.scan_at = now + interval if interval > 0 else float("inf")

    def _scan(self, root: Path, inbox: Path, *, recursive: bool, loud: bool = False) -> None:
        assert self.parts is not None
        started = time.perf_counter()
        result = scan_inbox(root, recursive=recursive, ignore=self.parts.config.ignore, exclude=self.parts.exclude)
        for path, reason in result.skipped:
            if path not in self.skips_reported:
                self._journal_left([(path, reason)])  # first: when the journal refuses, the next scan tries again
                self.skips_reported.add(path)
                log.warning("skipped", path=str(path), reason=reason)
        for path in result.files:
            if not self._failed_before(path) and not self._kept_unchanged(path):
                self.settler.offer(path, inbox, SCAN)
        (log.info if loud else log.debug)("scanned", folder=str(root), files=len(result.files),
                                          ms=round((time.perf_counter() - started) * 1000, 1))

    def _kept_unchanged(self, path: Path) -> bool:
        """Left in its inbox on purpose and unchanged since (Journal.kept_unchanged): not read again."""
        assert self.journal is not None
        return self.journal.kept_unchanged(path)

    def _failed_before(self, path: Path) -> bool:
        """Left in place before and unchanged since: a rescan does not try it again."""
        with self.lock:
            if path not in self.failed:
                return False
            if self.failed[path] == file_state(path):
                return True
            del self.failed[path]
            return False

    def _next_batch(self, now: float) -> tuple[Batch | None, float | None]:
        """The next batch batching.py plans, bound to the parts (config and model) of this turn."""
        parts = self.parts
        assert parts is not None and self.batcher is not None
        c = parts.config
        rules = BatchRules(inboxes={i.path for i in c.inboxes}, batch_size=c.model.batch_size,
                           batch_wait=c.watch.batch_wait, sidecar_wait=c.watch.sidecar_wait)
        planned, retry = self.batcher.next(now, rules)
        if planned is None:
            return None, retry
        return Batch(parts, planned.inbox, planned.groups, planned.follows), None

    def _hand_over(self, batch: Batch) -> None:
        """Claim the batch's paths and queue it for a lane; blocks while both lanes are busy."""
        if not self.settler.claim(batch.paths):
            return  # a file changed again since it was found complete: the next turn re-plans
        assert self.batcher is not None
        self.batcher.claimed(batch.groups)
        with self.lock:
            batch.parts.active += 1
        while True:
            try:
                self.batches.put(batch, timeout=0.2)
                return
            except queue.Full:
                self._ping(time.monotonic())
                if self.stopping.is_set():
                    self._release(batch)
                    return

    def _release(self, batch: Batch) -> None:
        self.settler.done(batch.paths)
        with self.lock:
            batch.parts.active -= 1

    def _drain(self) -> None:
        """Stopping: batches not started go back (their files stay in the inbox), lanes end."""
        while True:
            try:
                batch = self.batches.get_nowait()
            except queue.Empty:
                break
            if batch is not None:
                self._release(batch)
        for _ in range(LANES):
            self.batches.put(None)

    # --- the lanes ---------------------------------------------------------------------------

    def _lane(self, index: int) -> None:
        while True:
            batch = self.batches.get()
            if batch is None:
                return
            self.busy_since[index] = time.monotonic()
            assert self.journal is not None
            errors = self.journal.transient_errors
            try:
                pause_point("batch", release=self.stopping)  # tests only (faults.py)
                self._process(batch)
            except Exception:
                if self.journal.transient_errors == errors:
                    log.exception("batch failed", inbox=str(batch.inbox), paths=[str(g.primary) for g in batch.groups])
                    self._remember_failed(batch.groups)
            finally:
                self.busy_since[index] = None
                if self.journal.transient_errors != errors:  # its failures may be the journal's: try again
                    self._forget_failed(batch.paths)
                    self._journal_down(self.journal.last_unavailable, files=len(batch.paths))
                self._release(batch)

    # --- a journal that refuses writes for a while (issue 12, finding 7) -------------------------

    def _journal_down(self, reason: str, *, files: int = 0) -> None:
        """A write was refused (full disk, lock held elsewhere): no batches until the journal takes
        a write again. The files stay in the inbox, and are not remembered as failed."""
        with self.lock:
            delay = self.outage.failed(time.monotonic())
        assert self.journal is not None
        log.warning("journal unavailable", journal=str(self.journal.path), reason=reason, retry_in=delay,
                    files=files, waiting="files stay in the inbox; they are filed once the journal takes writes again")

    def _journal_paused(self, now: float) -> bool:
        """True while the journal is out. Once it is due, and no batch is in flight, it is tried
        with one real write; then interrupted moves (a batch that moved files but could not write
        "done") are settled from the disk, as at start-up, and the inboxes are scanned again."""
        with self.lock:
            if not self.outage.active:
                return False
            in_flight = any(p.active for p in (self.parts, *self.retired) if p is not None)
            if now < self.outage.until or in_flight:
                return True
        assert self.journal is not None
        try:
            self.journal.check_writable()
            recover_interrupted(self.journal)  # none of our moves is in flight: any intent is stale
        except JournalUnavailable as exc:
            self._journal_down(str(exc))
            return True
        with self.lock:
            self.outage.recovered()
        log.info("journal available again", journal=str(self.journal.path))
        self.rescan.set()
        return False

    def _forget_failed(self, paths: Sequence[Path]) -> None:
        with self.lock:
            for path in paths:
                self.failed.pop(path, None)

    def _process(self, batch: Batch) -> None:
        """File the groups that still exist; count and remember failures (the pipeline journals them),
        have files that may still be written looked at again later, notify on aurora."""
        groups = self._regular_groups(batch.groups)
        if not groups:
            return
        pipeline, follows = batch.parts.pipeline, batch.follows
        outcomes = pipeline.process([g for g in groups if g.primary not in follows], inbox=batch.inbox,
                                    run_id=self.run_id)
        outcomes += [pipeline.file(g, follows[g.primary], inbox=batch.inbox, run_id=self.run_id)
                     for g in groups if g.primary in follows]
        with self.lock:
            self.tally.add(outcomes)
            assert self.batcher is not None
            self.batcher.filed()
        corrector = self.corrector  # its own filing is no correction: spare the worker a hash of each file
        if corrector is not None:
            corrector.filed(m.dest for o in outcomes for m in o.moved)
        failed = [o for o in outcomes if o.verdict is None]
        self._remember_failed([o.group for o in failed])
        for outcome in failed:  # truncated and lately changed: its writer may be back (pipeline.py)
            if outcome.recheck_in is not None:
                self.settler.look_again(outcome.group.members, batch.inbox, time.monotonic() + outcome.recheck_in)
        for outcome in outcomes:  # one notification per new aurora photo, none for its late companions
            if outcome.verdict is not None and outcome.verdict.folder == AURORA and outcome.moved \
                    and outcome.group.primary not in follows:
                batch.parts.hooks.submit(outcome.moved[0].dest, label=outcome.verdict.folder,
                                         score=outcome.verdict.score, source=outcome.moved[0].source)

    def _regular_groups(self, groups: Sequence[PhotoGroup]) -> list[PhotoGroup]:
        """The groups still there, less members that are not regular files: those are left in place
        unread, as the scan leaves them (reading through a symlink could leave the inbox). A group
        whose photo is such a file stays whole: its sidecars stay with it."""
        kept, left = [], []
        for group in groups:
            members = [m for m in group.members if os.path.lexists(m)]
            if group.primary not in members:  # gone meanwhile (deleted, or moved by someone else)
                continue
            odd = {m: why for m in members if (why := not_regular_reason(m)) is not None}
            if group.primary in odd:
                left += [(m, odd.get(m) or f"stays with {group.primary.name}: {odd[group.primary]}") for m in members]
            else:
                left += odd.items()
                kept.append(PhotoGroup(group.primary, tuple(m for m in members if m not in odd)))
        for path, reason in left:
            log.warning("skipped", path=str(path), reason=reason)
        self._journal_left(left)
        self._remember_failed([PhotoGroup(path, (path,)) for path, _ in left])
        return kept

    def _journal_left(self, left: Sequence[tuple[Path, str]], *, since_id: int | None = None) -> None:
        """A journal row per file left in place, so the journal gives the reason the log gives."""
        assert self.journal is not None
        for path, reason in left:
            self.journal.left_in_place(self.run_id, path, reason, since_id=since_id)

    def _remember_failed(self, groups: Sequence[PhotoGroup]) -> None:
        with self.lock:
            for member in (m for g in groups for m in g.members):
                self.failed[member] = file_state(member)
                self.failed.move_to_end(member)
            while len(self.failed) > FAILED_MEMORY:
                self.failed.popitem(last=False)


# --- the main thread ---------------------------------------------------------------------------

@dataclass
class _Signals:
    wake: threading.Event = field(default_factory=threading.Event)
    stops: int = 0
    reload: bool = False


def run_daemon(source: ConfigSource, config: Config, *, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM/SIGINT (exit 0); SIGHUP reloads. Must be called from the main thread."""
    flags = _Signals()

    def on_stop(signum: int, _frame: object) -> None:
        flags.stops += 1
        if flags.stops > 1:  # asked twice: go now; the journal lets the next start finish any move
            log.warning("exiting now", signal=signal.Signals(signum).name,
                        reason="second signal; interrupted moves are finished or rolled back at the next start")
            os._exit(130)
        flags.wake.set()

    def on_hup(_signum: int, _frame: object) -> None:
        flags.reload = True
        flags.wake.set()

    previous = {s: signal.signal(s, h) for s, h in
                ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup))}
    service = Service(source, config, notifier=notifier)
    try:
        service.start()
        while not flags.stops and not service.broken.is_set():
            flags.wake.wait(1.0)
            flags.wake.clear()
            if flags.reload and not flags.stops:
                flags.reload = False
                service.reload()
            service.check_inboxes()
        clean = service.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not clean:
        os._exit(1)  # a lane is stuck in a move: leave it to the journal rather than hang
    return 1 if service.broken.is_set() else 0
