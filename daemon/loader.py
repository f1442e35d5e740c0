"""The one image loader: file bytes -> upright RGB pixels -> the model's square uint8 input.

Sorting, evaluation and training's evaluation transform all call `load_image`, so the
network sees identical pixels wherever it runs. Everything that can be wrong with a file
surfaces as one typed error, `ImageLoadError`, whose `reason` is short enough for a journal.

Decisions, each made once here:
- Format comes from the content (Pillow's own detection over the formats we claim), never
  from the suffix; only camera RAW is routed by suffix or signature, because Pillow would
  open a DNG/CR2 as a TIFF and hand back its tiny thumbnail.
- Orientation is applied exactly once: from EXIF/XMP for Pillow formats (a broken value
  counts as 1), not at all for pillow-heif images (libheif already rotated the pixels and
  reset EXIF to 1), and by LibRaw itself for demosaiced RAW (postprocess applies `flip`).
- Transparency is composited on black: the letterbox padding is black too, and a night sky
  is dark, so transparent areas look like "nothing" rather than like a bright overcast sky.
- 16-bit greyscale is scaled (v / 257) to 8 bits; Pillow's own conversion would clip it.
- Colour profiles (ICC) are not applied: the model is trained and run on the same
  untransformed pixels, and a per-photo colour transform would cost time on the hot path.
- The pixel limit is checked per call on the header size, before any decoding; Pillow's
  process-wide decompression-bomb limit is left as it is and its error maps to the same reason.
- A file is read only after a size check (`max_file_bytes`, from its fstat) and a look at its
  first bytes (it must claim an image format we decode, or be a RAW): a 3 GB video or an archive
  in an inbox costs a 4 KiB read, never its size in memory (fileops.read_hashed).
- A one-channel result (a monochrome sensor's RAW, a grey image) is made RGB by repeating it.
- Resizing uses Pillow's antialiased BILINEAR filter (the filter torchvision's `Resize`
  uses, which pretrained backbones expect) with `reducing_gap=3.0`: a box reduction first,
  then the filter, indistinguishable from a full-quality resize and much faster on big frames.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import stat
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import ExifTags, Image, ImageFile, features

from .contract import RESIZE_MODES
from .fileops import FileTooLarge, KnownHash, read_hashed

log = structlog.get_logger(__name__)

RAW_SUFFIXES: frozenset[str] = frozenset({
    ".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
    ".pef", ".srw", ".kdc", ".dcr", ".3fr", ".iiq", ".erf", ".mef", ".mos", ".x3f", ".rwl",
})


def _avif_supported() -> bool:
    """Whether this Pillow build decodes AVIF (Pillow >= 11.2 with libavif)."""
    try:
        return bool(features.check("avif"))
    except Exception:  # an unknown feature name on older Pillow raises, not returns False
        return False


IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif",
     ".heic", ".heif", ".hif"}
    | ({".avif"} if _avif_supported() else set())
) | RAW_SUFFIXES

DEFAULT_MAX_PIXELS: int = 200_000_000  # decompression-bomb limit in pixels (width * height)
# Files larger than this are refused unread (bytes). 512 MiB is above any camera's RAW (a 100-150 MP
# medium-format frame is 200-300 MB) and any JPEG/HEIC/PNG a camera or phone writes; what is bigger
# is a video, an archive or a 16-bit scan master, and reading it whole costs that much memory per
# decode thread on a home server.
DEFAULT_MAX_FILE_BYTES: int = 512 * 1024 * 1024

# Pillow format names we decode; anything else Pillow knows (EPS, TGA, ...) is "not an image".
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", "AVIF")
_RESAMPLE = Image.Resampling.BILINEAR
_REDUCING_GAP = 3.0
_DNG_VERSION_TAG = 50706
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# EXIF Orientation value -> the transpose that makes the pixels upright.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
# LibRaw `sizes.flip` -> the equivalent EXIF Orientation value.
_LIBRAW_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_ROTATING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class _UnsupportedMode(ValueError):
    """A decoded image in a mode Pillow cannot convert to RGB (LAB, HSV, ...)."""


class ImageLoadError(Exception):
    """The one error for a file that cannot become pixels.

    `path` names the file and `reason` says why in a few words ("truncated JPEG",
    "not an image", ...), short enough for the journal and the log.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    @property
    def incomplete(self) -> bool:
        """The bytes stop early (truncated, or nothing yet): what a file still being written, or an
        interrupted transfer, looks like. Its writer may come back, so it is worth a second look."""
        return self.reason.startswith("truncated ") or self.reason == "empty file"

    def __reduce__(self) -> tuple[Any, ...]:
        # Worker processes send these back to the parent; the default pickling would call
        # __init__ with the formatted message alone.
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------- public API


def load_image(path: Path, *, size: int, resize: str = "squash", max_pixels: int = DEFAULT_MAX_PIXELS,
               data: bytes | None = None, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> np.ndarray:
    """The model's input for one photo: uint8 (size, size, 3) RGB.

    Raises ImageLoadError for anything wrong with the file; ValueError only for a bad
    `resize` or `size` argument (a programming error, checked before any I/O).
    """
    _check_resize_args(size, resize)
    image = open_image(path, min_side=size, max_pixels=max_pixels, data=data, max_file_bytes=max_file_bytes)
    return to_model_input(image, size=size, resize=resize)


def warm_up() -> tuple[str, ...]:
    """Register the image formats now (Pillow's plugins, pillow-heif): ~25 ms that would
    otherwise land inside the first photo's decode. Called when a pipeline is built, so
    the daemon's first photo is as quick as its hundredth. Returns the formats accepted."""
    return _pillow_formats()


def has_embedded_preview(path: Path) -> bool:
    """Whether a camera RAW carries a JPEG preview (siblings.py: such a RAW is judged by its own
    pixels, not by the name it shares with a photo). Reads the RAW's header and preview only;
    False for anything that is not a readable regular RAW file."""
    import rawpy  # as in _open_raw: only when a RAW is asked about

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with rawpy.imread(os.fspath(path)) as raw:
            return raw.extract_thumb().format == rawpy.ThumbFormat.JPEG
    except Exception:  # LibRaw's error zoo: no preview, not a RAW, unreadable
        return False


_EXIF_IFD, _DATE_TIME_ORIGINAL = 0x8769, 0x9003  # EXIF tags: the Exif sub-IFD, DateTimeOriginal


def date_taken(path: Path, data: bytes) -> datetime | None:
    """EXIF DateTimeOriginal (the camera's local time) from the bytes the pipeline already read,
    for the `layout` folders; None when there is none (the caller falls back to the mtime).

    Parses headers only: Pillow's for JPEG, HEIC (pillow-heif), PNG, WebP, TIFF and TIFF-based
    RAW with an Exif IFD (NEF, ARW, CR2, ...); for any other RAW (CR3, RAF, a bare DNG) the shot
    time LibRaw read from it (0, the epoch, when it has none). Never raises: a broken EXIF block
    costs the date, never the photo."""
    try:
        value = _exif_date_value(path, data)
        if value is None and _looks_like_raw(path, data):
            import rawpy  # as in _open_raw: only for a RAW

            data = bytes(data) if not isinstance(data, bytes) else data  # alive while LibRaw reads it (_open_raw)
            with rawpy.imread(io.BytesIO(data)) as raw:  # header only, nothing is unpacked
                shot = raw.other.timestamp
            return shot if isinstance(shot, datetime) and shot.year > 1970 else None
        if not isinstance(value, str):
            return None
        return datetime.strptime(value.strip("\0 ")[:19], "%Y:%m:%d %H:%M:%S")
    except Exception:  # no EXIF, "0000:00:00 00:00:00", a broken block, LibRaw's error zoo
        log.debug("exif_date_missing", path=str(path))
        return None


def _exif_date_value(path: Path, data: bytes) -> Any:
    try:
        with Image.open(io.BytesIO(data), formats=_pillow_formats()) as image:
            return image.getexif().get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL)
    except Exception:
        return None


def open_image(path: Path, *, min_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               data: bytes | None = None, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Image.Image:
    """Decode a photo to an upright mode-"RGB" image.

    min_side: the caller needs at least this many pixels on the shorter side, which lets a
    large JPEG decode at 1/2, 1/4 or 1/8 scale in the DCT (several times faster) and a RAW
    use its embedded preview. data: the file's bytes when the caller has read them already,
    so each file is read once (else it is read by `read_photo`, with its checks).
    """
    path = Path(path)
    if data is None:
        data = read_photo(path, max_file_bytes=max_file_bytes)[0]
    if not data:
        raise ImageLoadError(path, "empty file")
    if _looks_like_raw(path, data):
        return _open_raw(path, data, min_side=min_side, max_pixels=max_pixels)
    image = _open_header(path, data, max_pixels=max_pixels)
    if image.format == "TIFF" and _DNG_VERSION_TAG in getattr(image, "tag_v2", {}):
        return _open_raw(path, data, min_side=min_side, max_pixels=max_pixels)
    return _decode(path, image, data, min_side=min_side)


def to_model_input(image: Image.Image, *, size: int, resize: str = "squash") -> np.ndarray:
    """Make a square uint8 (size, size, 3) RGB array from an image.

    squash: stretch the whole frame to the square (nothing is cut off, so sky at the
    edges stays); letterbox: fit inside and pad with black; center_crop: scale the shorter
    side to `size` and keep the centre square.
    """
    _check_resize_args(size, resize)
    if image.mode != "RGB":
        image = _to_rgb(image)
    width, height = image.size
    if resize == "squash":
        square = image.resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    elif resize == "center_crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        square = image.resize((size, size), _RESAMPLE, box=(left, top, left + side, top + side),
                              reducing_gap=_REDUCING_GAP)
    else:
        square = _letterbox(image, size)
    # A writable array: torch.from_numpy warns about read-only ones in training.
    return np.array(square, dtype=np.uint8)


# --------------------------------------------------------------------------- reading


def _check_resize_args(size: int, resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r} is not supported; expected one of {RESIZE_MODES}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} must be a positive int (pixels per side)")


def read_photo(path: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
               follow_symlinks: bool = True) -> tuple[bytes, KnownHash | None]:
    """A photo's bytes and their hash (None when it changed while read), read once, and only
    after its size and first bytes show it can be a photo we decode (see the module doc).

    Non-regular files are refused unread (O_NONBLOCK: a FIFO never blocks), and so are symlinks
    unless follow_symlinks (the daemon never follows one out of its inbox; a training set may be
    made of links). Every refusal is an ImageLoadError with a short reason.
    """
    try:
        return read_hashed(path, max_bytes=max_file_bytes, check_head=functools.partial(_check_head, path),
                           follow_symlinks=follow_symlinks)
    except FileTooLarge as exc:
        raise ImageLoadError(path, f"file too large ({exc.size / 2**20:.0f} MiB > max_file_bytes "
                                   f"{exc.limit / 2**20:.0f} MiB)") from None
    except FileNotFoundError:
        raise ImageLoadError(path, "unreadable: no such file") from None
    except PermissionError:
        raise ImageLoadError(path, "unreadable: permission denied") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL, errno.EISDIR):  # O_NOFOLLOW on a link; a FIFO, folder
            raise ImageLoadError(path, "not a regular file") from None
        raise ImageLoadError(path, f"unreadable: {exc.strerror or exc}") from None


def _check_head(path: Path, head: bytes) -> None:
    """Refuse, from its first bytes, a file that is no image we decode, before the rest is read."""
    if not head:
        raise ImageLoadError(path, "empty file")
    if _looks_like_raw(path, head) or _sniff_format(head) is not None or _claimed_by_pillow(head):
        return
    raise ImageLoadError(path, "not an image")


def _claimed_by_pillow(head: bytes) -> bool:
    """Whether one of the formats we decode recognises these first bytes (the check Pillow's
    Image.open makes itself; HEIF brands pillow-heif knows and _sniff_format does not)."""
    for name in _pillow_formats():
        accept = Image.OPEN[name][1]
        if accept is None:
            return True  # a plugin that can only tell by trying: let it try
        try:
            accepted = accept(head)
        except Exception:
            continue
        if accepted and not isinstance(accepted, str):
            return True
    return False


def _looks_like_raw(path: Path, data: bytes) -> bool:
    """RAW by suffix or by a signature Pillow would misread as TIFF (or not know)."""
    if path.suffix.lower() in RAW_SUFFIXES:
        return True
    head = data[:16]
    return (
        head.startswith((b"IIRO", b"IIRS", b"MMOR", b"IIU\0", b"FUJIFILMCCD-RAW", b"FOVb"))
        or (head.startswith(b"II*\0") and head[8:10] == b"CR")  # Canon CR2
        or (head[4:12] == b"ftypcrx ")  # Canon CR3
    )


# --------------------------------------------------------------------------- Pillow path


@functools.cache
def _pillow_formats() -> tuple[str, ...]:
    """Register pillow-heif once (on first use, so importing the daemon stays quick) and
    return the Pillow formats we accept that this installation can actually open."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        log.warning("heif_unavailable", reason="pillow-heif is not installed")
    else:
        register_heif_opener()
    Image.init()
    return tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)


def _open_header(path: Path, data: bytes, *, max_pixels: int) -> ImageFile.ImageFile:
    """Identify the format from the content and read the header only (no pixels yet)."""
    formats = _pillow_formats()
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's process-wide limit refused it; our per-call limit decides instead.
        image = _open_past_pillow_limit(path, data, formats)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ... for broken headers
        raise ImageLoadError(path, _reason_for_unreadable(data, exc)) from None
    _check_pixels(path, image.size, max_pixels)
    return image


def _open_past_pillow_limit(path: Path, data: bytes,
                            formats: tuple[str, ...]) -> ImageFile.ImageFile:
    """Open through Pillow's public plugin registry, which does not apply Pillow's global
    pixel limit, so `_check_pixels` can report the real size against the caller's limit."""
    for name in formats:
        factory, accept = Image.OPEN[name]
        accepted = accept(data[:16]) if accept is not None else True
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "close, but no"
            continue
        try:
            return factory(io.BytesIO(data), "")  # type: ignore[no-any-return]
        except Exception:
            continue
    raise ImageLoadError(path, "image too large (beyond Pillow's decompression-bomb limit)")


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageLoadError(path, f"corrupt image (declares {width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageLoadError(
            path, f"image too large ({width}x{height} > {max_pixels / 1e6:g} megapixels)")


def _decode(path: Path, image: ImageFile.ImageFile, data: bytes, *, min_side: int | None,
            orientation: int | None = None) -> Image.Image:
    """Decode pixels (reduced-DCT when allowed), then make them RGB and upright.

    orientation: the EXIF-style value to apply, when the caller knows better than the
    image's own metadata (a RAW preview); None reads it from the image.
    """
    kind = _display_format(image.format)
    if kind in ("HEIF", "AVIF") and _boxes_overrun(data):
        # libheif fills missing tiles with flat colour instead of failing: refuse up front.
        raise ImageLoadError(path, f"truncated {kind}")
    try:
        if min_side is not None and image.format in ("JPEG", "MPO"):
            image = _draft_jpeg(path, image, data, min_side)
        image.load()
        if orientation is None:
            orientation = _orientation(path, image)
        rgb = _to_rgb(image)
    except ImageLoadError:
        raise
    except _UnsupportedMode as exc:
        raise ImageLoadError(path, str(exc)) from None
    except Image.DecompressionBombError:
        raise ImageLoadError(path, f"image too large ({_size_text(image)}, a frame or tile "
                                   "exceeds Pillow's decompression-bomb limit)") from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, RuntimeError...
        raise ImageLoadError(path, _reason_for_failed_decode(kind, data, exc)) from None
    if orientation != 1:
        rgb = rgb.transpose(_ORIENTATION_TRANSPOSE[orientation])
    return rgb


def _draft_jpeg(path: Path, image: ImageFile.ImageFile, data: bytes,
                min_side: int) -> ImageFile.ImageFile:
    """Ask libjpeg for the smallest 1/1..1/8 DCT scale that keeps both sides >= min_side."""
    full = image.size
    image.draft("RGB", (min_side, min_side))
    if min(image.size) < min(min_side, *full):  # never expected; guards a Pillow change
        log.warning("jpeg_draft_undone", path=str(path), full=full, draft=image.size,
                    min_side=min_side)
        image = Image.open(io.BytesIO(data), formats=("JPEG", "MPO"))
    return image


def _orientation(path: Path, image: Image.Image) -> int:
    """EXIF (or XMP) Orientation to apply; a missing, broken or out-of-range value is 1."""
    if "original_orientation" in image.info:
        return 1  # pillow-heif: libheif already rotated the pixels and reset EXIF to 1
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a malformed EXIF block must not cost the photo
        value = 1
    if not isinstance(value, int) or value not in range(1, 9):
        log.debug("exif_orientation_ignored", path=str(path), value=repr(value)[:40])
        value = 1
    return value


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha over black, 16-bit scaled (not clipped), CMYK/L/P/1."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float32) / 257.0  # 0..65535 -> 0..255
        return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":  # float images hold 0..1 by convention
        grey = np.clip(np.asarray(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size)  # black
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except ValueError:
        raise _UnsupportedMode(f"unsupported colour mode {mode}") from None


def _letterbox(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Image.new("RGB", (size, size))  # black padding
    canvas.paste(image.resize(inner, _RESAMPLE, reducing_gap=_REDUCING_GAP),
                 ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas


# --------------------------------------------------------------------------- RAW path


def _open_raw(path: Path, data: bytes, *, min_side: int | None, max_pixels: int) -> Image.Image:
    """Camera RAW: the embedded JPEG preview when it is big enough, else a half-size demosaic.

    LibRaw's postprocess applies the RAW's `flip`, so demosaiced pixels come out upright.
    A preview follows its EXIF orientation (LibRaw copies the RAW's into a bare one), or
    else the RAW's, unless its shape shows it was stored already turned.
    """
    import rawpy  # imported here: a RAW is rare, and rawpy costs import time

    # rawpy hands LibRaw the object BytesIO.read() returns and keeps no reference to it. For bytes
    # that is `data` itself, alive until we return; for a bytearray (what fileops.read_hashed gives)
    # it would be a copy freed at once, and LibRaw would read freed memory.
    data = bytes(data) if not isinstance(data, bytes) else data
    if _tiff_data_missing(data):
        raise ImageLoadError(path, "truncated RAW")
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            _check_pixels(path, (raw.sizes.width, raw.sizes.height), max_pixels)
            preview = _raw_preview(path, raw, min_side=min_side, max_pixels=max_pixels)
            if preview is not None:
                return preview
            if _sensor_data_missing(raw):
                raise ImageLoadError(path, "truncated RAW")
            rgb = _three_channels(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
    except ImageLoadError:
        raise
    except rawpy.LibRawTooBigError:
        raise ImageLoadError(path, "image too large (beyond LibRaw's limits)") from None
    except Exception as exc:  # LibRaw's error zoo, MemoryError on garbage sizes, ...
        log.debug("raw_failed", path=str(path), error=repr(exc)[:200])
        return _open_refused_raw(path, data, _raw_reason(exc), min_side=min_side,
                                 max_pixels=max_pixels)
    log.debug("raw_decoded", path=str(path), source="demosaic", size=rgb.shape[1::-1])
    return Image.fromarray(rgb, "RGB")


def _three_channels(pixels: np.ndarray) -> np.ndarray:
    """LibRaw returns (h, w, 1) for a monochrome sensor (and for a CFA with one colour): repeat
    the grey channel, as Pillow's L -> RGB conversion does for grey JPEGs."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels[:, :, :3]


def _raw_preview(path: Path, raw: Any, *, min_side: int | None,
                 max_pixels: int) -> Image.Image | None:
    """The embedded JPEG preview if it has >= the pixels we need on its shorter side."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except rawpy.LibRawError:  # no thumbnail, an unsupported or a broken one: demosaic
        return None
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None  # a bitmap thumbnail is tiny; demosaic instead
    sensor = (raw.sizes.width, raw.sizes.height)
    needed = min_side if min_side is not None else min(sensor) // 2  # half-size demosaic
    try:
        header = _open_header(path, thumb.data, max_pixels=max_pixels)
    except ImageLoadError:
        return None  # a broken preview is no reason to give up on the RAW
    if min(header.size) < needed:
        return None
    orientation = _orientation(path, header)  # LibRaw writes the RAW's into a bare preview
    if orientation == 1:  # a preview with EXIF of its own but no orientation in it
        orientation = _LIBRAW_FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1)
    already_turned = _is_landscape(header.size) != _is_landscape(sensor)
    if orientation in _ROTATING_ORIENTATIONS and already_turned:
        orientation = 1  # the camera stored the preview upright: turn it once, not twice
    log.debug("raw_decoded", path=str(path), source="preview", size=header.size)
    return _decode(path, header, thumb.data, min_side=min_side, orientation=orientation)


def _tiff_data_missing(data: bytes) -> bool:
    """Whether a TIFF-based RAW (DNG, NEF, CR2, ARW, PEF, ...) declares image strips or tiles that
    lie past the end of its bytes: a file cut short, or one still being written.

    Why not leave it to LibRaw: given a cut-off buffer it often decodes anyway, filling the missing
    rows from memory it never initialised, so the all-zero-row test below sees whatever that memory
    held. The offsets in the file's own directories say exactly how far its data must reach.
    """
    if len(data) < 8 or data[:4] not in (b"II*\0", b"MM\0*"):
        return False
    order = "<" if data[:2] == b"II" else ">"
    pending, seen, end = [struct.unpack_from(order + "I", data, 4)[0]], set(), 0
    while pending and len(seen) < 64:
        ifd = pending.pop()
        if ifd in seen or ifd == 0:
            continue
        seen.add(ifd)
        if ifd + 2 > len(data):
            return True  # a directory the header points at is not there
        values = _ifd_values(data, order, ifd)
        if values is None:
            return True
        for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # strips, tiles
            for offset, count in zip(values.get(offsets_tag, ()), values.get(counts_tag, ())):
                end = max(end, offset + count)
        pending += values.get(330, [])  # SubIFDs: where a DNG keeps its full-size raw data
        pending += values.get(-1, [])  # the next directory in the chain
    return end > len(data)


def _ifd_values(data: bytes, order: str, ifd: int) -> dict[int, list[int]] | None:
    """The integer values of the tags _tiff_data_missing needs in one directory (-1: the next
    directory's offset); None when the directory itself is cut off."""
    count, = struct.unpack_from(order + "H", data, ifd)
    if ifd + 2 + 12 * count + 4 > len(data):
        return None
    values: dict[int, list[int]] = {-1: [struct.unpack_from(order + "I", data, ifd + 2 + 12 * count)[0]]}
    for i in range(count):
        tag, kind, n = struct.unpack_from(order + "HHI", data, ifd + 2 + 12 * i)
        if tag not in (273, 279, 324, 325, 330) or kind not in (3, 4, 13) or n > 1_000_000:
            continue
        size = 2 if kind == 3 else 4
        fmt = order + ("H" if kind == 3 else "I") * n
        where = ifd + 2 + 12 * i + 8
        if n * size > 4:
            where, = struct.unpack_from(order + "I", data, where)
        if where + n * size > len(data):
            return None
        values[tag] = list(struct.unpack_from(fmt, data, where))
    return values


def _sensor_data_missing(raw: Any) -> bool:
    """LibRaw zero-fills sensor rows past the end of a cut-off file instead of failing.

    A real sensor never reads exactly 0 across a whole row (black level and noise), so an
    all-zero last row means the data stopped early.
    """
    try:
        sensor = raw.raw_image_visible
    except Exception:  # some layouts (e.g. Foveon) expose no plain sensor array: cannot tell
        return False
    return sensor is not None and sensor.size > 0 and not sensor[-1].any()


def _raw_reason(exc: Exception) -> str:
    import rawpy

    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return "unsupported RAW"
    if isinstance(exc, rawpy.LibRawIOError):  # reading a memory buffer fails only past its end
        return "truncated RAW"
    return "corrupt RAW"


def _open_refused_raw(path: Path, data: bytes, reason: str, *, min_side: int | None,
                      max_pixels: int) -> Image.Image:
    """LibRaw refused the file. If its bytes are plainly another format (a JPEG saved as
    .nef), load that; a TIFF-like file stays refused, because Pillow would return the tiny
    IFD0 thumbnail of a broken NEF/DNG as if it were the photo."""
    if _sniff_format(data) in (None, "TIFF"):
        raise ImageLoadError(path, reason)
    image = _open_header(path, data, max_pixels=max_pixels)
    return _decode(path, image, data, min_side=min_side)


# --------------------------------------------------------------------------- reasons


def _reason_for_unreadable(data: bytes, exc: Exception) -> str:
    """Why Pillow could not even read the header: a known format cut short, or not an image."""
    kind = _sniff_format(data)
    if kind is None:
        return "not an image"
    if kind not in _pillow_formats():
        return f"unsupported {kind} (no decoder installed)"
    return _reason_for_failed_decode(_display_format(kind), data, exc)


def _reason_for_failed_decode(kind: str, data: bytes, exc: Exception) -> str:
    message = str(exc).lower()
    truncated = any(word in message for word in ("truncated", "broken data stream", "premature"))
    if truncated or _ends_early(kind, data):
        return f"truncated {kind}"
    return f"corrupt {kind}"


def _sniff_format(data: bytes) -> str | None:
    """The format a file claims by its magic bytes, for naming what is broken."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
    return None


def _ends_early(kind: str, data: bytes) -> bool:
    """Whether the bytes visibly stop before the format's end (used only after a failure)."""
    if kind == "JPEG":
        return not data.rstrip(b"\0").endswith(b"\xff\xd9")
    if kind == "PNG":
        return b"IEND" not in data[-12:]
    if kind == "GIF":
        return not data.endswith(b";")
    if kind == "WEBP":  # RIFF: bytes 4..8 give the length of everything after them
        return len(data) < 8 + int.from_bytes(data[4:8], "little")
    if kind in ("HEIF", "AVIF"):
        return _boxes_overrun(data)
    return False


def _boxes_overrun(data: bytes) -> bool:
    """ISO-BMFF (HEIF/AVIF): does a top-level box claim more bytes than the file has?"""
    offset = 0
    while offset + 8 <= len(data):
        size, = struct.unpack_from(">I", data, offset)
        if size == 1 and offset + 16 <= len(data):
            size, = struct.unpack_from(">Q", data, offset + 8)
        if size == 0:
            return False  # "extends to the end of the file"
        if size < 8 or offset + size > len(data):
            return True
        offset += size
    return False  # a few stray bytes at the end are no proof of a cut


def _display_format(name: str | None) -> str:
    if name == "MPO":
        return "JPEG"  # MPO is a JPEG with extra frames; people know it as JPEG
    return name or "image"


def _size_text(image: Image.Image) -> str:
    return f"{image.size[0]}x{image.size[1]}"


def _is_landscape(size: tuple[int, int]) -> bool:
    return size[0] >= size[1]
