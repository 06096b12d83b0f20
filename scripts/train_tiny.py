"""Train the bundled `clipsearch-tiny` CLIP on generated shapes: deterministic, a few CPU minutes.

    python scripts/train_tiny.py [--steps N] [--init WEIGHTS] [--out clipsearch/weights/clipsearch-tiny.pt]

The shipped weights are the English-only model of commit 7fb324a (1,500 steps from scratch), trained on
for 400 steps with captions in both languages:

    git show 7fb324a:clipsearch/weights/clipsearch-tiny.pt > /tmp/english.pt
    python scripts/train_tiny.py --init /tmp/english.pt --steps 400 --lr 1e-3

Half of the captions are English, half Chinese ("红色的星星", "灰色背景上的蓝色圆形"...), so the model
answers queries in both languages. One process trains on one thread while a data-loader worker renders
the next batches, so the result does not depend on the machine's core count. Prints held-out
text->image recall@1 and zero-shot shape/colour accuracy of the weights as saved, with English and
with Chinese queries; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from clipsearch.models import TINY_MODEL, TINY_WEIGHTS, register_tiny
from clipsearch.shapes import CHINESE, COLOURS, SHAPES, ShapeSpec, article, generate, sample_specs, render
from clipsearch.tiny_eval import evaluate

SEED = 1234
HELD_OUT_SEED = 987_654
TEMPLATES = (
    "{a} {c} {s} on a {b} background",
    "{a} {c} {s}",
    "a photo of {a} {c} {s}",
    "{c} {s}",
    "a picture of {a} {c} {s} on {b}",
    "a {s} coloured {c}",
)
CHINESE_TEMPLATES = (
    "{c}的{s}",
    "{c}{s}",
    "一个{c}的{s}",
    "一张{c}{s}的照片",
    "{b}背景上的{c}{s}",
    "{c}{s}的图片",
)
"""Each name is drawn among its synonyms (clipsearch.shapes.CHINESE). The longest caption, "白色背景上的红色正方形",
is 32 tokens with its start and end tokens (CLIP's byte-level BPE spends 2-3 tokens on a Chinese character):
the text context of clipsearch-tiny.json."""
CHINESE_SHARE = 0.5
ANY = -1  # a caption that names no colour (or no shape) matches every colour (or shape)

Caption = tuple[str, int, int]  # text, index of the colour it names or ANY, same for the shape


def caption(spec: ShapeSpec, rng: random.Random) -> Caption:
    """Half English, half Chinese; mostly full captions, sometimes only the shape or only the colour, as
    zero-shot prompts say."""
    colour, shape = list(COLOURS).index(spec.colour), SHAPES.index(spec.shape)
    chinese, roll = rng.random() < CHINESE_SHARE, rng.random()
    if chinese:
        c, s, b = (rng.choice(CHINESE[name]) for name in (spec.colour, spec.shape, spec.background))
        if roll < 0.1:
            return rng.choice(("一个{s}", "{s}")).format(s=s), ANY, shape
        if roll < 0.2:
            return rng.choice(("{c}的形状", "一个{c}的图形")).format(c=c), colour, ANY
        return rng.choice(CHINESE_TEMPLATES).format(c=c, s=s, b=b), colour, shape
    if roll < 0.1:
        return f"a {spec.shape}", ANY, shape
    if roll < 0.2:
        return f"{article(spec.colour)} {spec.colour} shape", colour, ANY
    text = rng.choice(TEMPLATES).format(a=article(spec.colour), c=spec.colour, s=spec.shape, b=spec.background)
    return text, colour, shape


class ShapeBatches(torch.utils.data.Dataset):
    """Batch number i is a pure function of (seed, i): fresh images every step, same on every run."""

    def __init__(self, steps: int, batch_size: int, preprocess: Callable, tokenizer: Callable, seed: int):
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.preprocess, self.tokenizer = preprocess, tokenizer

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        specs = sample_specs(self.batch_size, seed=self.seed * 1_000_003 + step)
        rng = random.Random(f"batch-{self.seed}-{step}")
        captions = [caption(spec, rng) for spec in specs]
        return {
            "images": torch.stack([self.preprocess(render(spec, rng)) for spec in specs]),
            "texts": self.tokenizer([text for text, _, _ in captions]),
            "image_colour": torch.tensor([list(COLOURS).index(s.colour) for s in specs]),
            "image_shape": torch.tensor([SHAPES.index(s.shape) for s in specs]),
            "text_colour": torch.tensor([c for _, c, _ in captions]),
            "text_shape": torch.tensor([s for _, _, s in captions]),
        }


def true_pairs(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """pairs[i, j] = 1 where caption j truly describes image i: many do, as a batch repeats classes."""
    colour_ok = (batch["text_colour"][None, :] == ANY) | (batch["text_colour"][None, :] == batch["image_colour"][:, None])
    shape_ok = (batch["text_shape"][None, :] == ANY) | (batch["text_shape"][None, :] == batch["image_shape"][:, None])
    return (colour_ok & shape_ok).float()


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor,
                     pairs: torch.Tensor) -> torch.Tensor:
    """open_clip's ClipLoss, but with the target spread over all true pairs instead of the diagonal.

    With a few dozen classes, ClipLoss would push apart the many true pairs off the diagonal.
    """
    logits = scale * image_features @ text_features.T
    per_image = -(pairs / pairs.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    per_text = -(pairs.T / pairs.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return (per_image + per_text) / 2


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def start_from(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a previous model's weights into `model`. When that model had a shorter text context, its
    positional embeddings fill the first rows and the other rows keep their initialisation."""
    positions = model.state_dict()["positional_embedding"].clone()
    positions[: len(state["positional_embedding"])] = state["positional_embedding"]
    model.load_state_dict({key: value.float() for key, value in (state | {"positional_embedding": positions}).items()})


def train(steps: int, batch_size: int, peak_lr: float, init: Path | None) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL)
    if init is not None:
        start_from(model, torch.load(init, map_location="cpu", weights_only=True))
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    batches = torch.utils.data.DataLoader(ShapeBatches(steps, batch_size, preprocess, tokenizer, SEED),
                                          batch_size=None, num_workers=1, prefetch_factor=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    model.train()
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr, warmup=steps // 10)
        image_features, text_features, scale = model(batch["images"], batch["texts"])
        loss = contrastive_loss(image_features, text_features, scale, true_pairs(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}", flush=True)
    return model.eval()


@torch.inference_mode()
def held_out_metrics(weights: Path, n: int) -> dict[str, float]:
    """Metrics of the weights as shipped (float16 on disk), on images no training step saw."""
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    specs, images = zip(*generate(n, HELD_OUT_SEED))
    image_vectors = F.normalize(model.encode_image(torch.stack([preprocess(i) for i in images])), dim=-1).numpy()

    def encode_texts(texts: Sequence[str]) -> np.ndarray:
        return F.normalize(model.encode_text(tokenizer(list(texts))), dim=-1).numpy()

    return evaluate(image_vectors, specs, encode_texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--held-out", type=int, default=600, help="number of held-out images to evaluate on")
    parser.add_argument("--init", type=Path, help="start from these weights (a previous model's) instead of random ones")
    parser.add_argument("--out", type=Path, default=TINY_WEIGHTS)
    args = parser.parse_args()
    register_tiny()
    random.seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    started, cpu_started = time.monotonic(), time.process_time()
    model = train(args.steps, args.batch_size, args.lr, args.init)
    train_s, train_cpu_s = time.monotonic() - started, time.process_time() - cpu_started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.half() for key, value in model.state_dict().items()}, args.out)
    result = {key: round(value, 4) for key, value in held_out_metrics(args.out, args.held_out).items()}
    result |= {"params": sum(p.numel() for p in model.parameters()), "weights_bytes": args.out.stat().st_size,
               "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1), "steps": args.steps,
               "init": str(args.init) if args.init else None}
    for key, value in result.items():
        print(f"{key:16} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
