"""Thumbnails: an image scaled to fit a square, EXIF orientation applied, cached on disk as JPEG.

The cache file is named by catalog row id, side and the source's mtime, so an edited photo
gets a fresh thumbnail and ids (never reused by the catalog) cannot collide.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image

from .decode import load
from .video import frame_at, is_video

THUMBS_DIR = "thumbs"


def thumbnail(source: str, image_id: int, side: int, cache: Path, at_s: float | None = None) -> Path:
    """The cached thumbnail of `source` (a video: its frame at `at_s` seconds, else its first), made on
    first request; raises OSError, BadImage."""
    mtime_ns = os.stat(source).st_mtime_ns
    moment = f"-{round(at_s * 1000)}ms" if at_s is not None and is_video(source) else ""
    target = cache / f"{image_id}-{side}-{mtime_ns}{moment}.jpg"
    if target.exists():
        return target
    if is_video(source):
        picture = frame_at(source, at_s or 0.0, min_side=side)
    else:
        picture, _ = load(source, min_side=side)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"{image_id}-{side}-*.jpg"):
        if not stale.name.startswith(f"{image_id}-{side}-{mtime_ns}"):
            stale.unlink(missing_ok=True)
    # Written under a unique name, then renamed: concurrent requests never see half a file.
    with tempfile.NamedTemporaryFile(dir=cache, suffix=".tmp", delete=False) as f:
        picture.save(f, "JPEG", quality=85, optimize=True)
    os.replace(f.name, target)
    return target
