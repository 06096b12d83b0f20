"""The text queries an approximate index is calibrated with (see vectorindex.py): captions and prompt
templates over a vocabulary of everyday photo subjects, encoded by the library's own model.

Users search with text, and CLIP's text vectors sit apart from its image vectors (the modality gap), so
an index tuned on image queries alone misses text queries' neighbours. These texts are deliberately
generic: they are not about any one collection, as a user's first queries are not either.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .encoder import Encoder

SUBJECTS: tuple[str, ...] = (
    "person", "man", "woman", "child", "baby", "group of friends", "dog", "cat", "bird", "horse",
    "car", "bicycle", "boat", "airplane", "train", "house", "building", "street", "beach", "mountain",
    "forest", "lake", "sunset", "snow", "flower", "tree", "food", "birthday cake", "book", "computer",
    "phone", "chair", "kitchen", "garden", "road", "bridge", "sky", "ocean", "field", "city at night",
    "circle", "square", "triangle", "star", "cross", "screenshot", "document", "painting",
)
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple", "black", "white")
TEMPLATES: tuple[str, ...] = ("{}", "a photo of a {}.", "a picture of a {} outside")
BATCH = 64


def calibration_texts() -> list[str]:
    """Every subject in every template, and every third subject in every colour (about 250 texts)."""
    return ([template.format(subject) for subject in SUBJECTS for template in TEMPLATES]
            + [f"a {colour} {subject}" for colour in COLOURS for subject in SUBJECTS[::3]])


def text_queries(encoder: "Encoder") -> np.ndarray:
    """`calibration_texts()` encoded by `encoder`: (about 250, dim) float32 unit vectors."""
    texts = calibration_texts()
    return np.concatenate([encoder.encode_texts(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])
