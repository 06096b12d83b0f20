"""Finding image files under the roots a user names."""
from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from .errors import BadPath
from .raw import RAW_EXTENSIONS
from .video import VIDEO_EXTENSIONS
from .results import Skip

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".avif"})


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """The extensions we index: Pillow's, HEIC/HEIF (pillow-heif), AVIF (Pillow), camera RAW (rawpy) and
    video (PyAV)."""
    return BASE_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS | VIDEO_EXTENSIONS


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime_ns: int


@dataclass
class Listing:
    roots: tuple[str, ...]
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _excluded(path: str, name: str, exclude: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in exclude)


def _root(path: str | os.PathLike[str]) -> str:
    root = os.path.abspath(os.fspath(path))
    if not os.path.lexists(root):
        raise BadPath(f"No such file or directory: {os.fspath(path)}")
    return root


def list_images(
    roots: Iterable[str | os.PathLike[str]],
    exclude: Iterable[str] = (),
    include_hidden: bool = False,
) -> Listing:
    """Walk the roots depth-first, following directory symlinks but never into a directory twice."""
    listing = Listing(roots=tuple(_root(r) for r in roots))
    walker = _Walker(listing, image_extensions(), tuple(exclude), include_hidden)
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
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in self.seen_dirs:
                continue
            self.seen_dirs.add((st.st_dev, st.st_ino))
            stack.extend(reversed(self._scan(directory)))

    def _scan(self, directory: str) -> list[str]:
        """Record the image files of one directory; return its subdirectories."""
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            self.listing.skipped.append(Skip(directory, e.strerror or str(e)))
            return []
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
            self.listing.files.append(FileEntry(path, st.st_size, st.st_mtime_ns))


def read_entry(entry: FileEntry) -> tuple[FileEntry, bytes]:
    """Read a file, describing it by what was actually read (it may have changed since listing)."""
    with open(entry.path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return FileEntry(entry.path, st.st_size, st.st_mtime_ns), data
