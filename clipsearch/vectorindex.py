"""The FAISS inner-product index over the catalog's vectors, keyed by catalog row id.

The index file is a cache of the catalog: it is written atomically (temporary file, fsync,
rename) and reconciled against the catalog on open, so a crash at any moment leaves at worst
a stale file that `sync` brings up to date.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from .errors import LibraryCorrupt

if TYPE_CHECKING:
    from .catalog import Catalog

INDEX_FILE = "vectors.faiss"


@dataclass
class VectorIndex:
    index: faiss.Index
    kind: str = "flat"

    @classmethod
    def create(cls, dim: int, kind: str = "flat") -> "VectorIndex":
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), kind)

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise LibraryCorrupt(f"The vector index {path} is damaged ({str(e).splitlines()[0]}); "
                                 f"run `clipsearch repair` to rebuild it from the catalog") from None
        return cls(index)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, optionally only among `allowed` ids; -1 ids pad short lists."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is None:
            return self.index.search(queries, max(1, min(k, len(self))))
        if len(allowed) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        k = max(1, min(k, len(allowed), len(self)))
        return self.index.search(queries, k, params=faiss.SearchParameters(sel=selector))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def sync(self, catalog: "Catalog") -> bool:
        """Bring the index in line with the catalog; True if anything changed.

        Cheap when they already agree (a count and a max id); otherwise adds rows newer than
        the index and, if counts still differ, diffs the id sets.
        """
        count, max_id = catalog.count(), catalog.max_id()
        ids = self.ids()
        if len(ids) == count and (ids.max(initial=0) == max_id):
            return False
        newest = int(ids.max(initial=0))
        for chunk_ids, vectors in catalog.iter_vectors(after_id=newest):
            self.add(chunk_ids, vectors)
        ids = self.ids()
        if len(ids) != count:
            wanted = catalog.all_ids()
            self.remove(np.setdiff1d(ids, wanted))
            missing = np.setdiff1d(wanted, ids)
            if len(missing):
                self.add(missing, catalog.vectors_for(missing))
        return True


def rebuild(catalog: "Catalog", dim: int, kind: str = "flat") -> VectorIndex:
    index = VectorIndex.create(dim, kind)
    for ids, vectors in catalog.iter_vectors():
        index.add(ids, vectors)
    return index


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
