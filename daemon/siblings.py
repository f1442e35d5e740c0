"""Late siblings: a RAW twin or a sidecar that arrives after its photo was filed.

Sync clients send a pair's files in any order, seconds or minutes apart, and a sidecar filed
away from its photo is lost to the photo manager that reads it. But a shared name is no proof of
a pair: camera counters come round again (IMG_0001 after 10,000 shots; every iPhone and Canon
starts at IMG_0001), so an unrelated RAW can arrive under the name of a photo filed last week.
So a late file follows a filed photo only when:
- it sits in the same folder and shares its stem (grouping.split_name, case-insensitively);
- the photo was filed within FOLLOW_WINDOW (a transfer's files arrive within minutes);
- it cannot speak for itself: a RAW that carries its own preview is classified on its own
  pixels, like any photo, and only sidecars and preview-less RAWs follow.
It goes into the very folder the journal says its photo went to (Verdict.follows_dir), so the
`layout`'s dated folders and keep_subfolders are the photo's, whatever the late file's own mtime.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from nordlys.daemon.grouping import RASTER_SUFFIXES, RAW_SUFFIXES, SIDECAR_SUFFIXES, PhotoGroup, split_name
from nordlys.daemon.journal import DONE, Journal
from nordlys.daemon.loader import has_embedded_preview
from nordlys.daemon.placement import Verdict

FOLLOW_WINDOW = 600.0  # seconds: a RAW or sidecar follows a photo of its stem filed this recently


def stem_key(path: Path) -> tuple[Path, str]:
    """Group members share folder and stem (grouping.split_name), case-insensitively."""
    return path.parent, split_name(path.name)[0].casefold()


def is_lone_sidecar(group: PhotoGroup) -> bool:
    return group.primary.suffix.lower() in SIDECAR_SUFFIXES


def is_companion(group: PhotoGroup) -> bool:
    """A group without a raster photo: RAW files and/or sidecars, which grouping would have put
    with a JPEG/HEIC of the same stem had they arrived together."""
    return group.primary.suffix.lower() in RAW_SUFFIXES | SIDECAR_SUFFIXES


def speaks_for_itself(group: PhotoGroup) -> bool:
    """A RAW with an embedded preview has pixels of its own to be judged by."""
    return group.primary.suffix.lower() in RAW_SUFFIXES and has_embedded_preview(group.primary)


class SiblingFinder:
    """The verdict a late companion follows, looked up once per waiting file.

    A cached "no photo filed yet" goes stale as soon as another batch is filed (`generation`
    moves), so a sidecar waiting for its photo sees the photo as soon as it is filed."""

    def __init__(self, journal: Journal, *, capacity: int, window: float = FOLLOW_WINDOW) -> None:
        self.journal, self.capacity, self.window = journal, capacity, window
        self.cache: dict[Path, tuple[int, Verdict | None]] = {}  # primary -> (generation, verdict)

    def follows(self, group: PhotoGroup, generation: int) -> Verdict | None:
        """The verdict of the filed photo `group` belongs to, or None (classify it, or wait)."""
        if not is_companion(group):
            return None
        primary = group.primary
        cached = self.cache.get(primary)
        if cached is not None and (cached[1] is not None or cached[0] == generation):
            return cached[1]
        if len(self.cache) > 2 * self.capacity:
            self.cache.clear()
        verdict = None if speaks_for_itself(group) else self._filed_photo(primary)
        self.cache[primary] = (generation, verdict)
        return verdict

    def forget(self, primary: Path) -> None:
        self.cache.pop(primary, None)

    def _filed_photo(self, primary: Path) -> Verdict | None:
        since = datetime.now(timezone.utc) - timedelta(seconds=self.window)
        key = stem_key(primary)
        filed = self.journal.entries(
            since=since, status=DONE,
            match=lambda e: (e.source.parent == primary.parent and stem_key(e.source) == key
                             and e.source != primary and e.source.suffix.lower() in RASTER_SUFFIXES))
        if not filed:
            return None
        last = filed[-1]  # the folder it landed in, not one worked out again: the layout's date is the
        # photo's (a sidecar's own mtime may be another day), and a numbered or copied photo went there too
        return Verdict(last.label, last.score, reason=last.reason, model_version=last.model_version,
                       follows_dir=last.dest.parent)
