"""How well a model handles the shapes domain: text→image recall@1 and zero-shot accuracy.

Pure functions over unit vectors, shared by the training script and the tests.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .shapes import COLOURS, SHAPES, ShapeSpec, article

TextEncoder = Callable[[Sequence[str]], np.ndarray]


def recall_at_1(image_vectors: np.ndarray, specs: Sequence[ShapeSpec], encode_texts: TextEncoder) -> float:
    """For each "a {colour} {shape}" query present in the set, does the top image match both?"""
    present = sorted({(s.colour, s.shape) for s in specs})
    queries = encode_texts([f"{article(c)} {c} {s}" for c, s in present])
    best = np.argmax(queries @ image_vectors.T, axis=1)
    return float(np.mean([(specs[i].colour, specs[i].shape) == q for i, q in zip(best, present)]))


def zero_shot_accuracy(image_vectors: np.ndarray, labels: Sequence[str], prompts: Sequence[str],
                       truth: Sequence[str], encode_texts: TextEncoder) -> float:
    predicted = np.argmax(image_vectors @ encode_texts(prompts).T, axis=1)
    return float(np.mean([labels[p] == t for p, t in zip(predicted, truth)]))


def evaluate(image_vectors: np.ndarray, specs: Sequence[ShapeSpec], encode_texts: TextEncoder) -> dict[str, float]:
    shapes, colours = list(SHAPES), list(COLOURS)
    return {
        "recall_at_1": recall_at_1(image_vectors, specs, encode_texts),
        "shape_accuracy": zero_shot_accuracy(image_vectors, shapes, [f"a {s}" for s in shapes],
                                             [s.shape for s in specs], encode_texts),
        "colour_accuracy": zero_shot_accuracy(image_vectors, colours, [f"{article(c)} {c} shape" for c in colours],
                                              [s.colour for s in specs], encode_texts),
    }
