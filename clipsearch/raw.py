"""Camera RAW files through LibRaw (rawpy): the embedded preview, else a half-size demosaic.

Most cameras embed a full-size or large JPEG preview, rendered by the camera as the photographer
saw it; decoding it is far faster than demosaicing. It is used when both its sides reach the
model's input size; otherwise (no preview, or a thumbnail-sized one) the sensor data is
demosaiced at half size with the camera's white balance. Either way the picture is turned as
LibRaw's `flip` says, the orientation the camera recorded.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime

import rawpy
from PIL import Image

from .errors import BadImage

RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw", ".dng"})

_TURNS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
"""LibRaw's `sizes.flip` (0, 3: 180°, 5: 90° counter-clockwise, 6: 90° clockwise) as a Pillow transpose."""

_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
_TIFF_LIKE = {b"IIRO": b"II*\x00", b"IIRS": b"II*\x00", b"MMOR": b"MM\x00*", b"IIU\x00": b"II*\x00"}
"""Olympus ORF and Panasonic RW2 are TIFF files with their own magic number."""


@dataclass(frozen=True)
class Developed:
    """A RAW file as a picture: RGB with the orientation applied, and what it says about the shot."""

    image: Image.Image
    size: tuple[int, int]  # (width, height) of the full developed image, oriented
    tags: Image.Exif  # the file's own TIFF/EXIF tags, else its preview's; Orientation is already applied
    taken_at: datetime | None  # LibRaw's reading of the date taken (local time)
    source: str  # "preview" or "demosaic"


def is_raw(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in RAW_EXTENSIONS


def develop(data: bytes, min_side: int | None, max_pixels: int) -> Developed:
    """Decode a RAW file's bytes. With `min_side`, a preview with a shorter side is not used.

    Raises BadImage for a file LibRaw cannot read or one of more than `max_pixels` pixels.
    """
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            if sizes.width * sizes.height > max_pixels:
                raise BadImage(f"too many pixels: {sizes.width}x{sizes.height} exceeds the "
                               f"{max_pixels // 1_000_000} MP cap")
            size = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
            taken = raw.other.timestamp if raw.other.timestamp and raw.other.timestamp.year > 1970 else None
            preview = _preview(raw, min_side)
            if preview is not None:
                image = preview.transpose(_TURNS[sizes.flip]) if sizes.flip in _TURNS else preview
                return Developed(image, size, _tags(data, preview), taken, "preview")
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except rawpy.LibRawError as e:
        raise BadImage(f"cannot decode RAW: {_reason(e)}") from None
    return Developed(Image.fromarray(pixels), size, _tags(data, None), taken, "demosaic")


def _preview(raw: rawpy.RawPy, min_side: int | None) -> Image.Image | None:
    """The embedded preview as RGB (draft-decoded down towards `min_side`), or None if absent or too small."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(thumb.data))
        else:
            image = Image.fromarray(thumb.data)
        if min_side and min(image.size) < min_side:
            return None
        if min_side and image.format == "JPEG":
            image.draft("RGB", (min_side, min_side))
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError):
        return None  # a damaged preview: the sensor data may still be fine
    return image.convert("RGB")


def _tags(data: bytes, preview: Image.Image | None) -> Image.Exif:
    """The file's IFD0 (with its EXIF IFD) where the file is TIFF-based, else the preview's EXIF."""
    tags = Image.Exif()
    head = data[:4]
    try:
        if head in _TIFF_HEADERS:
            tags.load(data)
        elif head in _TIFF_LIKE:
            tags.load(_TIFF_LIKE[head] + data[4:])
        elif preview is not None:
            tags = preview.getexif()
    except (OSError, ValueError, SyntaxError, EOFError, KeyError):
        tags = Image.Exif()
    return tags


def _reason(error: rawpy.LibRawError) -> str:
    text = str(error.args[0]) if error.args else type(error).__name__
    return text.removeprefix("b'").removesuffix("'") or type(error).__name__


def shot_of(path: str) -> str:
    """The shot a file belongs to: its path without the extension, shared by a RAW+JPEG pair."""
    return os.path.splitext(path)[0]


def is_pair(paths: list[str]) -> bool:
    """Whether files of one shot (see `shot_of`) are a RAW+JPEG pair: a RAW file and a rendered one."""
    raws = sum(1 for p in paths if is_raw(p))
    return 0 < raws < len(paths)
