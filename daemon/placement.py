"""The one place that decides where a photo goes. Pure functions, no I/O.

Every caller (sort, watch, undo's dry runs, tests) asks `decide` for the folder and
`destination_dir` for the directory, so the rules below exist exactly once.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath

AURORA, OTHER, REVIEW, REJECTED = "aurora", "other", "review", "rejected"
FOLDER_KEYS = (AURORA, OTHER, REVIEW, REJECTED)


@dataclass(frozen=True)
class Verdict:
    """What was decided about one photo, and why: this is what the journal records."""

    folder: str  # one of FOLDER_KEYS
    score: float | None  # aurora probability; None when the photo could not be read
    reason: str = ""  # human reason for `rejected` (e.g. "truncated JPEG")
    model_version: str = ""
    follows_dir: Path | None = None  # a late sibling: the folder its photo was filed in (siblings.py)

    @property
    def label(self) -> str:
        return self.folder


def decide(score: float | None, *, threshold: float, band: float = 0.0) -> str:
    """Folder key for a score.

    score >= threshold -> aurora; score < threshold - band -> other; in between -> review
    (only when band > 0, so band = 0 never produces review); no score -> rejected.
    """
    if score is None or math.isnan(score):
        return REJECTED
    if score >= threshold:
        return AURORA
    if score < threshold - band:
        return OTHER
    return REVIEW


def destination_dir(source: Path, *, inbox: Path, output_root: Path, folder_name: str,
                    keep_subfolders: bool, layout: str = "", taken: datetime | None = None) -> Path:
    """Directory a file from `inbox` goes to under `output_root/folder_name`.

    layout: the `layout` template (check_layout), expanded with `taken` (the photo's EXIF
    DateTimeOriginal, else its mtime) into the first folders under folder_name; the caller
    passes it only for LAID_OUT folders (layout_for). With keep_subfolders the file's
    sub-folder relative to the inbox is kept after them (inbox/trip/a.jpg with layout
    "{year}" -> aurora/2026/trip/). Parts that could escape the output root (`..`, absolute
    paths) are dropped, so the result is always inside output_root/folder_name.
    """
    target = output_root / folder_name
    if layout:
        if taken is None:
            raise ValueError(f"layout {layout!r} needs the photo's date")
        target = target.joinpath(*expand_layout(layout, taken))
    if not keep_subfolders:
        return target
    try:
        relative = source.parent.relative_to(inbox)
    except ValueError:
        return target
    safe = [part for part in PurePath(relative).parts if part not in ("", ".", "..") and "/" not in part]
    return target.joinpath(*safe) if safe else target


# --- the `layout` template: dated folders under aurora/, other/, review/ -------------------------

LAYOUT_FIELDS = {"year": "%Y", "month": "%m", "day": "%d", "date": "%Y-%m-%d"}  # field -> strftime
LAID_OUT = (AURORA, OTHER, REVIEW)  # verdict folders; rejected/ and duplicates/ stay flat (to-do lists, not an archive)


def check_layout(layout: str) -> str | None:
    """What is wrong with a `layout` template, or None when it is fine. A template is folder
    names joined by '/', made of text and {fields} (LAYOUT_FIELDS); "" is no layout. Checked
    when the config is loaded, so a typo is never found at the first photo's move."""
    if not layout:
        return None
    if layout.startswith("/") or "\\" in layout:
        return "a relative path with '/' between folders"
    for part in layout.split("/"):
        try:
            pieces = list(string.Formatter().parse(part))
        except ValueError as exc:  # a lone '{' or '}'
            return f"a template of {{fields}} ({exc})"
        fields = [name for _, name, spec, conv in pieces if name is not None]
        if any(name in ("folder", "label") for name in fields):
            return "the folders inside aurora/, other/ and review/, without {folder} or {label} (it comes first anyway)"
        if any(name not in LAYOUT_FIELDS for name in fields):
            return f"only the fields {{{'}, {'.join(LAYOUT_FIELDS)}}}"
        if any(spec or conv for _, name, spec, conv in pieces if name is not None):
            return "fields without format specs ({year}, not {year:04})"
        if not fields and part in ("", ".", ".."):
            return "folder names between the '/' (no empty part, '.' or '..')"
    return None


def layout_for(folder: str, layout: str) -> str:
    """The layout a verdict folder gets: `layout` for LAID_OUT folders, none for the others."""
    return layout if folder in LAID_OUT else ""


def expand_layout(layout: str, taken: datetime) -> list[str]:
    """The folder names `layout` (already checked) makes for a photo taken at `taken`."""
    values = {name: taken.strftime(fmt) for name, fmt in LAYOUT_FIELDS.items()}
    return [part.format(**values) for part in layout.split("/")]


# --- photos whose exact bytes were filed before ----------------------------------------------

DUPLICATES = "duplicates"  # folders key of the `duplicates: folder` rule: not a verdict, nothing was judged
LEAVE, TO_FOLDER, KEEP = "leave", "folder", "keep"  # the `duplicates` rules
DUPLICATE_RULES = (LEAVE, TO_FOLDER, KEEP)


def duplicate_rule(rule: str, *, copy_mode: bool) -> str:
    """What happens to a photo whose sha256 was filed before (a re-sent or re-synced photo).

    leave (the default): it stays where it is, with a log line and a journal row naming where its
    bytes are filed. Why the default: the photo is already sorted, and a re-sender (rsync from
    cron, a Syncthing revert, `rclone copy` again) that finds its file still there sends nothing
    next time, while one that finds it gone sends it again, for ever.
    folder: it moves to `folders.duplicates` (the inbox stays empty; the re-sender may send again).
    keep: it is filed again, as any photo (a numbered name when its name is taken).
    In copy mode the source stays anyway, so `folder` leaves it too: a second copy would only
    repeat the first. Files that cannot be read as photos are no photos to file twice: every
    one goes to rejected/ (two empty files share one sha256), so the caller asks this only for
    photos with a verdict."""
    if rule not in DUPLICATE_RULES:
        raise ValueError(f"duplicates={rule!r}: expected one of {list(DUPLICATE_RULES)}")
    if rule == TO_FOLDER and copy_mode:
        return LEAVE
    return rule
