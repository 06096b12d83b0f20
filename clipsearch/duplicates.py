"""Grouping duplicate images: exact copies, near-duplicates and, optionally, similar series.

Three tiers, reported separately so that burst shots are not mixed in with copies:

- exact: the same bytes (same content hash);
- near: the same picture resized, re-encoded, lightly cropped or edited (cosine >= `threshold`);
- series: bursts and retakes, different pictures of the same moment (`series_threshold` <= cosine).

The grouping is pure numpy over content hashes and unit vectors plus one FAISS k-nearest-neighbour
search: byte-identical files collapse to one representative, each representative's k nearest
neighbours scoring above the lowest threshold become the edges of a graph, and groups are its
connected components. Nothing is compared all-pairs, so memory stays O(n·k) and a million images
group in minutes (see benchmarks/bench_dedup.py).

Duplicate groups are the components over exact and near links. Series groups are the components
over all links down to the series threshold, with each duplicate group standing in by its keeper:
a series lists distinct pictures, and no file is counted in two groups.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from .errors import BadQuery
from .filters import image_date
from .results import DedupReport, DuplicateGroup, DuplicateMember

if TYPE_CHECKING:
    import faiss

    from .catalog import Catalog

DEFAULT_THRESHOLD = 0.95
"""For models bench_dedup.py has not been run with: pretrained CLIPs such as ViT-B-32 score resized
and re-encoded copies at 0.95 and above; no hub is reachable here to measure them (see the README)."""
MEASURED_THRESHOLDS = {"clipsearch-tiny": 0.93}
"""Per architecture, what benchmarks/bench_dedup.py suggests: the strictest threshold that still
finds every resized, re-encoded, 10%-cropped and renamed copy."""
DEFAULT_SERIES_THRESHOLD = 0.90
"""Most retakes in bench_dedup.py score at or above it, most unrelated pictures below."""
NEIGHBOURS = 10
"""Neighbours searched per image; bigger groups still join up through chains of links."""
EXACT_SEARCH_MAX = 20_000
"""Up to this many distinct images the search is exact; above it, an IVF index (see `knn_index`)."""
NPROBE = 8


@dataclass(frozen=True)
class Grouping:
    """Per image, the component it belongs to (labelled by its smallest member's position)."""

    duplicate: np.ndarray
    """Components over exact and near links."""
    series: np.ndarray
    """Components over every link down to the series threshold (equal to `duplicate` without one)."""


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component labels of n nodes given edges i–j: each node's smallest fellow member.

    A vectorised union-find: every round hooks the larger root of each edge that still spans two
    trees onto the smaller one, then pointer-jumps until every node points at its root.
    """
    labels = np.arange(n)
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    while True:
        li, lj = labels[i], labels[j]
        spanning = li != lj
        if not spanning.any():
            return labels
        li, lj = li[spanning], lj[spanning]
        np.minimum.at(labels, np.maximum(li, lj), np.minimum(li, lj))
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        i, j = i[spanning], j[spanning]


def knn_index(vectors: np.ndarray, rows: np.ndarray) -> "faiss.Index":
    """An inner-product index over `vectors[rows]`: exact when small, IVF when large.

    The IVF index has 8·√n lists, trained briefly (6 k-means rounds on 10 vectors per list): lists
    only need to be local, not optimal. Near-duplicates sit so close together that they almost
    always share a list, so probing a few lists finds them while each query scans a tiny fraction
    of the library. On 100,000 synthetic vectors this finds every planted copy down to cosine 0.8.
    """
    import faiss

    n, dim = len(rows), vectors.shape[1]
    if n <= EXACT_SEARCH_MAX:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = 8 * int(math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 6
        index.cp.min_points_per_centroid = 1
        sample = np.random.default_rng(0).choice(n, min(n, 10 * lists), replace=False)
        index.train(vectors[rows[np.sort(sample)]])
        index.nprobe = NPROBE
    for batch in _batches(rows):
        index.add(vectors[batch])
    return index


def neighbour_pairs(
    vectors: np.ndarray, min_score: float, k: int = NEIGHBOURS, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, cosine), i < j, where j is among i's k nearest neighbours (or i among j's) and cosine >= min_score.

    Only `rows` of `vectors` take part (all by default); i and j index into `rows`. The rows are
    copied a batch at a time, so a million 512-d vectors need no second full copy.
    """
    rows = np.arange(len(vectors)) if rows is None else rows
    n = len(rows)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    index = knn_index(vectors, rows)
    found = [index.search(vectors[batch], min(k + 1, n)) for batch in _batches(rows)]
    scores, cols = np.vstack([s for s, _ in found]).ravel(), np.vstack([c for _, c in found]).ravel()
    starts = np.repeat(np.arange(n), min(k + 1, n))
    keep = (cols >= 0) & (cols != starts) & (scores >= min_score)
    i, j = np.minimum(starts, cols)[keep], np.maximum(starts, cols)[keep]
    _, first = np.unique(i * n + j, return_index=True)
    return i[first], j[first], scores[keep][first]


def _batches(rows: np.ndarray, size: int = 65_536) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def group(
    hashes: np.ndarray, vectors: np.ndarray, threshold: float, series_threshold: float | None = None,
    k: int = NEIGHBOURS,
) -> Grouping:
    """Component labels for images given their content hashes and unit vectors (same order)."""
    _, first, of_hash = np.unique(hashes, return_index=True, return_inverse=True)
    lowest = threshold if series_threshold is None else min(threshold, series_threshold)
    i, j, scores = neighbour_pairs(vectors, lowest, k, rows=first)
    near = scores >= threshold
    duplicate = components(len(first), i[near], j[near])
    series = duplicate if series_threshold is None else components(len(first), i, j)
    return Grouping(first[duplicate][of_hash.ravel()], first[series][of_hash.ravel()])


def default_threshold(arch: str | None) -> float:
    """The near-duplicate threshold for a library built with the architecture `arch`."""
    return MEASURED_THRESHOLDS.get(arch or "", DEFAULT_THRESHOLD)


def keeper_key(row: dict[str, Any]) -> tuple:
    """Sort key putting the suggested keeper first: highest resolution, then largest file, then oldest."""
    return (-row["width"] * row["height"], -row["size"], row["date"], row["path"])


def check_thresholds(threshold: float, series_threshold: float | None) -> None:
    if not 0.0 < threshold <= 1.0:
        raise BadQuery(f"The duplicate threshold must be in (0, 1], not {threshold}")
    if series_threshold is not None and not 0.0 < series_threshold < threshold:
        raise BadQuery(f"The series threshold must be above 0 and below the duplicate threshold "
                       f"({threshold}), not {series_threshold}")


def find_duplicates(
    catalog: "Catalog",
    *,
    threshold: float = DEFAULT_THRESHOLD,
    series_threshold: float | None = None,
    allowed: np.ndarray | None = None,
) -> DedupReport:
    """Duplicate groups, and series groups when given a `series_threshold`, among the catalog's images.

    `allowed` restricts the comparison to those catalog ids. Only reads the catalog.
    """
    check_thresholds(threshold, series_threshold)
    started = time.monotonic()
    with catalog.snapshot():
        ids, hashes, vectors = _load(catalog, allowed)
        grouping = group(hashes, vectors, threshold, series_threshold)
        in_duplicates, in_series = _grouped(grouping)
        found = catalog.rows(ids[in_duplicates | in_series])
    rows: dict[int, dict[str, Any]] = {}
    for p in np.flatnonzero(in_duplicates | in_series).tolist():
        row = found[int(ids[p])]
        rows[p] = {**row, "date": image_date(row["taken_at"], row["mtime_ns"])}

    def best(positions: Iterable[int]) -> int:
        return min(positions, key=lambda p: keeper_key(rows[p]))

    keepers = {label: best(members) for label, members in _split(grouping.duplicate, in_duplicates | in_series)}
    duplicates = []
    for label, members in _split(grouping.duplicate, in_duplicates):
        keeper = keepers[label]
        duplicates.append(_group(keeper, _tiers(sorted(members, key=lambda p: keeper_key(rows[p])), hashes),
                                 rows, vectors))
    series = []
    for _, members in _split(grouping.series, in_series):
        units = {keepers[int(grouping.duplicate[p])] for p in members}
        series.append(_group(best(units), dict.fromkeys(units, "series"), rows, vectors))
    return DedupReport(
        threshold=threshold,
        series_threshold=series_threshold,
        images=len(ids),
        groups=tuple(sorted(duplicates, key=_order) + sorted(series, key=_order)),
        reclaimable_bytes=sum(g.reclaimable_bytes for g in duplicates),
        elapsed_s=round(time.monotonic() - started, 3),
    )


def _load(catalog: "Catalog", allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, hashes, vectors) of the allowed images (all when None), in id order; vectors filled in place."""
    ids, hashes = catalog.hashes()
    keep = np.isin(ids, allowed) if allowed is not None else np.ones(len(ids), dtype=bool)
    vectors = np.zeros((int(keep.sum()), int(catalog.get_meta("dim") or 0)), dtype=np.float32)
    filled = 0
    for chunk_ids, chunk in catalog.iter_vectors():
        chunk = chunk[np.isin(chunk_ids, allowed)] if allowed is not None else chunk
        vectors[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return ids[keep], hashes[keep], vectors


def _tiers(ranked: list[int], hashes: np.ndarray) -> dict[int, str]:
    """Members' tiers, best first (the keeper): "exact" for the same bytes as the keeper or as a better
    member (two copies of one resized export: the second is exact), else "near"."""
    seen: set[str] = set()
    tiers = {}
    for p in ranked:
        tiers[p] = "exact" if hashes[p] in seen else "near"
        seen.add(hashes[p])
    return tiers


def _grouped(grouping: Grouping) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the images in a duplicate group, and in a series of two or more duplicate groups."""
    n = len(grouping.duplicate)
    in_duplicates = np.bincount(grouping.duplicate, minlength=n)[grouping.duplicate] >= 2
    pairs = np.unique(grouping.series * n + grouping.duplicate)
    in_series = np.bincount(pairs // n, minlength=n)[grouping.series] >= 2
    return in_duplicates, in_series


def _split(labels: np.ndarray, mask: np.ndarray) -> list[tuple[int, list[int]]]:
    """(label, positions) for each label among the masked positions."""
    positions = np.flatnonzero(mask)
    positions = positions[np.argsort(labels[positions], kind="stable")]
    cuts = np.flatnonzero(np.diff(labels[positions])) + 1
    return [(int(labels[part[0]]), part.tolist()) for part in np.split(positions, cuts) if len(part)]


def _group(keeper: int, tiers: dict[int, str], rows: dict[int, dict[str, Any]], vectors: np.ndarray) -> DuplicateGroup:
    """A group with its keeper first, then the others by similarity to the keeper."""
    others = sorted(
        (_member(rows[p], tier, min(1.0, float(vectors[p] @ vectors[keeper])))
         for p, tier in tiers.items() if p != keeper),
        key=lambda m: (-m.similarity, m.path),
    )
    kinds = {m.tier for m in others}
    return DuplicateGroup(
        tier="exact" if kinds == {"exact"} else "series" if "series" in kinds else "near",
        members=(_member(rows[keeper], "keeper", 1.0), *others),
        reclaimable_bytes=sum(m.size for m in others),
    )


def _member(row: dict[str, Any], tier: str, similarity: float) -> DuplicateMember:
    return DuplicateMember(row["path"], row["size"], row["width"], row["height"], row["date"], tier,
                           round(similarity, 4))


def _order(group: DuplicateGroup) -> tuple:
    """Exact groups first, then the groups that free the most space."""
    return (group.tier != "exact", -group.reclaimable_bytes, group.members[0].path)
