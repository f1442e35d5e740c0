"""The one image loader, tested on real files: written here with Pillow / pillow-heif, a
hand-built DNG, the device samples in ../shared/samples and a few labelled photos."""

from __future__ import annotations

import csv
import functools
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, features

from nordlys.daemon.loader import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    RAW_SUFFIXES,
    ImageLoadError,
    load_image,
    open_image,
    to_model_input,
)
from tests.waiting import DEADLINE

pillow_heif.register_heif_opener()  # so the tests can *write* HEIF; the loader registers itself

GREEN, RED, BLUE = (0, 200, 0), (255, 0, 0), (0, 0, 255)
HAS_AVIF = bool(features.check("avif"))


# --------------------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def marked(width: int = 400, height: int = 300, background=GREEN) -> Image.Image:
    """A frame with a red block in its top-left corner, so rotations can be told apart."""
    image = Image.new("RGB", (width, height), background)
    image.paste(RED, (0, 0, width // 4, height // 5))
    return image


def red_box(pixels: np.ndarray) -> tuple[float, float, float, float]:
    """Where the red marker lies, as fractions (top, bottom, left, right) of the frame."""
    rgb = pixels.astype(int)
    ys, xs = np.nonzero((rgb[..., 0] - rgb[..., 1] > 100) & (rgb[..., 0] > 150))
    assert ys.size, "no red marker found"
    h, w = pixels.shape[:2]
    return ys.min() / h, (ys.max() + 1) / h, xs.min() / w, (xs.max() + 1) / w


def corner(pixels: np.ndarray) -> str:
    """'top-left', 'top-right', ... : the corner holding the red marker."""
    top, bottom, left, right = red_box(pixels)
    vertical = "top" if top < 0.01 else "bottom" if bottom > 0.99 else "middle"
    horizontal = "left" if left < 0.01 else "right" if right > 0.99 else "middle"
    return f"{vertical}-{horizontal}"


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header (with a correct CRC) claims width x height; no real pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


# A minimal DNG writer (TIFF structure by hand): IFD0 holds an optional JPEG preview and the
# DNG tags, a SubIFD holds 16-bit LinearRaw RGB sensor data that LibRaw can develop.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_PACK = {_BYTE: "B", _ASCII: "B", _SHORT: "H", _LONG: "I", _RATIONAL: "II", _SRATIONAL: "ii"}
# ColorMatrix1 (XYZ -> camera): the sensor "is" linear sRGB, so this is XYZ -> linear sRGB (D65).
_XYZ_TO_SRGB = [(32406, 10000), (-15372, 10000), (-4986, 10000), (-9689, 10000), (18758, 10000),
                (415, 10000), (557, 10000), (-2040, 10000), (10570, 10000)]


def _ifd(entries: list[tuple[int, int, object]], at: int) -> bytes:
    """One little-endian IFD placed at offset `at`, values that do not fit inline after it."""
    entries = sorted(entries, key=lambda e: e[0])
    overflow_at = at + 2 + 12 * len(entries) + 4
    body, overflow = b"", b""
    for tag, kind, values in entries:
        if kind == _ASCII:
            values = list(values.encode() + b"\0")
        flat = ([v for pair in values for v in pair] if kind in (_RATIONAL, _SRATIONAL)
                else list(values))
        raw = struct.pack("<" + _PACK[kind][0] * len(flat), *flat)
        if len(raw) <= 4:
            value = raw.ljust(4, b"\0")
        else:
            value = struct.pack("<I", overflow_at + len(overflow))
            overflow += raw + b"\0" * (len(raw) % 2)
        body += struct.pack("<HHI", tag, kind, len(values)) + value
    return struct.pack("<H", len(entries)) + body + struct.pack("<I", 0) + overflow


def make_dng(sensor: np.ndarray, *, preview: bytes | None = None, orientation: int = 1) -> bytes:
    height, width, _ = sensor.shape
    pixels = sensor.astype("<u2").tobytes()
    out = bytearray(b"II*\0\0\0\0\0")
    pixels_at = len(out)
    out += pixels
    preview_at = len(out)
    out += (preview or b"") + b"\0" * (len(preview or b"") % 2)
    ifd0 = [(271, _ASCII, "Nordlys"), (272, _ASCII, "Test"), (274, _SHORT, [orientation]),
            (50706, _BYTE, [1, 4, 0, 0]), (50708, _ASCII, "Nordlys Test"),
            (50721, _SRATIONAL, _XYZ_TO_SRGB), (50728, _RATIONAL, [(1, 1)] * 3),
            (50778, _SHORT, [21])]
    if preview:
        pw, ph = Image.open(io.BytesIO(preview)).size
        ifd0 += [(254, _LONG, [1]), (256, _LONG, [pw]), (257, _LONG, [ph]),
                 (258, _SHORT, [8, 8, 8]), (259, _SHORT, [7]), (262, _SHORT, [6]),
                 (273, _LONG, [preview_at]), (277, _SHORT, [3]), (278, _LONG, [ph]),
                 (279, _LONG, [len(preview)])]
    raw_ifd = [(254, _LONG, [0]), (256, _LONG, [width]), (257, _LONG, [height]),
               (258, _SHORT, [16, 16, 16]), (259, _SHORT, [1]), (262, _SHORT, [34892]),
               (273, _LONG, [pixels_at]), (277, _SHORT, [3]), (278, _LONG, [height]),
               (279, _LONG, [len(pixels)]), (284, _SHORT, [1]), (50717, _LONG, [65535])]
    ifd0_at = len(out)
    raw_at = ifd0_at + len(_ifd(ifd0 + [(330, _LONG, [0])], ifd0_at))
    out += _ifd(ifd0 + [(330, _LONG, [raw_at])], ifd0_at) + _ifd(raw_ifd, raw_at)
    struct.pack_into("<I", out, 4, ifd0_at)
    return bytes(out)


def green_sensor(width: int = 400, height: int = 300) -> np.ndarray:
    """16-bit sensor data: green frame, red block top-left (the same layout as `marked`)."""
    sensor = np.full((height, width, 3), (2000, 30000, 2000), np.uint16)
    sensor[: height // 5, : width // 4] = (30000, 2000, 2000)
    return sensor


def blue_preview(width: int = 400, height: int = 300) -> bytes:
    """A preview that differs from the sensor data by colour, so the test sees which was used."""
    return encode(marked(width, height, background=BLUE), "JPEG", quality=90)


def assert_colour(pixels: np.ndarray, expected: tuple[int, int, int], tolerance: int = 40) -> None:
    mean = pixels.reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(mean - expected) <= tolerance), f"mean colour {mean} != {expected}"


# --------------------------------------------------------------------------- the API


def test_suffix_sets_are_lower_case_and_cover_the_claimed_formats():
    expected = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif",
                ".heic", ".heif", ".hif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf",
                ".orf", ".rw2", ".kdc", ".x3f", ".rwl"}
    assert expected <= IMAGE_SUFFIXES
    assert RAW_SUFFIXES <= IMAGE_SUFFIXES
    assert (".avif" in IMAGE_SUFFIXES) == HAS_AVIF
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
    assert DEFAULT_MAX_PIXELS == 200_000_000


def test_error_carries_path_and_reason_and_survives_pickling():
    error = ImageLoadError(Path("/in/a.jpg"), "truncated JPEG")
    assert (error.path, error.reason, str(error)) == (Path("/in/a.jpg"), "truncated JPEG",
                                                      "/in/a.jpg: truncated JPEG")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


def test_bad_resize_or_size_is_a_value_error_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"'stretch'.*squash.*letterbox.*center_crop"):
        load_image(tmp_path / "missing.jpg", size=32, resize="stretch")  # checked before I/O
    with pytest.raises(ValueError, match="size=0"):
        to_model_input(Image.new("RGB", (8, 8)), size=0)


def test_bytes_given_by_the_caller_are_used_without_reading_the_path(tmp_path):
    data = encode(marked(), "PNG")
    image = open_image(tmp_path / "never-written.png", data=data)
    assert image.size == (400, 300)


def test_loader_leaves_pillow_globals_alone(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    open_image(write(tmp_path, "a.jpg", encode(marked(), "JPEG")))
    with pytest.raises(ImageLoadError):
        open_image(tmp_path / "b.png", data=png_declaring(30000, 30000))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == limit


# --------------------------------------------------------------------------- formats


def _format_cases() -> list[tuple[str, str, dict]]:
    cases = [("a.jpg", "JPEG", {"quality": 92}), ("a.jpeg", "JPEG", {"progressive": True}),
             ("a.jpe", "JPEG", {}), ("a.png", "PNG", {}), ("a.webp", "WEBP", {"quality": 95}),
             ("b.webp", "WEBP", {"lossless": True}), ("a.tif", "TIFF", {}),
             ("a.tiff", "TIFF", {"compression": "tiff_deflate"}),
             ("b.tif", "TIFF", {"compression": "jpeg"}), ("a.bmp", "BMP", {}),
             ("a.gif", "GIF", {}), ("a.heic", "HEIF", {"quality": 90}),
             ("a.heif", "HEIF", {"quality": 90}), ("a.hif", "HEIF", {"quality": 90})]
    if HAS_AVIF:
        cases.append(("a.avif", "AVIF", {"quality": 90}))
    return cases


@pytest.mark.parametrize(("name", "fmt", "options"), _format_cases(), ids=lambda v: str(v))
def test_every_claimed_format_loads_upright_and_in_colour(tmp_path, name, fmt, options):
    path = write(tmp_path, name, encode(marked(), fmt, **options))
    image = open_image(path)
    assert (image.mode, image.size) == ("RGB", (400, 300))
    pixels = load_image(path, size=64)
    assert (pixels.shape, pixels.dtype) == ((64, 64, 3), np.uint8)
    assert corner(pixels) == "top-left"
    assert_colour(pixels[40:, 40:], GREEN)


def test_mpo_loads_its_first_frame(tmp_path):
    data = encode(marked(), "MPO", save_all=True, append_images=[Image.new("RGB", (400, 300))])
    image = open_image(write(tmp_path, "stereo.jpg", data), min_side=100)
    assert image.size == (200, 150)  # reduced-DCT works on MPO too
    assert_colour(np.asarray(image)[60:, 60:], GREEN)


@pytest.mark.parametrize(("name", "fmt"), [("photo.jpg", "PNG"), ("photo.png", "JPEG"),
                                           ("photo.heic", "JPEG"), ("photo.jpg", "WEBP"),
                                           ("photo.dng", "JPEG"), ("photo.nef", "PNG")])
def test_format_comes_from_content_not_suffix(tmp_path, name, fmt):
    path = write(tmp_path, name, encode(marked(), fmt))
    assert corner(load_image(path, size=64)) == "top-left"


@pytest.mark.parametrize("fmt", ["TGA", "PPM", "PCX"])
def test_formats_we_do_not_claim_are_not_images(tmp_path, fmt):
    path = write(tmp_path, "photo.jpg", encode(marked(), fmt))
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, size=32)
    assert caught.value.reason == "not an image"


# --------------------------------------------------------------------------- colour & modes


@pytest.mark.parametrize("resize", ["squash", "letterbox", "center_crop"])
def test_green_jpeg_stays_green_in_every_resize_mode(tmp_path, resize):
    path = write(tmp_path, "green.jpg", encode(Image.new("RGB", (600, 400), (0, 255, 0)), "JPEG"))
    pixels = load_image(path, size=224, resize=resize).astype(int)
    photo = pixels[40:184] if resize == "letterbox" else pixels  # 224x149 inside black bars
    assert photo[..., 1].min() > 230 and photo[..., [0, 2]].max() < 30
    if resize == "letterbox":
        assert pixels[:36].max() == 0 and pixels[-36:].max() == 0


def test_resize_modes_keep_the_parts_they_promise():
    bands = Image.new("RGB", (300, 100), RED)
    bands.paste(GREEN, (100, 0, 200, 100))
    bands.paste(BLUE, (200, 0, 300, 100))
    squash = to_model_input(bands, size=30, resize="squash")
    assert_colour(squash[:, :8], RED, 5)
    assert_colour(squash[:, 12:18], GREEN, 5)
    assert_colour(squash[:, 22:], BLUE, 5)
    crop = to_model_input(bands, size=30, resize="center_crop")
    assert_colour(crop[:, 3:27], GREEN, 5)  # only the centre square survives
    box = to_model_input(bands, size=30, resize="letterbox")
    assert box[:10].max() == 0 and box[20:].max() == 0  # 30x10 photo between black bars
    assert_colour(box[11:19, :8], RED, 10)
    assert_colour(box[11:19, 22:], BLUE, 10)


def test_output_is_a_fresh_writable_array():
    pixels = to_model_input(Image.new("RGB", (50, 40), GREEN), size=16)
    assert pixels.flags.writeable and pixels.flags.c_contiguous


def test_sixteen_bit_greys_are_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 16384, 32768, 65535]], np.uint16).repeat(4, axis=0)
    path = write(tmp_path, "deep.png", encode(Image.fromarray(levels), "PNG"))
    image = open_image(path)
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 64, 128, 255]
    mid = write(tmp_path, "mid.png", encode(Image.fromarray(np.full((40, 60), 32768, np.uint16)),
                                            "PNG"))
    assert np.abs(load_image(mid, size=16).astype(int) - 128).max() <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # no cyan, full magenta and yellow
    path = write(tmp_path, "print.jpg", encode(cmyk, "JPEG", quality=95))
    assert_colour(load_image(path, size=32), RED, 30)


def test_palette_transparency_is_composited_on_black(tmp_path):
    image = Image.new("P", (40, 20), 0)
    image.putpalette([255, 255, 255] + [0, 200, 0] + [0, 0, 0] * 254)
    image.paste(1, (20, 0, 40, 20))
    path = write(tmp_path, "logo.png", encode(image, "PNG", transparency=0))
    pixels = np.asarray(open_image(path))
    assert pixels[:, :20].max() == 0  # transparent white -> black
    assert_colour(pixels[:, 20:], GREEN, 1)


def test_half_transparent_rgba_is_darkened_towards_black(tmp_path):
    path = write(tmp_path, "glass.png", encode(Image.new("RGBA", (8, 8), (0, 200, 0, 128)), "PNG"))
    assert_colour(np.asarray(open_image(path)), (0, 100, 0), 2)


@pytest.mark.parametrize("mode", ["L", "LA", "1", "P"])
def test_grey_and_palette_modes_become_rgb(tmp_path, mode):
    grey = Image.new("L", (32, 32), 255).convert(mode)
    path = write(tmp_path, f"{mode}.png", encode(grey, "PNG"))
    pixels = np.asarray(open_image(path))
    assert pixels.shape == (32, 32, 3) and pixels.min() >= 250


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (60, 40), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert_colour(load_image(write(tmp_path, f"anim.{fmt.lower()}", data), size=16), RED, 10)


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize(("orientation", "size", "where"), [
    (1, (400, 300), "top-left"), (2, (400, 300), "top-right"), (3, (400, 300), "bottom-right"),
    (6, (300, 400), "top-right"), (8, (300, 400), "bottom-left"),
])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, size, where):
    data = encode(marked(), "JPEG", exif=exif_with_orientation(orientation))
    image = open_image(write(tmp_path, "o.jpg", data))
    assert image.size == size
    assert corner(np.asarray(image)) == where


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_orientation_applies_to_other_formats_too(tmp_path, fmt):
    data = encode(marked(), fmt, exif=exif_with_orientation(6))
    image = open_image(write(tmp_path, f"o.{fmt.lower()}", data))
    assert image.size == (300, 400) and corner(np.asarray(image)) == "top-right"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("exif", [exif_with_orientation(0), exif_with_orientation(9),
                                  exif_with_orientation(65535),
                                  b"Exif\0\0MM\0*\0\0\0\x08\xff\xff garbage"])
def test_broken_orientation_counts_as_upright(tmp_path, exif):
    image = open_image(write(tmp_path, "o.jpg", encode(marked(), "JPEG", exif=exif)))
    assert image.size == (400, 300) and corner(np.asarray(image)) == "top-left"


@pytest.mark.parametrize("fmt", ["HEIF"] + (["AVIF"] if HAS_AVIF else []))
def test_heif_and_avif_rotate_exactly_once(tmp_path, fmt):
    # pillow-heif turns EXIF orientation into a rotation in the file and undoes it on open;
    # Pillow's AVIF plugin keeps it in EXIF. Either way: upright, rotated once.
    data = encode(marked(), fmt, exif=exif_with_orientation(6), quality=90)
    image = open_image(write(tmp_path, f"o.{fmt.lower()}", data))
    assert image.size == (300, 400) and corner(np.asarray(image)) == "top-right"


def test_iphone_heic_arrow_points_up_rotated_once(shared_samples):
    image = open_image(shared_samples / "heic" / "iphone8plus_arrow_orient6.heic")
    assert image.size == (3024, 4032)  # portrait: rotated once (twice or never is landscape)
    dark = to_model_input(image, size=256).mean(axis=2) < 80  # the drawn arrow's ink
    rows = np.nonzero(dark.any(axis=1))[0]
    tip_row = rows.min()
    tip_xs = np.nonzero(dark[tip_row])[0]
    spans = [np.ptp(np.nonzero(row)[0]) if row.any() else 0 for row in dark]
    assert tip_row < 0.15 * 256, "the arrow's tip is at the top"
    assert 0.4 < tip_xs.mean() / 256 < 0.6 and np.ptp(tip_xs) < 13, "a narrow tip, centred"
    assert np.argmax(spans) < 0.48 * 256, "the wide arrowhead is above the narrow stem"


def test_loader_registers_heif_by_itself(shared_samples):
    # This test module registers pillow-heif to *write* HEIF, so ask a fresh interpreter.
    script = ("import sys; from pathlib import Path; from nordlys.daemon.loader import open_image;"
              f"print(open_image(Path({str(shared_samples / 'heic' / 'xiaomi_pen.heic')!r}),"
              " min_side=64).size, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=DEADLINE, check=True)
    assert done.stdout.strip().splitlines()[-1] == "(2592, 1944) False"


@pytest.mark.parametrize(("name", "size"), [("iphone13pro_pug.heic", (4032, 3024)),
                                            ("xiaomi_pen.heic", (2592, 1944))])
def test_device_heics_load(shared_samples, name, size):
    path = shared_samples / "heic" / name
    assert open_image(path).size == size
    assert load_image(path, size=96, resize="letterbox").shape == (96, 96, 3)


# --------------------------------------------------------------------------- JPEG draft


def test_big_jpeg_is_decoded_at_reduced_dct_scale(tmp_path):
    path = write(tmp_path, "big.jpg", encode(marked(4000, 3000), "JPEG", quality=85))
    small = open_image(path, min_side=224)
    assert small.size[0] <= 1000 and min(small.size) >= 224  # at most 1/4 of each side
    assert open_image(path).size == (4000, 3000)
    for min_side in (100, 375, 376, 700, 1500, 2999, 5000):
        side = min(open_image(path, min_side=min_side).size)
        assert side >= min(min_side, 3000), (min_side, side)
    assert corner(load_image(path, size=224)) == "top-left"


def test_reduced_dct_and_orientation_together(tmp_path):
    data = encode(marked(4000, 3000), "JPEG", exif=exif_with_orientation(6))
    image = open_image(write(tmp_path, "big.jpg", data), min_side=224)
    assert image.size == (375, 500) and corner(np.asarray(image)) == "top-right"


# --------------------------------------------------------------------------- RAW


def test_device_raws_load_by_half_size_demosaic(shared_samples):
    # Neither sample has a JPEG preview (the KDC has only a 96x64 bitmap thumbnail).
    dng = open_image(shared_samples / "raw" / "blackmagic_cinemadng.dng", min_side=64)
    kdc = open_image(shared_samples / "raw" / "kodak_dc50.kdc", min_side=64)
    assert (dng.size, kdc.size) == ((2064, 1088), (384, 256))
    assert load_image(shared_samples / "raw" / "kodak_dc50.kdc", size=64).shape == (64, 64, 3)


def bare_exif_jpeg(image: Image.Image) -> bytes:
    """A JPEG whose first segment is EXIF (no JFIF, no orientation): LibRaw then hands the
    preview back as it is instead of writing the RAW's orientation into it."""
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    data = encode(image, "JPEG", quality=90, exif=exif.tobytes())
    assert data[2:4] == b"\xff\xe0"  # JFIF APP0 first: drop it
    return data[:2] + data[4 + int.from_bytes(data[4:6], "big"):]


CORNER_AFTER = {1: "top-left", 3: "bottom-right", 6: "top-right", 8: "bottom-left"}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_raw_uses_its_jpeg_preview_when_it_is_big_enough(tmp_path, orientation):
    dng = make_dng(green_sensor(), preview=blue_preview(), orientation=orientation)
    path = write(tmp_path, "camera.dng", dng)
    image = np.asarray(open_image(path, min_side=200))
    assert_colour(image[120:180, 120:180], BLUE, 40)  # the preview, not the sensor data
    assert corner(image) == CORNER_AFTER[orientation]


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_raw_preview_without_its_own_orientation_follows_the_raw(tmp_path, orientation):
    preview = bare_exif_jpeg(marked(background=BLUE))
    dng = make_dng(green_sensor(), preview=preview, orientation=orientation)
    image = np.asarray(open_image(write(tmp_path, "camera.dng", dng), min_side=200))
    assert image[..., 2].mean() > 150  # the blue preview was used
    assert corner(image) == CORNER_AFTER[orientation]


def test_raw_preview_stored_already_upright_is_not_turned_twice(tmp_path):
    upright = marked(background=BLUE).transpose(Image.Transpose.ROTATE_270)  # 300x400
    dng = make_dng(green_sensor(), preview=encode(upright, "JPEG"), orientation=6)
    image = np.asarray(open_image(write(tmp_path, "camera.dng", dng), min_side=200))
    assert image.shape[:2] == (400, 300) and corner(image) == "top-right"


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_raw_demosaic_when_the_preview_is_too_small_rotates_once(tmp_path, orientation):
    dng = make_dng(green_sensor(), preview=blue_preview(160, 120), orientation=orientation)
    image = np.asarray(open_image(write(tmp_path, "camera.dng", dng), min_side=200))
    assert image.shape[:2] == ((300, 400) if orientation == 1 else (400, 300))
    assert image[..., 1].mean() > 180 > 120 > image[..., 2].mean()  # sensor, not blue preview
    assert corner(image) == CORNER_AFTER[orientation]


def test_dng_named_tif_is_developed_not_read_as_its_thumbnail(tmp_path):
    dng = make_dng(green_sensor(), preview=blue_preview(160, 120))
    image = np.asarray(open_image(write(tmp_path, "export.tif", dng), min_side=200))
    assert image.shape[:2] == (300, 400)
    assert image[..., 1].mean() > 180 > 120 > image[..., 2].mean()  # not the blue thumbnail


def test_truncated_raw_is_refused(tmp_path, shared_samples):
    data = (shared_samples / "raw" / "blackmagic_cinemadng.dng").read_bytes()
    for cut in (20, 1000, len(data) // 2):
        with pytest.raises(ImageLoadError) as caught:
            open_image(write(tmp_path, "cut.dng", data[:cut]), min_side=64)
        assert caught.value.reason in ("truncated RAW", "corrupt RAW"), cut


def test_unreadable_raw_names_raw(tmp_path):
    noise = np.random.default_rng(5).bytes(20_000)
    with pytest.raises(ImageLoadError) as caught:
        open_image(write(tmp_path, "noise.nef", noise))
    assert caught.value.reason == "unsupported RAW"


# --------------------------------------------------------------------------- bad inputs


def _reason(path: Path, **kwargs) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, size=64, **kwargs)
    assert caught.value.path == path and str(caught.value) == f"{path}: {caught.value.reason}"
    return caught.value.reason


@functools.cache
def _noisy_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise), "JPEG", quality=90,
                  exif=exif_with_orientation(1) + b"\0" * 100)


@pytest.mark.parametrize("fraction", [0.0005, 0.002, 0.01, 0.25, 0.5, 0.9, 0.998])
def test_truncated_jpeg_is_rejected_not_half_grey(tmp_path, fraction):
    data = _noisy_jpeg()
    assert _reason(write(tmp_path, "cut.jpg", data[: max(3, int(len(data) * fraction))])) \
        == "truncated JPEG"


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_other_truncated_formats_name_their_format(tmp_path, fmt):
    noise = np.random.default_rng(1).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    reason = _reason(write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2]))
    assert reason in (f"truncated {fmt}", f"corrupt {fmt}")


@pytest.mark.parametrize("cut", [100, 2000, 0.5, -10])
def test_truncated_heic_is_rejected_not_filled_with_flat_tiles(tmp_path, shared_samples, cut):
    data = (shared_samples / "heic" / "xiaomi_pen.heic").read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    assert _reason(write(tmp_path, "cut.heic", data[:end])) == "truncated HEIF"


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("zero.jpg", b"", "empty file"),
    ("page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "not an image"),
    ("noise.jpg", np.random.default_rng(2).bytes(50_000), "not an image"),
    ("text.png", b"just some text", "not an image"),
])
def test_non_images_are_named(tmp_path, name, content, reason):
    assert _reason(write(tmp_path, name, content)) == reason


def test_png_with_bad_checksum_is_corrupt(tmp_path):
    data = bytearray(encode(marked(), "PNG"))
    data[29] ^= 0xFF  # inside the IHDR CRC
    assert _reason(write(tmp_path, "bad.png", bytes(data))) == "corrupt PNG"


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = write(tmp_path, "bomb.png", png_declaring(30000, 30000))
    peak_before = _peak_rss_mib()
    assert _reason(path, max_pixels=100_000_000) == \
        "image too large (30000x30000 > 100 megapixels)"
    assert _reason(path) == "image too large (30000x30000 > 200 megapixels)"  # past Pillow's own
    assert _peak_rss_mib() - peak_before < 200  # nothing was decoded or allocated: 30000x30000 RGB is 2.5 GiB


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB: what a decode would have raised."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_pixel_limit_is_per_call(tmp_path):
    path = write(tmp_path, "a.png", encode(marked(400, 300), "PNG"))
    assert _reason(path, max_pixels=100_000) == "image too large (400x300 > 0.1 megapixels)"
    assert load_image(path, size=32, max_pixels=120_000).shape == (32, 32, 3)


def test_directory_named_like_a_photo(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    assert _reason(tmp_path / "x.jpg") == "not a regular file"


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def attempt() -> None:
        try:
            load_image(fifo, size=32)
        except ImageLoadError as error:
            outcome.append(error.reason)

    worker = threading.Thread(target=attempt, daemon=True)  # a daemon: a hang cannot stall CI
    worker.start()
    worker.join(timeout=DEADLINE)
    assert not worker.is_alive(), "opening the FIFO blocked"
    assert outcome == ["not a regular file"]


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "gone.jpg") == "unreadable: no such file"


def test_unreadable_file_reports_permission_denied(tmp_path):
    if os.geteuid() != 0:
        path = write(tmp_path, "locked.jpg", encode(marked(), "JPEG"))
        path.chmod(0)
        assert _reason(path) == "unreadable: permission denied"
        return
    # Root reads anything, so a forked child drops to `nobody` and tries the chmod-000 file.
    directory = Path(tempfile.mkdtemp(prefix="nordlys-perm-"))
    try:
        directory.chmod(0o755)
        path = write(directory, "locked.jpg", encode(marked(), "JPEG"))
        path.chmod(0)
        assert _reason_as_nobody(path) == "unreadable: permission denied"
    finally:
        shutil.rmtree(directory)


def _reason_as_nobody(path: Path) -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            try:
                load_image(path, size=32)
                message = b"loaded"
            except ImageLoadError as error:
                message = error.reason.encode()
            os.write(write_end, message)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    if not message:
        pytest.skip("could not drop root privileges in a child process here")
    return message


# --------------------------------------------------------------------------- real photos


def test_real_labelled_photos_load(shared_data):
    with open(shared_data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = [r for r in rows if r["label"] == "aurora"][:3] + \
             [r for r in rows if r["label"] == "other"][:3]
    for row in picked:
        path = shared_data / row["file"]
        assert open_image(path).size == (int(row["width"]), int(row["height"])), row["file"]
        for resize in ("squash", "letterbox", "center_crop"):
            pixels = load_image(path, size=224, resize=resize, data=path.read_bytes())
            assert pixels.shape == (224, 224, 3) and pixels.std() > 1


# --------------------------------------------------------------------------- fuzzing


_SEED_NAMES = ("a.jpg", "a.png", "a.gif", "a.webp", "a.tif", "a.heic", "a.dng")


@functools.cache
def _seeds() -> dict[str, bytes]:
    photo = marked(96, 64)
    return {
        "a.jpg": encode(photo, "JPEG", exif=exif_with_orientation(6)),
        "a.png": encode(photo, "PNG"),
        "a.gif": encode(photo, "GIF"),
        "a.webp": encode(photo, "WEBP"),
        "a.tif": encode(photo, "TIFF"),
        "a.heic": encode(photo, "HEIF", quality=50),
        "a.dng": make_dng(green_sensor(96, 64), preview=blue_preview(96, 64)),
    }


def _only_image_load_error(path: Path, data: bytes) -> None:
    """Any other exception fails the example. Hangs are caught by tests/reliability/
    test_properties.py, which fuzzes in a child process with a hard time limit; timing each
    example here would fail on a busy machine, not on a slow decoder."""
    try:
        # A lower pixel limit than the default keeps a header mutated into "12000 x 15000"
        # from allocating gigabytes on a shared CI machine; the limit itself is tested above.
        load_image(path, size=32, data=data, max_pixels=20_000_000)
    except ImageLoadError:
        pass


_FUZZ = settings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=st.binary(max_size=4096),
       suffix=st.sampled_from([".jpg", ".png", ".heic", ".tif", ".nef", ".txt"]))
def test_fuzz_random_bytes_raise_only_image_load_error(data, suffix):
    _only_image_load_error(Path("fuzz" + suffix), data)


@_FUZZ
@given(name=st.sampled_from(_SEED_NAMES),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      max_size=12),
       keep=st.floats(0.05, 1.0))
def test_fuzz_mutated_images_raise_only_image_load_error(name, edits, keep):
    data = bytearray(_seeds()[name])
    for where, value in edits:
        data[int(where * len(data))] = value
    _only_image_load_error(Path(name), bytes(data[: max(1, int(len(data) * keep))]))


def test_warm_up_registers_every_claimed_format_before_the_first_photo():
    from nordlys.daemon.loader import warm_up
    assert {"JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF"} <= set(warm_up())  # MPO opens as JPEG
