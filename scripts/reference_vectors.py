"""Write tests/data/tiny_reference.json: the bundled model's vectors for a few generated pictures and texts.

tests/test_preprocessing.py embeds the same inputs and compares: an open_clip, torch or Pillow upgrade
that changes what the model makes fails that test instead of silently mixing vectors in users'
libraries. Rerun this script only when such a change is understood and intended.

    python scripts/reference_vectors.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from clipsearch.models import load_encoder, model_spec, preprocessing_of
from clipsearch.shapes import ShapeSpec, render

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "tiny_reference.json"
IMAGES = [("red", "star", "white", 0), ("blue", "circle", "black", 1), ("green", "square", "grey", 2),
          ("yellow", "triangle", "black", 3), ("purple", "cross", "white", 4)]
TEXTS = ["a red star", "a blue circle on a black background", "a photo of a dog.", "yellow", "a green square",
         "红色的星星"]
SIZE = 96
CROP = (0, 12, 96, 84)
"""Rendered larger than the model's input and cropped to 4:3, so that resizing and its mode take part."""


def reference_inputs() -> tuple[list, list[str]]:
    return [render(ShapeSpec(c, s, b), random.Random(seed), size=SIZE).crop(CROP) for c, s, b, seed in IMAGES], TEXTS


def main() -> None:
    encoder = load_encoder(model_spec("clipsearch-tiny"), device="cpu")
    images, texts = reference_inputs()
    data = {
        "preprocessing": preprocessing_of(encoder).to_dict(),
        "size": SIZE,
        "crop": CROP,
        "images": [{"colour": c, "shape": s, "background": b, "seed": seed} for c, s, b, seed in IMAGES],
        "image_vectors": np.round(encoder.encode_pil(images), 7).tolist(),
        "texts": texts,
        "text_vectors": np.round(encoder.encode_texts(texts), 7).tolist(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
