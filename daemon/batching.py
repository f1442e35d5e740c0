"""The daemon's next batch: which complete files go together, and which wait.

The dispatcher asks once per turn. The answer depends on the settler (which files are complete,
which are still arriving) and on the journal (late siblings, files kept in place on purpose), so
it lives here, apart from the threads and signals of service.py, and reads the same for every
caller:
- a file the journal keeps in place while it is unchanged (put back by `nordlys undo`, or copy
  mode's own source) is forgotten, with one log line;
- a group whose RAW twin or sidecar is still being written waits for it, so the group moves as one;
- a late RAW or sidecar follows its filed photo (siblings.py); a lone sidecar waits
  watch.sidecar_wait seconds for its photo;
- up to batch_size groups of one inbox go together, oldest first; a short batch waits up to
  batch_wait for more while files are still settling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import structlog

from nordlys.daemon.grouping import PhotoGroup, group_files
from nordlys.daemon.journal import Journal
from nordlys.daemon.placement import Verdict
from nordlys.daemon.settle import Settler, Waiting
from nordlys.daemon.siblings import SiblingFinder, is_lone_sidecar, stem_key

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BatchRules:
    """The watch settings batching obeys (read again on SIGHUP)."""

    inboxes: Collection[Path]  # watched now: files of an inbox a reload dropped are forgotten
    batch_size: int  # groups per batch at most (model.batch_size)
    batch_wait: float  # seconds a short batch waits for files still settling
    sidecar_wait: float  # seconds a lone sidecar waits for its photo


@dataclass
class Candidate:
    at: float  # when its last member was found complete
    inbox: Path
    group: PhotoGroup
    follows: Verdict | None  # a late RAW or sidecar goes where its photo went, unclassified


@dataclass
class Planned:
    """A batch's contents: groups of one inbox, and the verdicts the late companions follow."""

    inbox: Path
    groups: list[PhotoGroup]
    follows: dict[Path, Verdict] = field(default_factory=dict)  # primary -> its filed photo's verdict


class Batcher:
    """Plans batches from the settler's complete files; one per daemon (dispatcher thread only)."""

    def __init__(self, settler: Settler, journal: Journal, *, capacity: int) -> None:
        self.settler, self.journal = settler, journal
        self.siblings = SiblingFinder(journal, capacity=capacity)
        self.generation = 0  # batches filed so far: a cached "no photo filed yet" is stale once this moves

    def filed(self) -> None:
        """A batch was filed (lane thread): late companions look for their photo again."""
        self.generation += 1

    def claimed(self, groups: Sequence[PhotoGroup]) -> None:
        """The batch was handed to a lane: its files are no longer waiting companions."""
        for group in groups:
            self.siblings.forget(group.primary)

    def next(self, now: float, rules: BatchRules) -> tuple[Planned | None, float | None]:
        """Up to batch_size complete groups from one inbox, or (None, when to look again)."""
        ready = self.settler.ready()
        if not ready:
            return None, None
        candidates, retry = self.plan(ready, now, rules)
        if not candidates:
            return None, retry
        first = candidates[0]
        chosen = [c for c in candidates if c.inbox == first.inbox][:rules.batch_size]
        more_coming = self.settler.counts()[0] > len(ready)  # files still settling could fill the batch
        if len(chosen) < rules.batch_size and more_coming and now - first.at < rules.batch_wait:
            return None, min(retry or float("inf"), first.at + rules.batch_wait)
        return Planned(first.inbox, [c.group for c in chosen],
                       {c.group.primary: c.follows for c in chosen if c.follows is not None}), None

    def plan(self, ready: list[tuple[Path, Waiting]], now: float,
             rules: BatchRules) -> tuple[list[Candidate], float | None]:
        """Complete groups ready to go, oldest first, and when held-back ones need another look."""
        ready = self._without_kept(ready)
        since = {p: w.ready_since or now for p, w in ready}
        inbox_of = {p: w.inbox for p, w in ready}
        self.settler.forget([p for p in since if inbox_of[p] not in rules.inboxes])  # inbox dropped by a reload
        groups = group_files(p for p in since if inbox_of[p] in rules.inboxes)
        arriving = {stem_key(p) for p in self.settler.waiting_near({g.primary.parent for g in groups})}
        candidates, retry = [], None
        for group in groups:
            if stem_key(group.primary) in arriving:
                continue
            at = max(since[m] for m in group.members)
            follows = self.siblings.follows(group, self.generation)
            if follows is None and is_lone_sidecar(group) and now - at < rules.sidecar_wait:
                retry = min(retry or float("inf"), at + rules.sidecar_wait)
                continue
            candidates.append(Candidate(at, inbox_of[group.primary], group, follows))
        candidates.sort(key=lambda c: c.at)
        return candidates, retry

    def _without_kept(self, ready: list[tuple[Path, Waiting]]) -> list[tuple[Path, Waiting]]:
        """Forget files the journal keeps in place while unchanged (Journal.kept_unchanged)."""
        kept = {p for p, _ in ready if self.journal.kept_unchanged(p)}
        if not kept:
            return ready
        self.settler.forget(kept)
        log.info("left in place", paths=sorted(str(p) for p in kept)[:20], count=len(kept),
                 reason="put there by nordlys undo (or kept by copy mode); touch it to have it sorted again")
        return [(p, w) for p, w in ready if p not in kept]
