"""Duplicate detection: precision and recall per transformation, and grouping speed at scale.

Quality. A labelled set is built from originals (the sample photos in sample_data/photos, or
scikit-image's bundled photos when that folder is absent, and half of 36 generated shapes), each
with transformed copies: resized to half, re-encoded as JPEG at quality 20, cropped by 10% and 30%
of its area, brightness +30% and -30%, flipped left-right, rotated 5°, and copied under another
name. The other shapes are unrelated distractors (and every source is a distractor for the
others). Retakes are added too: another render of each shape description, and the right view of
the sample photos' stereo pair, i.e. different pictures of the same scene, like burst shots.
Everything is indexed with the chosen model, `Library.duplicates` runs at several thresholds,
and for each transformation the table shows recall (the copy is grouped with its original) and
precision (of the images grouped with such a copy, the share that really are the same picture).
Retakes grouped with their original count against precision; the "retake" row's recall says how
often that happens (lower is better).

Speed. `find_duplicates` runs, in a fresh process, on a catalog of N synthetic 512-d vectors (clusters of
topics, 30% of them planted copies at cosine 0.96-0.995 to an original, a third of those byte-identical,
each with its original's perceptual fingerprint give or take a few bits, and a later file time), and the
time from reading the catalog to the finished report is printed with its peak RSS, the copies' recall (in
their original's group) and how many members sit below the threshold of their keeper (chaining: 0).

    python benchmarks/bench_dedup.py                        # offline: the bundled tiny model
    python benchmarks/bench_dedup.py --model ViT-B-32 --pretrained laion2b_s34b_b79k
    python benchmarks/bench_dedup.py --quality-only         # skip the timing
    python benchmarks/bench_dedup.py --scale 1000000 --speed-only

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from clipsearch import Library, model_spec
from clipsearch.catalog import Catalog, NewImage
from clipsearch.duplicates import DEFAULT_THRESHOLD, default_series_threshold, default_threshold, find_duplicates
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

SAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "sample_data" / "photos"
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "camera", "coins", "moon", "brick", "grass", "gravel", "clock", "cell", "text")
TRANSFORMS = ("resize", "jpeg", "crop10", "crop30", "bright+30", "bright-30", "hflip", "rotate", "rename")
THRESHOLDS = (0.85, 0.90, 0.93, 0.95, 0.97)
MILD = ("resize", "jpeg", "crop10", "rename")
"""The copies a photo library is full of; the suggested threshold must find every one of them."""
SHAPE_SIZE = 256


@dataclass(frozen=True)
class Item:
    path: str
    source: str
    """Images with the same source are the same picture."""
    kind: str
    """"original", a transformation, "distractor" or "retake"."""


# --- the labelled set ------------------------------------------------------------------------------
def photo_sources() -> list[tuple[str, Image.Image]]:
    if SAMPLE_PHOTOS.is_dir() and any(SAMPLE_PHOTOS.iterdir()):
        files = sorted(p for p in SAMPLE_PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        return [(p.stem, Image.open(p).convert("RGB")) for p in files]
    from skimage import data

    return [(name, Image.fromarray(getattr(data, name)()).convert("RGB")) for name in SKIMAGE_PHOTOS]


def shape_sources(seed: int) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, Image.Image]]]:
    """(originals, retakes): one render per colour × shape on a random background, and a second render of each."""
    from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapeSpec, render

    rng = random.Random(seed)
    originals, retakes = [], []
    for colour, shape in itertools.product(COLOURS, SHAPES):
        spec = ShapeSpec(colour, shape, rng.choice(list(BACKGROUNDS)))
        name = f"{colour}_{shape}_{spec.background}"
        originals.append((name, render(spec, rng, SHAPE_SIZE)))
        retakes.append((name, render(spec, rng, SHAPE_SIZE)))
    return originals, retakes


def transform(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    w, h = image.size
    if kind == "resize":
        return image.resize((w // 2, h // 2), Image.LANCZOS)
    if kind in ("crop10", "crop30"):
        keep = (1 - int(kind[4:]) / 100) ** 0.5  # the share of each side that keeps that share of the area
        cw, ch = round(w * keep), round(h * keep)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return image.crop((x, y, x + cw, y + ch))
    if kind.startswith("bright"):
        return ImageEnhance.Brightness(image).enhance(1 + int(kind[6:]) / 100)
    if kind == "hflip":
        return image.transpose(Image.FLIP_LEFT_RIGHT)
    if kind == "rotate":
        return image.rotate(rng.choice((-5, 5)), Image.BICUBIC)
    raise ValueError(kind)


def build_set(root: Path, seed: int = 7) -> list[Item]:
    """Write the labelled images under root: every photo and half the shapes get transformed copies (and are
    distractors for each other), the other shapes are distractors."""
    rng = random.Random(seed)
    photos = photo_sources()
    shapes, retakes = shape_sources(seed)
    items: list[Item] = []
    for family, sources in (("photo", photos), ("shape", shapes)):
        for index, (name, image) in enumerate(sources):
            source = f"{family}:{name}"
            original = root / family / f"{name}.jpg"
            original.parent.mkdir(parents=True, exist_ok=True)
            image.save(original, quality=95)
            if name.endswith("_right"):  # the sample photos' stereo pair: another shot of motorcycle_left
                items.append(Item(str(original), f"{family}:{name[:-6]}_left:retake", "retake"))
                continue
            if family == "shape" and index % 2:
                items.append(Item(str(original), source, "distractor"))
                continue
            items.append(Item(str(original), source, "original"))
            for kind in TRANSFORMS:
                copy = root / family / kind / f"{name}_{kind}.jpg"
                copy.parent.mkdir(parents=True, exist_ok=True)
                if kind == "rename":
                    shutil.copyfile(original, copy)
                elif kind == "jpeg":
                    image.save(copy, quality=20)
                else:
                    transform(image, kind, rng).save(copy, quality=95)
                items.append(Item(str(copy), source, kind))
    for index, (name, image) in enumerate(retakes):
        if index % 2 == 0:  # retakes of the shapes that have an original in the set
            path = root / "shape" / "retake" / f"{name}_retake.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=95)
            items.append(Item(str(path), f"shape:{name}:retake", "retake"))
    return items


# --- scoring ---------------------------------------------------------------------------------------
def score(items: list[Item], group_of: dict[str, int], tier_of: dict[str, str]) -> dict[str, dict]:
    """Precision and recall per kind of copy, and overall, from each path's group (absent: alone), and the
    tiers the copies of each kind were given."""
    groups = [group_of.get(it.path, -1 - n) for n, it in enumerate(items)]
    originals = {it.source: n for n, it in enumerate(items) if it.kind == "original"}
    members: dict[int, list[int]] = {}
    for n, g in enumerate(groups):
        members.setdefault(g, []).append(n)
    figures: dict[str, dict[str, float | None]] = {}
    for kind in (*TRANSFORMS, "retake"):
        copies = [n for n, it in enumerate(items) if it.kind == kind]
        source_of = (lambda it: it.source.rsplit(":", 1)[0]) if kind == "retake" else (lambda it: it.source)
        hits = [groups[n] == groups[originals[source_of(items[n])]] for n in copies]
        partners = [(n, m) for n in copies for m in members[groups[n]] if m != n]
        right = sum(items[n].source == items[m].source for n, m in partners)
        tiers: dict[str, int] = {}
        for n in copies:
            tier = tier_of.get(items[n].path, "alone")
            tiers[tier] = tiers.get(tier, 0) + 1
        figures[kind] = {
            "recall": round(float(np.mean(hits)), 3),
            "precision": round(right / len(partners), 3) if partners else None,
            "tiers": dict(sorted(tiers.items(), key=lambda t: -t[1])),
        }
    pairs = [(a, b) for ms in members.values() for a, b in itertools.combinations(ms, 2)]
    true_pairs = sum(1 for a, b in itertools.combinations(range(len(items)), 2) if items[a].source == items[b].source)
    right = sum(items[a].source == items[b].source for a, b in pairs)
    figures["all"] = {
        "recall": round(right / true_pairs, 3),
        "precision": round(right / len(pairs), 3) if pairs else None,
        "tiers": {},
    }
    return figures


def similarities(items: list[Item], lib: Library) -> dict[str, dict[str, float]]:
    """Cosine similarity of each kind of copy to its original: min, median, max."""
    vectors = {it.path: lib.image_vector(it.path) for it in items}
    originals = {it.source: it.path for it in items if it.kind == "original"}
    stats = {}
    for kind in (*TRANSFORMS, "retake"):
        values = [float(vectors[it.path] @ vectors[originals[it.source.removesuffix(":retake")]])
                  for it in items if it.kind == kind]
        stats[kind] = {"min": round(min(values), 3), "median": round(float(np.median(values)), 3),
                       "max": round(max(values), 3)}
    distractors = [vectors[it.path] for it in items if it.kind == "distractor"]
    nearest = [max(float(vectors[p] @ d) for d in distractors) for p in originals.values()]
    stats["nearest distractor"] = {"min": round(min(nearest), 3), "median": round(float(np.median(nearest)), 3),
                                   "max": round(max(nearest), 3)}
    return stats


def quality(spec, thresholds: tuple[float, ...]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        items = build_set(Path(tmp) / "images")
        with Library.open(Path(tmp) / "lib", create=True) as lib:
            lib.index([Path(tmp) / "images"], model=spec)
            stats = similarities(items, lib)
            results = {}
            for threshold in thresholds:
                report = lib.duplicates(threshold=threshold, series_threshold=default_series_threshold(threshold))
                group_of = {m.path: g for g, group in enumerate(report.groups) for m in group.members}
                tier_of = {m.path: m.tier for group in report.groups for m in group.members}
                results[threshold] = score(items, group_of, tier_of)
    counts = {kind: sum(it.kind == kind for it in items) for kind in ("original", "distractor", "retake")}
    return {"images": len(items), **counts, "similarity_to_original": stats, "thresholds": results,
            "suggested_threshold": suggest(results)}


def suggest(results: dict[float, dict]) -> float | None:
    """The strictest threshold that still finds every mild copy: precision only grows with the threshold,
    so this is the most protection against look-alikes that costs none of the copies users expect found."""
    passing = [t for t, f in results.items() if all(f[kind]["recall"] == 1.0 for kind in MILD)]
    return max(passing, default=None)


def print_quality(figures: dict, model_label: str) -> None:
    print(f"model: {model_label}; {figures['images']} images: {figures['original']} originals with "
          f"{len(TRANSFORMS)} copies each, {figures['distractor']} distractors, {figures['retake']} retakes")
    print("\ncosine similarity to the original (min / median / max)")
    for kind, s in figures["similarity_to_original"].items():
        print(f"  {kind:20} {s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}")
    thresholds = list(figures["thresholds"])
    shown = min(thresholds, key=lambda t: abs(t - figures["default_threshold"]))
    print("\nrecall / precision per threshold (precision '-' when nothing was grouped)")
    print(f"  {'':10}" + "".join(f"{t:>13.2f}" for t in thresholds))
    for kind in (*TRANSFORMS, "retake", "all"):
        cells = []
        for t in thresholds:
            f = figures["thresholds"][t][kind]
            precision = "-" if f["precision"] is None else f"{f['precision']:.2f}"
            cells.append(f"{f['recall']:.2f} / {precision:>4}")
        print(f"  {kind:10}" + "".join(f"{c:>13}" for c in cells)
              + "   tiers at " + str(shown) + ": "
              + ", ".join(f"{t} {n}" for t, n in figures["thresholds"][shown][kind]["tiers"].items()))
    print(f"\nsuggested threshold (the highest finding every {', '.join(MILD)} copy): {figures['suggested_threshold']}")


# --- speed -----------------------------------------------------------------------------------------
def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(n: int, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, source index, exact-copy flag): 70% originals around n/100 topics, 30% planted copies."""
    rng = np.random.default_rng(seed)
    originals = int(n * 0.7)
    mean = unit(rng.standard_normal(dim))
    topics = unit(rng.standard_normal((max(1, n // 100), dim)))
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, originals, 100_000):
        stop = min(originals, start + 100_000)
        vectors[start:stop] = unit(0.7 * mean + 0.7 * topics[rng.integers(0, len(topics), stop - start)]
                                   + 0.9 * unit(rng.standard_normal((stop - start, dim))))
    source = np.concatenate([np.arange(originals), rng.integers(0, originals, n - originals)])
    exact = np.zeros(n, dtype=bool)
    exact[originals:] = rng.random(n - originals) < 1 / 3
    for start in range(originals, n, 100_000):
        stop = min(n, start + 100_000)
        cos = rng.uniform(0.96, 0.995, (stop - start, 1))
        noisy = unit(vectors[source[start:stop]] + np.sqrt(1 / cos**2 - 1) * unit(rng.standard_normal((stop - start, dim))))
        vectors[start:stop] = np.where(exact[start:stop, None], vectors[source[start:stop]], noisy)
    return vectors, source, exact


def speed(n: int, directory: Path, repeat: int = 1) -> dict:
    import faiss

    vectors, source, exact = synthetic(n)
    hashes = [hashlib.blake2b(str(s if e else i).encode(), digest_size=16).hexdigest()
              for i, (s, e) in enumerate(zip(source, exact))]
    catalog = Catalog.open(directory, create=True)
    catalog.set_meta("dim", vectors.shape[1])
    rng = np.random.default_rng(1)
    sizes, widths = rng.integers(100_000, 5_000_000, n), rng.choice([1024, 2048, 4032], n)
    # Fingerprints: random per original; a copy has its original's with a few bits changed (resized, re-encoded).
    prints = rng.integers(0, 256, (n, 64), dtype=np.uint8)
    copies = np.flatnonzero(source != np.arange(n))
    prints[copies] = prints[source[copies]]
    prints[copies, 0] ^= rng.integers(0, 8, len(copies), dtype=np.uint8)
    for start in range(0, n, 20_000):
        catalog.write_batch([
            NewImage(f"/photos/{i:08}.jpg", int(sizes[i]), 1_600_000_000_000_000_000 + i * 1_000_000_000, hashes[i],
                     int(widths[i]),
                     int(widths[i]) * 3 // 4, "JPEG", None, None, vectors[i], phash=prints[i].tobytes())
            for i in range(start, min(n, start + 20_000))
        ], [], [])
    del vectors
    catalog.close()
    runs = [_group_in_child(directory) for _ in range(repeat)]
    group_of = np.load(directory / "groups.npy")
    copies = np.flatnonzero(source != np.arange(n))
    found = (group_of[copies] >= 0) & (group_of[copies] == group_of[source[copies]])
    seconds = [r["seconds"] for r in runs]
    rss = [r["peak_rss_gb"] for r in runs]
    return {"images": n, "seconds": _spread(seconds), "peak_rss_gb": _spread(rss), "threads": faiss.omp_get_max_threads(),
            "groups": runs[0]["groups"], "chained_members": runs[0]["chained_members"],
            "copies_recall": round(float(found.mean()), 5), "threshold": DEFAULT_THRESHOLD,
            "load_average": round(os.getloadavg()[0], 1)}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def _group_in_child(directory: Path) -> dict:
    """Group the catalog in a fresh process, so its peak RSS is the grouping's own."""
    out = subprocess.run([sys.executable, __file__, "--group-catalog", str(directory)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def group_catalog(directory: Path) -> None:
    """(In the child) find_duplicates on the catalog; save each image's group (-1: none) and print timings."""
    catalog = Catalog.open(directory)
    n = catalog.count()
    started = time.perf_counter()
    report = find_duplicates(catalog, threshold=DEFAULT_THRESHOLD)
    elapsed = time.perf_counter() - started
    catalog.close()
    group_of = np.full(n, -1, dtype=np.int64)
    for g, group in enumerate(report.groups):
        for m in group.members:
            group_of[int(m.path[8:16])] = g
    np.save(directory / "groups.npy", group_of)
    chained = sum(m.similarity < DEFAULT_THRESHOLD - 1e-3 for g in report.groups for m in g.members
                  if m.tier in ("near", "edited"))
    print(json.dumps({"seconds": round(elapsed, 1), "groups": len(report.groups), "chained_members": chained,
                      "peak_rss_gb": round(_peak_rss_kb() / 1e6, 2)}))


def _peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="clipsearch-tiny", help="open_clip architecture [default: clipsearch-tiny]")
    parser.add_argument("--pretrained", help="pretrained weights tag")
    parser.add_argument("--checkpoint", help="local open_clip-compatible weights file")
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)), help="comma-separated cosines")
    parser.add_argument("--scale", type=int, default=100_000, help="synthetic images to group for the timing")
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="timed groupings of the synthetic catalog")
    parser.add_argument("--group-catalog", type=Path, help=argparse.SUPPRESS)
    add_save_option(parser)
    args = parser.parse_args()
    if args.group_catalog:
        return group_catalog(args.group_catalog)
    figures: dict = {}
    if not args.speed_only:
        spec = model_spec(args.model, args.pretrained, args.checkpoint)
        thresholds = tuple(float(t) for t in args.thresholds.split(","))
        figures = {"model": spec.label, "default_threshold": default_threshold(spec.arch), **quality(spec, thresholds)}
        print_quality(figures, spec.label)
    if not args.quality_only:
        with tempfile.TemporaryDirectory() as tmp:
            figures["speed"] = speed(args.scale, Path(tmp), args.repeat)
        s = figures["speed"]
        print(f"\ngrouped {s['images']} synthetic 512-d images in {s['seconds']['median']}s (median of {args.repeat}; "
              f"peak RSS {s['peak_rss_gb']['median']} GB) on {s['threads']} threads, load average "
              f"{s['load_average']} (catalog read, neighbour search, grouping, report); planted copies in their "
              f"original's group: {s['copies_recall']:.3%}; members below the threshold of their keeper: "
              f"{s['chained_members']}")
    sys.stdout.flush()
    emit(figures, args)


if __name__ == "__main__":
    main()
