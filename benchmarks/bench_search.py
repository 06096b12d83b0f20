"""Search at scale: every index type at 100,000 and 1,000,000 images, the catalog at that size, and a cold query.

Data. CLIP image embeddings are not uniform on the sphere: they share a strong common direction
(two random photos have cosine ≈ 0.4), gather in topics, and spread over a few dozen effective
dimensions. The vectors here are drawn from such a mixture (seeded): 3,000 clusters of
log-normally distributed sizes, each centre a random direction shaped by a decaying spectrum (the
i-th of 512 axes scaled by i^-0.6), each cluster stretched differently along those axes, plus a
shared mean direction; normalised. Two random vectors have cosine ≈ 0.41, a vector's nearest
neighbour ≈ 0.91. The 200 image queries are fresh draws from the same mixture (not in the library).
The 200 text queries model CLIP's modality gap: a text vector describes a topic (a cluster centre
plus wider noise, 1.4 instead of 0.7) but points away from the image cloud's common direction
(-0.5 times it, plus a direction orthogonal to the data): its best image has cosine ≈ 0.55 (an
image's best ≈ 0.84), its mean cosine to images is negative, as in the bundled tiny model (whose
mean text and mean image directions have cosine -0.95). These libraries record no model, so the
index is calibrated on its own "modelled gap" queries (vectorindex.py), not on these. As
the worst case, the approximate index is also built over isotropic random unit vectors, where
nearest neighbours are barely nearer than anything else and no index can prune well.

For each size: a library whose catalog holds a row per vector (path, size, mtime, hash, vector)
is filled through `Catalog.write_batch`; the incremental diff of an unchanged listing of every
file against it is timed (`indexer.plan`, what `clipsearch index` runs before decoding anything);
then for each index type, `Library.repair` builds it from the catalog (k-means training and
calibration of nprobe/efSearch included) and a fresh process opens the library (index memory-
mapped) and runs the 200 queries one at a time through `Library.nearest`, warm: p50, p95 and p99
latency, recall@10 against exact brute force for image and for text queries, resident memory, plus
the same with a filter that
keeps 1% of the images. Finally 10% of the catalog is deleted in bulk, and the time a reader then
takes to bring the IVF index in line is measured.

Cold query: a second library of the same size with 64-d vectors and the bundled tiny model
recorded, indexed as `auto` picks; a fresh `python` process times each phase of
`clipsearch search "a red star" -n 20` (interpreter start, importing clipsearch's CLI, opening the
library, importing torch and open_clip, loading the model, encoding the text, importing FAISS,
mapping the index, searching, printing), and the command itself is timed end to end: with an empty
text cache (a query never searched before), and again for the same query (answered from the text
cache, so neither torch nor the model is loaded). That library records the tiny model, so its index
is calibrated on the model's own text vectors (calibration.py); the tiny model's real text vectors
for 131 shape queries are then searched against exact answers (recall reported as
`tiny_text_recall_at_10`; the image vectors there are synthetic, the texts real).

    python benchmarks/bench_search.py                       # 100,000 and 1,000,000 (about 35 min on 2 cores)
    python benchmarks/bench_search.py --n 100000            # one size
    python benchmarks/bench_search.py --n 100000 --types flat,ivf --no-isotropic --no-cold
    python benchmarks/bench_search.py --n 1000000 --types ivf --recall-only   # recall only, no catalog (minutes)

--recall-only builds each index type over the vectors in memory (no catalog, no latency or memory
figures) and reports its calibration and the recall@10 of the image and text queries.

Vectors are cached in .bench-cache/search/. The last line printed is one JSON object keyed by
collection size, e.g. {"100000": {...}, "1000000": {"p50_ms": ..., "recall_at_10": ..., ...}}.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipsearch import Filters, Library, model_spec
from clipsearch.catalog import CATALOG_FILE, Catalog, NewImage
from clipsearch.discover import FileEntry, Listing
from clipsearch.indexer import plan
from clipsearch.textcache import TEXT_CACHE_FILE
from clipsearch.vectorindex import INDEX_FILE, KINDS, ArraySource, VectorIndex, build, wanted_kind
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parent.parent
DIM, TINY_DIM, K, QUERIES, CLUSTERS = 512, 64, 10, 200, 3000
FOLDER = 1000
"""Files per folder of the synthetic listing."""


# --- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mixture:
    basis: np.ndarray
    mean: np.ndarray
    centres: np.ndarray
    stretch: np.ndarray
    weights: np.ndarray


def mixture(dim: int, seed: int = 0) -> Mixture:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    spectrum = (np.arange(1, dim + 1) ** -0.6).astype(np.float32)
    centres = (rng.standard_normal((CLUSTERS, dim)).astype(np.float32) * spectrum) @ basis.T
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stretch = np.exp(rng.normal(0, 0.7, (CLUSTERS, dim))).astype(np.float32) * spectrum
    sizes = rng.lognormal(0, 1.0, CLUSTERS)
    return Mixture(basis, basis[:, 0], centres, stretch, sizes / sizes.sum())


def sample(m: Mixture, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, m.basis.shape[0]), np.float32)
    for start in range(0, n, 50_000):
        c = rng.choice(CLUSTERS, min(50_000, n - start), p=m.weights)
        local = (rng.standard_normal((len(c), m.basis.shape[0])).astype(np.float32) * m.stretch[c]) @ m.basis.T
        local /= np.linalg.norm(local, axis=1, keepdims=True)
        x = m.mean + 0.9 * m.centres[c] + 0.7 * local
        out[start : start + len(c)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def isotropic(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):
        x = rng.standard_normal((min(50_000, n - start), dim)).astype(np.float32)
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def cached(cache: Path, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
    file = cache / f"{name}.npy"
    if not file.exists():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{name}.tmp.npy", make())
        os.replace(cache / f"{name}.tmp.npy", file)
    return np.load(file, mmap_mode="r")


def text_like(m: Mixture, n: int, seed: int) -> np.ndarray:
    """Text queries with a modelled modality gap (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    dim = m.basis.shape[0]
    c = rng.choice(CLUSTERS, n, p=m.weights)
    local = (rng.standard_normal((n, dim)).astype(np.float32) * m.stretch[c]) @ m.basis.T
    local /= np.linalg.norm(local, axis=1, keepdims=True)
    t = -0.5 * m.mean + m.basis[:, -1] + 0.9 * m.centres[c] + 1.4 * local
    return (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)


def shape_queries() -> list[str]:
    """The 131 texts of tests/test_calibration.py: what a user of the shapes domain types."""
    from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, article

    return ([f"{article(c)} {c} {s}" for c in COLOURS for s in SHAPES]
            + [f"{article(c)} {c} {s} on a {b} background" for c in COLOURS for s in SHAPES for b in BACKGROUNDS]
            + [f"a {s}" for s in SHAPES] + [f"{article(c)} {c} shape" for c in COLOURS])


def recall(lib: Library, queries: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall@10 of `lib.nearest` against exact row positions (`exact_top_k`)."""
    return float(np.mean([len({row_of(r.path) for r in lib.nearest(q, k=K)} & set(t.tolist())) / K
                          for q, t in zip(queries, truth)]))


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row positions of each query's k best matches, by brute force."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), 100_000):
        chunk = np.asarray(vectors[start : start + 100_000])
        s = np.hstack([best_s, queries @ chunk.T])
        i = np.hstack([best_i, np.broadcast_to(np.arange(start, start + len(chunk)), (len(queries), len(chunk)))])
        keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    return best_i


# --- the catalog --------------------------------------------------------------------------------------
def path_of(i: int) -> str:
    return f"/bench/photos/{i // FOLDER:05d}/{i:07d}.jpg"


def fill(catalog: Catalog, vectors: np.ndarray, batch: int = 10_000) -> float:
    """Insert a row per vector (row i gets catalog id i + 1); returns seconds."""
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        chunk = np.asarray(vectors[start : start + batch])
        catalog.write_batch([NewImage(path_of(i), 100_000 + i, 1_600_000_000_000_000_000 + i,
                                      hashlib.sha256(str(i).encode()).hexdigest(), 640, 480, "JPEG", None, None, v)
                             for i, v in zip(range(start, start + len(chunk)), chunk)], [], [])
    return time.perf_counter() - started


def new_library(directory: Path, vectors: np.ndarray, model: dict | None = None) -> float:
    with Library.open(directory, create=True) as lib:
        lib.catalog.set_meta("dim", vectors.shape[1])
        if model:
            lib.catalog.set_meta("model", model)
        return fill(lib.catalog, vectors)


def diff_unchanged_s(catalog: Catalog, n: int) -> float:
    listing = Listing(("/bench/photos",), [FileEntry(path_of(i), 100_000 + i, 1_600_000_000_000_000_000 + i)
                                           for i in range(n)])
    started = time.perf_counter()
    todo = plan(listing, catalog)
    seconds = time.perf_counter() - started
    assert todo.unchanged == n and not todo.embed and not todo.vanished, todo
    return seconds


# --- queries, in a fresh process ------------------------------------------------------------------------
def memory_mb() -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile")}


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


def row_of(path: str) -> int:
    return int(path.rsplit("/", 1)[1].split(".")[0])


def measure_queries(library: str, work: str, n: int) -> dict[str, Any]:
    """Open the library as `clipsearch search` does and run every query; in its own process."""
    queries, truth = np.load(Path(work) / "queries.npy"), np.load(Path(work) / "truth.npy")
    before = memory_mb()
    started = time.perf_counter()
    lib = Library.open(library)
    index = lib.vectors
    figures: dict[str, Any] = {"open_ms": (time.perf_counter() - started) * 1000, **index.params()}
    lib.nearest(queries[0], k=K)  # warm-up
    seconds, shares = [], []
    for query, want in zip(queries, truth):
        started = time.perf_counter()
        results = lib.nearest(query, k=K)
        seconds.append(time.perf_counter() - started)
        shares.append(len({row_of(r.path) for r in results} & set(want.tolist())) / K)
    figures.update(percentiles_ms(seconds), recall_at_10=float(np.mean(shares)))
    texts, text_truth = np.load(Path(work) / "texts.npy"), np.load(Path(work) / "text_truth.npy")
    figures["text_recall_at_10"] = recall(lib, texts, text_truth)
    folders = tuple(f"/bench/photos/{f:05d}" for f in range(max(1, n // FOLDER // 100)))
    keep = Filters(under=folders)
    filtered = []
    for query in queries:
        started = time.perf_counter()
        results = lib.nearest(query, k=K, filters=keep)
        filtered.append(time.perf_counter() - started)
        assert len(results) == K
    figures["filtered_1pct_p50_ms"] = percentiles_ms(filtered)["p50_ms"]
    after = memory_mb()
    figures.update(rss_mb=after["VmRSS"], rss_index_mb=after["VmRSS"] - before["VmRSS"],
                   rss_mapped_mb=after["RssFile"] - before["RssFile"])
    started = time.perf_counter()
    VectorIndex.load(Path(library) / INDEX_FILE, mapped=False)
    figures["load_copy_ms"] = (time.perf_counter() - started) * 1000
    lib.close()
    return figures


def measure_isotropic(n: int, work: str) -> dict[str, Any]:
    """The approximate index over isotropic vectors (no catalog: an in-memory source), in its own process."""
    vectors = isotropic(n + QUERIES, DIM, seed=3)
    source, queries = ArraySource(np.arange(1, n + 1), vectors[:n]), vectors[n:]
    truth = exact_top_k(source.vectors, queries) + 1
    index, record = build(source, DIM, "ivf")
    seconds, shares = [], []
    for query, want in zip(queries, truth):
        started = time.perf_counter()
        _, found = index.search(query[None], K, exact=source.vectors_for)
        seconds.append(time.perf_counter() - started)
        shares.append(len(np.intersect1d(found[0], want)) / K)
    return {**index.params(), "build_s": record.build_s, "calibrated_recall": record.recall_at_10,
            "calibrated_text_recall": record.text_recall_at_10,
            **percentiles_ms(seconds), "recall_at_10": float(np.mean(shares))}


def measure_recall(n: int, kind: str, cache: Path) -> dict[str, Any]:
    """Build `kind` over n mixture vectors in memory and measure recall@10 of image and text queries."""
    m = mixture(DIM)
    vectors = np.asarray(cached(cache, f"clustered-{DIM}-{n}", lambda: sample(m, n, seed=1)))
    source = ArraySource(np.arange(1, n + 1), vectors)
    figures: dict[str, Any] = {}
    index, record = build(source, DIM, kind)
    figures.update(index.params(), build_s=record.build_s, calibrated_recall=record.recall_at_10,
                   calibrated_text_recall=record.text_recall_at_10, calibration_texts=record.text_queries)
    for name, queries in (("recall_at_10", cached(cache, f"queries-{DIM}", lambda: sample(m, QUERIES, seed=2))),
                          ("text_recall_at_10", text_like(m, QUERIES, seed=5))):
        truth = exact_top_k(vectors, np.asarray(queries)) + 1
        _, found = index.search(np.asarray(queries), K, exact=source.vectors_for)
        figures[name] = float(np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth)]))
    return figures


def in_child(function: Callable[..., dict], *args: Any) -> dict:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# --- the cold command ------------------------------------------------------------------------------------
COLD_CHILD = r"""
import json, sys, time
t = {"start": time.time()}
import clipsearch.cli, click
t["imports"] = time.time()
from clipsearch import Library
lib = Library.open(sys.argv[1])
t["open_library"] = time.time()
import torch
t["import_torch"] = time.time()
import open_clip
t["import_open_clip"] = time.time()
lib.encoder
t["load_model"] = time.time()
vector = lib.encoder.encode_texts([sys.argv[2]])[0]
t["encode_text"] = time.time()
import faiss
t["import_faiss"] = time.time()
lib.vectors
t["map_index"] = time.time()
results = lib.nearest(vector, k=20)
t["search"] = time.time()
for r in results:
    click.echo(f"{r.score:.3f}  {r.path}", file=sys.stderr)
t["print"] = time.time()
print(json.dumps(t))
"""


def cold_query(library: Path, runs: int = 3) -> dict[str, float]:
    """Median phase times (ms) of a fresh process searching the library, and of the command itself."""
    phases: list[dict[str, float]] = []
    for _ in range(runs):
        spawned = time.time()
        out = subprocess.run([sys.executable, "-c", COLD_CHILD, str(library), "a red star"], check=True,
                             capture_output=True, text=True).stdout
        stamps = json.loads(out)
        names, times = ["python_start", *list(stamps)[1:]], [spawned, *stamps.values()]
        phases.append({name: (b - a) * 1000 for name, a, b in zip(names, times, times[1:])})
    figures = {name: statistics.median(p[name] for p in phases) for name in phases[0]}

    def command_ms() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clipsearch", "search", "a red star", "--db", str(library), "-n", "20"],
                       check=True, capture_output=True)
        return (time.perf_counter() - started) * 1000

    first, repeated = [], []
    for _ in range(runs):
        (library / TEXT_CACHE_FILE).unlink(missing_ok=True)
        first.append(command_ms())
        repeated.append(command_ms())
    figures.update(phases_total=sum(figures.values()), command_ms=statistics.median(first),
                   repeated_command_ms=statistics.median(repeated))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipsearch", "--help"], check=True, capture_output=True)
    figures["help_ms"] = (time.perf_counter() - started) * 1000
    return figures


# --- one size --------------------------------------------------------------------------------------------------
def run_size(n: int, types: list[str], cache: Path, work: Path, isotropic_too: bool, cold: bool) -> dict[str, Any]:
    print(f"\n== {n:,} vectors of {DIM} dimensions ==", flush=True)
    m = mixture(DIM)
    started = time.perf_counter()
    vectors = cached(cache, f"clustered-{DIM}-{n}", lambda: sample(m, n, seed=1))
    queries = cached(cache, f"queries-{DIM}", lambda: sample(m, QUERIES, seed=2))
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", exact_top_k(vectors, queries))
    texts = text_like(m, QUERIES, seed=5)
    np.save(work / "texts.npy", texts)
    np.save(work / "text_truth.npy", exact_top_k(vectors, texts))
    print(f"  data (cached in {cache.relative_to(ROOT) if cache.is_relative_to(ROOT) else cache}) and exact "
          f"answers: {time.perf_counter() - started:.1f}s", flush=True)
    library = work / f"lib-{n}"
    figures: dict[str, Any] = {}
    insert_s = new_library(library, vectors)
    catalog_mb = sum(f.stat().st_size for f in library.glob(CATALOG_FILE + "*")) / 2**20
    with Library.open(library) as lib:
        diff_s = diff_unchanged_s(lib.catalog, n)
    figures["catalog"] = {"insert_s": insert_s, "rows_per_s": n / insert_s, "catalog_mb": catalog_mb, "diff_s": diff_s}
    print(f"  catalog: insert {insert_s:.1f}s ({n / insert_s:,.0f} rows/s), {catalog_mb:,.0f} MB; "
          f"diff of an unchanged listing {diff_s:.2f}s", flush=True)
    for kind in sorted(types, key=lambda t: t == "ivf"):  # IVF last: the deletion below is measured on it
        with Library.open(library) as lib:
            record = lib.repair(kind)
        index_mb = (library / INDEX_FILE).stat().st_size / 2**20
        figures[kind] = {"build_s": record.build_s, "calibrated_recall": record.recall_at_10,
                         "calibrated_text_recall": record.text_recall_at_10, "calibration_texts": record.text_queries,
                         "index_mb": index_mb, **in_child(measure_queries, str(library), str(work), n)}
        f = figures[kind]
        params = ", ".join(f"{k}={f[k]}" for k in ("nlist", "nprobe", "links", "ef_search") if k in f)
        print(f"  {kind:5} build {f['build_s']:7.1f}s  file {index_mb:7.0f} MB  RSS {f['rss_mb']:6.0f} MB  "
              f"p50 {f['p50_ms']:6.2f} ms  p95 {f['p95_ms']:6.2f}  p99 {f['p99_ms']:6.2f}  "
              f"recall@10 {f['recall_at_10']:.3f} (text {f['text_recall_at_10']:.3f})  "
              f"1% filter p50 {f['filtered_1pct_p50_ms']:6.2f} ms  "
              f"open {f['open_ms']:.0f} ms (copy {f['load_copy_ms']:.0f} ms)  {params}", flush=True)
    if "ivf" in types:
        with Library.open(library) as lib:
            ids = lib.catalog.all_ids()[::10]
            started = time.perf_counter()
            lib.catalog.delete(ids)
            figures["catalog"]["delete_10pct_s"] = time.perf_counter() - started
        with Library.open(library) as lib:
            started = time.perf_counter()
            assert len(lib.vectors) == n - len(ids)
            figures["ivf"]["sync_after_delete_s"] = time.perf_counter() - started
        print(f"  delete 10% ({len(ids):,} rows) in bulk {figures['catalog']['delete_10pct_s']:.1f}s; a reader brings "
              f"the IVF index in line in {figures['ivf']['sync_after_delete_s']:.1f}s", flush=True)
    shutil.rmtree(library)
    if isotropic_too:
        f = figures["isotropic_ivf"] = in_child(measure_isotropic, n, str(work))
        print(f"  isotropic (worst case) ivf: build {f['build_s']:.1f}s  nprobe {f['nprobe']}/{f['nlist']}  "
              f"p50 {f['p50_ms']:.2f} ms  p99 {f['p99_ms']:.2f}  recall@10 {f['recall_at_10']:.3f}", flush=True)
    if cold:
        tiny_library = work / f"tiny-{n}"
        tiny_vectors = cached(cache, f"clustered-{TINY_DIM}-{n}", lambda: sample(mixture(TINY_DIM), n, seed=1))
        new_library(tiny_library, tiny_vectors, model_spec("clipsearch-tiny").to_dict())
        with Library.open(tiny_library) as lib:
            record = lib.repair()
            texts = lib.encoder.encode_texts(shape_queries())
            tiny_text_recall = recall(lib, texts, exact_top_k(tiny_vectors, texts))
        phases = cold_query(tiny_library)
        figures["cold_query"] = {"index": record.params["type"], **phases}
        figures["tiny_model_texts"] = {"index": record.params["type"], **record.params,
                                       "calibrated_recall": record.recall_at_10,
                                       "calibrated_text_recall": record.text_recall_at_10,
                                       "calibration_texts": record.text_queries,
                                       "tiny_text_recall_at_10": tiny_text_recall}
        print(f"  tiny model's 131 real text queries on {n:,} synthetic {TINY_DIM}-d vectors ({record.text_queries}): "
              f"recall@10 {tiny_text_recall:.3f}", flush=True)
        print(f"  cold `clipsearch search -n 20` on {n:,} {TINY_DIM}-d vectors (clipsearch-tiny, "
              f"{record.params['type']} index), ms: " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()), flush=True)
        shutil.rmtree(tiny_library)
    auto = wanted_kind("auto", n, "flat")
    if auto in figures:
        figures.update({k: figures[auto][k] for k in ("p50_ms", "p95_ms", "p99_ms", "recall_at_10", "text_recall_at_10",
                                                      "index_mb",
                                                      "rss_mb", "build_s")},
                       index_type=auto, diff_s=diff_s)
    return figures


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="collection size (repeatable) [100000 and 1000000]")
    parser.add_argument("--types", default=",".join(KINDS), help=f"index types to measure [{','.join(KINDS)}]")
    parser.add_argument("--no-isotropic", dest="isotropic", action="store_false", help="skip the worst case")
    parser.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold command")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".bench-cache" / "search")
    parser.add_argument("--recall-only", action="store_true", help="only calibration and recall, vectors in memory")
    add_save_option(parser)
    args = parser.parse_args()
    types = [t for t in args.types.split(",") if t]
    print(f"{os.cpu_count()} CPU cores; index types {', '.join(types)}", flush=True)
    results = {}
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.recall_only:
        for n in args.n or [100_000, 1_000_000]:
            for kind in types:
                f = results.setdefault(str(n), {})[kind] = in_child(measure_recall, n, kind, args.cache_dir)
                print(f"  {n:,} {kind}: " + ", ".join(f"{k} {v}" for k, v in rounded(f).items()), flush=True)
        emit(rounded(results), args)
        return
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.cache_dir) as work:
        for n in args.n or [100_000, 1_000_000]:
            results[str(n)] = run_size(n, types, args.cache_dir, Path(work), args.isotropic, args.cold)
    emit(rounded(results), args)


if __name__ == "__main__":
    main()
