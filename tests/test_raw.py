"""Camera RAW files (LibRaw): a DNG written in the test, with and without a usable JPEG preview."""
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from clipsearch import Library, model_spec
from clipsearch.cli import main
from clipsearch.decode import decode
from clipsearch.raw import RAW_EXTENSIONS, develop
from clipsearch.shapes import ShapeSpec, render

from generated import dng_bytes, write_dng


def picture(colour="red", kind="star", seed=0, size=(192, 128)) -> np.ndarray:
    """An RGB shape picture (uint8, H x W x 3) with a black marker in its top-left corner."""
    rgb = np.asarray(render(ShapeSpec(colour, kind, "white"), random.Random(seed), size=size[0]).resize(size)).copy()
    rgb[:16, :16] = 0
    return rgb


def test_a_large_enough_preview_is_used_turned_as_the_camera_says():
    rgb = picture()
    shot = develop(dng_bytes(rgb, preview=rgb, orientation=6), min_side=64, max_pixels=10**8)
    assert shot.source == "preview"
    assert shot.size == (128, 192) and shot.image.mode == "RGB"
    assert shot.image.size == (64, 96)  # draft-decoded down to the model's input size, no further
    corner = np.asarray(shot.image)[:6, -6:]  # turned 90° clockwise: the marker is now top right
    assert corner.mean() < 40


@pytest.mark.parametrize("preview_side", [None, 32])
def test_without_a_usable_preview_the_sensor_data_is_demosaiced(preview_side):
    rgb = picture()
    small = rgb[::6, ::6] if preview_side else None
    shot = develop(dng_bytes(rgb, preview=small, orientation=6), min_side=64, max_pixels=10**8)
    assert shot.source == "demosaic"
    assert shot.size == (128, 192) and shot.image.size == (64, 96)  # half size, turned
    assert np.asarray(shot.image)[:8, -8:].mean() < 60


@pytest.mark.parametrize("preview", [True, False])
def test_date_camera_and_size_are_read_from_the_file(preview):
    rgb = picture()
    image, meta = decode(dng_bytes(rgb, preview=rgb if preview else None, orientation=8), 64, "IMG_1.DNG")
    assert (meta.format, meta.width, meta.height) == ("DNG", 128, 192)
    assert (meta.taken_at, meta.camera) == ("2023-01-02T03:04:05", "TestCam 1")
    assert image.mode == "RGB"


def test_every_raw_extension_is_indexed_and_a_red_star_is_found(tmp_path, library_dir, tiny):
    root = tmp_path / "camera"
    shapes = [("red", "star"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle")]
    for i, ext in enumerate(sorted(RAW_EXTENSIONS)):
        rgb = picture(*shapes[i % 4], seed=i)
        write_dng(root / f"IMG_{i:04d}{ext.upper() if i % 2 else ext}", rgb, preview=rgb if i % 3 else None)
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        report = lib.index([root], model=model_spec("clipsearch-tiny"))
        assert (report.added, report.skipped) == (len(RAW_EXTENSIONS), ())
        rows = lib.catalog.db.execute("SELECT format, width, height, camera FROM images").fetchall()
        assert sorted(r[0] for r in rows) == sorted(e.lstrip(".").upper() for e in RAW_EXTENSIONS)
        assert {r[1:] for r in rows} == {(192, 128, "TestCam 1")}
    result = CliRunner().invoke(main, ["search", "a red star", "--db", str(library_dir), "-n", "3", "--json"])
    found = [r["path"] for r in json.loads(result.output)]
    assert all(("IMG_0000" in p or "IMG_0004" in p or "IMG_0008" in p) for p in found[:2]), found


@pytest.mark.parametrize("ext", sorted(RAW_EXTENSIONS))
def test_broken_raw_files_are_skipped_and_listed(ext, tmp_path, library_dir):
    root = tmp_path / "camera"
    rgb = picture()
    good = write_dng(root / f"good{ext}", rgb, preview=rgb)
    (root / f"garbage{ext}").write_bytes(b"not a raw file" * 100)
    (root / f"empty{ext}").write_bytes(b"")
    (root / f"truncated{ext}").write_bytes(good.read_bytes()[:200])
    errors = tmp_path / "skipped.json"
    result = CliRunner().invoke(main, ["index", str(root), "--db", str(library_dir), "--model", "clipsearch-tiny",
                                       "--errors", str(errors)])
    assert result.exit_code == 0, result.output
    assert "added 1" in result.output and "skipped 3" in result.output
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in json.loads(errors.read_text())}
    assert sorted(skipped) == sorted(f"{n}{ext}" for n in ("garbage", "empty", "truncated"))
    assert skipped[f"garbage{ext}"].startswith("cannot decode RAW")
