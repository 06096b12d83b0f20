"""Pure functions for building query vectors and ranking candidates (no I/O)."""
from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import BadQuery

_WEIGHT = re.compile(r"^(?P<term>.*\S)\s*:\s*(?P<weight>[-+]?(\d+(\.\d*)?|\.\d+))$", re.S)


def split_weight(term: str) -> tuple[str, float]:
    """'sunset:0.5' -> ('sunset', 0.5); a term without a numeric suffix has weight 1."""
    match = _WEIGHT.match(term)
    if match:
        return match["term"], float(match["weight"])
    return term, 1.0


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-8:
        raise BadQuery("The query terms cancel out; there is nothing left to search for")
    return (vector / norm).astype(np.float32)


UNIT_TOLERANCE = 1e-2
"""How far from 1 the L2 norm of a stored or freshly encoded vector may be (float16 models included)."""


def are_unit_vectors(vectors: np.ndarray, dim: int) -> bool:
    """Whether `vectors`, one (dim,) or several (n, dim), are all finite with an L2 norm of 1 within `UNIT_TOLERANCE`:
    what a cache may hold and an encoder must give (not a damaged row, nor the NaN or zero vector of damaged weights)."""
    vectors = np.asarray(vectors)
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != dim or not np.isfinite(vectors).all():
        return False
    with np.errstate(over="ignore", invalid="ignore"):  # a huge damaged value: its norm overflows, and fails
        return bool(np.all(np.abs(np.linalg.norm(vectors, axis=-1) - 1.0) <= UNIT_TOLERANCE))


def combine(weighted: Sequence[tuple[float, np.ndarray]]) -> np.ndarray:
    """Weighted sum of unit term vectors, renormalised (rclip-style add/subtract queries)."""
    if not weighted:
        raise BadQuery("Empty query: give some text, an image, or --add/--image terms")
    return unit(np.sum([w * v for w, v in weighted], axis=0))


def top_k(
    scores: np.ndarray,
    ids: np.ndarray,
    k: int,
    keep: Callable[[int], bool] = lambda _id: True,
    min_score: float | None = None,
) -> list[tuple[int, float]]:
    """The first k (id, score) pairs, in FAISS order, that pass the filters."""
    chosen: list[tuple[int, float]] = []
    for image_id, score in zip(ids.tolist(), scores.tolist()):
        if image_id < 0 or (min_score is not None and score < min_score) or not keep(image_id):
            continue
        chosen.append((image_id, float(score)))
        if len(chosen) == k:
            break
    return chosen



def exhausted(scores: Iterable[float], fetched: int, available: int, min_score: float | None) -> bool:
    """True when fetching more candidates cannot add results (all fetched, or below min_score)."""
    last = list(scores)[-1:] or [None]
    return fetched >= available or (min_score is not None and last[0] is not None and last[0] < min_score)
