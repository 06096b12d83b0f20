"""Thumbnails: an image scaled to fit a square, EXIF orientation applied, cached on disk as JPEG.

The cache file is named by catalog row id, side and the source's mtime, so an edited photo
gets a fresh thumbnail and ids (never reused by the catalog) cannot collide. However many
requests ask for one thumbnail at once, it is made once; the originals decoded at the same
time are bounded by a semaphore the caller shares with its other decoding.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .decode import load
from .errors import BadImage, BadQuery
from .raw import is_raw
from .video import frame_at, is_video

THUMBS_DIR = "thumbs"
STALE_AFTER_S = 60.0
"""A superseded thumbnail or abandoned temp file is removed only once this old: a younger one may
still be being sent or written, by this process or another serving the same library."""


class Thumbnails:
    """A library's thumbnail cache, safe to call from many threads at once."""

    def __init__(self, cache: Path, decode_slots: threading.Semaphore) -> None:
        self.cache = cache
        self._decode_slots = decode_slots
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def get(self, source: str, image_id: int, side: int, at_s: float | None = None) -> Path:
        """The cached thumbnail of `source` (at most `side` px a side; a video: its frame at `at_s`
        seconds, else its first), made on first request; raises OSError if the source cannot be read,
        BadQuery for a moment past a video's end, BadImage for any failure to decode it."""
        moment = at_s if at_s is not None and is_video(source) else None
        key = f"{image_id}-{side}-" if moment is None else f"{image_id}-{side}@{round(moment * 1000)}ms-"
        target = self.cache / f"{key}{os.stat(source).st_mtime_ns}.jpg"
        with self._locked(key):
            if not target.exists():
                with self._decode_slots:
                    picture = thumbnail(source, side, moment)
                self.cache.mkdir(parents=True, exist_ok=True)
                # Written under a unique name, then renamed: concurrent requests never see half a file.
                with tempfile.NamedTemporaryFile(dir=self.cache, prefix=key, suffix=".tmp", delete=False) as f:
                    picture.save(f, "JPEG", quality=85, optimize=True)
                os.replace(f.name, target)
                _remove_stale(self.cache, key, keep=target)
        return target

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the lock of one thumbnail; a key's lock lives while some request holds or awaits it."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users = self._locks[key][1] - 1
                if users:
                    self._locks[key] = (lock, users)
                else:
                    del self._locks[key]


def thumbnail(source: str, side: int, at_s: float | None = None) -> Image.Image:
    """`source` decoded and scaled to fit `side` x `side`; a JPEG is draft-decoded at the smallest
    DCT scale whose long side still covers `side`; a video gives its frame at `at_s` seconds (else its
    first). Raises BadQuery for a moment past a video's end, BadImage for any other failure."""
    try:
        if is_video(source):
            picture = frame_at(source, at_s or 0.0, min_side=side)
        elif is_raw(source):  # Pillow cannot read a RAW file's header; decode picks its preview by size
            picture, _ = load(source, min_side=side)
        else:
            picture, _ = load(source, min_side=_draft_side(source, side))
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
        return picture
    except (BadImage, BadQuery):  # BadQuery: a moment past a video's end
        raise
    except Exception as e:  # noqa: BLE001 - whatever a file makes Pillow raise, it is that file's fault
        raise BadImage(_plain_reason(e)) from None


def _plain_reason(error: Exception) -> str:
    """Why a thumbnail cannot be made, in words rather than Python's class names."""
    if isinstance(error, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileNotFoundError):
        return "no longer on disk"
    if isinstance(error, UnidentifiedImageError):
        return "not an image clipsearch can read"
    if isinstance(error, OSError) and error.strerror:
        return f"cannot read: {error.strerror.lower()}"
    return f"cannot make a thumbnail: {error}" if str(error) else "cannot make a thumbnail"


def _draft_side(source: str, side: int) -> int:
    """The short side to draft-decode to so that the long side still covers `side`."""
    with warnings.catch_warnings():  # the pixel cap is decode's; this only reads the header
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(source) as header:
            width, height = header.size
    return max(1, -(-side * min(width, height) // max(width, height)))


def _remove_stale(cache: Path, key: str, keep: Path) -> None:
    cutoff = time.time() - STALE_AFTER_S
    for other in cache.glob(f"{key}*"):
        try:
            if other != keep and other.stat().st_mtime < cutoff:
                other.unlink()
        except FileNotFoundError:  # removed meanwhile by another process
            pass
