"""Which results of a text query are good matches: the query must describe the image better than generic
captions do (see docs/relevance.md).

CLIP scores are not comparable across queries: a nonsense text still has a nearest image, and its cosine
may exceed a real match's. Per image, generic captions ("a photo", "an object"...) give the similarity a
vague description reaches; a query that names what the image shows beats them, one that does not falls
below them. A result is good when its score exceeds the best of them by the model's margin (and, for a
model whose scores are measured to mean the same across queries, a floor).

The captions' vectors are made once per library and model, by the library's own text encoder, and kept in
the library folder (`NEUTRAL_FILE`). Like the text cache, the file is an optimisation only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .models import ModelSpec
from .ranking import are_unit_vectors

NEUTRAL_CAPTIONS: tuple[str, ...] = (
    "a photo", "an image", "a picture", "a photo of something", "something", "a thing", "an object",
    "a picture of an object", "a shape", "a photo of a shape", "a colourful picture", "a close-up photo",
    "a blurry photo", "a drawing", "a screenshot", "text",
)
"""Captions that describe any picture vaguely: the bar a query must clear on each image."""


@dataclass(frozen=True)
class Rule:
    """A model's good-match rule: cosine similarity above `floor` (when set) and above the best neutral
    caption's on the same image plus `margin`."""

    margin: float = 0.0
    floor: float | None = None


RULES: dict[str, Rule] = {"clipsearch-tiny": Rule(margin=-0.13, floor=0.64)}
"""By model architecture, chosen by `benchmarks/bench_relevance.py --choose` (the tiny model: on its held-out
shapes, with English and Chinese queries; its neutral captions include "a shape", which is nearly right for
every image, hence the negative margin)."""
DEFAULT_RULE = Rule()
"""For models not measured: beat every neutral caption, no floor."""
NEUTRAL_FILE = "neutral-vectors.npz"

TextEncoder = Callable[[Sequence[str]], np.ndarray]  # texts -> (len(texts), dim) unit vectors


def rule_for(arch: str) -> Rule:
    return RULES.get(arch, DEFAULT_RULE)


def neutral_vectors(directory: Path, spec: ModelSpec, dim: int, encode: TextEncoder, write: bool = True
                    ) -> np.ndarray:
    """`NEUTRAL_CAPTIONS` encoded by the library's model: (len(NEUTRAL_CAPTIONS), dim) float32 unit vectors,
    read from the library's cache file when it holds them for this model (and they are finite unit vectors of
    `dim`), else encoded (and, with `write`, saved; a file that cannot be written is skipped quietly)."""
    path = directory / NEUTRAL_FILE
    try:
        with np.load(path) as cached:
            if str(cached["model"]) == spec.identity and tuple(cached["texts"].tolist()) == NEUTRAL_CAPTIONS:
                vectors = cached["vectors"].astype(np.float32)
                if len(vectors) == len(NEUTRAL_CAPTIONS) and are_unit_vectors(vectors, dim):
                    return vectors
    except (OSError, KeyError, ValueError):
        pass
    vectors = np.asarray(encode(list(NEUTRAL_CAPTIONS)), dtype=np.float32)
    if write:
        partial = path.with_name(f".{NEUTRAL_FILE}.{os.getpid()}.tmp.npz")
        try:
            np.savez(partial, model=spec.identity, texts=np.array(NEUTRAL_CAPTIONS), vectors=vectors)
            os.replace(partial, path)
        except OSError:
            partial.unlink(missing_ok=True)
    return vectors


def good_matches(scores: np.ndarray, image_vectors: np.ndarray, neutral: np.ndarray, rule: Rule) -> np.ndarray:
    """Whether each result is a good match: scores (n,) are the query's cosine similarities to the results'
    image vectors (n, dim); neutral (m, dim) the neutral captions' vectors. Returns (n,) bool."""
    scores = np.asarray(scores, dtype=np.float32)
    if not len(scores):
        return np.zeros(0, dtype=bool)
    good = scores > (image_vectors @ neutral.T).max(axis=1) + rule.margin
    return good & (scores > rule.floor) if rule.floor is not None else good
