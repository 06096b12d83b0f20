"""Indexing throughput against the ideal pipeline, streaming memory, and unchanged re-index time.

Throughput. N photo-like 12-megapixel JPEGs (about 4 MB each: a smooth colour field, mid-scale
texture, outlined shapes and fine grain, a quarter of them portrait through EXIF orientation 6)
are generated once into the cache folder. Three figures are then measured in the same run:

- E, encoder-only images/s: batches of preprocessed tensors already in memory, all cores;
- D, decode-only images/s: clipsearch's pipeline (read, hash, draft decode, EXIF transpose,
  preprocess, hand-over to the main process) with one worker per core and no encoder;
- end-to-end images/s of `Library.index` (what `clipsearch index` runs: discover, plan, decode,
  encode, catalog writes, FAISS adds, index save) into a fresh library, in a child process so
  its peak RSS (main process plus its largest worker) is its own.

The ideal is 1/(1/E + 1/D) where decoding and encoding share the CPU cores, and min(E, D) where
the encoder runs on a GPU; the ratio is end-to-end/ideal.

Memory and re-index. 1,000 and 10,000 small JPEGs are indexed with the bundled tiny model, each
in its own child process, and their peak RSS compared; the 10,000 are then indexed again
unchanged (stat only, nothing decoded), timed in-process and as a `clipsearch index` command.

With no arguments it runs offline on a randomly initialised ViT-B-32, which has the same compute
as the trained one:

    python benchmarks/bench_index.py
    python benchmarks/bench_index.py --n 200 --workers 1 --batch-size 16
    python benchmarks/bench_index.py --model ViT-B-32 --pretrained laion2b_s34b_b79k --device cuda

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipsearch import Library
from clipsearch.discover import list_images
from clipsearch.library import DEFAULT_BATCH
from clipsearch.models import ModelSpec, load_encoder, model_spec
from clipsearch.pipeline import decoded_batches, default_workers

ROOT = Path(__file__).resolve().parent.parent
PHOTO_SIZE = (4000, 3000)
SMALL_SIZE = (160, 120)


# --- data ---------------------------------------------------------------------
def photo(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """A photo-like picture: what costs time in a JPEG decoder is detail, so it has plenty at every scale."""
    rng = np.random.default_rng(seed)
    w, h = size

    def field(rows: int, cols: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)

    img = Image.blend(field(4, 6), field(45, 60), 0.3)
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x, y, x + int(rng.integers(w // 80, w // 3)), y + int(rng.integers(h // 60, h // 3)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(box, outline=colour, width=int(rng.integers(1, max(2, w // 330))))
    pixels = np.asarray(img, dtype=np.int16)
    pixels += rng.integers(-10, 11, (h, w, 1), dtype=np.int16)  # luminance grain
    pixels += rng.integers(-5, 6, (h, w, 3), dtype=np.int16)  # colour grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _save(args: tuple[Path, int, tuple[int, int]]) -> None:
    path, seed, size = args
    exif = Image.Exif()
    exif[272] = "Bench Camera"  # Model
    exif.get_ifd(0x8769)[36867] = f"2023:{seed % 12 + 1:02d}:{seed % 28 + 1:02d} 12:00:00"
    if seed % 4 == 3:
        exif[274] = 6  # stored sideways, shown as portrait
    tmp = path.with_suffix(".tmp")
    photo(seed, size).save(tmp, "JPEG", quality=92, exif=exif)
    tmp.rename(path)


def ensure_images(folder: Path, n: int, size: tuple[int, int], workers: int) -> Path:
    """Generate the missing ones of n JPEGs (cached across runs), in a process pool."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [(folder / f"{i:05d}.jpg", i, size) for i in range(n) if not (folder / f"{i:05d}.jpg").exists()]
    if missing:
        print(f"generating {len(missing)} {size[0]}x{size[1]} JPEGs in {folder} ...", flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_save, missing, chunksize=8))
    return folder


def subset(folder: Path, n: int, into: Path) -> Path:
    """A tree of the first n cached files (hard links, so listing it costs what a real tree costs)."""
    into.mkdir(parents=True)
    for i in range(n):
        os.link(folder / f"{i:05d}.jpg", into / f"{i:05d}.jpg")
    return into


# --- measurements ----------------------------------------------------------------
def encoder_ips(encoder, folder: Path, n: int, batch_size: int) -> float:
    """Images/s of the encoder alone on preprocessed tensors already in memory."""
    files = list_images([folder]).files[:batch_size]
    pixels = next(iter(decoded_batches(files, encoder.preprocess, encoder.image_size, batch_size, 0))).pixels
    encoder.encode_images(pixels)  # warm-up
    batches = max(2, math.ceil(n / batch_size))
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_images(pixels)
    return batches * len(pixels) / (time.perf_counter() - started)


def decode_ips(encoder, folder: Path, batch_size: int, workers: int) -> float:
    """Images/s of the decode stage alone, handed to the main process as the indexer receives it."""
    files = list_images([folder]).files
    started = time.perf_counter()
    count = sum(len(b.items) for b in decoded_batches(files, encoder.preprocess, encoder.image_size, batch_size,
                                                      workers))
    return count / (time.perf_counter() - started)


def peak_rss_mb() -> float:
    """Peak RSS of this process plus that of its largest finished child (the decode workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def _index_child(spec: ModelSpec, device: str, tree: str, library: str, batch_size: int | None,
                 workers: int | None, reindex: bool, results) -> None:
    encoder = load_encoder(spec, device=device)
    with Library.open(library, create=True, encoder=encoder) as lib:
        started = time.perf_counter()
        report = lib.index([tree], model=spec, device=device, batch_size=batch_size, workers=workers)
        figures = {"seconds": time.perf_counter() - started, "added": report.added,
                   "skipped": len(report.skipped), "peak_rss_mb": peak_rss_mb()}
        if reindex:
            started = time.perf_counter()
            again = lib.index([tree], model=spec, device=device)
            figures.update(reindex_s=time.perf_counter() - started, reindex_unchanged=again.unchanged)
    results.put(figures)


def index_in_child(spec: ModelSpec, device: str, tree: Path, library: Path, batch_size: int | None = None,
                   workers: int | None = None, reindex: bool = False) -> dict:
    """Index a tree into a fresh library in a fresh process (so peaks of memory don't mix)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_index_child, args=(spec, device, str(tree), str(library), batch_size, workers,
                                                   reindex, results))
    child.start()
    figures = results.get()
    child.join()
    return figures


def cli_reindex_s(tree: Path, library: Path) -> float:
    """Wall time of `clipsearch index` on an unchanged tree, interpreter start-up included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipsearch", "index", "--db", str(library), "--quiet", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


# --- main ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="12 MP photos to index [500]")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".bench-cache" / "index",
                        help="where generated images are kept between runs [.bench-cache/index]")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None, help="weights tag [none: random init, offline]")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="[clipsearch's default for the device]")
    parser.add_argument("--workers", type=int, default=None, help="[clipsearch's default]")
    parser.add_argument("--small", type=int, default=10_000, help="small images for memory and re-index [10000]")
    parser.add_argument("--skip-memory", action="store_true", help="only measure throughput")
    args = parser.parse_args()

    spec = model_spec(args.model, args.pretrained, args.checkpoint) if args.pretrained or args.checkpoint \
        else ModelSpec(args.model, None)
    photos = ensure_images(args.cache_dir / "photos", args.n, PHOTO_SIZE, default_workers())
    encoder = load_encoder(spec, device=args.device)
    device = encoder.device.type
    batch_size = args.batch_size or DEFAULT_BATCH.get(device, 32)
    print(f"{spec.label} on {device}, {os.cpu_count()} CPU cores, batch {batch_size}, "
          f"workers {'default' if args.workers is None else args.workers}, {args.n} photos", flush=True)
    figures: dict[str, float | int | str | None] = {"model": spec.label, "device": device, "cores": os.cpu_count(),
                                                    "n": args.n, "batch_size": batch_size, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.cache_dir) as tmp:
        tree = subset(photos, args.n, Path(tmp) / "photos")
        e = encoder_ips(encoder, tree, args.n, batch_size)
        d = decode_ips(encoder, tree, batch_size, default_workers())
        del encoder
        run = index_in_child(spec, args.device, tree, Path(tmp) / "lib", args.batch_size, args.workers)
        assert run["added"] == args.n, run
        ideal = min(e, d) if device != "cpu" else 1 / (1 / e + 1 / d)
        end_to_end = args.n / run["seconds"]
        figures.update(encoder_ips=e, decode_ips=d, ideal_ips=ideal, end_to_end_ips=end_to_end,
                       ratio=end_to_end / ideal, peak_rss_mb=run["peak_rss_mb"])
        print(f"  encoder only (E)      {e:8.1f} images/s")
        print(f"  decode only (D)       {d:8.1f} images/s")
        print(f"  ideal                 {ideal:8.1f} images/s  ({'1/(1/E+1/D)' if device == 'cpu' else 'min(E, D)'})")
        print(f"  end-to-end index      {end_to_end:8.1f} images/s  ({run['seconds']:.1f} s)")
        print(f"  ratio                 {end_to_end / ideal:8.1%}")
        print(f"  peak RSS              {run['peak_rss_mb']:8.0f} MB", flush=True)
        if not args.skip_memory:
            small = ensure_images(args.cache_dir / "small", args.small, SMALL_SIZE, default_workers())
            tiny = model_spec("clipsearch-tiny")
            few = index_in_child(tiny, "cpu", subset(small, args.small // 10, Path(tmp) / "small-few"),
                                 Path(tmp) / "lib-few")
            many = index_in_child(tiny, "cpu", subset(small, args.small, Path(tmp) / "small-many"),
                                  Path(tmp) / "lib-many", reindex=True)
            assert many["reindex_unchanged"] == args.small, many
            cli = cli_reindex_s(Path(tmp) / "small-many", Path(tmp) / "lib-many")
            figures.update({f"rss_{args.small // 10}_mb": few["peak_rss_mb"], f"rss_{args.small}_mb":
                            many["peak_rss_mb"], f"reindex_{args.small}_s": many["reindex_s"],
                            f"reindex_{args.small}_cli_s": cli})
            print(f"  peak RSS, {args.small // 10:>6} small  {few['peak_rss_mb']:8.0f} MB  (tiny model)")
            print(f"  peak RSS, {args.small:>6} small  {many['peak_rss_mb']:8.0f} MB  (tiny model)")
            print(f"  re-index {args.small} unchanged   {many['reindex_s']:6.2f} s  in-process, "
                  f"{cli:.2f} s as a command")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
