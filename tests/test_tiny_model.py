"""The bundled tiny model really works on its domain (held-out generated shapes)."""
import random

import numpy as np
import torch

from clipsearch.models import TINY_WEIGHTS
from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapeSpec, render
from clipsearch.tiny_eval import evaluate


def test_held_out_recall_and_zero_shot_accuracy(tiny):
    rng = random.Random(55_555)  # a seed the training script never uses
    specs = [ShapeSpec(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS)))
             for _ in range(200)]
    images = torch.stack([tiny.preprocess(render(s, rng)) for s in specs])
    metrics = evaluate(tiny.encode_images(images), specs, tiny.encode_texts)
    assert metrics["recall_at_1"] >= 0.9, metrics
    assert metrics["shape_accuracy"] >= 0.9, metrics
    assert metrics["colour_accuracy"] >= 0.9, metrics


def test_weights_are_small_enough_to_ship():
    assert TINY_WEIGHTS.stat().st_size < 10_000_000
    assert np.isfinite(tiny_weight_norm()).all()


def tiny_weight_norm():
    state = torch.load(TINY_WEIGHTS, map_location="cpu", weights_only=True)
    return np.array([float(v.float().norm()) for v in state.values()])
