"""Indexing on a CUDA GPU against its ideal, min(E, D), on 12 MP photos and on pre-resized 256 px images.

- E: encoder images/s alone, fp16, on uint8 batches already in (pinned) host memory: the copy to the
  GPU, the normalisation there and the forward pass, as the indexer runs them;
- D: decode images/s alone with every host core (read, hash, draft decode, EXIF transpose, resize,
  crop, uint8 pixels handed to the main process in worker batches joined into encoder batches);
- D, GPU decode: the same with `--gpu-decode` (workers read, hash and parse headers; the main process
  decodes the JPEGs with nvJPEG, turns, crops and resizes them on the GPU, and pHashes their thumbnails);
- end-to-end: `Library.index` into a fresh library (decode, encode, catalog writes and FAISS adds on
  the writer thread, index save), its text tower copied in beforehand so that its one-off export
  is not timed; and the ratio end-to-end / min(E, D); the same with `--gpu-decode` against
  min(E, D GPU decode).

On a machine without CUDA the script says so, measures D (CPU decode) only, and still ends with its JSON line.
The defaults fit in about 5 minutes on a GPU machine with 16 or more cores (the photos are
generated once into the cache folder):

    python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --photos 100 --small 1000      # a quick look on CPU

Medians of --runs runs with min and max; the last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import PHOTO_SIZE, ensure_images, gpu_decode_ips  # noqa: E402  (the same generated photos)

from clipsearch import Library  # noqa: E402
from clipsearch.discover import list_images  # noqa: E402
from clipsearch.models import ModelSpec, load_encoder  # noqa: E402
from clipsearch.batching import default_workers  # noqa: E402
from clipsearch.pipeline import (WORKER_BATCH, decoded_batches, shm_bytes_per_worker, shm_free,  # noqa: E402
                                 workers_for_shm)
from clipsearch.textexport import export_text_model  # noqa: E402
from clipsearch.textmodel import text_model_dir  # noqa: E402
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parent.parent
SMALL_SIZE = (341, 256)  # pre-resized to a 256 px short side, as clip-retrieval's inputs


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def repeat(measure: Callable[[], float], runs: int) -> dict[str, float]:
    return stats([measure() for _ in range(runs)])


def encoder_ips(encoder, folder: Path, batch_size: int, batches: int) -> float:
    files = list_images([folder]).files[:batch_size]
    pixels = next(iter(decoded_batches(files, encoder.pixels, encoder.image_size, batch_size, 0))).pixels
    pixels = pixels.pin_memory() if encoder.device.type == "cuda" else pixels
    encoder.encode_images(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_images(pixels)
    return batches * len(pixels) / (time.perf_counter() - started)


def decode_ips(encoder, folder: Path, batch_size: int, workers: int) -> float:
    files = list_images([folder]).files
    started = time.perf_counter()
    count = sum(len(b.items) for b in decoded_batches(files, encoder.pixels, encoder.image_size, batch_size,
                                                      workers, pin_memory=encoder.device.type == "cuda",
                                                      worker_batch=WORKER_BATCH))
    return count / (time.perf_counter() - started)


def end_to_end_ips(encoder, folder: Path, tower: Path, batch_size: int, gpu_decode: bool = False) -> float:
    with tempfile.TemporaryDirectory() as work:
        library = Path(work) / "library"
        library.mkdir()
        shutil.copytree(tower, text_model_dir(library, encoder.spec))
        with Library.open(library, create=True, encoder=encoder) as lib:
            started = time.perf_counter()
            report = lib.index([folder], model=encoder.spec, device=encoder.device.type, batch_size=batch_size,
                               decode_device="cuda" if gpu_decode else None)
            return report.added / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=500, help="12 MP photos [500]")
    parser.add_argument("--small", type=int, default=5000, help="pre-resized 256 px images [5000]")
    parser.add_argument("--model", default="ViT-B-32", help="random weights: same compute as trained ones")
    parser.add_argument("--batch-size", type=int, help="[from the GPU's free memory]")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".bench-cache" / "gpu")
    add_save_option(parser)
    args = parser.parse_args()

    cores = default_workers(gpu=True)
    photos = ensure_images(args.cache_dir / "photos", args.photos, PHOTO_SIZE, cores)
    small = ensure_images(args.cache_dir / "small", args.small, SMALL_SIZE, cores)
    cuda = torch.cuda.is_available()
    spec = ModelSpec(args.model, None)
    encoder = load_encoder(spec, "cuda" if cuda else "cpu", "fp16" if cuda else "fp32")
    batch_size = args.batch_size or encoder.default_batch_size
    workers = workers_for_shm(cores, shm_bytes_per_worker(encoder.image_size), shm_free())
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else None, "model": f"{args.model} (random weights)",
        "precision": "fp16" if cuda else "fp32", "batch_size": batch_size, "host_cores": os.cpu_count(),
        "decode_workers": workers, "shm_free_mb": (shm_free() or 0) // (1 << 20), "runs": args.runs}
    print(f"{figures['device'] or 'no CUDA GPU'}; {args.model}, batch {batch_size}; {workers} decode workers "
          f"({os.cpu_count()} cores, {figures['shm_free_mb']} MB free in /dev/shm)")
    if not cuda:
        print("No CUDA GPU here: E, GPU decode and end-to-end are skipped; D (CPU decode) only.")
    tower = None
    if cuda:
        tower = Path(tempfile.mkdtemp()) / "tower"
        tower.mkdir()
        tower = export_text_model(tower, encoder)
    for name, folder in (("photos_12mp", photos), ("small_256px", small)):
        row: dict[str, Any] = {"images": len(list_images([folder]).files),
                               "decode_cpu_ips": repeat(lambda: decode_ips(encoder, folder, batch_size, workers),
                                                        args.runs),
                               "decode_gpu_ips": None}
        if cuda:
            row["decode_gpu_ips"] = repeat(lambda: gpu_decode_ips(encoder, folder, batch_size, cores),
                                           args.runs)
            row["encoder_ips"] = repeat(lambda: encoder_ips(encoder, folder, batch_size, 20), args.runs)
            row["end_to_end_ips"] = repeat(lambda: end_to_end_ips(encoder, folder, tower, batch_size), args.runs)
            row["end_to_end_gpu_decode_ips"] = repeat(
                lambda: end_to_end_ips(encoder, folder, tower, batch_size, gpu_decode=True), args.runs)
            ideal = min(row["encoder_ips"]["median"], row["decode_cpu_ips"]["median"])
            row["ratio_to_min_e_d"] = row["end_to_end_ips"]["median"] / ideal
            ideal_gpu = min(row["encoder_ips"]["median"], row["decode_gpu_ips"]["median"])
            row["gpu_decode_ratio_to_min_e_d"] = row["end_to_end_gpu_decode_ips"]["median"] / ideal_gpu
        figures[name] = row
        line = f"  {name}: D {row['decode_cpu_ips']['median']:,.0f} img/s (CPU decode)"
        if cuda:
            line += (f", D {row['decode_gpu_ips']['median']:,.0f} img/s (GPU decode), "
                     f"E {row['encoder_ips']['median']:,.0f} img/s\n"
                     f"    end-to-end {row['end_to_end_ips']['median']:,.0f} img/s = "
                     f"{row['ratio_to_min_e_d']:.2f} x min(E, D); with --gpu-decode "
                     f"{row['end_to_end_gpu_decode_ips']['median']:,.0f} img/s = "
                     f"{row['gpu_decode_ratio_to_min_e_d']:.2f} x min(E, D GPU decode)")
        print(line)
    emit(figures, args)


if __name__ == "__main__":
    main()
