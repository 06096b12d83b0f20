"""Text queries already encoded, kept beside the catalog, so that a repeated query needs no model.

Importing torch and open_clip and loading the model is most of a cold `clipsearch search` (about
4 of its 5 seconds on 2 cores); a text seen before is answered from this file instead. Entries are
keyed by the model's weights and the exact text, so a library re-indexed with another model never
gets a stale vector. The cache is an optimisation only: if it cannot be read or written (a
read-only library, a damaged file), queries are encoded as if it were not there; a stored vector that is not a
finite unit vector of the model's dimension is ignored (and replaced once the text is encoded), and such a vector
is never stored.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .models import ModelSpec
from .ranking import are_unit_vectors

TEXT_CACHE_FILE = "text-vectors.db"
MAX_ENTRIES = 10_000
"""Beyond this many texts the least recently added are dropped (about 20 MB of 512-d vectors)."""


class TextVectorCache:
    def __init__(self, directory: Path, spec: ModelSpec, dim: int):
        self.path = directory / TEXT_CACHE_FILE
        self.key = spec.identity
        self.dim = dim

    def get(self, text: str) -> np.ndarray | None:
        """The text's vector (dim,) float32, or None when the cache holds no usable one."""
        if not self.path.is_file():
            return None
        try:
            with _connect(self.path, readonly=True) as db:
                row = db.execute("SELECT vector FROM texts WHERE model = ? AND text = ?", (self.key, text)).fetchone()
        except sqlite3.Error:
            return None
        if row is None or not isinstance(row[0], bytes) or len(row[0]) != 4 * self.dim:
            return None
        vector = np.frombuffer(row[0], dtype=np.float32).copy()
        return vector if are_unit_vectors(vector, self.dim) else None

    def put(self, text: str, vector: np.ndarray) -> None:
        """Store the text's vector (dim,); one that is not a finite unit vector is not stored."""
        if not are_unit_vectors(vector, self.dim):
            return
        try:
            with _connect(self.path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS texts"
                           " (model TEXT, text TEXT, vector BLOB, PRIMARY KEY (model, text))")
                db.execute("INSERT OR REPLACE INTO texts VALUES (?, ?, ?)",
                           (self.key, text, np.asarray(vector, dtype=np.float32).tobytes()))
                db.execute("DELETE FROM texts WHERE rowid <= (SELECT MAX(rowid) FROM texts) - ?", (MAX_ENTRIES,))
        except sqlite3.Error:
            pass


@contextmanager
def _connect(path: Path, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection (`readonly`: one that writes nothing) that commits on success and is closed either way."""
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=1.0) if readonly \
        else sqlite3.connect(path, timeout=1.0)
    try:
        with db:
            yield db
    finally:
        db.close()
