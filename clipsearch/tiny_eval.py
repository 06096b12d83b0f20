"""How well a model handles the shapes domain: text->image recall@1 and zero-shot accuracy.

Pure functions over L2-normalised feature vectors, shared by scripts/train_tiny.py and the tests.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .shapes import COLOURS, SHAPES, ShapeSpec, article

TextEncoder = Callable[[Sequence[str]], np.ndarray]  # texts -> (len(texts), dim) unit vectors


def recall_at_1(image_vectors: np.ndarray, specs: Sequence[ShapeSpec], encode_texts: TextEncoder) -> float:
    """Share of the "a {colour} {shape}" queries, one per pair present, whose top image has both."""
    present = sorted({(s.colour, s.shape) for s in specs})
    queries = encode_texts([f"{article(c)} {c} {s}" for c, s in present])
    best = np.argmax(queries @ image_vectors.T, axis=1)
    return float(np.mean([(specs[i].colour, specs[i].shape) == pair for i, pair in zip(best, present)]))


def zero_shot_accuracy(image_vectors: np.ndarray, truth: Sequence[str], prompts: dict[str, str],
                       encode_texts: TextEncoder) -> float:
    """Share of images whose nearest prompt is the one of their true label (prompts: label -> text)."""
    labels = list(prompts)
    predicted = np.argmax(image_vectors @ encode_texts(list(prompts.values())).T, axis=1)
    return float(np.mean([labels[p] == t for p, t in zip(predicted, truth)]))


def evaluate(image_vectors: np.ndarray, specs: Sequence[ShapeSpec], encode_texts: TextEncoder) -> dict[str, float]:
    return {
        "recall_at_1": recall_at_1(image_vectors, specs, encode_texts),
        "shape_accuracy": zero_shot_accuracy(image_vectors, [s.shape for s in specs],
                                             {s: f"a {s}" for s in SHAPES}, encode_texts),
        "colour_accuracy": zero_shot_accuracy(image_vectors, [s.colour for s in specs],
                                              {c: f"{article(c)} {c} shape" for c in COLOURS}, encode_texts),
    }
