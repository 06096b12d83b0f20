"""Phone and camera formats: HEIC/HEIF and AVIF (RAW and video have their own files)."""
import json
import random

import pytest
from click.testing import CliRunner
from PIL import Image

from clipsearch import Library, model_spec
from clipsearch.cli import main
from clipsearch.decode import decode
from clipsearch.shapes import ShapeSpec, render

SHOT = "2024:05:06 07:08:09"


def exif(orientation: int = 1, model: str = "iPhone 15") -> Image.Exif:
    tags = Image.Exif()
    tags[274] = orientation
    tags[272] = model
    tags.get_ifd(0x8769)[36867] = SHOT
    return tags


def shape(colour: str, kind: str, seed: int = 0, size=(128, 96)) -> Image.Image:
    return render(ShapeSpec(colour, kind, "white"), random.Random(seed), size=size[0]).resize(size)


def write(path, image: Image.Image, fmt: str, tags: Image.Exif | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **({"exif": tags.tobytes()} if tags is not None else {}))
    return path


FORMATS = [("heic", "HEIF"), ("heif", "HEIF"), ("avif", "AVIF")]


@pytest.mark.parametrize("ext,fmt", FORMATS)
def test_metadata_is_read_as_for_jpeg(ext, fmt, tmp_path):
    """Date, camera and orientation (a portrait shot stored landscape) come out as a JPEG's would."""
    path = write(tmp_path / f"p.{ext}", shape("red", "star"), fmt, exif(orientation=6))
    jpeg = write(tmp_path / "p.jpg", shape("red", "star"), "JPEG", exif(orientation=6))
    picture, meta = decode(path.read_bytes())
    _, jpeg_meta = decode(jpeg.read_bytes())
    assert meta.format == fmt
    expected = (96, 128, "2024-05-06T07:08:09", "iPhone 15")
    assert (meta.width, meta.height, meta.taken_at, meta.camera) == expected
    assert (jpeg_meta.width, jpeg_meta.height, jpeg_meta.taken_at, jpeg_meta.camera) == expected
    assert picture.size == (96, 128) and picture.mode == "RGB"


@pytest.mark.parametrize("ext,fmt", FORMATS)
def test_a_file_without_exif_still_decodes(ext, fmt, tmp_path):
    path = write(tmp_path / f"p.{ext}", Image.new("RGBA", (40, 30), (0, 0, 255, 128)), fmt)
    picture, meta = decode(path.read_bytes())
    assert (picture.size, picture.mode, meta.taken_at, meta.camera) == ((40, 30), "RGB", None, None)


@pytest.mark.parametrize("ext,fmt", FORMATS)
def test_a_truncated_file_is_skipped_and_listed(ext, fmt, tmp_path, library_dir):
    good = write(tmp_path / "photos" / f"good.{ext}", shape("blue", "circle"), fmt)
    bad = tmp_path / "photos" / f"bad.{ext}"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    errors = tmp_path / "skipped.json"
    result = CliRunner().invoke(main, ["index", str(tmp_path / "photos"), "--db", str(library_dir),
                                       "--model", "clipsearch-tiny", "--errors", str(errors)])
    assert result.exit_code == 0, result.output
    assert "added 1" in result.output and "skipped 1" in result.output
    assert [s["path"] for s in json.loads(errors.read_text())] == [str(bad)]


def test_heic_and_avif_photos_are_indexed_and_found(tmp_path, library_dir, tiny):
    root = tmp_path / "phone"
    write(root / "IMG_0001.HEIC", shape("red", "star", 1), "HEIF", exif())
    write(root / "IMG_0002.heif", shape("blue", "circle", 2), "HEIF", exif())
    write(root / "IMG_0003.avif", shape("green", "square", 3), "AVIF", exif())
    write(root / "IMG_0004.AVIF", shape("yellow", "triangle", 4), "AVIF", exif())
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        report = lib.index([root], model=model_spec("clipsearch-tiny"))
        assert (report.added, report.skipped) == (4, ())
        rows = list(lib.catalog.db.execute("SELECT format, taken_at, camera FROM images"))
        assert sorted(r[0] for r in rows) == ["AVIF", "AVIF", "HEIF", "HEIF"]
        assert {(r[1], r[2]) for r in rows} == {("2024-05-06T07:08:09", "iPhone 15")}
    out = CliRunner().invoke(main, ["search", "a red star", "--db", str(library_dir), "-n", "1", "--json"]).output
    assert json.loads(out)[0]["path"].endswith("IMG_0001.HEIC")
