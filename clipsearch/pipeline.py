"""Parallel read → hash → decode → preprocess (→ encode, on CPU), streamed in bounded batches.

Worker processes (a torch DataLoader) each take a whole batch. Where the encoder runs on a GPU,
they decode while the main process encodes: then workers hand over small batches of uint8 pixels
(resized and cropped, normalised later on the device: a quarter of float32's bytes through shared
memory), joined into the encoder's batches in the main process, and there is one worker per core
(no cap: a GPU encodes faster than 16 cores decode), as many as half of /dev/shm holds (see
`workers_for_shm`). On CPU each worker also encodes its own batch with
one thread: decoding and encoding then share the cores by construction, no core idles while one
stage waits for the other, and no intra-op thread team competes with the decoders for cores (an
OpenMP team stalls whenever one of its threads is preempted; on 2 busy cores, 2 threads encoded
slower than 1). The model's weights are shared with the forked workers, not copied.

With `OnDevice` (`index --gpu-decode`), workers hand plain JPEGs over whole instead (their bytes, through shared
memory), and the main process decodes those of each worker batch on the device (devicejpeg.py); a JPEG the device
rejects is decoded there on the CPU, as workers decode every other file.

The DataLoader's prefetch bounds how many batches are in memory at once, whatever the collection size.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .decode import ImageMeta, content_hash, decode, plain_jpeg
from .devicejpeg import Jpeg, decode_jpegs, thumbnail
from .discover import FileEntry, read_entry
from .batching import guided
from .errors import BadImage
from .headstart import DecodedPhoto, decode_photo
from .perceptual import fingerprint
from .video import Sampling, file_hash, is_video, sample


@dataclass(frozen=True)
class Decoded:
    """One file after the decode stage: metadata and hash, or the reason it failed."""

    entry: FileEntry
    hash: str | None = None
    meta: ImageMeta | None = None
    phash: bytes | None = None
    error: str | None = None
    transient: bool = False  # an I/O problem worth retrying next run, not a property of the content
    frames_ms: tuple[int, ...] = ()  # a video's sampled frames (times in ms), one preprocessed row each
    duration_s: float | None = None  # a video's length, where its container says
    jpeg: Jpeg | None = None  # a JPEG left for the main process to decode on a device: no pixels nor pHash yet

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


class _Batches(Dataset):
    """Batch k of a run's files (`batches[k]`: indices into `entries`), loaded (see `load_entry`), numbered k."""

    def __init__(self, entries: Sequence[FileEntry], batches: Sequence[Sequence[int]],
                 preprocess: Callable[[Image.Image], torch.Tensor], min_side: int | None, sampling: Sampling,
                 keep_jpegs: bool, ahead: Mapping[str, DecodedPhoto]):
        self.entries = entries
        self.batches = batches
        self.preprocess = preprocess
        self.min_side = min_side
        self.sampling = sampling
        self.keep_jpegs = keep_jpegs
        self.ahead = ahead

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[int, list[tuple[Decoded, torch.Tensor | None]]]:
        return k, [load_entry(entry, self.preprocess, self.min_side, self.sampling, self.keep_jpegs,
                              self.ahead.get(entry.path))
                   for entry in (self.entries[i] for i in self.batches[k])]


def load_entry(entry: FileEntry, preprocess: Callable[[Image.Image], torch.Tensor],
               min_side: int | None, sampling: Sampling = Sampling(),
               keep_jpegs: bool = False, ahead: DecodedPhoto | None = None) -> tuple[Decoded, torch.Tensor | None]:
    """Read, hash, decode, perceptually hash and preprocess one file (a video: its sampled frames, stacked,
    and their fingerprints, concatenated); the reason instead when it cannot be used. With `keep_jpegs`, a plain
    JPEG (`decode.plain_jpeg`) is only hashed and its header read: its bytes come back in `Decoded.jpeg`. With
    `ahead`, the photo as a head start decoded it (headstart.py): only preprocessed here.

    Never raises for a file's sake: whatever reading, decoding or preprocessing one file raises
    becomes its reason, so one file never stops a batch, a run or a Ray shard.
    """
    try:
        if is_video(entry.path):
            return _load_video(entry, preprocess, min_side, sampling)
        photo = ahead
        if photo is None:
            entry, data = read_entry(entry)
            plain = plain_jpeg(data) if keep_jpegs else None
            if plain is not None:
                meta, orientation = plain
                jpeg = Jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation)
                return Decoded(entry, content_hash(data), meta, jpeg=jpeg), None
            photo = decode_photo(entry, data, min_side)
        return Decoded(photo.entry, photo.hash, photo.meta, photo.phash), preprocess(photo.image)
    except Exception as e:  # noqa: BLE001 - the per-file boundary: any failure is this file's
        return _failed(entry, e), None


def _failed(entry: FileEntry, error: Exception) -> Decoded:
    """A file that cannot be used, with its reason; `transient` where a later run may succeed."""
    if isinstance(error, FileNotFoundError):
        return Decoded(entry, error="vanished while indexing", transient=True)
    if isinstance(error, OSError):
        return Decoded(entry, error=error.strerror or str(error), transient=True)
    if isinstance(error, BadImage):
        return Decoded(entry, error=str(error))
    if isinstance(error, (ImportError, MemoryError)):  # the environment's fault, not the file's: retried next run
        return Decoded(entry, error=f"cannot preprocess: {type(error).__name__}: {error}", transient=True)
    return Decoded(entry, error=f"cannot preprocess: {type(error).__name__}: {error}")


def _load_video(entry: FileEntry, preprocess: Callable[[Image.Image], torch.Tensor],
                min_side: int | None, sampling: Sampling) -> tuple[Decoded, torch.Tensor]:
    """A video is hashed in chunks and opened by path: never read whole into memory."""
    st = os.stat(entry.path)
    entry = FileEntry.of(entry.path, st)
    digest = file_hash(entry.path)
    clip = sample(entry.path, sampling, min_side)
    fmt = os.path.splitext(entry.path)[1].lstrip(".").upper()
    meta = ImageMeta(clip.width, clip.height, fmt, clip.taken_at, clip.camera)
    frames = torch.stack([preprocess(f.image) for f in clip.frames])
    prints = b"".join(fingerprint(f.image) for f in clip.frames)
    return Decoded(entry, digest, meta, prints, frames_ms=tuple(f.ms for f in clip.frames),
                   duration_s=clip.duration_s), frames


def _collate(numbered: tuple[int, list[tuple[Decoded, torch.Tensor | None]]],
             encode: Encode | None = None) -> tuple[int, Batch]:
    k, items = numbered
    tensors = [t if d.frames_ms else t[None] for d, t in items if t is not None]
    decoded = [d for d, _ in items]
    if not tensors:
        return k, Batch(decoded, None)
    pixels = torch.cat(tensors)
    return k, Batch(decoded, None, encode(pixels)) if encode else Batch(decoded, pixels)


def in_order(numbered: Iterable[tuple[int, Batch]]) -> Iterator[Batch]:
    """Batches numbered 0, 1, 2... as workers finished them, in their number's order: batches finished early
    wait here for those before them (vectors only, where the workers encode: a few kB each)."""
    waiting: dict[int, Batch] = {}
    due = 0
    for k, batch in numbered:
        waiting[k] = batch
        while due in waiting:
            yield waiting.pop(due)
            due += 1


WORKER_BATCH = 32
"""Images per worker batch when pixels travel to the main process (joined there into encoder batches)."""
PREFETCH = 2
"""Batches each worker may hold ready: what bounds memory, shared memory included."""
SHM_SHARE = 0.5
"""The share of /dev/shm (free at start) that worker batches in flight may use."""


def shm_bytes_per_worker(image_size: int, worker_batch: int = WORKER_BATCH, file_bytes: float = 0) -> int:
    """Shared memory one worker's batches in flight take: uint8 RGB pixels, `PREFETCH` batches; with
    `file_bytes` (the mean size of the files handed over whole: JPEGs decoded on a device), the larger of the two
    per file."""
    return int(PREFETCH * worker_batch * max(3 * image_size * image_size, file_bytes))


def jpeg_bytes(entries: Sequence[FileEntry]) -> float:
    """The mean size of the files among `entries` whose extension Pillow gives to JPEG (0 without any): what one
    file handed over whole to be decoded on a device takes in shared memory."""
    extensions = Image.registered_extensions()
    sizes = [e.size for e in entries if extensions.get(os.path.splitext(e.path)[1].lower()) == "JPEG"]
    return sum(sizes) / len(sizes) if sizes else 0.0


def workers_for_shm(workers: int, per_worker: int, shm_free: int | None) -> int:
    """As many of `workers` as `SHM_SHARE` of the free shared memory holds (at least one); all where
    the size is unknown. Docker gives containers 64 MB unless run with e.g. `--shm-size=1g`."""
    if shm_free is None:
        return workers
    return max(1, min(workers, int(shm_free * SHM_SHARE) // per_worker))


def shm_free(path: str = "/dev/shm") -> int | None:
    """Free bytes in the shared-memory file system worker batches travel through, None where there is none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def workers_can_encode(device: torch.device) -> bool:
    """CPU models are encoded in the decode workers where those are forked and so share the weights."""
    return device.type == "cpu" and sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


@dataclass(frozen=True)
class OnDevice:
    """JPEGs decoded in the main process on `device` (see devicejpeg.py), each cropped there by `crop`: a uint8
    (3, H, W) picture in, the model's uint8 input out (`Encoder.tensor_pixels`)."""

    device: torch.device
    crop: Callable[[torch.Tensor], torch.Tensor]


def decoded_batches(
    entries: Sequence[FileEntry],
    preprocess: Callable[[Image.Image], torch.Tensor],
    min_side: int | None,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    encode: Encode | None = None,
    worker_batch: int | None = None,
    sampling: Sampling = Sampling(),
    on_device: OnDevice | None = None,
    ahead: Mapping[str, DecodedPhoto] | None = None,
) -> Iterator[Batch]:
    """Batches in input order; small jobs decode in-process, where starting workers costs more.

    With `encode` (a CPU model; see `workers_can_encode`), each batch is encoded where it was
    decoded and arrives with vectors instead of pixels. With a smaller `worker_batch`, workers
    decode batches of that many files, joined here into batches of at least `batch_size` images
    (in pinned memory with `pin_memory`). With `on_device`, plain JPEGs are decoded here on its
    device, and every batch's pixels arrive on that device. `ahead`: photos a head start decoded, by path
    (see `load_entry`).
    """
    step = min(worker_batch or batch_size, batch_size)
    workers = workers if len(entries) > step else 0
    loader = DataLoader(
        _Batches(entries, guided(len(entries), step, workers), preprocess, min_side, sampling,
                 keep_jpegs=on_device is not None, ahead=ahead or {}),
        batch_size=None,
        num_workers=workers,
        collate_fn=partial(_collate, encode=encode),
        prefetch_factor=PREFETCH if workers else None,
        pin_memory=pin_memory and step == batch_size,
        multiprocessing_context="fork" if workers and encode else None,
        in_order=not encode,  # the next batch to whichever worker is free (see batching.guided), numbered
    )
    batches: Iterable[Batch] = in_order(loader)
    if on_device is not None:
        batches = (decoded_on(batch, on_device, preprocess, min_side) for batch in batches)
    yield from (batches if step == batch_size else joined(batches, batch_size, pin_memory))


def decoded_on(batch: Batch, on: OnDevice, preprocess: Callable[[Image.Image], torch.Tensor],
               min_side: int | None) -> Batch:
    """A worker batch with its JPEGs decoded on the device (a JPEG the device rejects: here on the CPU, with
    `preprocess`, as a worker would), and all its pixels on the device, in the order of its items."""
    pending = [d for d in batch.items if d.jpeg is not None]
    done = iter(_decode_pending(pending, on, preprocess, min_side) if pending else ())
    rows = [d.rows for d in batch.good if d.jpeg is None]
    decoded_here = iter(batch.pixels.to(on.device).split(rows) if batch.pixels is not None else ())
    items, parts = [], []
    for d in batch.items:
        pixels = None
        if d.jpeg is not None:
            d, pixels = next(done)
        elif d.error is None:
            pixels = next(decoded_here)
        items.append(d)
        if pixels is not None:
            parts.append(pixels.to(on.device))  # a JPEG the device rejected was decoded on the CPU
    return Batch(items, torch.cat(parts) if parts else None)


def _decode_pending(pending: list[Decoded], on: OnDevice, preprocess: Callable[[Image.Image], torch.Tensor],
                    min_side: int | None) -> list[tuple[Decoded, torch.Tensor | None]]:
    """Each pending JPEG with its pHash and its pixels (1, 3, H, W): decoded on the device, else on the CPU."""
    shaped = [_shaped(p, on.crop) for p in decode_jpegs([d.jpeg for d in pending], on.device)]
    thumbnails = iter(torch.stack([s[1] for s in shaped if s]).cpu().numpy() if any(shaped) else ())
    out = []
    for d, s in zip(pending, shaped):
        if s is None:
            out.append(_decode_here(d, preprocess, min_side))
        else:
            out.append((replace(d, jpeg=None, phash=fingerprint(Image.fromarray(next(thumbnails)))), s[0][None]))
    return out


def _shaped(picture: torch.Tensor | None,
            crop: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A decoded picture's model input and pHash thumbnail, both on its device; None where either fails."""
    if picture is None:
        return None
    try:
        return crop(picture), thumbnail(picture)
    except Exception:  # noqa: BLE001 - the CPU decodes this file instead
        return None


def _decode_here(d: Decoded, preprocess: Callable[[Image.Image], torch.Tensor],
                 min_side: int | None) -> tuple[Decoded, torch.Tensor | None]:
    """A pending JPEG decoded on the CPU, as a worker decodes a file (its hash and metadata kept)."""
    try:
        image, _ = decode(d.jpeg.data.numpy().tobytes(), min_side, d.entry.path)
        return replace(d, jpeg=None, phash=fingerprint(image)), preprocess(image)[None]
    except Exception as e:  # noqa: BLE001 - the per-file boundary, as in `load_entry`
        return _failed(d.entry, e), None


def joined(batches: Iterable[Batch], size: int, pin_memory: bool = False) -> Iterator[Batch]:
    """Consecutive batches joined until each holds at least `size` images (the last may hold fewer)."""
    pending: list[Batch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch.good)
        if count >= size:
            yield _join(pending, pin_memory)
            pending, count = [], 0
    if pending:
        yield _join(pending, pin_memory)


def _join(batches: list[Batch], pin_memory: bool) -> Batch:
    items = [d for b in batches for d in b.items]
    parts = [b.pixels for b in batches if b.pixels is not None]
    if not parts:
        return Batch(items, None)
    shape = (sum(len(p) for p in parts), *parts[0].shape[1:])
    device = parts[0].device
    pixels = torch.empty(shape, dtype=parts[0].dtype, device=device, pin_memory=pin_memory and device.type == "cpu")
    return Batch(items, torch.cat(parts, out=pixels))
