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


@pytest.fixture
def pairs(tmp_path, library_dir, tiny):
    """Two RAW+JPEG pairs, a lone RAW, a JPEG of the same name in another folder, and a.jpg + a.png."""
    root = tmp_path / "shots"
    from PIL import Image

    for stem, ext, shape in [("IMG_1", ".CR2", ("red", "star")), ("IMG_2", ".nef", ("blue", "circle"))]:
        rgb = picture(*shape)
        write_dng(root / f"{stem}{ext}", rgb, preview=rgb)
        Image.fromarray(rgb).save(root / f"{stem}.JPG")
    write_dng(root / "IMG_3.dng", picture("green", "square"))
    (root / "other").mkdir()
    Image.fromarray(picture("red", "star", seed=5)).save(root / "other" / "IMG_1.jpg")
    Image.fromarray(picture("yellow", "triangle")).save(root / "a.jpg")
    Image.fromarray(picture("yellow", "triangle", seed=3)).save(root / "a.png")
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        assert lib.index([root], model=model_spec("clipsearch-tiny")).added == 8
    return root


def names(output, root):
    return [r["path"].removeprefix(str(root) + "/") for r in json.loads(output)]


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_group_pairs_shows_one_entry_per_shot_the_jpeg(pairs, library_dir):
    every = names(cli("search", "a red star", "--db", library_dir, "--json"), pairs)
    assert len(every) == 8 and "IMG_1.CR2" in every
    grouped = names(cli("search", "a red star", "--db", library_dir, "--json", "--group-pairs"), pairs)
    assert sorted(grouped) == ["IMG_1.JPG", "IMG_2.JPG", "IMG_3.dng", "a.jpg", "a.png", "other/IMG_1.jpg"]
    assert grouped[0] in ("IMG_1.JPG", "other/IMG_1.jpg")
    assert len(names(cli("search", "a red star", "--db", library_dir, "--json", "--group-pairs", "-n", "3"),
                     pairs)) == 3


def test_similar_with_group_pairs_leaves_the_query_shot_out(pairs, library_dir):
    found = names(cli("similar", pairs / "IMG_1.JPG", "--db", library_dir, "--json", "--group-pairs"), pairs)
    assert "IMG_1.JPG" not in found and "IMG_1.CR2" not in found and "IMG_2.JPG" in found


def test_a_filter_that_keeps_only_the_raw_files_shows_them(pairs, library_dir):
    found = names(cli("search", "a red star", "--db", library_dir, "--json", "--group-pairs", "--ext", "cr2",
                      "--ext", "nef"), pairs)
    assert sorted(found) == ["IMG_1.CR2", "IMG_2.nef"]


def test_the_web_ui_groups_pairs_by_default(pairs, library_dir, tiny):
    from fastapi.testclient import TestClient

    from clipsearch.webapp import create_app

    with Library.open(library_dir, encoder=tiny) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        grouped = client.get("/api/search", params={"q": "a red star"}).json()["results"]
        every = client.get("/api/search", params={"q": "a red star", "group_pairs": False}).json()["results"]
        raw_id = next(h["id"] for h in every if h["path"].endswith("IMG_1.CR2"))
        assert client.get(f"/api/images/{raw_id}/thumb").status_code == 200
    assert (len(grouped), len(every)) == (6, 8)
    assert not any(h["path"].endswith((".CR2", ".nef")) for h in grouped)
