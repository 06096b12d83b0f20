"""Parallel read → hash → decode → preprocess (→ encode, on CPU), streamed in bounded batches.

Worker processes (a torch DataLoader) each take a whole batch. Where the encoder runs on a GPU,
they decode while the main process encodes. On CPU each worker also encodes its own batch with
one thread: decoding and encoding then share the cores by construction, no core idles while one
stage waits for the other, and no intra-op thread team competes with the decoders for cores (an
OpenMP team stalls whenever one of its threads is preempted; on 2 busy cores, 2 threads encoded
slower than 1). The model's weights are shared with the forked workers, not copied.

The DataLoader's prefetch bounds how many batches are in memory at once, whatever the collection size.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .decode import ImageMeta, content_hash, decode
from .discover import FileEntry, read_entry
from .errors import BadImage


@dataclass(frozen=True)
class Decoded:
    """One file after the decode stage: metadata and hash, or the reason it failed."""

    entry: FileEntry
    hash: str | None = None
    meta: ImageMeta | None = None
    error: str | None = None
    transient: bool = False  # an I/O problem worth retrying next run, not a property of the content


Encode = Callable[[torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class Batch:
    items: list[Decoded]
    pixels: torch.Tensor | None  # preprocessed images of the items without error, in order
    vectors: np.ndarray | None = None  # their unit vectors, when the pipeline encoded them (then no pixels)

    @property
    def good(self) -> list[Decoded]:
        return [d for d in self.items if d.error is None]

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pinning thread, so that copies to the GPU can be asynchronous."""
        return replace(self, pixels=self.pixels.pin_memory()) if self.pixels is not None else self


class _Files(Dataset):
    def __init__(self, entries: Sequence[FileEntry], preprocess: Callable[[Image.Image], torch.Tensor],
                 min_side: int | None):
        self.entries = entries
        self.preprocess = preprocess
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[Decoded, torch.Tensor | None]:
        return load_entry(self.entries[i], self.preprocess, self.min_side)


def load_entry(entry: FileEntry, preprocess: Callable[[Image.Image], torch.Tensor],
               min_side: int | None) -> tuple[Decoded, torch.Tensor | None]:
    """Read, hash, decode and preprocess one file; the reason instead when it cannot be used."""
    try:
        entry, data = read_entry(entry)
        image, meta = decode(data, min_side, entry.path)
        return Decoded(entry, content_hash(data), meta), preprocess(image)
    except FileNotFoundError:
        return Decoded(entry, error="vanished while indexing", transient=True), None
    except OSError as e:
        return Decoded(entry, error=e.strerror or str(e), transient=True), None
    except BadImage as e:
        return Decoded(entry, error=str(e)), None


def _collate(items: list[tuple[Decoded, torch.Tensor | None]], encode: Encode | None = None) -> Batch:
    tensors = [t for _, t in items if t is not None]
    decoded = [d for d, _ in items]
    if not tensors:
        return Batch(decoded, None)
    pixels = torch.stack(tensors)
    return Batch(decoded, None, encode(pixels)) if encode else Batch(decoded, pixels)


def usable_cores() -> int:
    """The cores this process may run on (fewer than the machine's under a CPU affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    return max(1, min(usable_cores(), 16))


def workers_can_encode(device: torch.device) -> bool:
    """CPU models are encoded in the decode workers where those are forked and so share the weights."""
    return device.type == "cpu" and sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def decoded_batches(
    entries: Sequence[FileEntry],
    preprocess: Callable[[Image.Image], torch.Tensor],
    min_side: int | None,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    encode: Encode | None = None,
) -> Iterator[Batch]:
    """Batches in input order; small jobs decode in-process, where starting workers costs more.

    With `encode` (a CPU model; see `workers_can_encode`), each batch is encoded where it was
    decoded and arrives with vectors instead of pixels.
    """
    workers = workers if len(entries) > batch_size else 0
    loader = DataLoader(
        _Files(entries, preprocess, min_side),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=partial(_collate, encode=encode),
        prefetch_factor=2 if workers else None,
        pin_memory=pin_memory,
        multiprocessing_context="fork" if workers and encode else None,
    )
    yield from loader
