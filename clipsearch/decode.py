"""Reading image files: content hash, metadata, and a decoded RGB picture.

JPEGs are decoded with `Image.draft` at the smallest DCT scale that still leaves both sides
at least the model's input size, which is several times faster than a full decode of a
12-megapixel photo and changes the embedding very little (see the fidelity tests).
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImage
from .raw import develop, is_raw

MAX_PIXELS = 120_000_000
"""Images claiming more pixels than this are refused before any pixel is allocated."""

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_MODEL = 272
_ORIENTATION = 274

pillow_heif.register_heif_opener()  # HEIC/HEIF; AVIF is built into Pillow


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    format: str
    taken_at: str | None
    camera: str | None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def decode(data: bytes, min_side: int | None = None, name: str = "") -> tuple[Image.Image, ImageMeta]:
    """Decode the first frame as RGB with EXIF orientation applied.

    With `min_side`, JPEGs are draft-decoded at reduced scale (never below `min_side`).
    `name` (a file name or path) marks camera RAW files by their extension (see raw.py).
    Raises BadImage with a short reason for anything that is not a usable image.
    """
    if not data:
        raise BadImage("empty file")
    if is_raw(name):
        return _decode_raw(data, min_side, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        _check_pixels(img.size)
        meta = _metadata(img)
        if min_side and img.format == "JPEG":
            img.draft("RGB", (min_side, min_side))
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img), meta
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"too many pixels ({e})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise BadImage(f"cannot decode: {e}") from None


def load(path: str, min_side: int | None = None) -> tuple[Image.Image, ImageMeta]:
    try:
        data = read_file(path)
    except OSError as e:
        raise BadImage(e.strerror or str(e)) from None
    return decode(data, min_side, path)


def _decode_raw(data: bytes, min_side: int | None, name: str) -> tuple[Image.Image, ImageMeta]:
    shot = develop(data, min_side, MAX_PIXELS)
    taken = _exif_date(_date_tag(shot.tags)) or (shot.taken_at.isoformat() if shot.taken_at else None)
    width, height = shot.size
    fmt = os.path.splitext(name)[1].lstrip(".").upper()
    return shot.image, ImageMeta(width, height, fmt, taken, _clean_text(shot.tags.get(_MODEL)))


def _check_pixels(size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise BadImage(f"too many pixels: {w}x{h} exceeds the {MAX_PIXELS // 1_000_000} MP cap")


def _metadata(img: Image.Image) -> ImageMeta:
    exif = img.getexif()
    w, h = img.size
    if exif.get(_ORIENTATION) in (5, 6, 7, 8):
        w, h = h, w
    camera = exif.get(_MODEL)
    return ImageMeta(
        width=w,
        height=h,
        format=img.format or "",
        taken_at=_exif_date(_date_tag(exif)),
        camera=_clean_text(camera),
    )


def _date_tag(exif: Image.Exif) -> object:
    return exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)


def _exif_date(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _clean_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ") or None


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for every mode: transparency composited on white, 16-bit scaled down, CMYK converted."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
