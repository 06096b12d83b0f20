"""Finding image files under the roots a user names."""
from __future__ import annotations

import fnmatch
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from .catalog import CATALOG_FILE
from .errors import BadPath
from .paths import readable
from .quarantine import is_manifest
from .results import Skip

ALIASES = {".jif": "JPEG", ".jfi": "JPEG"}
"""Common extensions of formats Pillow decodes that its registry does not list."""
NOT_PICTURES = frozenset({"EPS", "MPEG"})
"""Formats Pillow recognises but does not decode as pictures here: PostScript documents (.eps, .ps: only
with Ghostscript, and documents rather than photos) and MPEG video (Pillow reads its header only)."""


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """The extensions indexed: those of every format the installed Pillow and its plugins (pillow-heif)
    can open and decode, read from Pillow's registry (.jpg, .jpeg, .jpe, .jfif, .png, .webp, .avif,
    .heic...) and ALIASES, plus camera RAW (rawpy, RAW_EXTENSIONS) and video (PyAV, VIDEO_EXTENSIONS).
    Stub formats, which Pillow identifies without a decoder (BUFR, GRIB, HDF5, WMF), and NOT_PICTURES are
    left out."""
    from PIL import Image, ImageFile

    from . import decode  # noqa: F401 - registers the optional plugins' formats
    from .raw import RAW_EXTENSIONS
    from .video import VIDEO_EXTENSIONS

    def decodable(fmt: str) -> bool:
        if fmt == "MPO":  # multi-picture JPEGs, opened by the JPEG opener
            return True
        opener = Image.OPEN.get(fmt, (None,))[0]
        stub = isinstance(opener, type) and issubclass(opener, ImageFile.StubImageFile)
        return opener is not None and not stub and fmt not in NOT_PICTURES

    registry = {**ALIASES, **Image.registered_extensions()}
    pictures = frozenset(ext for ext, fmt in registry.items() if decodable(fmt))
    return pictures | RAW_EXTENSIONS | VIDEO_EXTENSIONS


def looks_like_path(term: str) -> bool:
    """Whether a query term that names no file looks like it meant one: a folder, a name ending in an
    image extension, or one word holding a path separator (a mistyped `photos/IMG_0001.jpg`)."""
    if os.path.isfile(term):
        return False
    separator = any(sep in term for sep in {os.sep, "/", os.altsep} - {None}) and not any(c.isspace() for c in term)
    extension = os.path.splitext(term.strip())[1].lower()
    # Pillow's registry imports all its plugins (a fifth of a cold search): read for a term ending like a name only
    named = extension[1:].isalnum() and extension in image_extensions()
    return os.path.isdir(term) or separator or named


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def clamp_ns(ns: int) -> int:
    """A file time in nanoseconds, clamped into the catalog's 64-bit integers (years 1677 to 2262)."""
    return min(max(ns, INT64_MIN), INT64_MAX)


@dataclass(frozen=True)
class FileEntry:
    """A file as listed: size in bytes, times in ns since the epoch (clamped, see `clamp_ns`), and its
    identity on disk (device, inode), which with ctime tells a file replaced under the same name."""

    path: str
    size: int
    mtime_ns: int
    dev: int | None = None
    inode: int | None = None
    ctime_ns: int | None = None

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> "FileEntry":
        return cls(path, st.st_size, clamp_ns(st.st_mtime_ns), st.st_dev, st.st_ino, clamp_ns(st.st_ctime_ns))


@dataclass
class Listing:
    roots: tuple[str, ...]
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    passed_over: Counter[str] = field(default_factory=Counter)
    """Files found that are not images, by lower-case extension ("" for none); hidden and excluded
    files are not counted."""


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _excluded(path: str, name: str, exclude: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in exclude)


def _identity(directory: str | os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(directory)
    return st.st_dev, st.st_ino


def _root(path: str | os.PathLike[str]) -> str:
    root = os.path.abspath(os.fspath(path))
    if not os.path.lexists(root):
        raise BadPath(f"No such file or directory: {readable(os.fspath(path))}")
    return root


def list_images(
    roots: Iterable[str | os.PathLike[str]],
    exclude: Iterable[str] = (),
    include_hidden: bool = False,
    skip_dirs: Iterable[str | os.PathLike[str]] = (),
) -> Listing:
    """Walk the roots depth-first, following directory symlinks but never into a directory twice, nor into
    `skip_dirs` (the library's own folder) under any name, another library or a dedup quarantine (a folder
    holding a move manifest)."""
    listing = Listing(roots=tuple(_root(r) for r in roots))
    walker = _Walker(listing, image_extensions(), tuple(exclude), include_hidden)
    walker.seen_dirs |= {_identity(d) for d in skip_dirs if os.path.isdir(d)}
    for root in listing.roots:
        if os.path.isdir(root):
            walker.walk(root)
        else:
            walker.add_file(root, explicit=True)
    return listing


@dataclass
class _Walker:
    listing: Listing
    exts: frozenset[str]
    exclude: tuple[str, ...]
    include_hidden: bool
    seen_dirs: set[tuple[int, int]] = field(default_factory=set)

    def walk(self, root: str) -> None:
        stack = [root]
        while stack:
            directory = stack.pop()
            identity = _identity(directory)
            if identity in self.seen_dirs:
                continue
            self.seen_dirs.add(identity)
            stack.extend(reversed(self._scan(directory)))

    def _scan(self, directory: str) -> list[str]:
        """Record the image files of one directory; return its subdirectories."""
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            self.listing.skipped.append(Skip(directory, e.strerror or str(e)))
            return []
        if any(e.name == CATALOG_FILE for e in entries):
            return []  # another clipsearch library (its thumbnails, caches, text tower): never photos
        if any(is_manifest(e.name) for e in entries):
            return []  # a dedup quarantine: its copies were taken out of the collection on purpose
        subdirs = []
        for entry in entries:
            if (not self.include_hidden and _hidden(entry.name)) or _excluded(entry.path, entry.name, self.exclude):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in self.exts:
                self.add_file(entry.path)
            else:
                self.listing.passed_over[os.path.splitext(entry.name)[1].lower()] += 1
        return subdirs

    def add_file(self, path: str, explicit: bool = False) -> None:
        try:
            st = os.stat(path)
        except OSError as e:
            reason = "broken symlink" if os.path.islink(path) else (e.strerror or str(e))
            self.listing.skipped.append(Skip(path, reason))
            return
        if not stat.S_ISREG(st.st_mode):
            self.listing.skipped.append(Skip(path, "not a regular file"))
        elif explicit and os.path.splitext(path)[1].lower() not in self.exts:
            self.listing.skipped.append(Skip(path, "not an image extension"))
        else:
            self.listing.files.append(FileEntry.of(path, st))


def read_entry(entry: FileEntry) -> tuple[FileEntry, bytes]:
    """Read a file, describing it by what was actually read (it may have changed since listing)."""
    with open(entry.path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return FileEntry.of(entry.path, st), data
