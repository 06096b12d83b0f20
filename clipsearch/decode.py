"""Reading image files: content hash, metadata, and a decoded RGB picture in sRGB.

JPEGs are decoded with `Image.draft` at the smallest DCT scale that still leaves both sides
at least the model's input size, which is several times faster than a full decode of a
12-megapixel photo and changes the embedding very little (see the fidelity tests).

Whatever a file holds, `decode` returns a picture or raises `BadImage` with a reason: every
exception Pillow or a plugin raises on one file becomes that file's reason, so one file never
stops a run. Memory is bounded by the pixel count the header declares (`MAX_PIXELS`, checked
before any pixel is allocated), never by the picture's shape (`MAX_ASPECT`, and `model_view`,
which crops before the model's preprocessing scales anything up).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import TracebackType
from typing import Iterator

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError
from PIL.ExifTags import Base, IFD

from .errors import BadImage
from .raw import develop, is_raw

MAX_PIXELS = 120_000_000
"""Images claiming more pixels than this are refused before any pixel is allocated."""
MAX_ASPECT = 50
"""Images whose long side is more than this many times their short side are refused: the model would
see a sliver of them (its center square), and a 1 x 100,000 strip is no photo."""
PNG_TEXT_CHUNK = 32 * 1024 * 1024
"""The largest PNG text (tEXt, zTXt, iTXt) or colour-profile (iCCP) chunk read, decompressed, in bytes.
Pillow's default (1 MB) refuses valid images with a large workflow comment; pixels keep their own cap."""

DATE_TAGS = (
    (Base.DateTimeOriginal, Base.OffsetTimeOriginal),
    (Base.DateTimeDigitized, Base.OffsetTimeDigitized),
    (Base.DateTime, Base.OffsetTime),
)
"""EXIF date tags in the order they are trusted, each with the tag of its UTC offset."""
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_OFFSET = re.compile(r"[+-](0\d|1[0-4]):[0-5]\d")
"""A UTC offset as EXIF writes it, within the offsets clocks use (-14:00 to +14:00); others are ignored."""
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

pillow_heif.register_heif_opener()  # HEIC/HEIF; AVIF is built into Pillow


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    format: str
    taken_at: str | None
    """Local wall-clock time the picture was taken (ISO 8601), with the UTC offset appended when the
    file records one (e.g. 2021-06-01T14:03:00+02:00); None without a usable EXIF date."""
    camera: str | None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def identify(path: str) -> None:
    """Check that `path` starts like an image Pillow can open, reading its header only (no pixels are
    decoded). Raises BadImage with a short reason otherwise (a text file, an unreadable file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(path).close()
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except OSError as e:
        raise BadImage(e.strerror or str(e)) from None
    except Exception as e:  # noqa: BLE001 - a plugin's header parser may raise anything on a foreign file
        raise BadImage(_reason(e)) from None


def decode(data: bytes, min_side: int | None = None, name: str = "") -> tuple[Image.Image, ImageMeta]:
    """Decode the first frame as RGB in sRGB with EXIF orientation applied.

    With `min_side`, JPEGs are draft-decoded at reduced scale (never below `min_side`).
    `name` (a file name or path) marks camera RAW files by their extension (see raw.py).
    Raises BadImage with a short reason for anything that is not a usable image, whatever the
    decoder raised.
    """
    if not data:
        raise BadImage("empty file")
    try:
        if is_raw(name):
            return _decode_raw(data, min_side, name)
        with _png_metadata_limits():
            return _decode(data, min_side)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"too many pixels ({e})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except MemoryError:
        raise BadImage("out of memory while decoding") from None
    except Exception as e:  # noqa: BLE001 - any failure of a decoder is a property of this one file
        raise BadImage(_reason(e)) from None


def plain_jpeg(data: bytes) -> tuple[ImageMeta, int] | None:
    """The metadata and EXIF orientation (1 to 8) of a JPEG that any JPEG decoder turns into the picture `decode`
    returns, once turned upright: baseline (not progressive), YCbCr or grey (not CMYK), without a colour profile, whole
    (its last bytes are the end-of-image marker) and of an accepted shape. None for every other file, and for any
    whose header cannot be read: `decode` them, which gives the reason. Reads the header only."""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            _check_shape(img.size)
            if (img.format != "JPEG" or img.mode not in ("RGB", "L") or "progressive" in img.info
                    or "icc_profile" in img.info):
                return None
            exif = _exif(img)
            orientation = _tag(exif, Base.Orientation)
            return _metadata(img, img.size, exif), orientation if orientation in _ORIENTATION_TRANSPOSE else 1
    except Exception:  # noqa: BLE001 - a header Pillow cannot read: `decode` says why
        return None


def load(path: str, min_side: int | None = None) -> tuple[Image.Image, ImageMeta]:
    try:
        data = read_file(path)
    except OSError as e:
        raise BadImage(e.strerror or str(e)) from None
    return decode(data, min_side, path)


def _decode_raw(data: bytes, min_side: int | None, name: str) -> tuple[Image.Image, ImageMeta]:
    """A RAW file's preview or demosaic (already oriented by raw.py), converted to sRGB from the preview's
    colour profile when it carries one."""
    shot = develop(data, min_side, MAX_PIXELS)
    _check_shape(shot.size)
    taken = _taken_at(shot.tags) or (shot.taken_at.isoformat() if shot.taken_at else None)
    width, height = shot.size
    fmt = os.path.splitext(name)[1].lstrip(".").upper()
    camera = _clean_text(_tag(shot.tags, Base.Model))
    return to_srgb(shot.image), ImageMeta(width, height, fmt, taken, camera)


def model_view(image: Image.Image, side: int) -> Image.Image:
    """The part of `image` a CLIP model sees, before its preprocessing resizes it to `side` pixels.

    CLIP preprocessing scales the short side to `side`, then crops the center square. When that would
    scale up, the center square is cropped here first, in source pixels, so that the upscaled picture is
    side x side whatever the aspect ratio (a 1 x 100,000 strip would otherwise become 224 x 22,400,000).
    Pictures whose short side is at least `side` are returned as they are, and embed exactly as before.
    """
    w, h = image.size
    short = min(w, h)
    if short >= side or w == h:
        return image
    left, top = (w - short) // 2, (h - short) // 2
    return image.crop((left, top, left + short, top + short))


def _decode(data: bytes, min_side: int | None) -> tuple[Image.Image, ImageMeta]:
    with warnings.catch_warnings():  # damaged metadata is reported by its absence, not on stderr
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        img = Image.open(io.BytesIO(data))
        size = img.size
        _check_shape(size)
        if min_side and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (min_side, min_side))
        img.load()  # first: reading EXIF loads some formats (PNG), and a failure must not be swallowed there
        exif = _exif(img)
        return to_srgb(_orient(img, exif)), _metadata(img, size, exif)


def _check_shape(size: tuple[int, int]) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise BadImage(f"no pixels: {w}x{h}")
    if w * h > MAX_PIXELS:
        raise BadImage(f"too many pixels: {w}x{h} exceeds the {MAX_PIXELS // 1_000_000} MP cap")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise BadImage(f"aspect ratio too extreme: {w}x{h} is longer than {MAX_ASPECT}:1")


def _exif(img: Image.Image) -> Image.Exif:
    """The EXIF block, or an empty one when it cannot be read: metadata never costs a file its pixels."""
    try:
        return img.getexif()
    except Exception:  # noqa: BLE001 - a damaged EXIF block is only missing metadata
        return Image.Exif()


def _orient(img: Image.Image, exif: Image.Exif) -> Image.Image:
    """Apply the EXIF orientation; by the tag alone when Pillow cannot (it also rewrites the EXIF
    block, which fails on tags of unexpected types, e.g. a GPSLatitudeRef stored as SHORT)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - fall back to the orientation tag, keep the pixels
        method = _ORIENTATION_TRANSPOSE.get(_tag(exif, Base.Orientation))
        return img.transpose(method) if method is not None else img


def _tag(exif: Image.Exif, tag: int, ifd: int | None = None) -> object:
    """One tag's value, or None when it is absent or its IFD cannot be read."""
    try:
        value = (exif.get_ifd(ifd) if ifd is not None else exif).get(tag)
    except Exception:  # noqa: BLE001 - a damaged IFD is only missing metadata
        return None
    return value if isinstance(value, (int, str, bytes)) else None


def _metadata(img: Image.Image, size: tuple[int, int], exif: Image.Exif) -> ImageMeta:
    """`size`: the full size, before any draft decoding."""
    w, h = size
    if _tag(exif, Base.Orientation) in (5, 6, 7, 8):
        w, h = h, w
    return ImageMeta(width=w, height=h, format=img.format or "", taken_at=_taken_at(exif),
                     camera=_clean_text(_tag(exif, Base.Model)))


def _taken_at(exif: Image.Exif) -> str | None:
    """The first usable date of DATE_TAGS (blank, zero and unparseable ones are passed over)."""
    for date_tag, offset_tag in DATE_TAGS:
        ifd = None if date_tag == Base.DateTime else IFD.Exif
        when = _exif_date(_tag(exif, date_tag, ifd))
        if when is not None:
            offset = _clean_text(_tag(exif, offset_tag, IFD.Exif))
            return when + offset if offset and _OFFSET.fullmatch(offset) else when
    return None


def _exif_date(value: object) -> str | None:
    text = _clean_text(value)
    if text is None:
        return None
    for form in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text[:19], form).isoformat()
        except ValueError:
            continue
    return None


def _clean_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ") or None


def to_srgb(img: Image.Image) -> Image.Image:
    """RGB in sRGB: pixels with an embedded ICC colour profile (Display P3, Adobe RGB, ProPhoto, CMYK
    press profiles...) are converted from it; a profile that cannot be read is ignored."""
    profile = img.info.get("icc_profile")
    if profile and img.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            img = ImageCms.applyTransform(img, _to_srgb_transform(profile, img.mode))
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # an unusable profile: the pixels as they are
    return to_rgb(img)


@lru_cache(maxsize=32)
def _to_srgb_transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """A transform from `profile` to sRGB; also for sRGB profiles, whose name is not read: LittleCMS can
    allocate hundreds of MB reading a damaged description tag (found by scripts/fuzz_decode.py)."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.buildTransform(source, _SRGB, mode, "RGBA" if mode == "RGBA" else "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for every mode: transparency composited on white, 16-bit scaled down, CMYK converted."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _reason(error: Exception) -> str:
    """A skipped file's reason; a refused PNG metadata chunk is named."""
    chunk = _png_chunk(error.__traceback__)
    if chunk:
        return f"cannot decode: PNG {chunk} chunk: {error}"
    if isinstance(error, (OSError, ValueError, SyntaxError, EOFError)):
        return f"cannot decode: {error}"
    return f"cannot decode: {type(error).__name__}: {error}"


def _png_chunk(tb: TracebackType | None) -> str | None:
    """The PNG chunk whose handler raised, from the handler's name in Pillow's PngStream (chunk_zTXt...)."""
    chunk = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        if name.startswith("chunk_") and tb.tb_frame.f_globals.get("__name__") == PngImagePlugin.__name__:
            chunk = name.removeprefix("chunk_")
        tb = tb.tb_next
    return chunk


_limits_lock = threading.Lock()
_limits_users = 0
_limits_saved: tuple[int, int] = (0, 0)


@contextmanager
def _png_metadata_limits() -> Iterator[None]:
    """Pillow's PNG text and profile limits raised to PNG_TEXT_CHUNK while clipsearch decodes (they are
    module globals: restored when the last concurrent decode ends)."""
    global _limits_users, _limits_saved
    with _limits_lock:
        if _limits_users == 0:
            _limits_saved = (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY)
            PngImagePlugin.MAX_TEXT_CHUNK = max(PNG_TEXT_CHUNK, _limits_saved[0])
            PngImagePlugin.MAX_TEXT_MEMORY = max(2 * PNG_TEXT_CHUNK, _limits_saved[1])
        _limits_users += 1
    try:
        yield
    finally:
        with _limits_lock:
            _limits_users -= 1
            if _limits_users == 0:
                PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = _limits_saved
