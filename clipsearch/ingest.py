"""Merging embedding shards (see shards.py) into a catalog, one transaction per shard.

A row is merged as `clipsearch index` would treat the file: new paths are added, and a file that
failed for its content is recorded as a failure. A row for an indexed file with the same size and
content hash keeps the catalog's row (only a newer mtime is recorded), so merging is idempotent.
Any difference in size or content is a change, whatever the mtimes say (a clock set wrong once
must not pin an old vector): the shard's row replaces the catalog's, except when the file can be
seen from here and the catalog's row, not the shard's, matches its current size and mtime (a
stale shard of a file that changed since). Files that could not be read (I/O errors) are only
reported: a later `clipsearch index` picks them up.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .catalog import Catalog, FileState, NewImage
from .discover import FileEntry, clamp_ns
from .paths import from_catalog
from .results import IngestReport, Skip
from .shards import ShardHeader, read_rows

Progress = Callable[[int, int], None]


@dataclass
class _Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[Skip] = field(default_factory=list)


def merge_shards(catalog: Catalog, headers: Sequence[ShardHeader], started: float,
                 progress: Progress | None = None) -> IngestReport:
    counts = _Counts()
    for header in headers:
        _merge(catalog, header, counts)
        if progress:
            progress(1, len(headers))
    return IngestReport(len(headers), counts.added, counts.updated, counts.unchanged, tuple(counts.skipped),
                        time.monotonic() - started)


def _merge(catalog: Catalog, header: ShardHeader, counts: _Counts) -> None:
    rows = read_rows(header)
    for record in rows.records:
        record["path"] = from_catalog(record["path"])
    known = catalog.states_of([r["path"] for r in rows.records])
    images: list[NewImage] = []
    stale: list[int] = []
    touched: list[tuple[int, FileEntry]] = []
    failures: list[tuple[str, int, int, str]] = []
    for record, vector in zip(rows.records, rows.vectors):
        state = known.get(record["path"])
        if state is not None and _same_content(state, record):
            counts.unchanged += 1
            if record["mtime_ns"] > state.mtime_ns:
                touched.append((state.id, FileEntry(record["path"], record["size"], record["mtime_ns"])))
            continue
        if state is not None and _stale(state, record):
            counts.unchanged += 1
            continue
        if record["error"] is not None:
            counts.skipped.append(Skip(record["path"], record["error"]))
            if record["transient"]:
                continue
            failures.append((record["path"], record["size"], record["mtime_ns"], record["error"]))
        else:
            images.append(_new_image(record, vector))
            counts.added += state is None
            counts.updated += state is not None
        if state is not None:
            stale.append(state.id)
    catalog.write_batch(images, stale, failures)
    if touched:
        catalog.touch(touched)


def _same_content(state: FileState, record: dict) -> bool:
    return record["error"] is None and (state.size, state.hash) == (record["size"], record["hash"])


def _stale(state: FileState, record: dict) -> bool:
    """Whether the file, seen from here, is still the version the catalog holds and not the shard's."""
    try:
        st = os.stat(record["path"])
    except OSError:
        return False
    now = (st.st_size, clamp_ns(st.st_mtime_ns))
    return now == (state.size, state.mtime_ns) and now != (record["size"], record["mtime_ns"])


def _new_image(record: dict, vector: np.ndarray) -> NewImage:
    return NewImage(record["path"], record["size"], record["mtime_ns"], record["hash"], record["width"],
                    record["height"], record["format"], record["taken_at"], record["camera"], vector,
                    phash=record.get("phash"))  # shards written before fingerprints have none
