"""Train the bundled `clipsearch-tiny` CLIP on generated shapes (deterministic, a few CPU minutes).

    python scripts/train_tiny.py [--steps 800] [--out clipsearch/weights/clipsearch-tiny.pt]

Prints held-out recall@1 and zero-shot shape/colour accuracy; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

from clipsearch.models import TINY_MODEL, TINY_WEIGHTS, register_tiny
from clipsearch.shapes import COLOURS, SHAPES, BACKGROUNDS, ShapeSpec, article, render
from clipsearch.tiny_eval import evaluate

TEMPLATES = (
    "{a} {c} {s} on a {b} background",
    "{a} {c} {s}",
    "a photo of {a} {c} {s}",
    "{c} {s}",
    "a picture of {a} {c} {s} on {b}",
)
SEED = 1234
HELD_OUT_SEED = 987_654


Caption = tuple[str, str | None, str | None]  # text, the colour it names, the shape it names


def caption(spec: ShapeSpec, rng: random.Random) -> Caption:
    """Mostly full captions; sometimes only the colour or only the shape, as zero-shot prompts say."""
    roll = rng.random()
    if roll < 0.1:
        return f"a {spec.shape}", None, spec.shape
    if roll < 0.2:
        return f"{article(spec.colour)} {spec.colour} shape", spec.colour, None
    text = rng.choice(TEMPLATES).format(a=article(spec.colour), c=spec.colour, s=spec.shape, b=spec.background)
    return text, spec.colour, spec.shape


def batch(rng: random.Random, n: int, preprocess) -> tuple[torch.Tensor, list[Caption], list[ShapeSpec]]:
    specs = [ShapeSpec(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))) for _ in range(n)]
    images = torch.stack([preprocess(render(s, rng)) for s in specs])
    return images, [caption(s, rng) for s in specs], specs


def soft_targets(captions: list[Caption], specs: list[ShapeSpec]) -> torch.Tensor:
    """matches[i, j] = 1 where caption j describes image i truly; many do, as batches repeat classes.

    The plain CLIP loss would treat those true pairs as negatives; spreading the target over
    them removes that noise, which matters with only a few dozen classes.
    """
    matches = torch.tensor([[(c is None or c == s.colour) and (h is None or h == s.shape) for _, c, h in captions]
                            for s in specs], dtype=torch.float32)
    return matches


def contrastive_loss(image_features, text_features, scale, matches: torch.Tensor) -> torch.Tensor:
    logits = scale * image_features @ text_features.T
    per_image = -(matches / matches.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    per_text = -(matches.T / matches.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (per_image + per_text) / 2


def lr_at(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


def train(steps: int, batch_size: int, peak_lr: float):
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL)
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.05)
    rng = random.Random(SEED)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr)
        images, captions, specs = batch(rng, batch_size, preprocess)
        image_features, text_features, scale = model(images, tokenizer([c[0] for c in captions]))
        loss = contrastive_loss(image_features, text_features, scale, soft_targets(captions, specs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}", flush=True)
    model.eval()
    return model, preprocess, tokenizer


@torch.inference_mode()
def held_out_metrics(model, preprocess, tokenizer, n: int = 600) -> dict[str, float]:
    rng = random.Random(HELD_OUT_SEED)
    specs = [ShapeSpec(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))) for _ in range(n)]
    images = torch.stack([preprocess(render(s, rng)) for s in specs])
    image_vectors = torch.nn.functional.normalize(model.encode_image(images), dim=-1).numpy()

    def encode_texts(texts):
        return torch.nn.functional.normalize(model.encode_text(tokenizer(list(texts))), dim=-1).numpy()

    return evaluate(image_vectors, specs, encode_texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=TINY_WEIGHTS)
    args = parser.parse_args()
    register_tiny()
    random.seed(SEED)
    np.random.seed(SEED)
    started = time.monotonic()
    model, preprocess, tokenizer = train(args.steps, args.batch_size, args.lr)
    train_s = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, args.out)
    # Evaluate the weights exactly as shipped (fp16 on disk, loaded into fp32).
    shipped, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=str(args.out))
    shipped.eval()
    metrics = held_out_metrics(shipped, preprocess, tokenizer)
    params = sum(p.numel() for p in shipped.parameters())
    result = {**{k: round(v, 4) for k, v in metrics.items()}, "params": params,
              "weights_mb": round(args.out.stat().st_size / 1e6, 2), "train_s": round(train_s, 1), "steps": args.steps}
    for key, value in result.items():
        print(f"{key:16} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
