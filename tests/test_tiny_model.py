"""The shipped tiny model, loaded by open_clip itself, works on held-out generated shapes, with English and
with Chinese queries."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipsearch.models import TINY_CONFIG, TINY_MODEL, TINY_WEIGHTS
from clipsearch.shapes import generate
from clipsearch.tiny_eval import evaluate

HELD_OUT_SEED = 55_555  # neither scripts/train_tiny.py's training seed nor its held-out seed


@pytest.fixture(scope="module")
def shipped():
    open_clip.add_model_config(TINY_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=str(TINY_WEIGHTS))
    return model.eval(), preprocess, open_clip.get_tokenizer(TINY_MODEL)


@torch.inference_mode()
def test_held_out_recall_and_zero_shot_accuracy(shipped):
    model, preprocess, tokenizer = shipped
    specs, images = zip(*generate(150, HELD_OUT_SEED))
    image_vectors = F.normalize(model.encode_image(torch.stack([preprocess(i) for i in images])), dim=-1).numpy()

    def encode_texts(texts: Sequence[str]) -> np.ndarray:
        return F.normalize(model.encode_text(tokenizer(list(texts))), dim=-1).numpy()

    metrics = evaluate(image_vectors, specs, encode_texts)
    for language in ("", "zh_"):  # English ("a red star"), Chinese ("红色的星星")
        assert metrics[f"{language}recall_at_1"] >= 0.9, metrics
        assert metrics[f"{language}shape_accuracy"] >= 0.9, metrics
        assert metrics[f"{language}colour_accuracy"] >= 0.9, metrics


def test_weights_are_small_float16_and_finite():
    assert TINY_WEIGHTS.stat().st_size <= 8_000_000
    state = torch.load(TINY_WEIGHTS, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in state.values())
