"""Hostile files, crashes, concurrent use and damaged libraries: nothing is lost or corrupted."""
import fcntl
import json
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import clipsearch.library
import clipsearch.pipeline
from clipsearch import Library, model_spec
from clipsearch.cli import main

from conftest import draw_shape

TINY = ["--model", "clipsearch-tiny"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims a huge size (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def noisy(size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def hostile_tree(root: Path) -> dict[str, str]:
    """Build every kind of odd file; returns name -> 'indexed' or 'skipped'."""
    root.mkdir()
    expect = {}

    def good(name, image, **save):
        image.save(root / name, **save)
        expect[name] = "indexed"

    def bad(name, data: bytes):
        (root / name).write_bytes(data)
        expect[name] = "skipped"

    bad("empty.jpg", b"")
    jpeg = root / "whole.jpg"
    noisy((200, 150)).save(jpeg, quality=90)
    bad("truncated.jpg", jpeg.read_bytes()[: jpeg.stat().st_size // 3])
    jpeg.unlink()
    noisy((200, 150)).save(root / "whole.png")
    bad("truncated.png", (root / "whole.png").read_bytes()[:400])
    (root / "whole.png").unlink()
    bad("notes.png", b"this is a text file, not a picture\n")
    png_claiming(root / "bomb.png", 30000, 30000)
    expect["bomb.png"] = "skipped"
    good("large-40mp.jpg", Image.new("RGB", (8000, 5000), (40, 90, 160)), quality=80)
    good("cmyk.jpg", noisy((120, 90)).convert("CMYK"))
    good("sixteen-bit.png", Image.fromarray(np.arange(120 * 90, dtype=np.uint16).reshape(90, 120) * 6))
    good("grey.png", noisy((120, 90)).convert("L"))
    good("palette.png", noisy((120, 90)).convert("P"))
    transparent = Image.new("RGBA", (120, 90), (0, 0, 0, 0))
    transparent.paste((255, 0, 0, 255), (30, 20, 90, 70))
    good("transparent.png", transparent)
    frames = [Image.new("RGB", (64, 64), c) for c in [(255, 0, 0), (0, 0, 255)]]
    good("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    good("animated.webp", frames[0], save_all=True, append_images=frames[1:], duration=100)
    good("name with spaces.png", noisy((64, 64), seed=1))
    good("ünïcødé-名前.png", noisy((64, 64), seed=2))
    good("new\nline.png", noisy((64, 64), seed=3))
    os.symlink(root / "nowhere.png", root / "broken-link.png")
    expect["broken-link.png"] = "skipped"
    os.mkdir(root / "loop")
    os.symlink(root, root / "loop" / "back-to-root")
    return expect


def test_hostile_files_are_indexed_or_skipped_with_a_reason(tmp_path):
    tree = tmp_path / "hostile"
    expect = hostile_tree(tree)
    errors = tmp_path / "errors.json"
    result = cli("index", tree, "--db", tmp_path / "lib", *TINY, "--errors", errors)
    assert result.exit_code == 0, result.output
    skipped = {Path(e["path"]).name: e["reason"] for e in json.loads(errors.read_text())}
    with Library.open(tmp_path / "lib") as lib:
        indexed = {Path(p).name for (p,) in lib.catalog.db.execute("SELECT path FROM images")}
    for name, fate in expect.items():
        assert (name in indexed) == (fate == "indexed"), (name, skipped.get(name))
        assert (name in skipped) == (fate == "skipped"), name
    assert "too many pixels" in skipped["bomb.png"]
    assert skipped["broken-link.png"] == "broken symlink"
    assert skipped["empty.jpg"] == "empty file"
    assert f"skipped {len(skipped)}" in result.output


def test_sixteen_bit_and_transparent_images_decode_sensibly(tmp_path):
    from clipsearch.decode import load

    tree = tmp_path / "t"
    hostile_tree(tree)
    grey, _ = load(str(tree / "sixteen-bit.png"))
    assert grey.mode == "RGB" and 0 < np.asarray(grey).mean() < 255
    rgba, _ = load(str(tree / "transparent.png"))
    assert rgba.getpixel((0, 0)) == (255, 255, 255) and rgba.getpixel((60, 45)) == (255, 0, 0)
    big, meta = load(str(tree / "large-40mp.jpg"), min_side=64)
    assert (meta.width, meta.height) == (8000, 5000) and max(big.size) <= 1000


def test_unreadable_vanishing_and_changing_files(shape_tree, library_dir, tiny, monkeypatch):
    unreadable = str(shape_tree / "b" / "blue_circle.png")
    vanishing = shape_tree / "a" / "red_star.png"
    changing = shape_tree / "a" / "green_square.png"
    real_read, real_list = clipsearch.pipeline.read_entry, clipsearch.library.list_images

    def read_entry(entry):
        if entry.path == unreadable:
            raise PermissionError(13, "Permission denied")
        return real_read(entry)

    def list_then_change(*args, **kwargs):
        listing = real_list(*args, **kwargs)
        vanishing.unlink()
        draw_shape(changing, "red", "circle", seed=7, size=140)
        return listing

    monkeypatch.setattr(clipsearch.pipeline, "read_entry", read_entry)
    monkeypatch.setattr(clipsearch.library, "list_images", list_then_change)
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        report = lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert reasons == {"blue_circle.png": "Permission denied", "red_star.png": "vanished while indexing"}
    assert report.added == 6
    monkeypatch.undo()
    with Library.open(library_dir, encoder=tiny) as lib:
        row = lib.catalog.row_by_path(str(changing))
        assert row["size"] == changing.stat().st_size and row["width"] == 140
        again = lib.index([shape_tree])
    assert (again.added, again.updated, again.unchanged) == (1, 0, 6)  # the once-unreadable file


def library_state(library_dir: Path) -> tuple[set[str], list[str]]:
    with Library.open(library_dir) as lib:
        paths = [p for (p,) in lib.catalog.db.execute("SELECT path FROM images")]
        assert len(paths) == len(set(paths))
        catalog_ids = sorted(lib.catalog.all_ids())
        assert sorted(lib.vectors.ids()) == catalog_ids  # after reconciling: no orphans, nothing missing
        return set(paths), lib.check()


def index_process(tree: Path, library_dir: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "clipsearch", "index", str(tree), "--db", str(library_dir), *TINY,
            "--batch-size", "4", "--workers", "1", "--quiet", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})


@pytest.fixture
def big_tree(tmp_path) -> Path:
    root = tmp_path / "many"
    rng = random.Random(0)
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle", "star"]
    for i in range(160):
        draw_shape(root / f"d{i % 5}" / f"img{i:03d}.png", rng.choice(colours), rng.choice(shapes), seed=i, size=96)
    return root


def test_sigkill_at_random_moments_never_loses_or_duplicates(big_tree, library_dir):
    rng = random.Random(42)
    before: set[str] = set()
    for _ in range(5):
        proc = index_process(big_tree, library_dir)
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
    proc = index_process(big_tree, library_dir)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    paths, problems = library_state(library_dir)
    assert len(paths) == 160 and problems == []
    assert cli("check", "--db", library_dir).exit_code == 0


def test_search_while_indexing_sees_a_consistent_state(big_tree, library_dir, tiny):
    proc = index_process(big_tree, library_dir)
    seen = 0
    while proc.poll() is None:
        try:
            with Library.open(library_dir, encoder=tiny) as lib, lib.catalog.snapshot():
                results = lib.search("a red circle", k=10)
                count = lib.catalog.count()
        except clipsearch.errors.LibraryNotFound:
            continue
        paths = [r.path for r in results]
        assert len(paths) == len(set(paths)) and len(paths) == min(10, count)
        seen += 1
    assert proc.returncode == 0, proc.stderr.read()
    assert seen > 0


def test_a_second_writer_fails_fast_with_a_clear_message(shape_tree, library_dir):
    assert cli("index", shape_tree, "--db", library_dir, *TINY).exit_code == 0
    with open(library_dir / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = cli("index", shape_tree, "--db", library_dir)
    assert result.exit_code == 1 and "Another clipsearch process is writing" in result.output
    assert cli("search", "a red star", "--db", library_dir).exit_code == 0


def snapshot_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.name != "lock"}


@pytest.fixture
def indexed(shape_tree, library_dir):
    assert cli("index", shape_tree, "--db", library_dir, *TINY).exit_code == 0
    return library_dir


def test_newer_library_version_is_refused(indexed):
    with sqlite3.connect(indexed / "catalog.db") as db:
        db.execute("PRAGMA user_version = 99")
    for args in (["search", "a red star"], ["index", indexed.parent / "photos"], ["info"]):
        result = cli(*args, "--db", indexed)
        assert result.exit_code == 1 and "newer clipsearch" in result.output
        assert "Traceback" not in result.output


def test_corrupted_catalog_is_one_clear_line(indexed):
    (indexed / "catalog.db").write_bytes(b"garbage" * 100)
    for name in ("catalog.db-wal", "catalog.db-shm"):
        (indexed / name).unlink(missing_ok=True)
    before = snapshot_files(indexed)
    result = cli("search", "a red star", "--db", indexed)
    assert result.exit_code == 1 and "damaged" in result.output and len(result.output.strip().splitlines()) == 1
    assert snapshot_files(indexed) == before


def test_corrupted_index_file_is_reported_and_repaired(indexed):
    (indexed / "vectors.faiss").write_bytes(b"\0garbage" * 50)
    result = cli("search", "a red star", "--db", indexed)
    assert result.exit_code == 1 and "clipsearch repair" in result.output
    assert cli("check", "--db", indexed).exit_code == 1
    assert "rebuilt the index with 8 vectors" in cli("repair", "--db", indexed).output
    assert cli("check", "--db", indexed).output.strip() == "ok"
    assert cli("search", "a red star", "--db", indexed).exit_code == 0


def test_check_reports_orphans_and_missing_rows(indexed):
    from clipsearch.vectorindex import VectorIndex

    index = VectorIndex.load(indexed / "vectors.faiss")
    index.add(np.array([999]), np.ones((1, index.dim), np.float32) / np.sqrt(index.dim))
    index.remove(index.ids()[:1])
    index.save(indexed / "vectors.faiss")
    result = cli("check", "--db", indexed)
    assert result.exit_code == 1
    assert "1 vectors in the index have no catalog row" in result.output
    assert "1 catalog rows are missing from the index" in result.output


@pytest.mark.parametrize("args,message", [
    (["similar", "{tree}/nothing.png"], "No such file"),
    (["similar", "{notimage}"], "not a usable image"),
    (["search", ""], "Empty query"),
    (["search", "x", "-n", "0"], "Invalid value"),
])
def test_bad_arguments_write_nothing(indexed, shape_tree, tmp_path, args, message):
    notimage = tmp_path / "fake.jpg"
    notimage.write_text("hello")
    args = [a.format(tree=shape_tree, notimage=notimage) for a in args]
    before = snapshot_files(indexed)
    result = cli(*args, "--db", indexed)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert snapshot_files(indexed) == before
