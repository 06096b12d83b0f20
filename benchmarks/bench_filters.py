"""Filtered search latency on a synthetic catalog (random unit vectors, random metadata).

For each filter: how many images match, the time to turn it into allowed ids (SQL), and the
time of the k-nearest search among them (FAISS with an IDSelectorBatch), next to an unfiltered
search; and a check that k results come back whenever k images match. No model is needed.

    python benchmarks/bench_filters.py --images 100000

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from clipsearch.catalog import Catalog, NewImage
from clipsearch.filters import Filters
from clipsearch.vectorindex import rebuild
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

CAMERAS = ["iPhone 12", "iPhone 13 Pro", "Canon EOS R5", "Pixel 7", None]
FILTERS = {
    "after 2023": Filters(after=datetime(2023, 1, 1)),
    "one month": Filters(after=datetime(2015, 1, 1), before=datetime(2015, 2, 1)),
    "camera iphone": Filters(cameras=("iphone",)),
    "ext png": Filters(exts=("png",)),
    "min width 4000": Filters(min_width=4000),
    "one folder": Filters(under=("/photos/007",)),
    "tag (none)": Filters(tag="cat"),
    "camera+date+size": Filters(cameras=("pixel",), after=datetime(2020, 1, 1), min_width=1920),
}


def fill(catalog: Catalog, n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng, vectors = random.Random(seed), np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, n, 5000):
        batch = []
        for i in range(start, min(n, start + 5000)):
            taken = None if i % 5 == 0 else datetime(2010 + rng.randrange(14), rng.randrange(1, 13), rng.randrange(1, 28))
            batch.append(NewImage(f"/photos/{i // 1000:03}/img_{i:06}.{rng.choice(['jpg', 'png', 'heic'])}", 1000,
                                  1_600_000_000_000_000_000 + i * 10**12, f"h{i}", rng.choice([640, 1920, 4000]),
                                  rng.choice([480, 1080, 3000]), "JPEG", taken and taken.isoformat(),
                                  rng.choice(CAMERAS), vectors[i]))
        catalog.write_batch(batch, [], [])
    return vectors


def best_ms(f, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        f()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("-k", type=int, default=20)
    add_save_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog.open(Path(tmp), create=True)
        vectors = fill(catalog, args.images, args.dim)
        index = rebuild(catalog, args.dim)
        query = vectors[:1]
        figures = {"images": args.images, "dim": args.dim, "k": args.k,
                   "unfiltered_ms": best_ms(lambda: index.search(query, args.k)), "filters": {}}
        for name, filters in FILTERS.items():
            allowed = filters.allowed_ids(catalog)
            _, ids = index.search(query, args.k, allowed)
            found = int((ids[0] >= 0).sum())
            figures["filters"][name] = row = {
                "matches": len(allowed), "returned": found, "complete": found == min(args.k, len(allowed)),
                "sql_ms": best_ms(lambda: filters.allowed_ids(catalog)),
                "search_ms": best_ms(lambda: index.search(query, args.k, allowed)),
            }
            print(f"{name:18} {row['matches']:7} match  sql {row['sql_ms']:7.2f} ms  search {row['search_ms']:7.2f} ms"
                  f"  {found} returned")
        catalog.close()
    print(f"unfiltered search {figures['unfiltered_ms']:.2f} ms")
    emit(figures, args)


if __name__ == "__main__":
    main()
