"""Thumbnails made on demand by the one image loader (so RAW and HEIC work), cached under the
state folder within a size bound.

A cached thumbnail is named by the photo's real path, size and mtime, so an edited or replaced
photo gets a new one and a stale one is never served; the oldest thumbnails go first when the
cache outgrows its bound.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from nordlys.daemon.loader import open_image

THUMB_SIDE = 320  # pixels, longer side: sharp in a phone's two-column grid
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class ThumbCache:
    def __init__(self, folder: Path, *, max_bytes: int = DEFAULT_CACHE_BYTES, max_file_bytes: int,
                 max_pixels: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.max_file_bytes, self.max_pixels = max_file_bytes, max_pixels
        self._lock = threading.Lock()

    def key(self, photo: Path) -> str:
        """Also the ETag: it changes whenever the photo does."""
        st = photo.stat()
        return hashlib.sha256(f"{photo}\0{st.st_size}\0{st.st_mtime_ns}\0{THUMB_SIDE}".encode()).hexdigest()[:32]

    def get(self, photo: Path) -> bytes:
        """The JPEG thumbnail of `photo`, from the cache or made now. Bytes, not a path: another
        request's trim may remove the file the moment after. Raises ImageLoadError for a file
        that is no photo."""
        target = self.folder / f"{self.key(photo)}.jpg"
        try:
            data = target.read_bytes()
            os.utime(target)  # recently used: kept longest
            return data
        except FileNotFoundError:
            pass
        image = open_image(photo, min_side=THUMB_SIDE, max_pixels=self.max_pixels, max_file_bytes=self.max_file_bytes)
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=82)
        data = buffer.getvalue()
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self._trim(keep=target)
        return data

    def _trim(self, *, keep: Path) -> None:
        """Drop the least recently used thumbnails (never `keep`, the one just made) until the
        cache is within its bound."""
        with self._lock:
            files = []
            for path in self.folder.glob("*.jpg"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                files.append((st.st_mtime, st.st_size, path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files, key=lambda f: f[0]):
                if total <= self.max_bytes:
                    break
                if path != keep:
                    path.unlink(missing_ok=True)
                    total -= size
