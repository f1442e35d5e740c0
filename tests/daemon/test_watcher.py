"""InboxHandler.wanted: which event paths the daemon looks at (a pure check on paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nordlys.daemon.config import DEFAULT_IGNORE
from nordlys.daemon.watcher import InboxHandler

INBOX = Path("/srv/photos/inbox")
OUT = [INBOX / "sorted" / "aurora", INBOX / "sorted" / "other"]


@pytest.mark.parametrize(("path", "wanted"), [
    (INBOX / "IMG_1.jpg", True),
    (INBOX / "card" / "DCIM" / "IMG_1.jpg", True),
    (INBOX, False),  # the inbox itself
    (Path("/srv/photos/IMG_1.jpg"), False),  # outside
    (Path("/srv/photos/inbox2/IMG_1.jpg"), False),  # a sibling whose name starts like the inbox's
    (INBOX / "sorted" / "aurora", False),  # an output folder itself
    (INBOX / "sorted" / "aurora" / "IMG_1.jpg", False),  # inside an output folder
    (INBOX / "sorted" / "aurora" / "deep" / "IMG_1.jpg", False),
    (INBOX / "sorted" / "aurora2" / "IMG_1.jpg", True),  # starts like an output folder, is not one
    (INBOX / "sorted" / "IMG_1.jpg", True),
    (INBOX / ".stversions" / "IMG_1.jpg", False),  # an ignored folder name on the way
    (INBOX / "IMG_1.jpg.part", False),  # an ignored file name
    (INBOX / "card" / ".hidden.jpg", False),
])
def test_wanted(path, wanted):
    handler = InboxHandler(INBOX, ignore=DEFAULT_IGNORE, exclude=OUT, sink=print, on_folder=print)
    assert handler.wanted(path) is wanted
