"""Merging embedding shards (see shards.py) into a catalog, one transaction per shard.

A row is merged as `clipsearch index` would treat the file: new paths are added, a newer version
of an indexed file replaces its row, and a file that failed for its content is recorded as a
failure. The catalog keeps what it has when it already holds the same version of the file (same
size and mtime) or a newer one, so merging is idempotent and the order of shards does not matter,
even when a folder holds stale shards of files that changed between runs. Files that could not
be read (I/O errors) are only reported: a later `clipsearch index` picks them up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .catalog import Catalog, FileState, NewImage
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
    known = catalog.states_of([r["path"] for r in rows.records])
    images: list[NewImage] = []
    stale: list[int] = []
    failures: list[tuple[str, int, int, str]] = []
    for record, vector in zip(rows.records, rows.vectors):
        state = known.get(record["path"])
        if state is not None and _holds_same_or_newer(state, record):
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


def _holds_same_or_newer(state: FileState, record: dict) -> bool:
    same = (state.size, state.mtime_ns) == (record["size"], record["mtime_ns"])
    return same or state.mtime_ns > record["mtime_ns"]


def _new_image(record: dict, vector: np.ndarray) -> NewImage:
    return NewImage(record["path"], record["size"], record["mtime_ns"], record["hash"], record["width"],
                    record["height"], record["format"], record["taken_at"], record["camera"], vector)
