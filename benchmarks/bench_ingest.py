"""Peak memory of `clipsearch ingest`: embedding shards of synthetic 512-d vectors merged into a new library.

The shards hold n rows of bench_search.py's CLIP-like mixture (seeded), recorded as ViT-B-32; the model's
weights are not needed (the index is then calibrated on modelled text queries). Each run is a fresh
`clipsearch ingest SHARDS --db LIB` process whose peak resident memory (ru_maxrss from wait4) and wall
time are measured; the index `auto` picks is built from the catalog chunk by chunk, trained on a sample.

    python benchmarks/bench_ingest.py --n 1000000            # about 10 minutes on 2 cores
    python benchmarks/bench_ingest.py --n 100000 --runs 3

The last line printed is one JSON object keyed by n: {"1000000": {"peak_rss_mb": {"median", "min", "max"}, ...}}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from bench_search import DIM, mixture, sample
from clipsearch.models import ModelSpec
from clipsearch.shards import write_shard
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parent.parent
SPEC = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")


def write_shards(folder: Path, n: int, shard_rows: int) -> None:
    m = mixture(DIM)
    folder.mkdir(parents=True)
    for first in range(0, n, shard_rows):
        rows = min(shard_rows, n - first)
        vectors = sample(m, rows, seed=1000 + first // shard_rows)
        write_shard(folder / f"shard-{first // shard_rows:06d}.parquet", {
            "path": [f"/bench/photos/{(first + i) // 1000:05d}/{first + i:08d}.jpg" for i in range(rows)],
            "size": [100_000] * rows, "mtime_ns": [1] * rows, "hash": [f"h{first + i}" for i in range(rows)],
            "width": [640] * rows, "height": [480] * rows, "format": ["JPEG"] * rows, "taken_at": [None] * rows,
            "camera": [None] * rows, "vector": vectors, "error": [None] * rows, "transient": [False] * rows,
        }, SPEC, DIM)


def ingest_once(shards: Path, library: Path) -> dict:
    """One fresh `clipsearch ingest` process: wall time and peak RSS."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "clipsearch", "ingest", str(shards), "--db", str(library), "-q"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    out, err = process.stdout.read().decode(), process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest failed: {err}")
    info = json.loads(subprocess.run([sys.executable, "-m", "clipsearch", "info", "--db", str(library), "--json"],
                                     env=env, capture_output=True, text=True, check=True).stdout)
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "index": info["index"], "output": out.strip()}


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="vectors (repeatable) [1000000]")
    parser.add_argument("--runs", type=int, default=1, help="ingest runs per size (fresh library each)")
    parser.add_argument("--shard-rows", type=int, default=10_000)
    add_save_option(parser)
    args = parser.parse_args()
    results = {}
    for n in args.n or [1_000_000]:
        (ROOT / ".bench-cache").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=ROOT / ".bench-cache") as tmp:
            started = time.perf_counter()
            write_shards(Path(tmp) / "shards", n, args.shard_rows)
            print(f"{n:,} vectors in {-(-n // args.shard_rows)} shards written in {time.perf_counter() - started:.0f}s",
                  flush=True)
            runs = []
            for run in range(args.runs):
                library = Path(tmp) / f"lib-{run}"
                runs.append(ingest_once(Path(tmp) / "shards", library))
                shutil.rmtree(library)
                r = runs[-1]
                print(f"  run {run + 1}: {r['seconds']:.0f}s, peak RSS {r['peak_rss_mb']:,.0f} MB, index "
                      + ", ".join(f"{k}={v}" for k, v in r["index"].items()), flush=True)
            results[str(n)] = {"runs": args.runs, "seconds": spread([r["seconds"] for r in runs]),
                               "peak_rss_mb": spread([r["peak_rss_mb"] for r in runs]), "index": runs[-1]["index"]}
    print(f"{os.cpu_count()} CPU cores", flush=True)
    emit(results, args)


if __name__ == "__main__":
    main()
