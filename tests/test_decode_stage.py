"""The decode stage on real-library inputs: files that break decoders, every format Pillow reads, shapes
that would blow up memory, EXIF dates, colour profiles and PNG metadata. Every input is generated here."""
import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms, ImageFile, PngImagePlugin, features

import clipsearch.encoder
from clipsearch import Library
from clipsearch.cli import main
from clipsearch.decode import decode, model_view
from clipsearch.discover import FileEntry, image_extensions
from clipsearch.errors import BadImage
from clipsearch.filters import Filters
from clipsearch.batching import SMALLEST_BATCH, guided
from clipsearch.pipeline import load_entry
from clipsearch.thumbnails import thumbnail

from conftest import SHAPE_TREE, draw_shape

TINY = ["--model", "clipsearch-tiny"]
REPO = Path(__file__).resolve().parent.parent


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def jpeg_bytes(img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **params)
    return buf.getvalue()


# ---------------------------------------------------------------- 1. one file never stops a run

def exif_with_gps(orientation: int, gps_entries: list[bytes]) -> bytes:
    """A big-endian EXIF block: IFD0 with Orientation and a GPS IFD holding raw 12-byte entries."""
    ifd0 = (struct.pack(">H", 2) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
            + struct.pack(">HHII", 0x8825, 4, 1, 38) + struct.pack(">I", 0))
    gps = struct.pack(">H", len(gps_entries)) + b"".join(gps_entries) + struct.pack(">I", 0)
    return b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + gps


ODD_GPS = {  # each makes Pillow's exif_transpose raise TypeError while it rewrites the EXIF block
    "GPSLatitudeRef as SHORT": struct.pack(">HHIHH", 1, 3, 2, ord("N"), 0),
    "GPSVersionID as ASCII": struct.pack(">HHI4s", 0, 2, 4, b"2200"),
}


def half_red_half_blue() -> Image.Image:
    """60 x 40: left half red, right half blue."""
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 40))
    return img


@pytest.mark.parametrize("gps", ODD_GPS)
@pytest.mark.parametrize("orientation, top, bottom", [(6, "red", "blue"), (8, "blue", "red"), (3, None, None)])
def test_orientation_is_applied_when_exif_transpose_fails(gps, orientation, top, bottom):
    data = jpeg_bytes(half_red_half_blue(), exif=exif_with_gps(orientation, [ODD_GPS[gps]]))
    with pytest.raises(TypeError):  # the failure this guards against, in the installed Pillow
        from PIL import ImageOps
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    picture, meta = decode(data, 224)
    if orientation == 3:  # rotated 180 degrees: the red half is now on the right
        assert picture.size == (60, 40) and picture.getpixel((50, 20))[0] > 200
        return
    assert picture.size == (40, 60) and (meta.width, meta.height) == (40, 60)
    colour = {"red": lambda p: p[0] > 200 and p[2] < 60, "blue": lambda p: p[2] > 200 and p[0] < 60}
    assert colour[top](picture.getpixel((20, 10))) and colour[bottom](picture.getpixel((20, 50)))


def test_index_similar_and_search_keep_photos_whose_exif_cannot_be_rewritten(shape_tree, library_dir):
    for i, entry in enumerate(ODD_GPS.values()):
        (shape_tree / f"gps{i}.jpg").write_bytes(jpeg_bytes(half_red_half_blue(), exif=exif_with_gps(6, [entry])))
    result = cli("index", shape_tree, "--db", library_dir, *TINY)
    assert result.exit_code == 0, result.output
    assert f"added {len(SHAPE_TREE) + len(ODD_GPS)}," in result.output and "skipped 0" in result.output
    for args in (["similar", shape_tree / "gps0.jpg"], ["search", "--image", shape_tree / "gps1.jpg"]):
        found = cli(*args, "--db", library_dir, "--json")
        assert found.exit_code == 0, found.output
        assert json.loads(found.output)


FAILURES = [TypeError("bad tag type"), KeyError(42), struct.error("unpack requires a buffer of 4 bytes"),
            ZeroDivisionError("division by zero"), IndexError("tuple index out of range"),
            RuntimeError("decoder confused"), AttributeError("'NoneType' object has no attribute 'seek'"),
            NotImplementedError("tile mode"), MemoryError()]


@pytest.fixture
def failing_decoder(monkeypatch):
    """Pillow's `load` raises FAILURES[i] for pictures 30 + i pixels wide, and works for every other."""
    real_load = ImageFile.ImageFile.load

    def load(self):
        i = self.size[0] - 30
        if 0 <= i < len(FAILURES) and self.size[1] == 17:
            raise FAILURES[i]
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def failing_png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30 + i, 17), "green").save(buf, "PNG")
    return buf.getvalue()


def png_with_damaged_pixels(damage: str) -> bytes:
    """A PNG whose IDAT is damaged but whose chunk CRCs are valid, so only the pixel decoder notices."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG", exif=Image.Exif())
    data = bytearray(buf.getvalue())
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4:pos + 8] == b"IDAT":
            body = bytes(data[pos + 8:pos + 8 + n])
            body = {"flipped": bytes(b ^ 0x55 for b in body[:2]) + body[2:],
                    "garbled": body[:10] + bytes(b ^ 0x55 for b in body[10:]),
                    "truncated": zlib.compress(zlib.decompress(body)[:100])}[damage]
            chunk = b"IDAT" + body
            data[pos:pos + 12 + n] = struct.pack(">I", len(body)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            break
        pos += 12 + n
    return bytes(data)


@pytest.mark.parametrize("damage", ["flipped", "garbled", "truncated"])
def test_damaged_pixels_are_never_indexed_as_a_picture(damage):
    """Reading EXIF loads a PNG's pixels: a failure there must surface, not leave a blank picture behind."""
    with pytest.raises(BadImage, match="cannot decode"):
        decode(png_with_damaged_pixels(damage))


@pytest.mark.parametrize("i", range(len(FAILURES)), ids=[type(f).__name__ for f in FAILURES])
def test_any_exception_while_decoding_is_a_bad_image(failing_decoder, i):
    """What `similar`, `search --image` and the web upload (415) rely on: only BadImage comes out."""
    with pytest.raises(BadImage) as caught:
        decode(failing_png(i), 224)
    assert type(FAILURES[i]).__name__ in str(caught.value) or str(FAILURES[i]) in str(caught.value) \
        or "out of memory" in str(caught.value)


def test_index_skips_and_lists_every_file_a_decoder_fails_on(failing_decoder, shape_tree, library_dir, tmp_path):
    for i in range(len(FAILURES)):
        (shape_tree / f"fails{i}.png").write_bytes(failing_png(i))
    errors = tmp_path / "errors.json"
    result = cli("index", shape_tree, "--db", library_dir, *TINY, "--errors", errors)
    assert result.exit_code == 0, result.output
    assert f"added {len(SHAPE_TREE)}," in result.output and f"skipped {len(FAILURES)} " in result.output
    assert "Traceback" not in result.output
    listed = {Path(s["path"]).name: s["reason"] for s in json.loads(errors.read_text())}
    assert set(listed) == {f"fails{i}.png" for i in range(len(FAILURES))}
    assert "TypeError: bad tag type" in listed["fails0.png"] and "ZeroDivisionError" in listed["fails3.png"]
    for args in (["similar", shape_tree / "fails0.png"], ["search", "--image", shape_tree / "fails5.png"]):
        refused = cli(*args, "--db", library_dir)
        assert refused.exit_code == 1 and "Traceback" not in refused.output
        assert refused.output.count("\n") == 1 and "is not a usable image" in refused.output
    again = cli("index", shape_tree, "--db", library_dir, *TINY)  # remembered, not retried, run goes on
    assert again.exit_code == 0 and f"unchanged {len(SHAPE_TREE)}, skipped {len(FAILURES)}" in again.output


@pytest.mark.parametrize("failure", [ValueError("bad"), RuntimeError("odd"), TypeError("x"), IndexError("y")])
def test_a_preprocessing_failure_is_that_files_reason(tiny, monkeypatch, tmp_path, failure):
    """The per-file boundary of the pipeline (and of the Ray tasks, which call the same function)."""
    def model_view(image, side):
        raise failure

    monkeypatch.setattr(clipsearch.encoder, "model_view", model_view)
    path = draw_shape(tmp_path / "a.png", "red", "star")
    decoded, pixels = load_entry(FileEntry(str(path), 0, 0), tiny.preprocess, tiny.image_size)
    assert pixels is None and decoded.error == f"cannot preprocess: {type(failure).__name__}: {failure}"


# ---------------------------------------------------------------- 2. every format Pillow decodes

def test_the_extension_list_comes_from_pillow():
    exts = image_extensions()
    assert {".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff", ".bmp",
            ".jp2", ".qoi", ".tga", ".ppm", ".psd", ".ico"} <= exts
    assert (".avif" in exts) == bool(features.check("avif"))
    assert {".heic", ".heif", ".dng", ".cr3", ".nef", ".mp4", ".mov", ".mkv"} <= exts  # pillow-heif, RAW, video
    assert not exts & {".pdf", ".eps", ".ps", ".mpg", ".mpeg", ".h5", ".grib", ".bufr", ".wmf", ".txt"}


def test_every_decodable_format_is_indexed_and_the_rest_counted(tmp_path, library_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    red = draw_shape(tmp_path / "red.png", "red", "star")
    picture = Image.open(red).convert("RGB")
    for name, fmt in [("a.jfif", "JPEG"), ("b.jpe", "JPEG"), ("c.jif", "JPEG"), ("d.JPG", "JPEG"),
                      ("e.qoi", "QOI"), ("f.tga", "TGA"), ("g.jp2", "JPEG2000")] \
            + ([("h.avif", "AVIF")] if features.check("avif") else []):
        picture.save(photos / name, fmt)
    for name in ["notes.txt", "more.txt", "list.txt", "paper.pdf", "clip.mpg", "README"]:
        (photos / name).write_bytes(b"not a picture")
    (photos / "broken.jpe").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = cli("index", photos, "--db", library_dir, *TINY)
    assert result.exit_code == 0, result.output
    added = 8 if features.check("avif") else 7
    assert f"added {added}," in result.output and "skipped 1 " in result.output
    assert "passed over 6 files that are not images: .txt 3, (no extension) 1, .mpg 1, .pdf 1" in result.output
    with Library.open(library_dir) as lib:
        report = lib.index([photos])
    assert [(p.extension, p.files) for p in report.passed_over] == [(".txt", 3), ("", 1), (".mpg", 1), (".pdf", 1)]
    assert [Path(s.path).name for s in report.skipped] == ["broken.jpe"]


# ---------------------------------------------------------------- 3. memory does not depend on shape

def png_of(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), "orange").save(path)
    return path


@pytest.mark.parametrize("shape", [(1, 100_000), (100_000, 1), (3, 30_000), (30_000, 3), (20_000, 200), (51, 1)])
def test_absurd_aspect_ratios_are_refused_with_a_reason(tmp_path, shape):
    with pytest.raises(BadImage, match=r"aspect ratio too extreme: \d+x\d+ is longer than 50:1"):
        decode(png_of(tmp_path / "strip.png", *shape).read_bytes(), 224)


@pytest.mark.parametrize("shape", [(1, 50), (50, 1), (3, 120), (20_000, 400), (400, 20_000), (9_000, 200), (7, 9)])
def test_strips_and_panoramas_within_the_cap_are_embedded(tiny, tmp_path, shape):
    path = png_of(tmp_path / "pano.png", *shape)
    decoded, pixels = load_entry(FileEntry(str(path), 0, 0), tiny.preprocess, tiny.image_size)
    assert decoded.error is None and tuple(pixels.shape) == (3, tiny.image_size, tiny.image_size)


def test_the_crop_is_decided_before_any_upscaling():
    assert model_view(Image.new("RGB", (1, 50)), 64).size == (1, 1)
    assert model_view(Image.new("RGB", (30, 10)), 64).size == (10, 10)
    assert model_view(Image.new("RGB", (90, 64)), 64).size == (90, 64)  # no upscaling: as before
    big = Image.new("RGB", (640, 480))
    assert model_view(big, 224) is big


def test_memory_of_preprocessing_does_not_depend_on_the_shape(tmp_path):
    """With the aspect cap lifted, a 1 x 100,000 strip would be scaled to 64 x 6,400,000 (1.6 GB) by the
    model's preprocessing; cropped first, it costs nothing. Measured in a fresh process."""
    shapes = [(1, 100_000), (100_000, 1), (3, 30_000), (20_000, 200), (2, 5_000), (1, 50)]
    paths = [str(png_of(tmp_path / f"{w}x{h}.png", w, h)) for w, h in shapes]
    script = textwrap.dedent(f"""
        import json, resource, torch
        torch.set_num_threads(1)

        def peak_kb():  # VmHWM: ru_maxrss would carry over the peak of the test runner that forked us
            try:
                return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
            except OSError:
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        import clipsearch.decode
        from clipsearch.discover import FileEntry
        from clipsearch.models import load_encoder, model_spec
        from clipsearch.pipeline import load_entry
        clipsearch.decode.MAX_ASPECT = 10 ** 9
        encoder = load_encoder(model_spec("clipsearch-tiny"), "cpu")
        encoder.preprocess(clipsearch.decode.decode(open({paths[-1]!r}, "rb").read(), 64)[0])
        before = peak_kb()
        shapes = []
        for path in {paths!r}:
            decoded, pixels = load_entry(FileEntry(path, 0, 0), encoder.preprocess, encoder.image_size)
            assert decoded.error is None, decoded.error
            shapes.append(tuple(pixels.shape))
        rise_mb = (peak_kb() - before) / 1024
        print(json.dumps({{"rise_mb": rise_mb, "shapes": shapes}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(tuple(s) == (3, 64, 64) for s in measured["shapes"])
    assert measured["rise_mb"] < 64, measured


# ---------------------------------------------------------------- 6. dates

def exif_dates(original=None, digitized=None, datetime=None, offsets=()) -> Image.Exif:
    exif = Image.Exif()
    if datetime is not None:
        exif[306] = datetime
    sub = exif.get_ifd(0x8769)
    for tag, value in ((36867, original), (36868, digitized), *offsets):
        if value is not None:
            sub[tag] = value
    return exif


@pytest.mark.parametrize("original", [None, "0000:00:00 00:00:00", "", "    ", "\x00" * 19, "not a date",
                                      "2019:13:45 99:99:99", "0000-00-00 00:00:00"])
def test_unusable_date_taken_falls_back_to_the_next_exif_date(original):
    data = jpeg_bytes(Image.new("RGB", (8, 8)), exif=exif_dates(original, datetime="2019:05:04 03:02:01"))
    assert decode(data)[1].taken_at == "2019-05-04T03:02:01"
    data = jpeg_bytes(Image.new("RGB", (8, 8)), exif=exif_dates(original, "2018:01:02 03:04:05", "2019:05:04 03:02:01"))
    assert decode(data)[1].taken_at == "2018-01-02T03:04:05"


@pytest.mark.parametrize("dates, offsets, expected", [
    (("2020:06:01 14:03:00", None, None), [(36881, "+02:00")], "2020-06-01T14:03:00+02:00"),
    (("2020:06:01 14:03:00", None, None), [(36881, "-05:30"), (36880, "+09:00")], "2020-06-01T14:03:00-05:30"),
    (("", "2020:06:01 14:03:00", None), [(36881, "+02:00"), (36882, "+01:00")], "2020-06-01T14:03:00+01:00"),
    ((None, None, "2020:06:01 14:03:00"), [(36880, "+00:00")], "2020-06-01T14:03:00+00:00"),
    (("2020:06:01 14:03:00", None, None), [(36881, "   ")], "2020-06-01T14:03:00"),
    (("2020:06:01 14:03:00", None, None), [(36881, "+2")], "2020-06-01T14:03:00"),
    (("2020:06:01 14:03:00", None, None), [(36880, "+02:00")], "2020-06-01T14:03:00"),  # another date's offset
    (("2020:06:01 14:03:00", None, None), [(36881, "+99:99")], "2020-06-01T14:03:00"),  # no clock's offset
    (("2020:06:01 14:03:00", None, None), [(36881, "-15:00")], "2020-06-01T14:03:00"),
    (("2020:06:01 14:03:00", None, None), [(36881, "+14:00")], "2020-06-01T14:03:00+14:00"),
])
def test_the_utc_offset_of_the_date_used_is_kept(dates, offsets, expected):
    data = jpeg_bytes(Image.new("RGB", (8, 8)), exif=exif_dates(*dates, offsets=offsets))
    assert decode(data)[1].taken_at == expected


def test_date_filters_compare_local_time_with_or_without_offset(tmp_path, library_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    shape = Image.open(draw_shape(tmp_path / "s.png", "red", "star")).convert("RGB")
    shape.save(photos / "offset.jpg", exif=exif_dates("2020:06:01 23:30:00", offsets=[(36881, "-08:00")]))
    shape.save(photos / "plain.jpg", exif=exif_dates("0000:00:00 00:00:00", datetime="2020:06:02 00:30:00"))
    assert cli("index", photos, "--db", library_dir, *TINY).exit_code == 0
    with Library.open(library_dir) as lib:
        def names(**when):
            return sorted(Path(r.path).name for r in lib.search("star", filters=Filters(**when)))

        from datetime import datetime
        assert names(before=datetime(2020, 6, 2)) == ["offset.jpg"]
        assert names(after=datetime(2020, 6, 2)) == ["plain.jpg"]
        assert [r.taken_at for r in lib.search("star", sort="date")] == ["2020-06-01T23:30:00-08:00",
                                                                          "2020-06-02T00:30:00"]


@pytest.mark.parametrize("option", ["--after 0001-01-01", "--before 2300-01-01", "--after 9999-12-31T23:59:59",
                                    "--before 1600-01-01", "--after 1000-01-01 --before 9000-01-01"])
def test_out_of_range_filter_dates_are_clamped(shape_tree, library_dir, option):
    cli("index", shape_tree, "--db", library_dir, *TINY)
    result = cli("search", "star", "--db", library_dir, *option.split())
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_filter_dates_that_cannot_be_made_local_are_refused_in_one_line(shape_tree, library_dir, value):
    cli("index", shape_tree, "--db", library_dir, *TINY)
    result = cli("search", "star", "--db", library_dir, "--after", value)
    assert result.exit_code == 2 and "Date out of range" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- 6. colour profiles

def s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)


def rgb_profile(name: str, red, green, blue, gamma: float) -> bytes:
    """A matrix/TRC ICC v2 display profile: primaries as D50 XYZ, one gamma for the three channels."""
    text = name.encode() + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(*red)), (b"gXYZ", xyz(*green)),
            (b"bXYZ", xyz(*blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(28) + xyz(0.9642, 1.0, 0.8249)[8:] + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


WIDE_GAMUT = {
    "ProPhoto": rgb_profile("ProPhoto RGB", (0.7977, 0.2880, 0.0), (0.1352, 0.7119, 0.0), (0.0313, 0.0001, 0.8249), 1.8),
    "Display P3": rgb_profile("Display P3", (0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419),
                              (0.1571, 0.0666, 0.7841), 2.2),
}


def red_square_in(profile: bytes, fmt: str) -> bytes:
    """A red square as a wide-gamut editor saves it: its pixels in the profile's space, the profile embedded."""
    srgb = ImageCms.createProfile("sRGB")
    pixels = ImageCms.profileToProfile(Image.new("RGB", (96, 96), (255, 0, 0)), srgb,
                                       ImageCms.ImageCmsProfile(io.BytesIO(profile)))
    buf = io.BytesIO()
    pixels.save(buf, fmt, icc_profile=profile, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def is_red(pixel) -> bool:
    r, g, b = pixel[:3]
    return r > 235 and g < 25 and b < 25


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
@pytest.mark.parametrize("profile", WIDE_GAMUT)
def test_a_wide_gamut_red_square_decodes_red(profile, fmt):
    data = red_square_in(WIDE_GAMUT[profile], fmt)
    assert not is_red(Image.open(io.BytesIO(data)).convert("RGB").getpixel((48, 48)))  # the pixels alone
    assert is_red(decode(data, 64)[0].getpixel((48, 48)))


@pytest.mark.parametrize("profile", WIDE_GAMUT)
def test_thumbnails_and_embeddings_are_made_in_srgb(tiny, tmp_path, profile):
    path = tmp_path / "red.jpg"
    path.write_bytes(red_square_in(WIDE_GAMUT[profile], "JPEG"))
    thumb = thumbnail(str(path), 32)
    assert is_red(thumb.getpixel((16, 16)))
    srgb_red, as_is, converted = tiny.encode_pil([Image.new("RGB", (96, 96), (255, 0, 0)),
                                                  Image.open(path).convert("RGB"), decode(path.read_bytes())[0]])
    assert float(srgb_red @ converted) > max(0.999, float(srgb_red @ as_is))


@pytest.mark.parametrize("profile", [b"", b"garbage", WIDE_GAMUT["ProPhoto"][:200], b"\0" * 4096])
def test_an_unusable_profile_leaves_the_pixels_as_they_are(profile):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "PNG", icc_profile=profile)
    assert decode(buf.getvalue())[0].getpixel((8, 8)) == (10, 200, 30)


# ---------------------------------------------------------------- 6. large PNG metadata chunks

def workflow(size: int) -> str:
    """A generated image's workflow comment: JSON, compressible, `size` characters."""
    node = '{"id": 17, "type": "KSampler", "widgets_values": [123456789, "euler", 20, 7.5]}, '
    return ("[" + node * (size // len(node) + 1))[:size]


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt", "iTXt compressed", "iCCP"])
def test_a_png_with_a_large_metadata_chunk_is_indexed(kind, tmp_path):
    info = PngImagePlugin.PngInfo()
    text = workflow(3_000_000)
    params = {}
    if kind == "iCCP":
        params["icc_profile"] = WIDE_GAMUT["Display P3"] + text.encode()
    elif kind.startswith("iTXt"):
        info.add_itxt("workflow", text, zip=kind.endswith("compressed"))
    else:
        info.add_text("workflow", text, zip=kind == "zTXt")
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buf, "PNG", pnginfo=info, **params)
    picture, meta = decode(buf.getvalue(), 64)
    assert picture.size == (64, 48) and meta.format == "PNG"
    assert PngImagePlugin.MAX_TEXT_CHUNK == ImageFile.SAFEBLOCK  # Pillow's limits are restored afterwards


@pytest.mark.parametrize("kind", ["zTXt", "iCCP"])
def test_a_metadata_chunk_still_refused_is_named(kind):
    huge = b"\0" * 40_000_000  # decompresses beyond clipsearch's 32 MB cap
    buf = io.BytesIO()
    if kind == "iCCP":
        Image.new("RGB", (8, 8)).save(buf, "PNG", icc_profile=huge)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("workflow", huge.decode(), zip=True)
        Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    with pytest.raises(BadImage, match=f"PNG {kind} chunk"):
        decode(buf.getvalue())


@pytest.mark.parametrize("shape", [(12_000, 12_000), (60_000, 60_000), (2**31 - 1, 2)])
def test_pixel_bombs_are_still_refused(shape):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", *shape, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    with pytest.raises(BadImage, match="too many pixels|aspect ratio"):
        decode(bomb)
    assert np.asarray(decode(jpeg_bytes(Image.new("RGB", (8, 8))))[0]).shape == (8, 8, 3)


@pytest.mark.parametrize("n, size, workers", [(500, 32, 2), (64, 32, 2), (65, 32, 2), (33, 32, 2), (100, 32, 3),
                                              (70, 32, 16), (1, 32, 2), (0, 32, 2), (1000, 32, 1), (7, 1, 2),
                                              (10_000, 256, 16)])
def test_the_workers_last_batches_shrink_so_that_they_finish_together(n, size, workers):
    """Each file once, in order; full batches while many files remain, then never more than the remaining files
    shared among twice the workers, never fewer than SMALLEST_BATCH but for the last: no worker encodes a full
    batch at the end while the others idle."""
    batches = guided(n, size, workers)
    assert [i for batch in batches for i in batch] == list(range(n)) and all(batches)
    sizes = [len(b) for b in batches]
    assert max(sizes, default=0) <= size and sizes == sorted(sizes, reverse=True)
    if workers > 1:
        remaining = [n - sum(sizes[:k]) for k in range(len(sizes))]
        assert all(s <= max(min(SMALLEST_BATCH, size), -(-r // (2 * workers))) for s, r in zip(sizes, remaining))
        assert all(s >= min(SMALLEST_BATCH, size) for s in sizes[:-1])
    else:
        assert all(s == size for s in sizes[:-1])
    if (n, size, workers) == (500, 32, 2):
        assert sizes[-11:] == [29, 22, 17, 12, 9, 7, 5, 4, 4, 4, 3]
