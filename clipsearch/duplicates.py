"""Grouping duplicate images into groups around a keeper, each member in one tier.

Tiers (each member is judged against its group's keeper; see the README):

- exact: the same bytes (same content hash) as the keeper or as another member;
- near: the same pixels: cosine >= `threshold` AND perceptual hashes within `perceptual.NEAR_BITS`
  (resized, re-encoded, brightness or contrast changed);
- edited: cosine >= `threshold` but different pixels (cropped, flipped, rotated, filtered);
- series: another shot of the same moment: `series_threshold` <= cosine < `threshold`, pixels differ;
- alias: a hard link or symlink to another member (the same file: never counted, never moved);
- pair: the RAW or the JPEG of the keeper's shot (same folder and stem): kept together.

Videos are compared with videos only, never with photos: a video's vector is the mean of its frames'
unit vectors, and its pixels are its sampled frames' fingerprints and times. Two videos are the same
clip ("near") when their cosine is at or above `threshold`, their lengths agree (`same_length`) and
every sampled frame of each has a twin in the other at the same point in the clip within NEAR_BITS
(`perceptual.sequence_distance`); "edited" within EDIT_BITS. A video whose frames cannot be
fingerprinted is only ever an exact copy, and videos form no series.

Groups are keeper-centred, so links never chain: files are ranked by how original they look
(`keeper_key`), then, best first, each file not yet in a group becomes a keeper and takes every
file not yet in a group whose cosine to it is at or above the threshold. Every member is within the
threshold of its keeper; a file reachable only through another member starts its own group. Series
are grouped the same way afterwards, around the duplicate keepers and the files left alone, at the
series threshold; a file is in one group only.

Byte-identical files collapse to one representative first; candidate links are each
representative's near neighbours, found block by block (exact up to EXACT_SEARCH_MAX, among
PCA-reduced k-means lists above), so a large library is never compared all-pairs.
"""
from __future__ import annotations

import functools
import math
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from .errors import BadQuery
from .filters import image_date
from .perceptual import (EDIT_BITS, HASH_BYTES, NEAR_BITS, SERIES_BITS, clip_fingerprint_of_file, distances,
                         fingerprint_of_file, sequence_distance)
from .results import DedupReport, DuplicateGroup, DuplicateMember

if TYPE_CHECKING:
    from .catalog import Catalog

DEFAULT_THRESHOLD = 0.95
"""For models bench_dedup.py has not been run with: pretrained CLIPs such as ViT-B-32 score resized
and re-encoded copies at 0.95 and above; no hub is reachable here to measure them (see the README)."""
MEASURED_THRESHOLDS = {"clipsearch-tiny": 0.93}
"""Per architecture, what benchmarks/bench_dedup.py suggests: the strictest threshold that still
finds every resized, re-encoded, 10%-cropped and renamed copy."""
SERIES_GAP = 0.05
"""A series threshold not given is the duplicate threshold minus this."""
NEIGHBOURS = 64
"""Candidate partners kept per picture and list probed (its nearest): bounds the pairs of a library of
near-identical pictures; a keeper takes at most this many distinct pictures at once."""
EXACT_SEARCH_MAX = 20_000
"""Up to this many distinct images the candidate search is exact; above it, approximate (see `neighbour_pairs`)."""
PROBES = 12
"""Lists each picture is compared with in the approximate search."""
SEARCH_DIM = 96
"""Principal components the approximate search compares (see `neighbour_pairs`)."""

RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf",
                            ".rw2", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".rwl", ".erf", ".kdc", ".mrw"})
DERIVED_WORDS = frozenset({"copy", "copie", "kopie", "edit", "edited", "export", "exported", "resized", "resize",
                           "scaled", "small", "thumb", "thumbnail", "crop", "cropped", "bright", "brighter",
                           "brightened", "dark", "darker", "darkened", "flip", "hflip", "vflip", "flipped", "mirror",
                           "mirrored", "rotate", "rotated", "recompressed", "compressed", "modified", "web", "final",
                           "filtered", "enhanced", "retouched"})
"""Words (letters only: `crop10` is `crop`) in a file's stem that mark it as made from another file."""
_DERIVED_WORD = re.compile(r"(?<![a-z])(?:" + "|".join(sorted(DERIVED_WORDS)) + r")(?![a-z])")
DERIVED_SUFFIX = re.compile(r"(\(\d+\)|[- ~]\d{1,2})$")
"""`photo (1)`, `photo-1`, `photo 2`, `photo~1`: what file managers and browsers name a second copy."""
EXPORT_FOLDERS = frozenset({"export", "exports", "exported", "edited", "edits", "resized", "copies", "output",
                            "thumbnails", "thumbs"})
KEEPER_REASONS = ("it is under a --prefer folder", "its name looks original (the others look derived)",
                  "it has camera EXIF data", "it has the highest resolution (a video)",
                  "it has the highest bitrate (a video)", "it is the oldest", "it has the highest resolution",
                  "it is the largest file", "it comes first by path (otherwise equal)")
"""Why a keeper won, by the first part of `keeper_key` that sets it apart from the runner-up."""
KEEPER_AMONG = ("under a --prefer folder", "whose names look original", "with camera EXIF data",
                "of the highest resolution", "of the highest bitrate", "as old as it", "of its resolution",
                "of its size")
"""Per part of `keeper_key`, the files that tie with the keeper there: the runner-up's reason holds among them."""
TIER_ORDER = ("exact", "near", "edited", "series")
ALL_BITS = 8 * HASH_BYTES
"""A pHash distance no pair reaches a link with: videos of different lengths, or a video's mirror image."""
LENGTH_TOLERANCE_S = 0.5
LENGTH_TOLERANCE = 0.02
"""Two videos are the same length when they differ by at most the larger of LENGTH_TOLERANCE_S seconds and this
share of the longer (containers round a re-encoded clip's length by a frame or so; a trim cuts more)."""


def default_threshold(arch: str | None) -> float:
    """The near-duplicate threshold for a library built with the architecture `arch`."""
    return MEASURED_THRESHOLDS.get(arch or "", DEFAULT_THRESHOLD)


def default_series_threshold(threshold: float) -> float:
    """The series threshold that goes with a duplicate threshold: SERIES_GAP below it."""
    return round(max(threshold - SERIES_GAP, 0.01), 4)


def check_thresholds(threshold: float, series_threshold: float | None) -> None:
    """Raises BadQuery naming the parameter to change."""
    if not 0.0 < threshold <= 1.0:
        raise BadQuery(f"threshold {threshold} must be in (0, 1]")
    if series_threshold is not None and not 0.0 < series_threshold < threshold:
        raise BadQuery(f"series_threshold {series_threshold} must be above 0 and below threshold {threshold}: "
                       "lower series_threshold or raise threshold")


# --- the keeper rule -----------------------------------------------------------------------------
def looks_derived(path: str) -> bool:
    """A name such as `x copy.jpg`, `x (1).jpg`, `x_resized.jpg`, `x-1.jpg`, or a file in an export folder."""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0].lower()
    return bool(DERIVED_SUFFIX.search(stem) or _DERIVED_WORD.search(stem)) or _export_folder(folder)


@functools.lru_cache(maxsize=65_536)
def _export_folder(folder: str) -> bool:
    return any(part.lower() in EXPORT_FOLDERS for part in folder.split(os.sep)[-3:])


def keeper_key(row: dict[str, Any], prefer: Sequence[str] = ()) -> tuple:
    """Sort key putting the file a photographer would keep first: under a --prefer folder, an original-looking
    name, camera EXIF data (a video: the container's camera model), for a video the highest resolution then the
    highest bitrate (bytes per second: a re-encode loses quality, and its date is often copied), the oldest (date
    taken, else file time, to the second), the highest resolution, the largest file, then by path. `row` is a
    catalog row with its "date" (`image_date`), and for a video "video" True and "duration_s" (None if unknown)."""
    path = row["path"]
    pixels = row["width"] * row["height"]
    video = bool(row.get("video"))
    duration = row.get("duration_s") if video else None
    return (not any(path.startswith(p.rstrip(os.sep) + os.sep) for p in prefer), looks_derived(path),
            not row.get("camera"), -pixels if video else 0, -row["size"] / duration if duration else 0.0,
            row["date"], -pixels, -row["size"], path)


def same_length(a: float | None, b: float | None) -> bool:
    """Whether two videos' lengths (seconds; None where unknown, which never disagrees) agree (LENGTH_TOLERANCE)."""
    return a is None or b is None or abs(a - b) <= _tolerance(max(a, b))


def _tolerance(length_s: float) -> float:
    return max(LENGTH_TOLERANCE_S, LENGTH_TOLERANCE * length_s)


def keeper_reason(keeper: tuple, contenders: Sequence[tuple]) -> str:
    """Why `keeper` (a `keeper_key`) ranks before every other contender's key: the part that sets it apart from
    the runner-up (the contender closest to it), said among the files that tie with it on the parts before,
    where others lost earlier (e.g. "it has the highest resolution (a video) among the files whose names
    look original" when a derived copy has more pixels)."""
    if not contenders:
        return "it is the only file in its group that is not an alias or pair"
    parts = [next((n for n, (a, b) in enumerate(zip(keeper, other)) if a != b), len(KEEPER_REASONS) - 1)
             for other in contenders]
    part = max(parts)
    earlier = sorted({p for p in parts if p < part})
    among = " and ".join(KEEPER_AMONG[p] for p in earlier)
    return KEEPER_REASONS[part] + (f" among the files {among}" if among else "")


# --- candidate pairs ---------------------------------------------------------------------------------
def neighbour_pairs(vectors: np.ndarray, min_score: float, limit: int = NEIGHBOURS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, cosine), i < j, of unit rows with cosine >= min_score (i's `limit` nearest per list probed).

    `vectors`: (n, dim) unit rows, float16 or float32; converted a block at a time, so a million 512-d float16
    vectors need no float32 copy. Exact up to EXACT_SEARCH_MAX rows: one list holds every row. Above, rows are
    compared on their first SEARCH_DIM principal components, in √(PROBES·n) k-means lists: each row's list
    is joined with every row that probes it (its PROBES nearest lists), one matrix product per block of
    rows. A PCA projection never lengthens a distance, so a pair further apart in the projection than two
    unit vectors at min_score (||x − y||² = 2 − 2·cos) cannot reach min_score: dropping it loses nothing.
    Near-duplicates sit so close together that they share a probed list all but always (measured recall
    of planted copies in benchmarks/bench_dedup.py). Cosines are then recomputed from the full rows.
    """
    n = len(vectors)
    i_parts, j_parts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    if n >= 2:
        space = _search_space(vectors)
        home, probes = _lists(space)
        bound = 2.0 - 2.0 * min_score + 2e-3  # margin: float16 rows are unit only to about 1e-3
        for members, queries in _by_list(home, probes):
            for i, j in _join(space, members, queries, bound, limit):
                i_parts.append(np.minimum(i, j))
                j_parts.append(np.maximum(i, j))
    i, j = np.concatenate(i_parts), np.concatenate(j_parts)
    _, first = np.unique(i * n + j, return_index=True)
    i, j = i[first], j[first]
    scores = np.concatenate([np.zeros(0, dtype=np.float32)] + [
        np.einsum("ij,ij->i", vectors[i[s]].astype(np.float32), vectors[j[s]].astype(np.float32))
        for s in _slices(len(i))])
    keep = scores >= min_score
    return i[keep], j[keep], scores[keep]


def _search_space(vectors: np.ndarray) -> np.ndarray:
    """(n, d) float32: the rows themselves up to EXACT_SEARCH_MAX, else their centred PCA projection."""
    n, dim = vectors.shape
    if n <= EXACT_SEARCH_MAX or dim <= SEARCH_DIM:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    import faiss

    pca = faiss.PCAMatrix(dim, SEARCH_DIM)
    sample = np.random.default_rng(0).choice(n, min(n, 64 * dim), replace=False)
    pca.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    space = np.empty((n, SEARCH_DIM), dtype=np.float32)
    for s in _slices(n):
        space[s] = pca.apply(np.ascontiguousarray(vectors[s], dtype=np.float32))
    return space


def _lists(space: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(home, probes): the list each row is stored in (n,) and the PROBES nearest lists it is compared with (n, p).

    One list (no k-means) up to EXACT_SEARCH_MAX rows; above, √(PROBES·n) lists trained briefly (3 rounds
    on 8 rows per list: lists only need to be local); a row's home is its nearest list."""
    n, d = space.shape
    if n <= EXACT_SEARCH_MAX:
        return np.zeros(n, dtype=np.int64), np.zeros((n, 1), dtype=np.int64)
    import faiss

    lists = int(math.sqrt(PROBES * n))
    sample = np.random.default_rng(1).choice(n, min(n, 8 * lists), replace=False)
    kmeans = faiss.Kmeans(d, lists, niter=3, seed=1, min_points_per_centroid=1)
    kmeans.train(space[np.sort(sample)])
    probes = np.empty((n, PROBES), dtype=np.int64)
    for s in _slices(n):
        probes[s] = kmeans.index.search(space[s], PROBES)[1]
    return probes[:, 0].copy(), probes


def _by_list(home: np.ndarray, probes: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(members, queries) per list: the rows it is home to and the rows that probe it."""
    lists = int(probes.max()) + 1
    by_home = np.argsort(home, kind="stable")
    home_cuts = np.searchsorted(home[by_home], np.arange(lists + 1))
    flat = probes.ravel()
    by_probe = np.argsort(flat, kind="stable")
    probe_cuts = np.searchsorted(flat[by_probe], np.arange(lists + 1))
    rows = by_probe // probes.shape[1]
    for lst in range(lists):
        members = by_home[home_cuts[lst] : home_cuts[lst + 1]]
        if len(members):
            yield members, rows[probe_cuts[lst] : probe_cuts[lst + 1]]


def _join(space: np.ndarray, members: np.ndarray, queries: np.ndarray, bound: float,
          limit: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(query rows, member rows) within squared distance `bound` of each other, at most `limit` per query
    (its nearest), blocks of queries against the members by one matrix product each (≤ 16 M entries).

    With m' = (m, −|m|²/2) and q' = (q, 1): |q − m|² <= bound  ⇔  q'·m' >= (|q|² − bound) / 2."""
    block = np.hstack([space[members], -0.5 * np.einsum("ij,ij->i", space[members], space[members])[:, None]])
    step = max(1, (1 << 24) // len(members))
    for start in range(0, len(queries), step):
        rows = queries[start : start + step]
        q = np.hstack([space[rows], np.ones((len(rows), 1), dtype=np.float32)])
        near = q @ block.T  # larger is nearer
        close = near >= (0.5 * (np.einsum("ij,ij->i", q, q) - 1.0 - bound))[:, None]
        crowded = np.flatnonzero(np.count_nonzero(close, axis=1) > limit)
        if len(crowded):
            nearest = np.argpartition(-near[crowded], limit, axis=1)[:, : limit + 1]  # + 1: the row itself
            close[crowded] = False
            close[crowded[:, None], nearest] = True
        r, c = np.nonzero(close)
        r, c = rows[r], members[c]
        mine = r != c
        if mine.any():
            yield r[mine], c[mine]


def _slices(n: int, size: int = 65_536) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# --- keeper-centred grouping ---------------------------------------------------------------------------
def centred_groups(rank: np.ndarray, i: np.ndarray, j: np.ndarray, can_lead: np.ndarray | None = None,
                   can_join: np.ndarray | None = None) -> np.ndarray:
    """Keeper-centred groups of n nodes linked by edges i–j: each node's keeper (itself when it leads or is alone).

    Nodes are visited best `rank` (lowest) first; a node not yet taken becomes a keeper (if it `can_lead`)
    and takes every linked node not yet taken that `can_join`. So every member is linked to its keeper
    directly, never through another member, and each node is in one group.
    """
    n = len(rank)
    keeper = np.arange(n)
    if len(i) == 0:
        return keeper
    src, dst = np.concatenate([i, j]), np.concatenate([j, i])
    order = np.lexsort((rank[dst], src))
    src, dst = src[order], dst[order]
    starts = np.searchsorted(src, np.arange(n + 1)).tolist()
    lead = np.ones(n, dtype=bool) if can_lead is None else can_lead
    join = np.ones(n, dtype=bool) if can_join is None else can_join
    taken = np.zeros(n, dtype=bool)
    nodes = np.unique(src)
    targets = dst.tolist()
    join_list, lead_list, taken_list, keeper_list = join.tolist(), lead.tolist(), taken.tolist(), keeper.tolist()
    for v in nodes[np.argsort(rank[nodes], kind="stable")].tolist():
        if taken_list[v] or not lead_list[v]:
            continue
        taken_list[v] = True
        for u in targets[starts[v] : starts[v + 1]]:
            if not taken_list[u] and join_list[u]:
                taken_list[u] = True
                keeper_list[u] = v
    return np.array(keeper_list, dtype=np.int64)


@dataclass(frozen=True)
class Grouping:
    """Per distinct picture (content hash), its keeper in the duplicate pass and its final keeper."""

    duplicate: np.ndarray
    series: np.ndarray
    """The duplicate keeper for pictures in a duplicate group, else the series keeper (or itself)."""


def group(rank: np.ndarray, i: np.ndarray, j: np.ndarray, duplicate_link: np.ndarray,
          series_link: np.ndarray | None = None) -> Grouping:
    """Duplicate groups over the pairs marked `duplicate_link`, then series over the pairs marked either way,
    led by the duplicate keepers and the pictures left alone, taking only pictures left alone."""
    duplicate = centred_groups(rank, i[duplicate_link], j[duplicate_link])
    if series_link is None or not series_link.any():
        return Grouping(duplicate, duplicate)
    n = len(rank)
    alone = np.bincount(duplicate, minlength=n)[duplicate] == 1
    linked = duplicate_link | series_link
    series = centred_groups(rank, i[linked], j[linked], can_lead=duplicate == np.arange(n), can_join=alone)
    return Grouping(duplicate, np.where(alone, series, duplicate))


@dataclass(frozen=True)
class Clip:
    """A video's pixels: its sampled frames' fingerprints and times, and its length."""

    prints: np.ndarray
    """(frames, 64) uint8, in time order."""
    times_s: np.ndarray
    duration_s: float | None


@dataclass(frozen=True)
class Pixels:
    """Per picture, its perceptual fingerprint (see perceptual.py), where known; per video, its Clip."""

    prints: np.ndarray
    """(pictures, 64) uint8: the photos'."""
    known: np.ndarray
    video: np.ndarray
    """Per picture, whether it is a video (pairs never mix a video with a photo)."""
    clips: dict[int, Clip]
    """The videos whose frames' fingerprints are known, by picture number."""

    def distances(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(known for both, pHash distance, mirrored distance) per pair; for two videos, their
        `sequence_distance` (all 256 bits where their lengths disagree) and no mirrored distance."""
        d, mirrored = distances(self.prints[i], self.prints[j])
        known = self.known[i] & self.known[j]
        for n in np.flatnonzero(self.video[i]).tolist():
            a, b = self.clips.get(int(i[n])), self.clips.get(int(j[n]))
            known[n] = a is not None and b is not None
            d[n] = mirrored[n] = ALL_BITS
            if a is not None and b is not None and same_length(a.duration_s, b.duration_s):
                d[n] = sequence_distance(a.prints, a.times_s, b.prints, b.times_s, _slack(a, b))
        return known, d, mirrored


def links(pixels: Pixels, i: np.ndarray, j: np.ndarray, scores: np.ndarray, threshold: float,
          series_threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate link, series link) per candidate pair: the cosine AND the pixels must agree.

    Duplicate: cosine >= threshold and pHashes within EDIT_BITS, or one the mirror of the other. Series:
    cosine >= series_threshold and pHashes within SERIES_BITS. A pair of photos whose pixels are unknown (a
    file indexed before fingerprints and no longer readable) stands on its cosine alone; a pair of videos
    never does (a mean of frames says too little), and videos form no series."""
    known, d, mirrored = pixels.distances(i, j)
    photos = ~pixels.video[i]
    duplicate = (scores >= threshold) & ((~known & photos) | (known & ((d <= EDIT_BITS) | (mirrored <= NEAR_BITS))))
    if series_threshold is None:
        return duplicate, np.zeros(len(i), dtype=bool)
    return duplicate, (scores >= series_threshold) & photos & (~known | (d <= SERIES_BITS))


# --- the report --------------------------------------------------------------------------------------------
def find_duplicates(
    catalog: "Catalog",
    *,
    threshold: float | None = DEFAULT_THRESHOLD,
    series_threshold: float | None = None,
    allowed: np.ndarray | None = None,
    prefer: Sequence[str] = (),
) -> DedupReport:
    """Duplicate groups, with series when given a `series_threshold`, among the catalog's images.

    `threshold` None: exact duplicates only, from content hashes (no vectors, no FAISS). `allowed`
    restricts the comparison to those catalog ids; files under a `prefer` folder win as keepers.
    Pairs the user dismissed (`Catalog.dismiss_pair`) are never linked. Only reads the catalog; files
    are only stat()ed (aliases) and, for rows indexed without a fingerprint, read.
    """
    if threshold is not None:
        check_thresholds(threshold, series_threshold)
    started = time.monotonic()
    prefer = tuple(os.path.abspath(p) for p in prefer)
    with catalog.snapshot():
        ids, hashes = catalog.hashes()
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, hashes = ids[keep], hashes[keep]
        first, of_hash = _pictures(hashes)
        copies = np.bincount(of_hash, minlength=len(first))
        video = np.isin(ids[first], catalog.video_ids())
        vectors = None
        i = j = np.zeros(0, dtype=np.int64)
        scores = np.zeros(0, dtype=np.float32)
        if threshold is not None:
            vectors = _vectors(catalog, ids[first])
            i, j, scores = _candidates(vectors, video, threshold if series_threshold is None else series_threshold)
            i, j, scores = _undismissed(catalog, hashes[first], i, j, scores)
        involved = _involved(len(first), i, j, copies)
        files = np.flatnonzero(involved[of_hash])
        rows = catalog.rows(ids[files])
        durations = catalog.durations(ids[files[video[of_hash[files]]]]) if video.any() else {}
        pixels = _pixels(catalog, ids, first, np.flatnonzero(involved), rows, video, durations) if len(i) else None
    if pixels is not None:
        duplicate_link, series_link = links(pixels, i, j, scores, threshold, series_threshold)
        kept = duplicate_link | series_link
        i, j, scores, duplicate_link, series_link = i[kept], j[kept], scores[kept], duplicate_link[kept], series_link[kept]
        involved = _involved(len(first), i, j, copies)
    else:
        duplicate_link = series_link = np.zeros(0, dtype=bool)
    keys: dict[int, tuple] = {}
    files_of: dict[int, list[int]] = {}
    for f in np.flatnonzero(involved[of_hash]).tolist():
        row = rows[int(ids[f])]
        row["date"] = image_date(row["taken_at"], row["mtime_ns"])
        row["video"] = bool(video[of_hash[f]])
        clip = pixels.clips.get(int(of_hash[f])) if pixels is not None else None
        row["duration_s"] = clip.duration_s if clip is not None else durations.get(int(ids[f]))
        keys[f] = keeper_key(row, prefer)
        files_of.setdefault(int(of_hash[f]), []).append(f)
    # Each picture's best file stands for it; pictures are ranked by their best file.
    best: dict[int, int] = {}
    for f in sorted(keys, key=keys.__getitem__):
        best.setdefault(int(of_hash[f]), f)
    rank = np.full(len(first), len(first), dtype=np.int64)
    rank[list(best)] = np.arange(len(best))
    grouping = group(rank, i, j, duplicate_link, series_link)
    similarity, bits, mirrored = _to_keeper(grouping.series, np.flatnonzero(involved), vectors, pixels)
    builder = _Builder(ids, of_hash, files_of, rows, keys, best, similarity, bits, mirrored)
    groups = [g for g in (builder.build(k, members) for k, members in _members(grouping, involved)) if g]
    groups.sort(key=_order)
    tiers = [m for g in groups for m in g.members]
    return DedupReport(
        threshold=threshold,
        series_threshold=series_threshold,
        images=len(ids),
        groups=tuple(groups),
        reclaimable_bytes=sum(g.reclaimable_bytes for g in groups),
        exact_copies=sum(m.tier == "exact" for m in tiers),
        exact_bytes=sum(m.size for m in tiers if m.tier == "exact"),
        aliases=sum(m.tier == "alias" for m in tiers),
        exact_only=threshold is None,
        elapsed_s=round(time.monotonic() - started, 3),
    )


def _candidates(vectors: np.ndarray, video: np.ndarray, min_score: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`neighbour_pairs` among the photos and, searched apart, among the videos; never a photo with a video."""
    if not video.any():
        return neighbour_pairs(vectors, min_score)
    i, j, scores = neighbour_pairs(vectors, min_score)
    photos = ~video[i] & ~video[j]
    clips = np.flatnonzero(video)
    ci, cj, cscores = neighbour_pairs(vectors[clips], min_score)
    return (np.concatenate([i[photos], clips[ci]]), np.concatenate([j[photos], clips[cj]]),
            np.concatenate([scores[photos], cscores]))


def _involved(pictures: int, i: np.ndarray, j: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """Pictures with a link or more than one file."""
    involved = copies > 1
    involved[i], involved[j] = True, True
    return involved


def _pixels(catalog: "Catalog", ids: np.ndarray, first: np.ndarray, pictures: np.ndarray,
            rows: dict[int, dict[str, Any]], video: np.ndarray, durations: dict[int, float | None]) -> Pixels:
    """The fingerprints of these pictures (a video's: its frames' and its length): from the catalog, else from
    the file (rows indexed without them)."""
    prints = np.zeros((len(first), 2 * HASH_BYTES), dtype=np.uint8)
    known = np.zeros(len(first), dtype=bool)
    clips: dict[int, Clip] = {}
    stored = catalog.phashes(ids[first[pictures]])
    times = catalog.frame_times(ids[first[pictures[video[pictures]]]]) if video.any() else {}
    for p in pictures.tolist():
        image_id = int(ids[first[p]])
        if video[p]:
            clip = _clip(stored.get(image_id), times.get(image_id), durations.get(image_id), rows[image_id]["path"])
            if clip is not None:
                clips[p] = clip
            continue
        value = stored.get(image_id) or fingerprint_of_file(rows[image_id]["path"])
        if value is not None and len(value) == 2 * HASH_BYTES:
            prints[p], known[p] = np.frombuffer(value, dtype=np.uint8), True
    return Pixels(prints, known, video, clips)


def _clip(value: bytes | None, times_s: np.ndarray | None, duration_s: float | None, path: str) -> Clip | None:
    """A video's Clip from its stored fingerprints, frame times and length, else sampled from the file (rows
    indexed without fingerprints); None if unreadable."""
    if value is None or times_s is None or not len(times_s) or len(value) != len(times_s) * 2 * HASH_BYTES:
        sampled = clip_fingerprint_of_file(path)
        if sampled is None:
            return None
        value, times_s, duration_s = sampled
    return Clip(np.frombuffer(value, dtype=np.uint8).reshape(-1, 2 * HASH_BYTES), times_s, duration_s)


def _slack(a: Clip, b: Clip) -> float:
    """How far apart in time two videos' frames may be and still show the same moment (the length tolerance)."""
    return _tolerance(max(a.duration_s or 0.0, b.duration_s or 0.0, a.times_s[-1], b.times_s[-1]))


def _to_keeper(keeper_of: np.ndarray, pictures: np.ndarray, vectors: np.ndarray | None,
               pixels: Pixels | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine, pHash bits or -1 where unknown, mirrored) of each of these pictures to its keeper `keeper_of[p]`,
    computed in bulk; a keeper is at 1.0 and 0 bits to itself. A picture nearer the keeper's mirror image than the
    keeper (a flipped copy) is `mirrored`, its bits counted to that mirror image. Arrays are indexed by picture
    number."""
    similarity = np.ones(len(keeper_of), dtype=np.float32)
    bits = np.full(len(keeper_of), -1, dtype=np.int64)
    mirrored = np.zeros(len(keeper_of), dtype=bool)
    keepers = keeper_of[pictures]
    if vectors is not None:
        for s in _slices(len(pictures)):
            cos = np.einsum("ij,ij->i", vectors[pictures[s]].astype(np.float32), vectors[keepers[s]].astype(np.float32))
            similarity[pictures[s]] = np.round(np.minimum(cos, 1.0), 4)
    if pixels is not None and len(pictures):
        known, d, flipped = pixels.distances(pictures, keepers)
        nearer = known & (flipped < d)
        bits[pictures] = np.where(known, np.minimum(d, flipped), -1)
        mirrored[pictures] = nearer
    own = pictures[pictures == keepers]
    similarity[own], bits[own], mirrored[own] = 1.0, 0, False
    return similarity, bits, mirrored


def _pictures(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, of_hash): each distinct content hash's first position, ascending, and each file's picture
    number (pictures numbered in the order of their first position, so ids[first] ascends with the ids)."""
    _, first, of_hash = np.unique(hashes, return_index=True, return_inverse=True)
    order = np.argsort(first)
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    return first[order], number[of_hash.ravel()]


def _vectors(catalog: "Catalog", ids: np.ndarray) -> np.ndarray:
    """The unit vectors of these ids (ascending) as float16 (half the memory; cosines move by < 0.001),
    filled a catalog chunk at a time."""
    vectors = np.zeros((len(ids), int(catalog.get_meta("dim") or 0)), dtype=np.float16)
    filled = 0
    for chunk_ids, chunk in catalog.iter_vectors():
        chunk = chunk[np.isin(chunk_ids, ids)]
        vectors[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return vectors


def _undismissed(catalog: "Catalog", hashes: np.ndarray, i: np.ndarray, j: np.ndarray,
                 scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dismissed = catalog.dismissed_pairs()
    if not dismissed or not len(i):
        return i, j, scores
    keep = np.array([tuple(sorted((hashes[a], hashes[b]))) not in dismissed for a, b in zip(i.tolist(), j.tolist())])
    return i[keep], j[keep], scores[keep]


def _members(grouping: Grouping, involved: np.ndarray) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(keeper picture, [(member picture, "duplicate" | "series")]) per group, the keeper itself included."""
    final = grouping.series
    positions = np.flatnonzero(involved)
    positions = positions[np.argsort(final[positions], kind="stable")]
    cuts = np.flatnonzero(np.diff(final[positions])) + 1
    for part in np.split(positions, cuts):
        if len(part):
            keeper = int(final[part[0]])
            yield keeper, [(p, "duplicate" if grouping.duplicate[p] == keeper else "series") for p in part.tolist()]


@dataclass
class _Builder:
    ids: np.ndarray
    of_hash: np.ndarray
    files_of: dict[int, list[int]]
    rows: dict[int, dict[str, Any]]
    keys: dict[int, tuple]
    best: dict[int, int]
    similarity: np.ndarray
    """Per picture, its cosine to its group's keeper picture (rounded to 4 places)."""
    bits: np.ndarray
    """Per picture, its pHash distance to its group's keeper picture (or its mirror image) in bits; -1 where
    unknown."""
    mirrored: np.ndarray
    """Per picture, whether it is nearer the keeper's mirror image than the keeper (a flipped copy)."""

    def build(self, keeper_pic: int, pictures: list[tuple[int, str]]) -> DuplicateGroup | None:
        files = {}
        for pic, link in pictures:
            for f in self.files_of.get(pic, []):
                files[f] = (pic, link)
        if len(files) < 2:
            return None
        ordered = sorted(files, key=self.keys.__getitem__)
        keeper = self.best[keeper_pic]
        tiers: dict[int, str] = {}
        for f in ordered:
            pic, link = files[f]
            if f == keeper:
                tiers[f] = "keeper"
            elif self.best[pic] != f:
                tiers[f] = "exact"
            elif link == "series":
                tiers[f] = "series"
            else:
                bits = self._distance(pic)
                tiers[f] = "near" if bits is not None and bits <= NEAR_BITS and not self.mirrored[pic] else "edited"
        linked_keeper = keeper
        keeper = _resolve_aliases(keeper, ordered, tiers, self.rows, self.ids)
        _mark_pairs(keeper, tiers, self.rows, self.ids)
        kinds = [t for t in tiers.values() if t in TIER_ORDER]
        if not kinds and "pair" not in tiers.values():
            return None
        copies = [t for t in kinds if t != "series"]
        # Why it keeps over the other pictures; over its own byte copies only where there is nothing else.
        contenders = ([self.keys[f] for f in ordered if tiers[f] not in ("keeper", "alias", "pair", "exact")]
                      or [self.keys[f] for f in ordered if tiers[f] == "exact"])
        members = [self._member(keeper, tiers)] + [
            self._member(f, tiers) for f in ordered if f != keeper]
        members[1:] = sorted(members[1:], key=lambda m: (_tier_rank(m.tier), -m.similarity, m.path))
        return DuplicateGroup(
            tier=max(copies, key=TIER_ORDER.index) if copies else "series" if kinds else "pair",
            members=tuple(members),
            keeper_reason=(keeper_reason(self.keys[keeper], contenders)
                           if keeper == linked_keeper else "a symlink to it ranked first; a symlink never keeps"),
            reclaimable_bytes=sum(m.size for m in members if m.tier in ("exact", "near")),
        )

    def _distance(self, pic: int) -> int | None:
        bits = int(self.bits[pic])
        return None if bits < 0 else bits

    def _member(self, f: int, tiers: dict[int, str]) -> DuplicateMember:
        row = self.rows[int(self.ids[f])]
        pic = int(self.of_hash[f])
        return DuplicateMember(int(row["id"]), row["path"], row["size"], row["width"], row["height"], row["date"],
                               tiers[f], float(self.similarity[pic]), self._distance(pic),
                               "video" if row["video"] else "photo", row["duration_s"], bool(self.mirrored[pic]))


def _identity(path: str) -> tuple[tuple[int, int] | None, bool]:
    """((st_dev, st_ino) of the file a path leads to, whether the path is a symlink); None when it is gone."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino), os.path.islink(path)
    except OSError:
        return None, False


def _resolve_aliases(keeper: int, ordered: list[int], tiers: dict[int, str], rows: dict[int, dict[str, Any]],
                     ids: np.ndarray) -> int:
    """Mark hard links and symlinks to another member as "alias"; never keep a symlink over its target.
    Returns the keeper (its target, where the keeper was a symlink to a member)."""
    seen: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    for f in ordered:
        identity, link = _identity(rows[int(ids[f])]["path"])
        if identity is not None:
            seen.setdefault(identity, []).append((f, link))
    for same in seen.values():
        if len(same) < 2:
            continue
        primary = min(same, key=lambda fl: (fl[1], fl[0] != keeper, ordered.index(fl[0])))[0]
        if any(f == keeper for f, _ in same) and primary != keeper:
            tiers[primary], keeper = "keeper", primary
        for f, _ in same:
            if f != primary:
                tiers[f] = "alias"
    return keeper


def _mark_pairs(keeper: int, tiers: dict[int, str], rows: dict[int, dict[str, Any]], ids: np.ndarray) -> None:
    """The RAW of a JPEG keeper, or the JPEG of a RAW keeper (same folder, same stem), is its pair, not a copy."""
    stem, ext = os.path.splitext(rows[int(ids[keeper])]["path"])
    for f, tier in tiers.items():
        other_stem, other_ext = os.path.splitext(rows[int(ids[f])]["path"])
        if (tier not in ("keeper", "alias") and other_stem.lower() == stem.lower()
                and (other_ext.lower() in RAW_EXTENSIONS) != (ext.lower() in RAW_EXTENSIONS)):
            tiers[f] = "pair"


def _tier_rank(tier: str) -> int:
    return ("exact", "near", "edited", "series", "alias", "pair").index(tier)


def _order(group: DuplicateGroup) -> tuple:
    """By tier (exact groups first), then the groups that free the most space."""
    tiers = (*TIER_ORDER, "pair")
    return (tiers.index(group.tier), -group.reclaimable_bytes, group.members[0].path)
