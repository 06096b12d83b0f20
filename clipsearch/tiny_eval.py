"""How well a model handles the shapes domain: text->image recall@1 and zero-shot accuracy, with English
and with Chinese queries.

Pure functions over L2-normalised feature vectors, shared by scripts/train_tiny.py and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .shapes import CHINESE, COLOURS, SHAPES, ShapeSpec, article

TextEncoder = Callable[[Sequence[str]], np.ndarray]  # texts -> (len(texts), dim) unit vectors


@dataclass(frozen=True)
class Prompts:
    """A language's queries: for a colour and shape ("a red star"), a shape alone, a colour alone."""

    both: Callable[[str, str], str]
    shape: Callable[[str], str]
    colour: Callable[[str], str]


PROMPTS: dict[str, Prompts] = {
    "en": Prompts(lambda c, s: f"{article(c)} {c} {s}", lambda s: f"a {s}", lambda c: f"{article(c)} {c} shape"),
    "zh": Prompts(lambda c, s: f"{CHINESE[c][0]}的{CHINESE[s][0]}", lambda s: f"一个{CHINESE[s][0]}",
                  lambda c: f"{CHINESE[c][0]}的形状"),
}
"""By language code: English, and Chinese ("红色的星星", "一个星星", "红色的形状")."""


def recall_at_1(image_vectors: np.ndarray, specs: Sequence[ShapeSpec], encode_texts: TextEncoder,
                prompts: Prompts = PROMPTS["en"]) -> float:
    """Share of the colour-and-shape queries ("a red star"), one per pair present, whose top image has both."""
    present = sorted({(s.colour, s.shape) for s in specs})
    queries = encode_texts([prompts.both(c, s) for c, s in present])
    best = np.argmax(queries @ image_vectors.T, axis=1)
    return float(np.mean([(specs[i].colour, specs[i].shape) == pair for i, pair in zip(best, present)]))


def zero_shot_accuracy(image_vectors: np.ndarray, truth: Sequence[str], prompts: dict[str, str],
                       encode_texts: TextEncoder) -> float:
    """Share of images whose nearest prompt is the one of their true label (prompts: label -> text)."""
    labels = list(prompts)
    predicted = np.argmax(image_vectors @ encode_texts(list(prompts.values())).T, axis=1)
    return float(np.mean([labels[p] == t for p, t in zip(predicted, truth)]))


def evaluate(image_vectors: np.ndarray, specs: Sequence[ShapeSpec], encode_texts: TextEncoder) -> dict[str, float]:
    """Recall@1 and shape and colour accuracy in every language of `PROMPTS`: English keys are bare
    ("recall_at_1"), the others' are prefixed with their code ("zh_recall_at_1")."""
    metrics: dict[str, float] = {}
    for language, prompts in PROMPTS.items():
        prefix = "" if language == "en" else f"{language}_"
        metrics |= {
            f"{prefix}recall_at_1": recall_at_1(image_vectors, specs, encode_texts, prompts),
            f"{prefix}shape_accuracy": zero_shot_accuracy(image_vectors, [s.shape for s in specs],
                                                          {s: prompts.shape(s) for s in SHAPES}, encode_texts),
            f"{prefix}colour_accuracy": zero_shot_accuracy(image_vectors, [s.colour for s in specs],
                                                           {c: prompts.colour(c) for c in COLOURS}, encode_texts),
        }
    return metrics
