"""Fresh inboxes for every run: hard links to the cached photos, so staging costs no copying.

Sorting moves files away, so each run needs its own inbox. A hard link is a real file to the
sorter (its own name, same bytes) and moving it leaves the cached original in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence


def stage(photos: Sequence[Path], folder: Path) -> list[Path]:
    """Link every photo into a new, empty `folder` under its own name; returns the new paths."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    staged = []
    for i, photo in enumerate(photos):
        target = folder / f"{i:05d}_{photo.name}"
        try:
            os.link(photo, target)
        except OSError:  # another file system, or no hard links there: copy instead
            shutil.copyfile(photo, target)
        staged.append(target)
    return staged
