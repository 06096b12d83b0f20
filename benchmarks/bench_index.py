"""Indexing throughput against the ideal pipeline, streaming memory, and unchanged re-index time.

Throughput. N photo-like 12-megapixel JPEGs (about 4 MB each: a smooth colour field, mid-scale
texture, outlined shapes and fine grain, a quarter of them portrait through EXIF orientation 6)
are generated once into the cache folder. Each figure is the median of --runs runs (default 3),
with min and max in the JSON:

- E, encoder-only images/s on batches of preprocessed tensors already in memory, as the shipped
  CPU pipeline encodes: one single-threaded encoder per decode worker, all in parallel (one process
  each, summed). Beside it, E2: one encoder process on all cores (torch's threads), the old figure;
- D, decode-only images/s: clipsearch's pipeline (read, hash, draft decode, EXIF transpose,
  preprocess, hand-over to the main process) with --workers workers (default: one per core), no
  encoder; on CUDA also D with `--gpu-decode` (workers read, hash and parse headers, the main process
  decodes the JPEGs with nvJPEG and turns, crops and resizes them on the GPU);
- end-to-end images/s of a fresh `clipsearch index` process into a fresh library, as a user runs it:
  interpreter start, imports, model load (by the default model's path: the random weights laid out in a
  Hugging Face cache as the download leaves them, read offline; with --checkpoint, a checkpoint file,
  hashed on load as any checkpoint is), discover, plan, decode, encode, catalog writes, FAISS adds,
  index save. Cold:
  on copies of the photos that no earlier stage read, each evicted from the page cache
  (fsync + posix_fadvise DONTNEED) before the run; warm: the same files again, now cached.
  Peak RSS is that of the process plus its largest worker.
- start-up: the same fresh `clipsearch index` process on a folder of one photo (interpreter, imports,
  model load, one photo, catalog, the library's exported text tower); the cold
  run's rate with that time taken out (`after_startup_ips`, `ratio_after_startup`) shows how much of
  the gap to the ideal is the fixed cost of starting, and how much the pipeline.

The ideal is 1/(1/E + 1/D) where decoding and encoding share the CPU cores, and min(E, D) where
the encoder runs on a GPU; the ratio is end-to-end (cold)/ideal, taken in each run (a run measures E,
D and the end-to-end runs back to back, so that the machine's drift over the minutes a run takes
meets them alike) and reported as median (min-max) over the runs.

Videos (--videos N, default 4; 0: none). N generated 30 s 720p H.264 clips (the same as
bench_formats.py's, cached) are indexed by a fresh `clipsearch index` process each run, as a user
runs it, through the same bounded pipeline as photos (default sampling: a frame per 5 s plus scene
changes, at most 50 per video): videos/s and embedded frames/s, end to end.

Memory and re-index. 1,000 and 10,000 small JPEGs are indexed with the bundled tiny model, each
in its own child process, and their peak RSS compared; the 10,000 are then indexed again
unchanged (stat only, nothing decoded), timed in-process and as a `clipsearch index` command.

With no arguments it runs offline on a randomly initialised ViT-B-32, which has the same compute
as the trained one:

    python benchmarks/bench_index.py
    python benchmarks/bench_index.py --n 60 --skip-memory          # a few minutes
    python benchmarks/bench_index.py --n 200 --workers 1 --batch-size 16
    python benchmarks/bench_index.py --model ViT-B-32 --pretrained laion2b_s34b_b79k --device cuda

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from clipsearch import Library
from clipsearch.discover import list_images
from clipsearch.library import DEFAULT_BATCH
from clipsearch.models import (DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelSpec, load_encoder, model_spec,
                               pretrained_table, text_side)
from clipsearch.batching import default_workers
from clipsearch.pipeline import (WORKER_BATCH, OnDevice, decoded_batches, jpeg_bytes, shm_bytes_per_worker, shm_free,
                                 workers_for_shm)
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

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
def encoder_ips(encoder, pixels: torch.Tensor, n: int) -> float:
    """Images/s of the encoder alone on a batch of preprocessed tensors already in memory."""
    encoder.encode_images(pixels)  # warm-up
    batches = max(2, math.ceil(n / len(pixels)))
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode_images(pixels)
    return batches * len(pixels) / (time.perf_counter() - started)


def first_batch(encoder, folder: Path, batch_size: int) -> torch.Tensor:
    files = list_images([folder]).files[:batch_size]
    return next(iter(decoded_batches(files, encoder.preprocess, encoder.image_size, batch_size, 0))).pixels


def _single_thread_encoder(spec: ModelSpec, pixels: torch.Tensor, n: int, start, results) -> None:
    torch.set_num_threads(1)
    encoder = load_encoder(spec, device="cpu")
    encoder.encode_images(pixels)
    start.wait()
    results.put(encoder_ips(encoder, pixels, n))


def parallel_encoders_ips(spec: ModelSpec, pixels: torch.Tensor, n: int, processes: int) -> float:
    """Images/s of `processes` single-threaded encoders running at once (each on n / processes images), summed."""
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(processes + 1), ctx.Queue()
    children = [ctx.Process(target=_single_thread_encoder, args=(spec, pixels, max(1, n // processes), start,
                                                                  results)) for _ in range(processes)]
    for child in children:
        child.start()
    start.wait()
    total = sum(results.get() for _ in children)
    for child in children:
        child.join()
    return total


def decode_ips(encoder, folder: Path, batch_size: int, workers: int) -> float:
    """Images/s of the decode stage alone, handed to the main process as the indexer receives it."""
    files = list_images([folder]).files
    started = time.perf_counter()
    count = sum(len(b.items) for b in decoded_batches(files, encoder.preprocess, encoder.image_size, batch_size,
                                                      workers))
    return count / (time.perf_counter() - started)


def gpu_decode_ips(encoder, folder: Path, batch_size: int, workers: int) -> float:
    """Images/s of the decode stage with `--gpu-decode`, as the indexer runs it: as many of `workers` as shared
    memory holds for whole JPEGs read, hash and parse headers; the main process decodes the JPEGs on the encoder's
    CUDA device, turns, crops and resizes them there and pHashes their thumbnails."""
    files = list_images([folder]).files
    per_worker = shm_bytes_per_worker(encoder.image_size, file_bytes=jpeg_bytes(files))
    on_device = OnDevice(encoder.device, encoder.tensor_pixels)
    started = time.perf_counter()
    count = sum(len(b.items) for b in decoded_batches(files, encoder.pixels, encoder.image_size, batch_size,
                                                      workers_for_shm(workers, per_worker, shm_free()),
                                                      worker_batch=WORKER_BATCH, on_device=on_device))
    torch.cuda.synchronize(encoder.device)
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


def evicted_copy(folder: Path, into: Path) -> Path:
    """Copies of the files of `folder`, on disk and dropped from the page cache: reading them is cold."""
    into.mkdir(parents=True)
    for source in sorted(folder.iterdir()):
        target = into / source.name
        shutil.copyfile(source, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return into


def cli_index(tree: Path, library: Path, model_args: list[str], workers: int | None,
              batch_size: int | None) -> dict[str, float]:
    """A fresh `clipsearch index` process into a new library: wall time and peak RSS (main + largest worker)."""
    command = [sys.executable, "-m", "clipsearch", "index", "--db", str(library), "--quiet", *model_args, str(tree)]
    command += ["--workers", str(workers)] if workers is not None else []
    command += ["--batch-size", str(batch_size)] if batch_size is not None else []
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(command)}` failed")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cli_reindex_s(tree: Path, library: Path) -> float:
    """Wall time of `clipsearch index` on an unchanged tree, interpreter start-up included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipsearch", "index", "--db", str(library), "--quiet", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


# --- main ------------------------------------------------------------------------------
def model_choice(args: argparse.Namespace) -> tuple[ModelSpec, list[str]]:
    """The spec to measure and the `clipsearch index` options that load it. Without --pretrained or --checkpoint:
    random weights (saved once), laid out in a Hugging Face cache of their own (HF_HUB_CACHE, offline) as the
    download of the model's pretrained weights leaves them, so that `clipsearch index` loads them by the default
    model's path, without options for ViT-B-32; as a checkpoint file where the model has no weights on the hub."""
    device = [] if args.device == "auto" else ["--device", args.device]
    if args.pretrained or args.checkpoint:
        spec = model_spec(args.model, args.pretrained, args.checkpoint)
        source = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--pretrained", args.pretrained]
        return spec, ["--model", args.model, *source, *device]
    import open_clip

    weights = args.cache_dir / f"random-{args.model}.pt"
    if not weights.exists():
        torch.manual_seed(0)
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save(open_clip.create_model(args.model).state_dict(), weights.with_suffix(".tmp"))
        weights.with_suffix(".tmp").rename(weights)
    hub = pretrained_table().get((args.model, DEFAULT_PRETRAINED)) or text_side(args.model)
    if hub is None or hub.hf_repo is None:
        return model_spec(args.model, checkpoint=str(weights)), ["--model", args.model, "--checkpoint", str(weights),
                                                                 *device]
    os.environ["HF_HUB_CACHE"] = str(args.cache_dir / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    repo = args.cache_dir / "hub" / f"models--{hub.hf_repo.replace('/', '--')}"
    laid_out = repo / "snapshots" / "random" / hub.files[-1]
    if not laid_out.exists():
        laid_out.parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("random")
        os.link(weights, laid_out)
    default = (args.model, hub.tag) == (DEFAULT_MODEL, DEFAULT_PRETRAINED)
    return model_spec(args.model, hub.tag), [*([] if default else ["--model", args.model, "--pretrained", hub.tag]),
                                             *device]


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
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported [3]")
    parser.add_argument("--videos", type=int, default=4, help="30 s 720p clips indexed end to end (0: none) [4]")
    add_save_option(parser)
    args = parser.parse_args()

    spec, model_args = model_choice(args)
    photos = ensure_images(args.cache_dir / "photos", args.n, PHOTO_SIZE, default_workers())
    encoder = load_encoder(spec, device=args.device)
    device = encoder.device.type
    batch_size = args.batch_size or DEFAULT_BATCH.get(device, 32)
    workers = default_workers() if args.workers is None else args.workers
    print(f"{spec.label} on {device}, {cpu_name()}, {os.cpu_count()} CPU cores, batch {batch_size}, "
          f"{workers} decode workers, {args.n} photos, {args.runs} runs (median [min-max])", flush=True)
    figures: dict[str, object] = {"model": spec.label, "device": device, "cpu": cpu_name(), "cores": os.cpu_count(),
                                  "n": args.n, "batch_size": batch_size, "workers": workers, "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.cache_dir) as tmp:
        tree = subset(photos, args.n, Path(tmp) / "photos")
        pixels = first_batch(encoder, tree, batch_size)
        e, e2, d, d_gpu, cold, warm, start = [], [], [], [], [], [], []
        for run in range(args.runs):  # every figure once per run: a drift of the machine's speed meets them alike
            e2.append(encoder_ips(encoder, pixels, args.n))
            d.append(decode_ips(encoder, tree, batch_size, workers))
            if device == "cuda":
                d_gpu.append(gpu_decode_ips(encoder, tree, batch_size, workers))
            e.append(parallel_encoders_ips(spec, pixels, args.n, max(1, workers)) if device == "cpu" else e2[-1])
            copy = evicted_copy(tree, Path(tmp) / f"cold-{run}")
            cold.append(cli_index(copy, Path(tmp) / f"lib-cold-{run}", model_args, args.workers, args.batch_size))
            warm.append(cli_index(copy, Path(tmp) / f"lib-warm-{run}", model_args, args.workers, args.batch_size))
            shutil.rmtree(copy)
            one = subset(tree, 1, Path(tmp) / f"one-{run}")
            start.append(cli_index(one, Path(tmp) / f"lib-one-{run}", model_args, args.workers, args.batch_size))
        del encoder

        def ideal_of(e: float, d: float) -> float:
            return min(e, d) if device != "cpu" else 1 / (1 / e + 1 / d)

        ideal = ideal_of(statistics.median(e), statistics.median(d))
        cold_ips = [args.n / r["seconds"] for r in cold]
        warm_ips = [args.n / r["seconds"] for r in warm]
        ratios = [c / ideal_of(e_r, d_r) for c, e_r, d_r in zip(cold_ips, e, d)]  # each run against its own ideal
        startup_s = statistics.median(r["seconds"] for r in start)
        after_startup = args.n / (statistics.median(r["seconds"] for r in cold) - startup_s)
        figures.update(encoder_ips=spread(e), encoder_all_cores_ips=spread(e2), decode_ips=spread(d),
                       decode_gpu_ips=spread(d_gpu) if d_gpu else None, ideal_ips=ideal,
                       end_to_end_cold_ips=spread(cold_ips), end_to_end_warm_ips=spread(warm_ips),
                       ratio=spread(ratios),
                       startup_s=spread([r["seconds"] for r in start]),
                       after_startup_ips=after_startup, ratio_after_startup=after_startup / ideal,
                       peak_rss_mb=spread([r["peak_rss_mb"] for r in cold]))

        def line(label: str, values: list[float]) -> str:
            return f"  {label:34} {statistics.median(values):7.1f} images/s  [{min(values):.1f}-{max(values):.1f}]"

        print(line(f"E: {max(1, workers)} single-thread encoders" if device == "cpu" else "E: encoder", e))
        print(line("E2: one encoder, all cores", e2))
        print(line(f"D: decode, {workers} workers", d))
        if d_gpu:
            print(line("D: GPU decode (--gpu-decode)", d_gpu))
        print(f"  {'ideal ' + ('1/(1/E+1/D)' if device == 'cpu' else 'min(E, D)'):34} {ideal:7.1f} images/s")
        print(line("end-to-end `clipsearch index`, cold", cold_ips))
        print(line("end-to-end, warm page cache", warm_ips))
        print(f"  {'ratio (cold / ideal, by run)':34} {statistics.median(ratios):7.1%}  "
              f"[{min(ratios):.1%}-{max(ratios):.1%}]")
        print(f"  {'start-up: the same on one photo':34} {startup_s:7.1f} s  "
              f"[{min(r['seconds'] for r in start):.1f}-{max(r['seconds'] for r in start):.1f}]")
        print(f"  {'cold, start-up taken out':34} {after_startup:7.1f} images/s  ({after_startup / ideal:.1%} of ideal)")
        print(f"  {'peak RSS':34} {statistics.median([r['peak_rss_mb'] for r in cold]):7.0f} MB", flush=True)
        if args.videos:
            figures.update(index_videos(args.cache_dir, args.videos, Path(tmp), model_args, args))
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
    emit(rounded(figures), args)


def index_videos(cache: Path, n: int, tmp: Path, model_args: list[str], args: argparse.Namespace) -> dict:
    """Videos/s and embedded frames/s of fresh `clipsearch index` processes on `n` generated 30 s 720p clips."""
    from bench_formats import ensure_videos  # noqa: E402  (benchmarks/bench_formats.py: the same clips)

    clips = ensure_videos(cache, n, 30, (1280, 720))
    tree = tmp / "videos"
    tree.mkdir()
    for clip in clips:
        shutil.copyfile(clip, tree / clip.name)
    videos, frames = [], []
    for run in range(args.runs):
        library = tmp / f"lib-videos-{run}"
        seconds = cli_index(tree, library, model_args, args.workers, args.batch_size)["seconds"]
        with Library.open(library) as lib:
            kept = lib.catalog.frame_count()
        videos.append(n / seconds)
        frames.append(kept / seconds)
    print(f"  {'videos, end to end':34} {statistics.median(videos):7.2f} videos/s  [{min(videos):.2f}-{max(videos):.2f}]"
          f", {statistics.median(frames):.1f} frames/s  [{min(frames):.1f}-{max(frames):.1f}]", flush=True)
    return {"videos": n, "video_seconds": 30, "videos_per_s": spread(videos), "video_frames_per_s": spread(frames)}


def rounded(value: object) -> object:
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


if __name__ == "__main__":
    main()
