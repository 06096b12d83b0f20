"""The GPU path, checked on CPU: uint8 pixels normalised by the encoder, worker batches joined, decode
workers scaled with the cores and bounded by shared memory, batch size from device memory, and the
writer thread that overlaps catalog writes with encoding."""
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import clipsearch.batching as batching
import clipsearch.pipeline as pipeline
from clipsearch import Library, model_spec
from clipsearch.decode import ImageMeta
from clipsearch.discover import FileEntry
from clipsearch.encoder import batch_for_memory
from clipsearch.pipeline import Batch, Decoded, joined, shm_bytes_per_worker, workers_for_shm

from conftest import draw_shape
from test_reliability import library_state

MB = 1 << 20


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 255, (60 + 9 * i, 90 - 5 * i, 3), dtype=np.uint8)) for i in range(n)]


def test_uint8_pixels_normalised_by_the_encoder_equal_preprocess(tiny):
    images = photos(6)
    pixels = torch.stack([tiny.pixels(im) for im in images])
    floats = torch.stack([tiny.preprocess(im) for im in images])
    assert pixels.dtype == torch.uint8 and pixels.shape == floats.shape
    assert pixels.element_size() * pixels.nelement() * 4 == floats.element_size() * floats.nelement()
    assert np.array_equal(tiny.encode_images(pixels), tiny.encode_images(floats))


def decoded(name: str, error: str | None = None) -> Decoded:
    meta = None if error else ImageMeta(1, 1, "PNG", None, None)
    return Decoded(FileEntry(name, 1, 1), "h" if not error else None, meta, error=error)


def batch(names: str, start: int) -> Batch:
    items = [decoded(n, "bad" if n == "x" else None) for n in names]
    good = sum(1 for d in items if d.error is None)
    return Batch(items, torch.arange(start, start + good, dtype=torch.uint8).view(-1, 1) if good else None)


def test_worker_batches_are_joined_in_order_into_encoder_batches():
    parts = [batch("ab", 0), batch("x", 2), batch("cx", 2), batch("de", 3), batch("f", 5)]
    out = list(joined(parts, 3))
    assert [[d.entry.path for d in b.items] for b in out] == [list("abxcx"), list("def")]
    assert [b.pixels.view(-1).tolist() for b in out] == [[0, 1, 2], [3, 4, 5]]
    assert list(joined([batch("x", 0)], 3))[0].pixels is None


def test_decode_workers_follow_the_cores_without_a_cap_on_a_gpu(monkeypatch):
    monkeypatch.setattr(batching, "usable_cores", lambda: 96)
    assert batching.default_workers(gpu=True) == 96
    assert batching.default_workers(gpu=False) == batching.CPU_WORKER_CAP
    monkeypatch.setattr(batching, "usable_cores", lambda: 2)
    assert batching.default_workers(gpu=True) == batching.default_workers(gpu=False) == 2


def test_shared_memory_bounds_the_workers():
    per_worker = shm_bytes_per_worker(224)
    assert per_worker == 2 * 32 * 3 * 224 * 224  # 9.6 MB: two batches of 32 uint8 images in flight
    assert workers_for_shm(64, per_worker, 64 * MB) == 3  # Docker's default --shm-size
    assert workers_for_shm(64, per_worker, 1024 * MB) == 55  # --shm-size=1g
    assert workers_for_shm(16, per_worker, 64 * 1024 * MB) == 16
    assert workers_for_shm(8, per_worker, 1 * MB) == 1
    assert workers_for_shm(8, per_worker, None) == 8


def test_batch_size_follows_device_memory():
    image = 2 * MB  # about what ViT-B-32 takes per image in fp16
    assert batch_for_memory(80 * 1024 * MB, image) == 1024  # an H100: capped
    assert batch_for_memory(2 * 1024 * MB, image) == 256
    assert batch_for_memory(1024 * MB, image) == 128
    assert batch_for_memory(100 * MB, image) == 32  # never below the floor
    assert batch_for_memory(1024 * MB, 3 * MB) == 64  # a power of two that fits


def test_the_tiny_model_estimates_its_image_memory(tiny):
    assert 3 * 64 * 64 < tiny.image_bytes() < 4 * MB
    assert tiny.default_batch_size == 32  # on CPU: by device type


def vectors_by_name(library_dir):
    with Library.open(library_dir) as lib:
        rows = lib.catalog.db.execute("SELECT path, vector FROM images").fetchall()
    return {p.rsplit("/", 1)[-1]: np.frombuffer(v, dtype=np.float32) for p, v in rows}


def test_indexing_through_uint8_pixels_gives_the_same_vectors(shape_tree, tmp_path, tiny, monkeypatch):
    for i in range(10):
        draw_shape(shape_tree / "c" / f"extra{i}.png", "red", "circle", seed=100 + i)
    with Library.open(tmp_path / "workers", create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"), workers=2, batch_size=8)
    monkeypatch.setattr(pipeline, "workers_can_encode", lambda device: False)
    monkeypatch.setattr(pipeline, "WORKER_BATCH", 3)
    with Library.open(tmp_path / "main", create=True, encoder=tiny) as lib:
        report = lib.index([shape_tree], model=model_spec("clipsearch-tiny"), workers=2, batch_size=8)
    assert report.added == 18
    expected, got = vectors_by_name(tmp_path / "workers"), vectors_by_name(tmp_path / "main")
    assert expected.keys() == got.keys()
    assert max(np.abs(expected[k] - got[k]).max() for k in expected) < 1e-5


def test_a_failing_write_stops_the_run_and_keeps_the_batches_written(shape_tree, library_dir, tiny, monkeypatch):
    from clipsearch.catalog import Catalog

    real, calls = Catalog.write_batch, []

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, *args)

    monkeypatch.setattr(Catalog, "write_batch", failing)
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        with pytest.raises(OSError, match="No space left"):
            lib.index([shape_tree], model=model_spec("clipsearch-tiny"), workers=0, batch_size=2)
    monkeypatch.setattr(Catalog, "write_batch", real)
    paths, _ = library_state(library_dir)  # the index file is written at the end of a run: none yet
    assert len(paths) == 2
    with Library.open(library_dir, encoder=tiny) as lib:
        assert lib.index([shape_tree]).added == 6
    assert library_state(library_dir)[1] == []


KILLED_CHILD = """
import sys
import clipsearch.batching as batching
import clipsearch.pipeline as pipeline
pipeline.workers_can_encode = lambda device: False  # encode in the main process, as on a GPU
pipeline.WORKER_BATCH = 2
from clipsearch.cli import main
main(sys.argv[1:])
"""


def test_sigkill_with_main_process_encoding_never_loses_or_duplicates(big_tree, library_dir):
    rng = random.Random(7)
    args = ["index", str(big_tree), "--db", str(library_dir), "--model", "clipsearch-tiny", "--batch-size", "4",
            "--workers", "2", "--quiet"]
    before: set[str] = set()
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, *args], stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(1.0, 4.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if not (library_dir / "catalog.db").exists():
            continue
        paths, _ = library_state(library_dir)
        assert before <= paths, "a crash lost previously indexed images"
        before = paths
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, *args], stderr=subprocess.PIPE)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    paths, problems = library_state(library_dir)
    assert len(paths) == 160 and problems == []


@pytest.fixture
def big_tree(tmp_path):
    root = tmp_path / "many"
    for i in range(160):
        draw_shape(root / f"d{i % 5}" / f"img{i:03d}.png", ["red", "blue"][i % 2], ["circle", "star"][i % 3 % 2],
                   seed=i, size=96)
    return root
