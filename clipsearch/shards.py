"""Embedding shards: the Parquet files `clipsearch embed` writes and `Library.ingest` reads.

A shard is one slice of a listing sorted by path, with one row per file: the catalog's fields and
the vector, or the reason the file was skipped. Its name is a hash of the model and of its files'
(path, size, mtime), so a re-run over unchanged files finds it written and skips it, and a changed
file renames only its own shard. Boundaries are content-defined (a shard ends after a path whose
hash is 0 modulo the target size, or at MAX_FACTOR times the target), so adding or removing
files leaves the other shards of the listing as they were.

A shard is written under a temporary name and renamed into place, so one that exists is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .discover import FileEntry
from .errors import BadShard, ExtraNotInstalled
from .models import ModelSpec

if TYPE_CHECKING:
    import pyarrow as pa

FORMAT_VERSION = 1
PATTERN = "shard-*.parquet"
METADATA_KEY = b"clipsearch"
MAX_FACTOR = 4
DEFAULT_SHARD_SIZE = 1000


@dataclass(frozen=True)
class Shard:
    key: str
    entries: tuple[FileEntry, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.key}.parquet"


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's Parquet metadata says: the model that embedded it and the vector size."""

    path: Path
    model: ModelSpec
    dim: int


@dataclass(frozen=True)
class ShardRows:
    records: list[dict[str, Any]]
    """One dict per file: every column but the vector."""
    vectors: np.ndarray
    """(len(records), dim) float32; rows of skipped files are zero."""


def plan_shards(files: Sequence[FileEntry], model: ModelSpec, target: int = DEFAULT_SHARD_SIZE) -> list[Shard]:
    """Split a listing into shards of about `target` files (each path once, in path order)."""
    entries = sorted({e.path: e for e in files}.values(), key=lambda e: e.path)
    shards: list[Shard] = []
    current: list[FileEntry] = []
    for entry in entries:
        current.append(entry)
        if _ends_shard(entry.path, target) or len(current) >= MAX_FACTOR * target:
            shards.append(_shard(current, model))
            current = []
    if current:
        shards.append(_shard(current, model))
    return shards


def _ends_shard(path: str, target: int) -> bool:
    digest = hashlib.blake2b(os.fsencode(path), digest_size=8).digest()
    return int.from_bytes(digest, "big") % target == 0


def _shard(entries: list[FileEntry], model: ModelSpec) -> Shard:
    h = hashlib.blake2b(model.identity.encode(), digest_size=12)
    for e in entries:
        h.update(b"\n%s\0%d\0%d" % (os.fsencode(e.path), e.size, e.mtime_ns))
    return Shard(h.hexdigest(), tuple(entries))


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExtraNotInstalled("Embedding shards need pyarrow: pip install 'clipsearch[ray]'") from None
    return pa, pq


def _schema(model: ModelSpec, dim: int) -> "pa.Schema":
    pa, _ = _arrow()
    header = {"format": FORMAT_VERSION, "model": model.to_dict(), "dim": dim}
    return pa.schema(
        [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("hash", pa.string()),
         ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()), ("taken_at", pa.string()),
         ("camera", pa.string()), ("vector", pa.list_(pa.float32(), dim)), ("error", pa.string()),
         ("transient", pa.bool_()), ("phash", pa.binary())],
        metadata={METADATA_KEY: json.dumps(header).encode()},
    )


def write_shard(path: Path, columns: Mapping[str, Sequence[Any] | np.ndarray], model: ModelSpec, dim: int) -> None:
    """Write one shard atomically: a temporary file, fsync, then rename into place.

    `columns` holds the schema's columns; "vector" is an (n, dim) array whose rows are ignored
    (stored as null) where "error" is set; "phash" (perceptual fingerprints) may be left out: null.
    """
    pa, pq = _arrow()
    schema = _schema(model, dim)
    vectors = np.ascontiguousarray(columns["vector"], dtype=np.float32).reshape(-1, dim)
    failed = np.array([e is not None for e in columns["error"]], dtype=bool)
    arrays = [
        pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), type=field.type, mask=pa.array(failed))
        if field.name == "vector" else pa.array(list(columns[field.name]) if field.name in columns
                                                else [None] * len(vectors), type=field.type)
        for field in schema
    ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise BadShard(f"No shard folder at {directory}")
    return sorted(directory.glob(PATTERN))


def read_header(path: Path) -> ShardHeader:
    _, pq = _arrow()
    try:
        metadata = pq.read_schema(path).metadata or {}
        header = json.loads(metadata[METADATA_KEY])
    except (OSError, KeyError, ValueError) as e:
        raise BadShard(f"{path} is not a clipsearch shard ({str(e).splitlines()[0][:120]})") from None
    if header.get("format") != FORMAT_VERSION:
        raise BadShard(f"{path} has shard format {header.get('format')}; this clipsearch reads {FORMAT_VERSION}")
    return ShardHeader(path, ModelSpec.from_dict(header["model"]), int(header["dim"]))


def read_rows(header: ShardHeader) -> ShardRows:
    pa, pq = _arrow()
    try:
        table = pq.read_table(header.path)
    except OSError as e:
        raise BadShard(f"Cannot read the shard {header.path} ({str(e).splitlines()[0][:120]})") from None
    records = table.drop_columns(["vector"]).to_pylist()
    good = np.array([r["error"] is None for r in records], dtype=bool)
    vectors = np.zeros((len(records), header.dim), np.float32)
    kept = table.filter(pa.array(good)).column("vector").combine_chunks().flatten()
    vectors[good] = np.asarray(kept, dtype=np.float32).reshape(-1, header.dim)
    return ShardRows(records, vectors)
