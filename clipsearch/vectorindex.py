"""The FAISS inner-product index over the catalog's vectors, keyed by catalog row id.

The catalog keeps every vector, so the index is a rebuildable cache of it. Its type follows the
collection's size (see `wanted_kind`):

- "flat": exact search over float32 vectors (`IndexIDMap2(IndexFlatIP)`), below 100,000 vectors.
- "ivf": approximate, from 100,000: 4·√n inverted lists (k-means centroids) holding 8-bit
  scalar-quantised vectors (a quarter of float32's memory); a query scans its `nprobe` nearest lists.
- "ivfpq": approximate, from 5,000,000: the same lists holding product-quantised codes (dim/4 bytes
  per vector: 128 for 512-d, a quarter of SQ8), for collections whose SQ8 index would not fit in
  memory; it fetches ten times the candidates asked for, to rank them by their exact vectors.
- "hnsw": approximate, on request only: a 32-link HNSW graph over 8-bit vectors. FAISS cannot
  delete from it, so deletions are tombstones (id -1) until the next rebuild.

An approximate index is built from the catalog's vectors and its search parameter (nprobe or
efSearch) is calibrated on the spot: two sets of queries are searched against exact answers until
recall@10 reaches the target for both. Image queries are sampled vectors of the collection. Text
queries matter as much and are harder: CLIP's text vectors sit far from the image cloud (the
modality gap), between the clusters an IVF index probes. They are real text vectors from the
library's own model over a vocabulary of captions and prompt templates (calibration.py) when the
model can be loaded; otherwise "modelled gap" queries stand in (`modelled_text_queries`), held to a
stricter target because they are only a model. Searching it fetches twice the candidates asked for
and ranks them by their exact vectors from the catalog, so scores are exact and recall higher.
It is rebuilt when the collection has grown (or shrunk) 4× since it was built.

The file is written atomically (temporary file, fsync, rename) and reconciled against the catalog
on open, so a crash at any moment leaves at worst a stale file that `sync` brings up to date. It is
memory-mapped when read, so opening a library costs no copy of the index; the first change loads a
private, writable copy.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from .errors import LibraryCorrupt

if TYPE_CHECKING:
    import faiss

INDEX_FILE = "vectors.faiss"
KINDS = ("flat", "ivf", "ivfpq", "hnsw")
INDEX_TYPES = ("auto", *KINDS)
IVF_KINDS = ("ivf", "ivfpq")
AUTO_APPROXIMATE = "ivf"
"""The approximate type `auto` picks: on 1,000,000 clustered 512-d vectors it builds faster than HNSW,
deletes natively and reaches the recall goal in less memory (benchmarks/bench_search.py)."""

RECALL_K = 10
RERANK = {"ivf": 2, "ivfpq": 10, "hnsw": 2}
"""An approximate index fetches RERANK × k candidates, which are then ranked by their exact vectors
(product-quantised distances are coarse, so IVF-PQ fetches more)."""
PQ_BITS = 8
TRAIN_PER_LIST = 40
"""k-means training vectors per IVF list (FAISS asks for at least 39)."""
PQ_MIN = 2 * TRAIN_PER_LIST
"""The fewest vectors that train a PQ codebook (1-bit codes); `ivfpq` builds IVF-SQ8 below it."""
HNSW_LINKS = 32
HNSW_TRAIN = 50_000
MAX_EF = 1024

Exact = Callable[[np.ndarray], np.ndarray]
"""ids -> their exact stored vectors, in that order (`Catalog.vectors_for`)."""


class VectorSource(Protocol):
    """What an index is built from: the catalog, or `ArraySource` arrays."""

    def count(self) -> int: ...

    def max_id(self) -> int: ...

    def all_ids(self) -> np.ndarray: ...

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray: ...

    def iter_vectors(self, after_id: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@dataclass(frozen=True)
class IndexPolicy:
    """When `auto` switches index type, when an index is rebuilt, and the recall it is tuned for."""

    approximate_from: int = 100_000
    """`auto` builds an approximate index from this many vectors (and keeps it down to half as many)."""
    compressed_from: int = 5_000_000
    """`auto` builds IVF-PQ rather than IVF-SQ8 from this many vectors (SQ8 needs 2.6 GB for 5,000,000
    512-d vectors, PQ 0.7 GB, ids included), and keeps it down to half as many."""
    growth: float = 4.0
    """Rebuild an approximate index once the collection is this many times larger (or smaller) than it was built for."""
    target_recall: float = 0.97
    """recall@10 the search parameter is calibrated for, for image and text queries alike (the goal is 0.95; the
    margin covers queries unlike the calibration's)."""
    modelled_target_recall: float = 0.99
    """The text-query target when the text queries are modelled rather than the model's own."""
    max_deleted: float = 0.25
    """Rebuild an HNSW index when this share of its entries are deleted."""
    calibration_queries: int = 200
    seed: int = 0


DEFAULT_POLICY = IndexPolicy()


@dataclass(frozen=True)
class BuildRecord:
    """How an index was built; the library keeps it in the catalog's meta table."""

    params: dict[str, Any]
    """`VectorIndex.params()` right after the build, which also tells whether the record fits an index file."""
    built_for: int
    recall_at_10: float | None
    """Measured on the image calibration queries; None for the exact index."""
    build_s: float
    text_recall_at_10: float | None = None
    """Measured on the text calibration queries; None for the exact index."""
    text_queries: str | None = None
    """What the text calibration queries were: "model vocabulary (N texts)" or "modelled gap (N)"."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "BuildRecord | None":
        return cls(**data) if data else None

    def describes(self, index: "VectorIndex") -> bool:
        """Whether this record is about `index` (after a crash between writing the file and the record, it is
        not). Deletions from an HNSW index since it was built do not count."""
        def settings(params: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in params.items() if k != "deleted"}

        return settings(self.params) == settings(index.params())


class VectorIndex:
    """A FAISS index plus what this module knows about its type."""

    def __init__(self, index: "faiss.Index", mapped_from: Path | None = None):
        self.index = index
        self.kind = _kind_of(index)
        self._mapped_from = mapped_from
        self._ids: np.ndarray | None = None

    @classmethod
    def create(cls, dim: int) -> "VectorIndex":
        """An empty exact index."""
        import faiss

        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))

    @classmethod
    def load(cls, path: Path, mapped: bool = True) -> "VectorIndex":
        """Read an index file, by default memory-mapped (read-only until the first change)."""
        import faiss

        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        except RuntimeError as e:
            raise LibraryCorrupt(f"The vector index {path} is damaged ({str(e).splitlines()[0]}); "
                                 f"run `clipsearch repair` to rebuild it from the catalog") from None
        return cls(index, path if mapped else None)

    # --- what it is ------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def approximate(self) -> bool:
        return self.kind != "flat"

    def params(self) -> dict[str, Any]:
        """The index type and its parameters, e.g. {"type": "ivf", "nlist": 4000, "nprobe": 32, "storage": "sq8"}."""
        kind = self.kind
        if kind in IVF_KINDS:
            storage = f"pq{self.index.pq.M}x{self.index.pq.nbits}" if kind == "ivfpq" else "sq8"
            return {"type": kind, "nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe), "storage": storage}
        if kind == "hnsw":
            hnsw = self._inner().hnsw
            return {"type": kind, "links": int(hnsw.nb_neighbors(1)), "ef_search": int(hnsw.efSearch),
                    "storage": "sq8", "deleted": int(self.index.ntotal) - len(self)}
        return {"type": kind, "storage": "fp32"}

    def __len__(self) -> int:
        return len(self.ids()) if self.kind == "hnsw" else int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """The catalog ids in the index (deleted HNSW entries left out)."""
        if self._ids is None:
            self._ids = self._read_ids()
        return self._ids

    def _read_ids(self) -> np.ndarray:
        import faiss

        if self.kind in IVF_KINDS:
            lists = self.index.invlists
            chunks = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                      for i in range(self.index.nlist) if lists.list_size(i)]
            return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return ids[ids >= 0]

    def deleted_share(self) -> float:
        total = int(self.index.ntotal)
        return (total - len(self)) / total if total else 0.0

    def _inner(self) -> "faiss.Index":
        return _inner(self.index)

    # --- changing it ---------------------------------------------------------------
    def _own(self) -> None:
        """Swap a memory-mapped (read-only) index for a private copy before changing it: FAISS aborts
        the process, rather than raising, when a mapped index is written to."""
        if self._mapped_from is not None:
            self.index = VectorIndex.load(self._mapped_from, mapped=False).index
            self._mapped_from = None
            self._ids = None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._own()
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
            self._ids = None

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        self._own()
        if self.kind == "hnsw":
            self._tombstone(np.asarray(ids, dtype=np.int64))
        else:
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        self._ids = None

    def _tombstone(self, ids: np.ndarray) -> None:
        """HNSW cannot remove entries: point them at id -1, which every search leaves out."""
        import faiss

        id_map = faiss.vector_to_array(self.index.id_map)
        id_map[np.isin(id_map, ids)] = -1
        faiss.copy_array_to_vector(id_map, self.index.id_map)

    def adopt(self, other: "VectorIndex") -> None:
        """Take over another index's contents (a rebuild), so that every holder of this object sees them."""
        self.index, self.kind, self._mapped_from, self._ids = other.index, other.kind, other._mapped_from, other._ids

    def set_search_param(self, value: int) -> None:
        """nprobe (IVF) or efSearch (HNSW)."""
        if self.kind in IVF_KINDS:
            self.index.nprobe = int(value)
        elif self.kind == "hnsw":
            self._inner().hnsw.efSearch = int(value)

    # --- searching -------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, exact: Exact | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, optionally only among `allowed` ids; -1 ids pad short lists.

        Every index type returns min(k, len(allowed)) results when `allowed` is in the index. With
        `exact`, an approximate index ranks RERANK × k candidates by their exact vectors.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None and len(allowed) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        rerank = exact is not None and self.approximate
        wanted = k * RERANK[self.kind] if rerank else k
        scores, ids = self._search(queries, wanted, allowed)
        if rerank:
            return _rerank(queries, ids, exact, k)
        return scores, ids

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's search, widened for filters, and widened again for the rows that come back short."""
        import faiss

        live = len(self)
        available = live if allowed is None else min(live, len(allowed))
        if available == 0:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        k = min(k, available)
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif self.kind == "hnsw" and live < self.index.ntotal:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.array([-1], dtype=np.int64)))
        widen = live / max(1, available)  # a filter keeping 1% of the vectors: probe 100× as widely
        with _one_thread(len(queries) == 1):
            params, widest = self._params(selector, k, available, widen)
            scores, ids = self.index.search(queries, k, params=params)
            short = (ids < 0).any(axis=1) if self.approximate else np.zeros(len(ids), bool)
            while short.any() and not widest:
                widen *= 4
                params, widest = self._params(selector, k, available, widen)
                scores[short], ids[short] = self.index.search(queries[short], k, params=params)
                short = (ids < 0).any(axis=1)
            if short.any() and self.kind == "hnsw":
                scores[short], ids[short] = self._scan(queries[short], k, allowed)
        return scores, ids

    def _params(
        self, selector: "faiss.IDSelector | None", k: int, available: int, widen: float
    ) -> tuple["faiss.SearchParameters | None", bool]:
        """Search parameters probing `widen` times as many IVF lists or HNSW candidates, and whether that
        is as wide as it goes. An IVF search also probes enough lists to hold about 2k allowed vectors."""
        import faiss

        if self.kind in IVF_KINDS:
            nlist = int(self.index.nlist)
            nprobe = min(nlist, max(math.ceil(self.index.nprobe * widen), math.ceil(2 * k * nlist / available)))
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe), nprobe == nlist
        if self.kind == "hnsw":
            ef = min(MAX_EF, math.ceil(self._inner().hnsw.efSearch * widen))
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(k, ef)), ef == MAX_EF
        return (faiss.SearchParameters(sel=selector) if selector is not None else None), True

    def _scan(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Scan every vector an HNSW index stores (among `allowed`), for filters too selective for the graph."""
        import faiss

        id_map = faiss.vector_to_array(self.index.id_map)
        positions = np.flatnonzero(id_map >= 0 if allowed is None else np.isin(id_map, allowed))
        storage = faiss.downcast_index(self._inner().storage)
        scores, found = storage.search(queries, k, params=faiss.SearchParameters(
            sel=faiss.IDSelectorBatch(positions.astype(np.int64))))
        return scores, np.where(found >= 0, id_map[np.maximum(found, 0)], -1)

    # --- keeping it -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        import faiss

        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def sync(self, catalog: VectorSource) -> bool:
        """Bring the index in line with the catalog; True if anything changed.

        Cheap when they already agree (a count and a max id); otherwise adds rows newer than
        the index and, if counts still differ, diffs the id sets.
        """
        count, max_id = catalog.count(), catalog.max_id()
        if len(self) == count and self.ids().max(initial=0) == max_id:
            return False
        self._own()
        newest = int(self.ids().max(initial=0))
        for chunk_ids, vectors in catalog.iter_vectors(after_id=newest):
            self.add(chunk_ids, vectors)
        ids = self.ids()
        if len(ids) != count:
            wanted = catalog.all_ids()
            self.remove(np.setdiff1d(ids, wanted))
            missing = np.setdiff1d(wanted, self.ids())
            if len(missing):
                self.add(missing, catalog.vectors_for(missing))
        return True


# --- choosing and building -------------------------------------------------------------------------------
def wanted_kind(choice: str, n: int, current: str, policy: IndexPolicy = DEFAULT_POLICY) -> str:
    """The index type for n vectors: `choice` unless "auto", then flat below `approximate_from`, IVF from
    it and IVF-PQ from `compressed_from`.

    An index built by `auto` is kept down to half its threshold, so that a collection hovering
    around it is not rebuilt back and forth. An empty collection is always flat (nothing to train on).
    """
    if n == 0:
        return "flat"
    if choice == "ivfpq" and n < PQ_MIN:
        return "ivf"
    if choice != "auto":
        return choice
    for kind, threshold in (("ivfpq", policy.compressed_from), (AUTO_APPROXIMATE, policy.approximate_from)):
        if n >= threshold or (current == kind and n >= threshold / 2):
            return kind
    return "flat"


def rebuild_reason(
    index: VectorIndex, record: BuildRecord | None, choice: str, policy: IndexPolicy = DEFAULT_POLICY
) -> str | None:
    """Why `index` should be rebuilt from the catalog now, or None."""
    n, kind = len(index), index.kind
    wanted = wanted_kind(choice, n, kind, policy)
    if wanted != kind:
        return f"{n} vectors call for a {wanted} index, not {kind}"
    if kind == "flat":
        return None
    built_for = record.built_for if record is not None and record.describes(index) else n
    if n >= built_for * policy.growth or n * policy.growth <= built_for:
        return f"the {kind} index was built for {built_for} vectors, and there are {n}"
    if kind == "hnsw" and index.deleted_share() > policy.max_deleted:
        return f"{index.deleted_share():.0%} of the HNSW index's entries are deleted"
    return None


def nlist_for(n: int) -> int:
    """4·√n lists (FAISS's advice is 4-16·√n; the low end trains fastest), with ≥ TRAIN_PER_LIST vectors each."""
    return max(1, min(round(4 * math.sqrt(n)), n // TRAIN_PER_LIST))


def pq_shape(n: int, dim: int) -> tuple[int, int] | None:
    """(sub-vectors, bits per code) of IVF-PQ over n vectors: dim/4 sub-vectors (or the nearest divisor of
    dim below), and 8 bits where n can train 256 centroids per sub-vector (TRAIN_PER_LIST vectors each),
    fewer in small collections; None below PQ_MIN vectors, where IVF-SQ8 is built instead.

    On 100,000 clustered 512-d vectors (benchmarks/bench_search.py's data), recall@10 after re-ranking
    ten times k candidates, at nprobe 64: 0.965 with 64 sub-vectors, 0.984 with 128 (SQ8: 0.98)."""
    if n < PQ_MIN:
        return None
    bits = min(PQ_BITS, int(math.log2(n / TRAIN_PER_LIST)))
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0), bits


def build(source: VectorSource, dim: int, kind: str, policy: IndexPolicy = DEFAULT_POLICY,
          texts: np.ndarray | None = None) -> tuple[VectorIndex, BuildRecord]:
    """A new index of `kind` over every vector of `source`, its search parameter calibrated for image queries
    and for text queries: `texts` (m, dim) unit vectors from the collection's model, else modelled ones."""
    import faiss

    started = time.monotonic()
    n = source.count()
    if kind == "flat" or n == 0:
        index = VectorIndex.create(dim)
        for ids, vectors in source.iter_vectors():
            index.add(ids, vectors)
        return index, BuildRecord(index.params(), n, None, time.monotonic() - started)
    rng = np.random.default_rng(policy.seed)
    all_ids = source.all_ids()
    shape = pq_shape(n, dim) if kind == "ivfpq" else None
    if kind in IVF_KINDS:
        codes = f"PQ{shape[0]}x{shape[1]}" if shape else "SQ8"
        inner = faiss.index_factory(dim, f"IVF{nlist_for(n)},{codes}", faiss.METRIC_INNER_PRODUCT)
        inner.cp.min_points_per_centroid = 1  # we pick nlist and the sample; no warnings on stderr
        inner.cp.niter = 10
        sample = max(inner.nlist, 2 ** shape[1] if shape else 0) * TRAIN_PER_LIST
    else:
        inner = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        sample = HNSW_TRAIN
    training = source.vectors_for(_sample(rng, all_ids, sample))
    inner.train(training)
    index = VectorIndex(inner if kind in IVF_KINDS else faiss.IndexIDMap(inner))
    held_out = _sample(rng, all_ids, min(policy.calibration_queries, n // 2))
    truth = _Truth(source.vectors_for(held_out) if len(held_out) else np.zeros((0, dim), np.float32))
    if texts is not None and len(texts):
        text_truth, text_target = _Truth(texts), policy.target_recall
        described = f"model vocabulary ({len(texts)} texts)"
    else:
        text_truth = _Truth(modelled_text_queries(truth.queries, training.mean(axis=0), rng))
        text_target, described = policy.modelled_target_recall, f"modelled gap ({len(text_truth.queries)})"
    for ids, vectors in source.iter_vectors():
        keep = ~np.isin(ids, held_out)
        index.add(ids[keep], vectors[keep])
        truth.update(ids[keep], vectors[keep])
        text_truth.update(ids[keep], vectors[keep])
    recall, text_recall = calibrate(index, [(truth, policy.target_recall), (text_truth, text_target)],
                                    source.vectors_for)
    index.add(held_out, truth.queries)
    return index, BuildRecord(index.params(), n, recall, time.monotonic() - started, text_recall, described)


MODELLED_NOISE = 2.0
"""Isotropic noise of a modelled text query, relative to the norm of its image residual."""


def modelled_text_queries(images: np.ndarray, mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Text-like queries (n, dim) made from image vectors (n, dim) and the collection's mean image vector (dim,).

    The modelled gap: a text query shares little of the image cloud's common direction (in the bundled tiny
    model the mean text and mean image directions have cosine -0.95) and lies near no single image (a
    caption's best image has cosine about 0.3 in CLIP, 0.9 for an image's nearest neighbour). So each query is
    the image's residual from the mean, plus isotropic noise MODELLED_NOISE times that residual's norm, minus
    the mean; normalised. On the tiny model such queries are easier than its real text vectors (at a given
    nprobe), hence the stricter `modelled_target_recall`."""
    residual = images - mean
    noise = rng.standard_normal(images.shape).astype(np.float32)
    noise *= MODELLED_NOISE * np.linalg.norm(residual, axis=1, keepdims=True)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = residual + noise - mean
    return queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)


def _sample(rng: np.random.Generator, ids: np.ndarray, size: int) -> np.ndarray:
    return np.sort(rng.choice(ids, min(size, len(ids)), replace=False))


class _Truth:
    """The exact RECALL_K nearest neighbours of some queries, gathered chunk by chunk while the index is filled.

    The queries are vectors of the collection held out of the index until it is calibrated: searching
    for a vector the index holds is easier than searching for a new one (for a graph, much easier).
    """

    def __init__(self, queries: np.ndarray):
        self.queries = queries
        self.ids = np.zeros((len(queries), 0), np.int64)
        self._scores = np.zeros((len(queries), 0), np.float32)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = np.hstack([self._scores, self.queries @ vectors.T])
        ids = np.hstack([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))])
        if scores.shape[1] > RECALL_K:
            keep = np.argpartition(-scores, RECALL_K - 1, axis=1)[:, :RECALL_K]
            scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
        self._scores, self.ids = scores, ids

    def recall(self, found: np.ndarray) -> float:
        """Mean share of each query's true neighbours among its first RECALL_K results."""
        if not self.ids.size:
            return 1.0
        return float(np.mean([len(np.intersect1d(row[:RECALL_K], truth)) / len(truth)
                              for row, truth in zip(found, self.ids)]))


def calibrate(index: VectorIndex, query_sets: Sequence[tuple["_Truth", float]], exact: Exact) -> list[float]:
    """Set the smallest nprobe/efSearch (doubling) at which every (queries, target recall@10) set reaches its
    target; returns each set's recall there."""
    recalls = [0.0] * len(query_sets)
    for value in _ladder(index):
        index.set_search_param(value)
        recalls = [truth.recall(index.search(truth.queries, RECALL_K, exact=exact)[1]) for truth, _ in query_sets]
        if all(recall >= target for recall, (_, target) in zip(recalls, query_sets)):
            break
    return [round(recall, 4) for recall in recalls]


def _ladder(index: VectorIndex) -> list[int]:
    if index.kind in IVF_KINDS:
        nlist = int(index.index.nlist)
        return sorted({min(nlist, 2 ** i) for i in range(math.ceil(math.log2(nlist)) + 1)})
    return [2 ** i for i in range(4, int(math.log2(MAX_EF)) + 1)]


@contextmanager
def _one_thread(when: bool) -> Iterator[None]:
    """FAISS on one thread (for this thread only) while `when`. A single query gains little from a second
    core and loses much when the cores are busy: on 2 loaded cores, a flat scan of 100,000 × 512 took
    32 ms on two OpenMP threads and 7 ms on one."""
    import faiss

    if not when:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _rerank(queries: np.ndarray, ids: np.ndarray, exact: Exact, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of each row of candidate `ids` by exact inner product (-1 pads short rows)."""
    width = min(k, ids.shape[1])
    scores = np.full((len(queries), width), -np.inf, np.float32)
    best = np.full((len(queries), width), -1, np.int64)
    for row, (query, candidates) in enumerate(zip(queries, ids)):
        candidates = candidates[candidates >= 0]
        if not len(candidates):
            continue
        exact_scores = exact(candidates) @ query
        order = np.argsort(-exact_scores, kind="stable")[:width]
        scores[row, : len(order)], best[row, : len(order)] = exact_scores[order], candidates[order]
    return scores, best


@dataclass
class ArraySource:
    """Vectors in memory as a `VectorSource` (ids sorted ascending), for tests and benchmarks."""

    ids: np.ndarray
    vectors: np.ndarray

    def count(self) -> int:
        return len(self.ids)

    def max_id(self) -> int:
        return int(self.ids.max(initial=0))

    def all_ids(self) -> np.ndarray:
        return self.ids

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        return self.vectors[np.searchsorted(self.ids, np.asarray(ids, dtype=np.int64))]

    def iter_vectors(self, after_id: int = 0, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        start = int(np.searchsorted(self.ids, after_id, side="right"))
        for i in range(start, len(self.ids), chunk):
            yield self.ids[i : i + chunk], self.vectors[i : i + chunk]


def rebuild(catalog: VectorSource, dim: int, kind: str = "flat", policy: IndexPolicy = DEFAULT_POLICY) -> VectorIndex:
    """`build` without its record (text queries modelled)."""
    return build(catalog, dim, kind, policy)[0]


def _kind_of(index: "faiss.Index") -> str:
    import faiss

    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "hnsw" if isinstance(_inner(index), faiss.IndexHNSW) else "flat"


def _inner(index: "faiss.Index") -> "faiss.Index":
    """The index inside an id map (the index itself for IVF, which keeps ids in its lists)."""
    import faiss

    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
