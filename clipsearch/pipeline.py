"""Parallel read → hash → decode → preprocess, streamed in bounded batches to the encoder.

Worker processes (a torch DataLoader) decode while the main process encodes; the
DataLoader's prefetch bounds how many batches are in memory at once, whatever the
collection size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .decode import ImageMeta, content_hash, decode
from .discover import FileEntry
from .errors import BadImage


@dataclass(frozen=True)
class Decoded:
    """One file after the decode stage: metadata and hash, or the reason it failed."""

    entry: FileEntry
    hash: str | None = None
    meta: ImageMeta | None = None
    error: str | None = None


@dataclass(frozen=True)
class Batch:
    items: list[Decoded]
    pixels: torch.Tensor | None  # preprocessed images of the items without error, in order

    @property
    def good(self) -> list[Decoded]:
        return [d for d in self.items if d.error is None]


def read_entry(entry: FileEntry) -> tuple[FileEntry, bytes]:
    """Read a file, describing it by what was actually read (it may have changed since listing)."""
    with open(entry.path, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    return FileEntry(entry.path, st.st_size, st.st_mtime_ns), data


class _Files(Dataset):
    def __init__(self, entries: Sequence[FileEntry], preprocess: Callable[[Image.Image], torch.Tensor],
                 min_side: int | None):
        self.entries = entries
        self.preprocess = preprocess
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[Decoded, torch.Tensor | None]:
        entry = self.entries[i]
        try:
            entry, data = read_entry(entry)
            image, meta = decode(data, self.min_side)
            return Decoded(entry, content_hash(data), meta), self.preprocess(image)
        except FileNotFoundError:
            return Decoded(entry, error="vanished while indexing"), None
        except OSError as e:
            return Decoded(entry, error=e.strerror or str(e)), None
        except BadImage as e:
            return Decoded(entry, error=str(e)), None


def _collate(items: list[tuple[Decoded, torch.Tensor | None]]) -> Batch:
    tensors = [t for _, t in items if t is not None]
    return Batch([d for d, _ in items], torch.stack(tensors) if tensors else None)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


def decoded_batches(
    entries: Sequence[FileEntry],
    preprocess: Callable[[Image.Image], torch.Tensor],
    min_side: int | None,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches in input order; small jobs decode in-process, where starting workers costs more."""
    workers = workers if len(entries) > batch_size else 0
    loader = DataLoader(
        _Files(entries, preprocess, min_side),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=2 if workers else None,
        pin_memory=pin_memory,
    )
    yield from loader
