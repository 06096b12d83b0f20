"""One index run: diff a listing against the catalog, then embed what is new or changed.

Order matters for safety: moves and deletions are single transactions, and each embedded
batch is written to the catalog in one transaction before its vectors enter the index, so
a crash at any point leaves a catalog that `VectorIndex.sync` can reconcile.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np

from .catalog import Catalog, FileState, NewImage
from .decode import content_hash
from .discover import FileEntry, Listing, read_entry
from .batching import default_workers
from .errors import ModelUnavailable
from .headstart import DecodedPhoto, load_decoding_ahead
from .ranking import are_unit_vectors
from .results import IndexReport, OfflineRoot, PassedOver, Skip
from .vectorindex import VectorIndex
from .video import Sampling, is_video

if TYPE_CHECKING:
    from .encoder import Encoder
    from .pipeline import Batch, Decoded

Progress = Callable[[int, int], None]
SAVE_EVERY_S = 300.0
WRITE_QUEUE = 2
"""Encoded batches waiting for the writer thread: what a crash can lose beyond the one being written."""


OFFLINE_MIN_LOST = 10
"""A root is offline when none of its indexed files is found, or when more than half of them and at least
this many are gone in one run (see `offline_roots`)."""


@dataclass
class Plan:
    """What a listing means for the catalog."""

    embed: list[FileEntry] = field(default_factory=list)
    replaced: dict[str, int] = field(default_factory=dict)  # path -> id of its stale row
    moves: list[tuple[int, FileEntry]] = field(default_factory=list)  # row id -> the file now holding it
    touched: list[tuple[int, FileEntry]] = field(default_factory=list)  # same content, new file identity
    vanished: list[int] = field(default_factory=list)
    vanished_failures: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skip] = field(default_factory=list)
    offline: list[OfflineRoot] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """`reindex`: re-embed every file under the roots; `rehash`: compare every file's content with its row,
    not only where size, mtime or the file's identity changed; `prune`: remove the rows of roots that look
    offline, as of any other root."""

    reindex: bool = False
    rehash: bool = False
    prune: bool = False


def plan(listing: Listing, catalog: Catalog, options: Options = Options()) -> Plan:
    known = catalog.states_under(listing.roots)
    failed = catalog.failures_under(listing.roots)
    indexed = {root: sum(1 for p in known if _inside(p, root)) for root in listing.roots}
    result = Plan(skipped=list(listing.skipped))
    new: list[FileEntry] = []
    for entry in listing.files:
        state = known.pop(entry.path, None)
        if state is None:
            if not options.reindex and failed.get(entry.path, (None, None))[:2] == (entry.size, entry.mtime_ns):
                result.skipped.append(Skip(entry.path, failed[entry.path][2]))
            else:
                new.append(entry)
        elif options.reindex or (state.size, state.mtime_ns) != (entry.size, entry.mtime_ns):
            result.replaced[entry.path] = state.id
            result.embed.append(entry)
        else:
            _check_unchanged(entry, state, options.rehash, result)
    listed = {e.path for e in listing.files}
    vanished = {p: s for p, s in known.items() if not _under_unreadable(p, listing)}
    new = _find_moves(new, vanished, result)
    result.embed += _find_moves_from_elsewhere(new, listing.roots, catalog, result)
    offline = [] if options.prune else offline_roots(listing, indexed, vanished)
    result.offline = offline
    kept = [r.root for r in offline]
    result.vanished = [s.id for p, s in vanished.items() if not any(_inside(p, r) for r in kept)]
    result.vanished_failures = [p for p in failed if p not in listed and not any(_inside(p, r) for r in kept)]
    return result


def _check_unchanged(entry: FileEntry, state: FileState, rehash: bool, result: Plan) -> None:
    """A file of the recorded size and mtime: re-hashed when asked to, or when its identity (device, inode,
    ctime) changed, so that a file replaced with its old timestamp is noticed; re-embedded only if its
    content changed."""
    identity = (entry.dev, entry.inode, entry.ctime_ns)
    if rehash or (state.inode is not None and identity != (state.dev, state.inode, state.ctime_ns)):
        digest = _hash(entry)
        if digest is not None and digest != state.hash:
            result.replaced[entry.path] = state.id
            result.embed.append(entry)
            return
    if identity != (state.dev, state.inode, state.ctime_ns):
        result.touched.append((state.id, entry))
    result.unchanged += 1


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def offline_roots(listing: Listing, indexed: dict[str, int], vanished: dict[str, FileState]) -> list[OfflineRoot]:
    """The roots that look unmounted or emptied rather than edited: of the `indexed` files under a root,
    none found, or more than half and at least OFFLINE_MIN_LOST gone (`vanished`, moves excluded)."""
    offline = []
    for root, known in indexed.items():
        lost = sum(1 for p in vanished if _inside(p, root))
        found = sum(1 for e in listing.files if _inside(e.path, root))
        if lost and (found == 0 or (2 * lost > known and lost >= OFFLINE_MIN_LOST)):
            offline.append(OfflineRoot(root, known - lost, known, os.path.isdir(root) or os.path.isfile(root)))
    return offline


def _under_unreadable(path: str, listing: Listing) -> bool:
    """Rows under a directory we could not read are kept: absence of evidence is not deletion."""
    return any(path.startswith(s.path.rstrip(os.sep) + os.sep) for s in listing.skipped)


def _find_moves(new: list[FileEntry], vanished: dict[str, FileState], result: Plan) -> list[FileEntry]:
    """Recognise renamed/moved files by content hash (hashing only size-compatible candidates)."""
    by_size: dict[int, list[tuple[str, FileState]]] = {}
    for path, state in vanished.items():
        by_size.setdefault(state.size, []).append((path, state))
    remaining = []
    for entry in new:
        candidates = by_size.get(entry.size, [])
        match = _match_hash(entry, candidates) if candidates else None
        if match is None:
            remaining.append(entry)
            continue
        candidates.remove(match)
        del vanished[match[0]]
        result.moves.append((match[1].id, entry))
    return remaining


def _find_moves_from_elsewhere(new: list[FileEntry], roots: Sequence[str], catalog: Catalog,
                               result: Plan) -> list[FileEntry]:
    """New files whose content matches a row outside the roots whose file is gone (a renamed or moved root):
    moves too, so that the row keeps its vector and tags."""
    if not new:
        return new
    candidates = {p: s for p, s in catalog.states_of_size(e.size for e in new).items()
                  if not any(_inside(p, r) for r in roots)}
    by_size: dict[int, list[tuple[str, FileState]]] = {}
    for path, state in candidates.items():
        by_size.setdefault(state.size, []).append((path, state))
    remaining = []
    for entry in new:
        same_size = by_size.get(entry.size, [])
        match = _match_hash(entry, same_size, gone=True) if same_size else None
        if match is None:
            remaining.append(entry)
            continue
        same_size.remove(match)
        result.moves.append((match[1].id, entry))
    return remaining


def _hash(entry: FileEntry) -> str | None:
    try:
        return content_hash(read_entry(entry)[1])
    except OSError:
        return None


def _match_hash(entry: FileEntry, candidates: list[tuple[str, FileState]],
                gone: bool = False) -> tuple[str, FileState] | None:
    """The candidate with the entry's content (and, with `gone`, whose own file no longer exists)."""
    digest = _hash(entry)
    if digest is None:
        return None
    return next((c for c in candidates if c[1].hash == digest and not (gone and os.path.lexists(c[0]))), None)


@dataclass
class IndexRun:
    """`load_encoder` is called only when something needs embedding: re-indexing an unchanged tree
    then costs a directory walk and one catalog query, not the seconds it takes to load torch and a model.
    `decode_device` (a torch device, "cuda": nvJPEG) decodes plain JPEGs in the main process on that device
    (devicejpeg.py); None decodes every file in the decode workers."""

    catalog: Catalog
    vectors: VectorIndex
    load_encoder: Callable[[], "Encoder"]
    save: Callable[[], None]
    batch_size: int | None  # None: the default for the encoder's device
    workers: int | None  # None: one per usable core
    progress: Progress | None = None
    sampling: Sampling = field(default_factory=Sampling)
    options: Options = Options()
    decode_device: str | None = None
    input_side: int | None = None
    """The model's input side where known before it loads (models.input_side): photos are decoded ahead
    meanwhile."""
    ahead: Mapping[str, DecodedPhoto] = field(default_factory=dict)
    """Photos decoded while the model loaded before the run (headstart.py), by path."""
    encoder: "Encoder | None" = field(default=None, init=False)

    def run(self, listing: Listing, started: float) -> IndexReport:
        todo = plan(listing, self.catalog, self.options)
        if todo.moves:
            self.catalog.move(todo.moves)
        if todo.touched:
            self.catalog.touch(todo.touched)
        if todo.vanished or todo.vanished_failures:
            frames = self.catalog.frame_ids(todo.vanished)
            self.catalog.delete(todo.vanished, todo.vanished_failures)
            self.vectors.remove(np.concatenate([np.array(todo.vanished, dtype=np.int64), frames]))
        tally = _Tally(skipped=list(todo.skipped))
        with _Writer(lambda batch, vectors: self._write(batch, vectors, todo, tally)) as writer:
            for batch in self._batches(todo.embed):
                writer.put(batch, self._vectors_of(batch))
        self.save()
        return IndexReport(tally.added, tally.updated, len(todo.moves), len(todo.vanished), todo.unchanged,
                           tuple(tally.skipped), time.monotonic() - started,
                           tuple(PassedOver(ext, n) for ext, n in listing.passed_over.most_common()), tuple(todo.offline))

    def _batches(self, entries: Sequence[FileEntry]) -> Iterator["Batch"]:
        """Photos, then videos in batches of about as many frames as a batch holds photos."""
        if not entries:
            return iter(())
        photos = [e for e in entries if not is_video(e.path)]
        videos = [e for e in entries if is_video(e.path)]
        self.encoder, ahead = load_decoding_ahead(self.load_encoder, photos, self.input_side)
        self.ahead = self.ahead or ahead
        from .pipeline import workers_can_encode  # imports torch: only once the model loads, with the head start

        if self.progress:
            self.progress(0, len(entries))  # the count to come, before the first batch is decoded
        device = self.encoder.device
        in_workers = workers_can_encode(device) and self.decode_device is None
        workers = default_workers(gpu=device.type == "cuda") if self.workers is None else self.workers
        batch_size = self.batch_size or self.encoder.default_batch_size
        return itertools.chain.from_iterable(
            self._decoded(files, size, workers, in_workers, jpegs)
            for files, size, jpegs in ((photos, batch_size, True),
                                       (videos, max(1, batch_size // self.sampling.max_frames), False))
            if files)

    def _decoded(self, entries: Sequence[FileEntry], batch_size: int, workers: int, in_workers: bool,
                 jpegs: bool) -> Iterator["Batch"]:
        """`jpegs`: whether `entries` may hold JPEGs to decode on `decode_device` (photos do, videos do not)."""
        import torch

        from .pipeline import (WORKER_BATCH, OnDevice, decoded_batches, jpeg_bytes, shm_bytes_per_worker, shm_free,
                               workers_for_shm)

        device = self.encoder.device
        if in_workers or not self.encoder.moves_uint8:
            return decoded_batches(entries, self.encoder.preprocess, self.encoder.image_size, batch_size, workers,
                                   pin_memory=device.type == "cuda",
                                   encode=self.encoder.encode_images if in_workers else None,
                                   sampling=self.sampling, ahead=self.ahead)
        on_device = OnDevice(torch.device(self.decode_device), self.encoder.tensor_pixels) \
            if self.decode_device is not None and jpegs else None
        per_worker = shm_bytes_per_worker(self.encoder.image_size, file_bytes=jpeg_bytes(entries) if on_device else 0)
        workers = workers_for_shm(workers, per_worker, shm_free())
        return decoded_batches(entries, self.encoder.pixels, self.encoder.image_size, batch_size, workers,
                               pin_memory=device.type == "cuda", worker_batch=WORKER_BATCH,
                               sampling=self.sampling, on_device=on_device, ahead=self.ahead)

    def _vectors_of(self, batch: "Batch") -> np.ndarray:
        """The batch's unit vectors; ModelUnavailable, before any is written, where the model gives NaN, infinite
        or zero vectors (damaged weights: every image would be stored unsearchable)."""
        if batch.vectors is not None:
            vectors = batch.vectors
        elif batch.pixels is not None:
            vectors = self.encoder.encode_images(batch.pixels)
        else:
            return np.zeros((0, self.vectors.dim), np.float32)
        if not are_unit_vectors(vectors, self.vectors.dim):
            raise ModelUnavailable(f"The model {self.encoder.spec.label} gives no usable vectors for images (NaN, "
                                   "infinite or zero): its weights may be damaged")
        return vectors

    def _write(self, batch: "Batch", vectors: np.ndarray, todo: Plan, tally: "_Tally") -> None:
        """One catalog transaction, then the index; failures of content are remembered, I/O errors retried.
        Runs on the writer thread, the only one touching the catalog and the index during the run."""
        replaced = todo.replaced
        good = batch.good
        ends = np.cumsum([d.rows for d in good], dtype=np.int64)
        images = [_new_image(d, vectors[end - d.rows : end]) for d, end in zip(good, ends)]
        failures = [(d.entry.path, d.entry.size, d.entry.mtime_ns, d.error) for d in batch.items
                    if d.error and not d.transient]
        stale = [replaced[d.entry.path] for d in batch.items if d.entry.path in replaced]
        stale_frames = self.catalog.frame_ids(stale)
        ids = self.catalog.write_batch(images, stale, failures)
        self.vectors.remove(np.concatenate([np.array(stale, dtype=np.int64), stale_frames]))
        self.vectors.add(np.array(ids, dtype=np.int64), np.vstack([im.vector for im in images])
                         if images else np.zeros((0, self.vectors.dim), np.float32))
        videos = [i for i, im in zip(ids, images) if im.frames]
        if videos:
            frame_ids = self.catalog.frame_ids(videos)
            self.vectors.add(frame_ids, np.vstack([v for im in images for _, v in im.frames]))
        tally.skipped += [Skip(d.entry.path, d.error) for d in batch.items if d.error]
        tally.updated += sum(1 for d in good if d.entry.path in replaced)
        tally.added += sum(1 for d in good if d.entry.path not in replaced)
        if self.progress:
            self.progress(len(batch.items), len(todo.embed))
        if time.monotonic() - tally.last_save > SAVE_EVERY_S:
            self.save()
            tally.last_save = time.monotonic()


@dataclass
class _Tally:
    skipped: list[Skip]
    added: int = 0
    updated: int = 0
    last_save: float = field(default_factory=time.monotonic)


class _Writer:
    """Writes encoded batches on a thread of its own while the next batch is encoded (on a GPU, the
    encoder no longer idles during SQLite commits and FAISS adds). The queue is bounded
    (`WRITE_QUEUE` batches), so a crash loses at most the batches in flight, which the next run
    embeds again; an error in a write is raised in the caller at its next `put` or on exit."""

    def __init__(self, write: Callable[["Batch", np.ndarray], None]):
        self.write = write
        self.queue: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, name="clipsearch-writer", daemon=True)

    def __enter__(self) -> "_Writer":
        self.thread.start()
        return self

    def put(self, batch: "Batch", vectors: np.ndarray) -> None:
        self._raise()
        self.queue.put((batch, vectors))

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if exc[0] is None:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _drain(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.write(*item)
                except BaseException as e:  # handed to the encoding thread, which raises it
                    self.error = e


def _new_image(d: "Decoded", vectors: np.ndarray) -> NewImage:
    """A catalog row from a decoded file and its vectors (a video's: one per frame, and their mean)."""
    m = d.meta
    e = d.entry
    frames = tuple(zip(d.frames_ms, vectors)) if d.frames_ms else ()
    vector = vectors.mean(axis=0)
    vector /= max(float(np.linalg.norm(vector)), 1e-8)
    return NewImage(e.path, e.size, e.mtime_ns, d.hash, m.width, m.height, m.format, m.taken_at, m.camera,
                    vector.astype(np.float32), e.dev, e.inode, e.ctime_ns, phash=d.phash, frames=frames,
                    duration_s=d.duration_s)
