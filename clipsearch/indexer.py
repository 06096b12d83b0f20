"""One index run: diff a listing against the catalog, then embed what is new or changed.

Order matters for safety: moves and deletions are single transactions, and each embedded
batch is written to the catalog in one transaction before its vectors enter the index, so
a crash at any point leaves a catalog that `VectorIndex.sync` can reconcile.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .catalog import Catalog, FileState, NewImage
from .decode import content_hash
from .discover import FileEntry, Listing, read_entry
from .results import IndexReport, Skip
from .vectorindex import VectorIndex
from .video import Sampling, is_video

if TYPE_CHECKING:
    from .encoder import Encoder
    from .pipeline import Batch, Decoded

Progress = Callable[[int, int], None]
SAVE_EVERY_S = 300.0


@dataclass
class Plan:
    """What a listing means for the catalog."""

    embed: list[FileEntry] = field(default_factory=list)
    replaced: dict[str, int] = field(default_factory=dict)  # path -> id of its stale row
    moves: list[tuple[int, str, int, int]] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    vanished_failures: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skip] = field(default_factory=list)


def plan(listing: Listing, catalog: Catalog) -> Plan:
    known = catalog.states_under(listing.roots)
    failed = catalog.failures_under(listing.roots)
    result = Plan(skipped=list(listing.skipped))
    new: list[FileEntry] = []
    for entry in listing.files:
        state = known.pop(entry.path, None)
        if state is not None and (state.size, state.mtime_ns) == (entry.size, entry.mtime_ns):
            result.unchanged += 1
        elif state is not None:
            result.replaced[entry.path] = state.id
            result.embed.append(entry)
        elif failed.get(entry.path, (None, None))[:2] == (entry.size, entry.mtime_ns):
            result.skipped.append(Skip(entry.path, failed[entry.path][2]))
        else:
            new.append(entry)
    listed = {e.path for e in listing.files}
    result.vanished_failures = [p for p in failed if p not in listed]
    vanished = {p: s for p, s in known.items() if not _under_unreadable(p, listing)}
    result.embed += _find_moves(new, vanished, result)
    result.vanished = [s.id for s in vanished.values()]
    return result


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
        result.moves.append((match[1].id, entry.path, entry.size, entry.mtime_ns))
    return remaining


def _match_hash(entry: FileEntry, candidates: list[tuple[str, FileState]]) -> tuple[str, FileState] | None:
    try:
        digest = content_hash(read_entry(entry)[1])
    except OSError:
        return None
    return next((c for c in candidates if c[1].hash == digest), None)


@dataclass
class IndexRun:
    """`load_encoder` is called only when something needs embedding: re-indexing an unchanged tree
    then costs a directory walk and one catalog query, not the seconds it takes to load torch and a model."""

    catalog: Catalog
    vectors: VectorIndex
    load_encoder: Callable[[], "Encoder"]
    save: Callable[[], None]
    batch_size: int | None  # None: the default for the encoder's device
    workers: int | None  # None: one per usable core
    progress: Progress | None = None
    sampling: Sampling = field(default_factory=Sampling)
    encoder: "Encoder | None" = field(default=None, init=False)

    def run(self, listing: Listing, started: float) -> IndexReport:
        todo = plan(listing, self.catalog)
        if todo.moves:
            self.catalog.move(todo.moves)
        if todo.vanished or todo.vanished_failures:
            frames = self.catalog.frame_ids(todo.vanished)
            self.catalog.delete(todo.vanished, todo.vanished_failures)
            self.vectors.remove(np.concatenate([np.array(todo.vanished, dtype=np.int64), frames]))
        skipped = list(todo.skipped)
        added = updated = 0
        last_save = time.monotonic()
        for batch in self._batches(todo.embed):
            self._write(batch, todo.replaced)
            skipped += [Skip(d.entry.path, d.error) for d in batch.items if d.error]
            good = batch.good
            updated += sum(1 for d in good if d.entry.path in todo.replaced)
            added += sum(1 for d in good if d.entry.path not in todo.replaced)
            if self.progress:
                self.progress(len(batch.items), len(todo.embed))
            if time.monotonic() - last_save > SAVE_EVERY_S:
                self.save()
                last_save = time.monotonic()
        self.save()
        return IndexReport(added, updated, len(todo.moves), len(todo.vanished), todo.unchanged,
                           tuple(skipped), time.monotonic() - started)

    def _batches(self, entries: Sequence[FileEntry]) -> Iterator["Batch"]:
        """Photos, then videos in batches of about as many frames as a batch holds photos."""
        if not entries:
            return iter(())
        from .models import DEFAULT_BATCH
        from .pipeline import decoded_batches, default_workers, workers_can_encode

        self.encoder = self.load_encoder()
        device = self.encoder.device
        batch_size = self.batch_size or DEFAULT_BATCH.get(device.type, 32)
        photos = [e for e in entries if not is_video(e.path)]
        videos = [e for e in entries if is_video(e.path)]
        return itertools.chain.from_iterable(
            decoded_batches(files, self.encoder.preprocess, self.encoder.image_size, size,
                            default_workers() if self.workers is None else self.workers,
                            pin_memory=device.type == "cuda",
                            encode=self.encoder.encode_images if workers_can_encode(device) else None,
                            sampling=self.sampling)
            for files, size in ((photos, batch_size), (videos, max(1, batch_size // self.sampling.max_frames)))
            if files)

    def _write(self, batch: "Batch", replaced: dict[str, int]) -> None:
        """One catalog transaction, then the index; failures of content are remembered, I/O errors retried."""
        good = batch.good
        if batch.vectors is not None:
            vectors = batch.vectors
        elif good:
            vectors = self.encoder.encode_images(batch.pixels)
        else:
            vectors = np.zeros((0, self.vectors.dim), np.float32)
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


def _new_image(d: "Decoded", vectors: np.ndarray) -> NewImage:
    """A catalog row from a decoded file and its vectors (a video's: one per frame, and their mean)."""
    m = d.meta
    frames = tuple(zip(d.frames_ms, vectors)) if d.frames_ms else ()
    vector = vectors.mean(axis=0)
    vector /= max(float(np.linalg.norm(vector)), 1e-8)
    return NewImage(d.entry.path, d.entry.size, d.entry.mtime_ns, d.hash, m.width, m.height, m.format,
                    m.taken_at, m.camera, vector.astype(np.float32), frames)
