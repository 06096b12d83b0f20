"""Zero-shot classification accuracy, with and without prompt ensembling.

The dataset is a folder per class (its name is the label, '_' read as a space). Every image is
embedded the way `clipsearch index` embeds it, every label the way `clipsearch tag` does, once
with the single prompt "a photo of a {}." and once averaged over clipsearch's 18 templates
(CLIP's CIFAR-10 ensemble); an image counts as right when its label is the best (top-1) or among
the five best (top-5) by cosine similarity.

With no arguments it runs offline: the bundled tiny model on generated shapes (one class per
colour and shape, e.g. "red star"). With real weights and data it reproduces the CLIP paper's
zero-shot table, e.g. 91.3% top-1 on CIFAR-10 for ViT-B/32 with OpenAI's weights:

    python benchmarks/bench_zeroshot.py --model ViT-B-32 --pretrained openai --data cifar10-test/

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clipsearch.discover import list_images
from clipsearch.models import load_encoder, model_spec
from clipsearch.batching import default_workers
from clipsearch.pipeline import decoded_batches
from clipsearch.tagging import SINGLE_TEMPLATE, TEMPLATES, label_vectors
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)


def generate_shapes(root: Path, per_class: int, seed: int = 2024) -> Path:
    """A folder per colour and shape (30 classes) of held-out renders, different from the training draws."""
    from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapeSpec, render

    rng = random.Random(seed)
    for colour, shape in itertools.product(COLOURS, SHAPES):
        folder = root / f"{colour}_{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            spec = ShapeSpec(colour, shape, rng.choice(list(BACKGROUNDS)))
            render(spec, rng, size=64).save(folder / f"{i:04}.png")
    return root


def embed_dataset(encoder, root: Path, batch_size: int, workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(image vectors, class index per image, class names) for a folder-per-class dataset."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        sys.exit(f"{root} needs at least two class folders")
    entries, targets = [], []
    for index, folder in enumerate(folders):
        files = list_images([folder]).files
        entries += files
        targets += [index] * len(files)
    vectors, kept = [], []
    position = 0
    for batch in decoded_batches(entries, encoder.preprocess, encoder.image_size, batch_size, workers,
                                 pin_memory=encoder.device.type == "cuda"):
        if batch.pixels is not None:
            vectors.append(encoder.encode_images(batch.pixels))
        kept += [position + i for i, d in enumerate(batch.items) if d.error is None]
        position += len(batch.items)
    if len(kept) < len(entries):
        print(f"skipped {len(entries) - len(kept)} unreadable files", file=sys.stderr)
    return np.vstack(vectors), np.asarray(targets)[kept], [f.name.replace("_", " ") for f in folders]


def accuracy(images: np.ndarray, labels: np.ndarray, targets: np.ndarray, k: int) -> float:
    """The share of images whose class is among the k labels most similar to them."""
    scores = images @ labels.T
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((best == targets[:, None]).any(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="Folder-per-class dataset [default: generated shapes]")
    parser.add_argument("--model", default="clipsearch-tiny", help="open_clip architecture [default: clipsearch-tiny]")
    parser.add_argument("--pretrained", help="Pretrained weights tag (e.g. openai, laion2b_s34b_b79k)")
    parser.add_argument("--checkpoint", help="Local open_clip-compatible weights file")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--per-class", type=int, default=25, help="Generated images per class [default: 25]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers())
    add_save_option(parser)
    args = parser.parse_args()

    spec = model_spec(args.model, args.pretrained, args.checkpoint)
    encoder = load_encoder(spec, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or generate_shapes(Path(tmp) / "shapes", args.per_class)
        started = time.monotonic()
        images, targets, classes = embed_dataset(encoder, root, args.batch_size, args.workers)
        encode_s = time.monotonic() - started
    figures = {}
    for name, templates in (("single", SINGLE_TEMPLATE), ("ensemble", TEMPLATES)):
        labels = label_vectors(encoder, classes, templates)
        figures[name] = {"top1": round(accuracy(images, labels, targets, 1), 4),
                         "top5": round(accuracy(images, labels, targets, 5), 4), "templates": len(templates)}
        print(f"{name:9} ({len(templates):2} templates)  top-1 {figures[name]['top1']:.2%}  "
              f"top-5 {figures[name]['top5']:.2%}")
    emit({
        "model": spec.label, "data": str(args.data) if args.data else f"generated shapes ({args.per_class}/class)",
        "classes": len(classes), "images": len(targets), "device": encoder.device.type,
        "images_per_s": round(len(targets) / encode_s, 1), **figures,
    }, args)


if __name__ == "__main__":
    main()
