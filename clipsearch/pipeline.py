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
from .video import Sampling, file_hash, is_video, sample


@dataclass(frozen=True)
class Decoded:
    """One file after the decode stage: metadata and hash, or the reason it failed."""

    entry: FileEntry
    hash: str | None = None
    meta: ImageMeta | None = None
    error: str | None = None
    transient: bool = False  # an I/O problem worth retrying next run, not a property of the content
    frames_ms: tuple[int, ...] = ()  # a video's sampled frames (times in ms), one preprocessed row each

    @property
    def rows(self) -> int:
        """Rows of pixels (and vectors) this file has in its batch."""
        return 0 if self.error else len(self.frames_ms) or 1


Encode = Callable[[torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class Batch:
    items: list[Decoded]
    pixels: torch.Tensor | None  # preprocessed images of the items without error, in order (`Decoded.rows` each)
    vectors: np.ndarray | None = None  # their unit vectors, when the pipeline encoded them (then no pixels)

    @property
    def good(self) -> list[Decoded]:
        return [d for d in self.items if d.error is None]

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pinning thread, so that copies to the GPU can be asynchronous."""
        return replace(self, pixels=self.pixels.pin_memory()) if self.pixels is not None else self


class _Files(Dataset):
    def __init__(self, entries: Sequence[FileEntry], preprocess: Callable[[Image.Image], torch.Tensor],
                 min_side: int | None, sampling: Sampling):
        self.entries = entries
        self.preprocess = preprocess
        self.min_side = min_side
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[Decoded, torch.Tensor | None]:
        return load_entry(self.entries[i], self.preprocess, self.min_side, self.sampling)


def load_entry(entry: FileEntry, preprocess: Callable[[Image.Image], torch.Tensor],
               min_side: int | None, sampling: Sampling = Sampling()) -> tuple[Decoded, torch.Tensor | None]:
    """Read, hash, decode and preprocess one file (a video: its sampled frames, stacked); the reason
    instead when it cannot be used."""
    try:
        if is_video(entry.path):
            return _load_video(entry, preprocess, min_side, sampling)
        entry, data = read_entry(entry)
        image, meta = decode(data, min_side, entry.path)
        return Decoded(entry, content_hash(data), meta), preprocess(image)
    except FileNotFoundError:
        return Decoded(entry, error="vanished while indexing", transient=True), None
    except OSError as e:
        return Decoded(entry, error=e.strerror or str(e), transient=True), None
    except BadImage as e:
        return Decoded(entry, error=str(e)), None


def _load_video(entry: FileEntry, preprocess: Callable[[Image.Image], torch.Tensor],
                min_side: int | None, sampling: Sampling) -> tuple[Decoded, torch.Tensor]:
    """A video is hashed in chunks and opened by path: never read whole into memory."""
    st = os.stat(entry.path)
    entry = FileEntry(entry.path, st.st_size, st.st_mtime_ns)
    digest = file_hash(entry.path)
    clip = sample(entry.path, sampling, min_side)
    fmt = os.path.splitext(entry.path)[1].lstrip(".").upper()
    meta = ImageMeta(clip.width, clip.height, fmt, clip.taken_at, clip.camera)
    frames = torch.stack([preprocess(f.image) for f in clip.frames])
    return Decoded(entry, digest, meta, frames_ms=tuple(f.ms for f in clip.frames)), frames


def _collate(items: list[tuple[Decoded, torch.Tensor | None]], encode: Encode | None = None) -> Batch:
    tensors = [t if d.frames_ms else t[None] for d, t in items if t is not None]
    decoded = [d for d, _ in items]
    if not tensors:
        return Batch(decoded, None)
    pixels = torch.cat(tensors)
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
    sampling: Sampling = Sampling(),
) -> Iterator[Batch]:
    """Batches in input order; small jobs decode in-process, where starting workers costs more.

    With `encode` (a CPU model; see `workers_can_encode`), each batch is encoded where it was
    decoded and arrives with vectors instead of pixels.
    """
    workers = workers if len(entries) > batch_size else 0
    loader = DataLoader(
        _Files(entries, preprocess, min_side, sampling),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=partial(_collate, encode=encode),
        prefetch_factor=2 if workers else None,
        pin_memory=pin_memory,
        multiprocessing_context="fork" if workers and encode else None,
    )
    yield from loader
