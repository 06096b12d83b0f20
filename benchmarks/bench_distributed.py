"""Ray's overhead on one machine: the same JPEGs through `Library.index` and through `embed` + `ingest`.

N small JPEGs of generated shapes (320x240, cached in .bench-cache/ray) are indexed twice:

- single machine: `Library.index` into a fresh library (the encoder loaded beforehand);
- Ray: `clipsearch.distributed.embed` on a local Ray cluster started beforehand with one CPU per
  usable core (its start is timed apart), then `Library.ingest` of the shards. A first job over
  one shard's worth of the files (timed apart: Ray's fixed cost per job, mostly starting the
  workers and loading the model into the actors) warms the cluster's worker processes, as a
  long job would be.

It prints both throughputs, Ray's overhead ratio (Ray's time over the single-machine time), the
cluster start, and the largest difference between the two libraries' vectors. With a random-init
model (`--model ViT-B-32`: real compute, offline) each process draws its own weights, so the
vectors are not compared.

    python benchmarks/bench_distributed.py
    python benchmarks/bench_distributed.py --n 100 --model ViT-B-32 --shard-size 25

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clipsearch import Library
from clipsearch.distributed import embed
from clipsearch.models import TINY_MODEL, ModelSpec, load_encoder, model_spec
from clipsearch.batching import usable_cores
from clipsearch.shapes import generate
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parent.parent
SIZE = 320


def ensure_images(folder: Path, n: int) -> Path:
    """The first n JPEGs of a cached set, generated when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) < n:
        for i, (spec, image) in enumerate(generate(n, seed=7, size=SIZE)):
            image.save(folder / f"{i:05d}_{spec.colour}_{spec.shape}.jpg", quality=90)
    return folder


def vectors(library: Path) -> dict[str, np.ndarray]:
    with sqlite3.connect(library / "catalog.db") as db:
        return {p: np.frombuffer(v, np.float32) for p, v in db.execute("SELECT path, vector FROM images")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--model", default=TINY_MODEL, help="clipsearch-tiny, or an open_clip arch (random init)")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    add_save_option(parser)
    args = parser.parse_args()

    import ray

    spec = model_spec(TINY_MODEL) if args.model == TINY_MODEL else ModelSpec(args.model, None)
    source = ensure_images(ROOT / ".bench-cache" / "ray" / str(args.n), args.n)
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        encoder = load_encoder(spec, "cpu")
        with Library.open(work / "single", create=True, encoder=encoder) as lib:
            started = time.perf_counter()
            single = lib.index([source], model=spec, batch_size=args.batch_size)
            single_s = time.perf_counter() - started

        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR")
        init_s = time.perf_counter() - started
        try:
            started = time.perf_counter()
            embed(sorted(source.glob("*.jpg"))[: args.shard_size], work / "warm-up", spec, batch_size=args.batch_size)
            warmup_s = time.perf_counter() - started
            started = time.perf_counter()
            report = embed([source], work / "shards", spec, shard_size=args.shard_size, batch_size=args.batch_size)
            ray_s = time.perf_counter() - started
        finally:
            ray.shutdown()
        with Library.open(work / "ray", create=True) as lib:
            started = time.perf_counter()
            lib.ingest(work / "shards")
            ingest_s = time.perf_counter() - started

        a, b = vectors(work / "single"), vectors(work / "ray")
        diff = None if spec.pretrained is None else max(float(np.abs(a[p] - b[p]).max()) for p in a)
        assert a.keys() == b.keys() and single.added == report.embedded == args.n
    figures = {
        "n": args.n, "model": args.model, "cores": cores, "shards": report.shards, "batch_size": args.batch_size,
        "single_s": round(single_s, 2), "single_ips": round(args.n / single_s, 1),
        "ray_init_s": round(init_s, 2), "ray_first_job_s": round(warmup_s, 2),
        "ray_embed_s": round(ray_s, 2), "ray_ips": round(args.n / ray_s, 1), "ingest_s": round(ingest_s, 2),
        "ray_overhead_ratio": round((ray_s + ingest_s) / single_s, 2), "max_abs_vector_diff": diff,
    }
    print(f"single machine: {figures['single_ips']} images/s; Ray: {figures['ray_ips']} images/s embed "
          f"+ {ingest_s:.2f}s ingest (cluster start {init_s:.1f}s, first {args.shard_size}-file job "
          f"{warmup_s:.1f}s); overhead ratio {figures['ray_overhead_ratio']}", file=sys.stderr)
    emit(figures, args)


if __name__ == "__main__":
    main()
