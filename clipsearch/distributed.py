"""Embedding a collection on a Ray cluster into Parquet shards (shards.py); `Library.ingest` merges them.

The driver lists the files (discover.py), splits them into shards and leaves out those already
written. The rest flow through Ray Data: one task per shard reads, hashes, decodes and
preprocesses its files with the single-machine pipeline's own function (`pipeline.load_entry`),
an actor pool embeds them (one actor per GPU, in fp16; without GPUs, single-threaded CPU
actors), and the driver writes each shard as soon as every one of its files is back. Ray
retries the tasks of a worker that dies and restarts dead actors; a killed job loses only the
shards in flight. The input files must be readable at the same paths on every node.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .discover import FileEntry, list_images
from .encoder import Encoder
from .errors import ClusterError, ExtraNotInstalled, ModelMismatch
from .models import DEFAULT_BATCH, ModelSpec, load_encoder
from .paths import catalog_text, from_catalog
from .pipeline import Decoded, load_entry
from .results import EmbedReport, Skip
from .shards import DEFAULT_SHARD_SIZE, Shard, plan_shards, read_header, shard_files, write_shard
from .video import is_video

Batch = dict[str, np.ndarray]
NULLABLE = ("hash", "taken_at", "camera", "error")
"""Text columns that travel as "" for None: Ray Data turns an all-None column into floats."""
ACTOR_MEMORY = 1 << 30
"""What an embedding actor's process needs besides twice the model's weights (torch, open_clip, batches)."""


def embed(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    model: ModelSpec,
    *,
    address: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int | None = None,
    actors: int | None = None,
    exclude: Iterable[str] = (),
    include_hidden: bool = False,
    progress: bool = False,
    before_shard: Callable[[str], None] | None = None,
) -> EmbedReport:
    """Embed the images under `paths` into shards in `output`, skipping shards already there.

    `address`: "auto", "ray://HOST:PORT", or None to use the Ray of this process (started here
    when there is none). `actors`: embedding actors, by default one per GPU, else half the CPUs.
    `before_shard` is called in the worker with a shard's key before it is decoded (tests use it
    to make a worker fail).
    """
    started = time.monotonic()
    ray = _ray()
    listing = list_images(paths, exclude, include_hidden)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    _check_folder_model(folder, model)
    shards = plan_shards([f for f in listing.files if not is_video(f.path)], model, shard_size)
    todo = [s for s in shards if not (folder / s.name).exists()]
    skipped = list(listing.skipped) + [Skip(f.path, "a video: index it with `clipsearch index`")
                                       for f in listing.files if is_video(f.path)]
    embedded = 0
    if todo:
        encoder = load_encoder(model, "cpu")  # the preprocessing the workers apply, and the vector size
        with _cluster(ray, address):
            for shard, columns in _embedded_shards(ray, todo, encoder, batch_size, actors, progress, before_shard):
                write_shard(folder / shard.name, columns, model, encoder.dim)
                failed = [(p, e) for p, e in zip(columns["path"], columns["error"]) if e is not None]
                skipped += [Skip(from_catalog(p), e) for p, e in failed]
                embedded += len(columns["path"]) - len(failed)
    return EmbedReport(len(shards), len(todo), len(shards) - len(todo), embedded, tuple(skipped),
                       time.monotonic() - started)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ExtraNotInstalled("Embedding on Ray needs the ray extra: pip install 'clipsearch[ray]'") from None
    return ray


def _check_folder_model(folder: Path, model: ModelSpec) -> None:
    """One model per shard folder: `ingest` could not merge vectors of two models."""
    existing = shard_files(folder)
    if existing:
        header = read_header(existing[0])
        if not header.model.same_weights(model):
            raise ModelMismatch(f"{folder} holds shards embedded with {header.model.label}; embedding with "
                                f"{model.label} would mix incompatible vectors. Use another output folder.")


@contextmanager
def _cluster(ray: Any, address: str | None) -> Iterator[None]:
    """Use this process's Ray if it has one; otherwise connect (or start a local one) and shut down after."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ClusterError(f"Cannot reach the Ray cluster at {address}: {str(e).splitlines()[0][:200]}") \
            from None
    try:
        yield
    finally:
        ray.shutdown()


def _embedded_shards(ray: Any, shards: list[Shard], encoder: Encoder, batch_size: int | None, actors: int | None,
                     progress: bool, before_shard: Callable[[str], None] | None) -> Iterator[tuple[Shard, Batch]]:
    """Each shard with its rows (the shards.py columns, "vector" included), as soon as all its rows are back."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = progress
    gpus = int(ray.cluster_resources().get("GPU", 0))
    device = "cuda" if gpus else "cpu"
    batch = batch_size or DEFAULT_BATCH[device]
    pixel_shape = tuple(encoder.preprocess(Image.new("RGB", (encoder.image_size,) * 2)).shape)
    items = [{"shard": s.key, "paths": [catalog_text(e.path) for e in s.entries], "sizes": [e.size for e in s.entries],
              "mtimes": [e.mtime_ns for e in s.entries]} for s in shards]
    weights = sum(p.numel() * p.element_size() for p in encoder.model.parameters())
    data = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(_decode_shards, batch_size=1, num_cpus=1,
                     fn_kwargs={"preprocess": encoder.preprocess, "min_side": encoder.image_size,
                                "pixel_shape": pixel_shape, "chunk": batch, "before_shard": before_shard})
        .map_batches(_Embedder, fn_constructor_args=(encoder.spec.to_dict(), device), batch_size=batch,
                     compute=ray.data.ActorPoolStrategy(size=_actor_count(ray, actors, gpus)),
                     num_gpus=1 if gpus else None, num_cpus=None if gpus else 1,
                     # Reserving the model's memory also keeps Ray Data from fusing the decode tasks into the
                     # actors, which would hand each actor `batch` whole shards at a time.
                     memory=ACTOR_MEMORY + 2 * weights)
    )
    assembler = _Assembler(shards)
    for rows in data.iter_batches(batch_size=None, batch_format="numpy"):
        yield from assembler.add(rows)
    assembler.check_done()


def _actor_count(ray: Any, asked: int | None, gpus: int) -> int:
    """One actor per GPU; without GPUs, half the CPUs. Each actor holds a GPU or a CPU of its own, and
    without GPUs one CPU at least must be left to the decode tasks, or the job would wait forever."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    most = gpus or cpus - 1
    if most < 1 or (asked or 0) > most:
        raise ClusterError(f"A cluster of {cpus} CPUs and {gpus} GPUs can run at most {max(most, 0)} embedding "
                           f"actors{'' if gpus else ' (one CPU decodes)'}; {asked or 1} asked for")
    return asked or gpus or max(1, cpus // 2)


def _decode_shards(shards: Batch, preprocess: Callable[[Image.Image], Any], min_side: int,
                   pixel_shape: tuple[int, ...], chunk: int,
                   before_shard: Callable[[str], None] | None) -> Iterator[Batch]:
    """Ray task: the files of each shard read, decoded and preprocessed, `chunk` rows at a time."""
    for key, paths, sizes, mtimes in zip(shards["shard"], shards["paths"], shards["sizes"], shards["mtimes"]):
        if before_shard:
            before_shard(str(key))
        entries = [FileEntry(from_catalog(str(p)), int(s), int(m)) for p, s, m in zip(paths, sizes, mtimes)]
        for start in range(0, len(entries), chunk):
            loaded = [load_entry(e, preprocess, min_side) for e in entries[start : start + chunk]]
            yield _columns(str(key), loaded, pixel_shape)


def _columns(key: str, loaded: list[tuple[Decoded, Any]], pixel_shape: tuple[int, ...]) -> Batch:
    pixels = np.zeros((len(loaded), *pixel_shape), np.float32)  # zero where the file failed
    for i, (_, tensor) in enumerate(loaded):
        if tensor is not None:
            pixels[i] = tensor.numpy()
    decoded = [d for d, _ in loaded]
    meta = [d.meta for d in decoded]

    def text(values: Iterable[str | None]) -> np.ndarray:
        return np.array([v or "" for v in values], dtype=object)

    return {
        "shard": text(key for _ in decoded),
        "path": text(catalog_text(d.entry.path) for d in decoded),  # shards hold paths as the catalog does
        "size": np.array([d.entry.size for d in decoded], np.int64),
        "mtime_ns": np.array([d.entry.mtime_ns for d in decoded], np.int64),
        "hash": text(d.hash for d in decoded),
        "width": np.array([m.width if m else 0 for m in meta], np.int32),
        "height": np.array([m.height if m else 0 for m in meta], np.int32),
        "format": text(m.format if m else "" for m in meta),
        "taken_at": text(m.taken_at if m else None for m in meta),
        "camera": text(m.camera if m else None for m in meta),
        "error": text(d.error for d in decoded),
        "transient": np.array([d.transient for d in decoded], bool),
        "phash": np.array([d.phash for d in decoded], dtype=object),
        "pixels": pixels,
    }


class _Embedder:
    """Ray actor: holds the model and turns the "pixels" column into a "vector" column."""

    def __init__(self, spec: dict[str, Any], device: str):
        import torch

        if device == "cpu":
            torch.set_num_threads(1)  # one core per actor, as Ray reserved it
        self.encoder = load_encoder(ModelSpec.from_dict(spec), device)

    def __call__(self, rows: Batch) -> Batch:
        import torch

        good = np.array([not e for e in rows["error"]], dtype=bool)
        vectors = np.zeros((len(good), self.encoder.dim), np.float32)
        if good.any():
            vectors[good] = self.encoder.encode_images(torch.from_numpy(rows["pixels"][good]))
        return {**{k: v for k, v in rows.items() if k != "pixels"}, "vector": vectors}


class _Assembler:
    """Collects embedded rows by shard until each shard is complete.

    A retried task may deliver some rows twice: the first copy of each path is kept.
    """

    def __init__(self, shards: Sequence[Shard]):
        self.shards = {s.key: s for s in shards}
        self.parts: dict[str, list[Batch]] = defaultdict(list)
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.done: set[str] = set()

    def add(self, rows: Batch) -> list[tuple[Shard, Batch]]:
        picked: dict[str, list[int]] = defaultdict(list)
        for i, (key, path) in enumerate(zip(rows["shard"], rows["path"])):
            if key not in self.done and path not in self.seen[key]:
                self.seen[key].add(path)
                picked[key].append(i)
        complete = []
        for key, indices in picked.items():
            self.parts[key].append({c: v[indices] for c, v in rows.items() if c != "shard"})
            if len(self.seen[key]) == len(self.shards[key].entries):
                self.done.add(key)
                del self.seen[key]
                complete.append((self.shards[key], _in_path_order(self.parts.pop(key))))
        return complete

    def check_done(self) -> None:
        if self.parts:
            raise ClusterError(f"{len(self.parts)} shards came back incomplete from the cluster; "
                                     f"run again to redo them")


def _in_path_order(parts: list[Batch]) -> Batch:
    """One shard's rows, sorted by path, with None back in the nullable text columns."""
    columns = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    order = np.argsort(columns["path"], kind="stable")
    return {c: np.array([x or None for x in v[order]], dtype=object) if c in NULLABLE else v[order]
            for c, v in columns.items()}
