"""JPEG decoding on a device (`index --gpu-decode`), checked on CPU: the same code path runs with device="cpu",
where torchvision decodes with libjpeg-turbo instead of nvJPEG. Beside the files it decodes on the device, a
collection holds every kind it leaves to the CPU: progressive, CMYK and colour-managed JPEGs, a PNG, truncated
and empty JPEGs."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageCms, ImageOps

import clipsearch.devicejpeg as devicejpeg
import clipsearch.pipeline as pipeline
from clipsearch import Library, model_spec
from clipsearch.cli import main
from clipsearch.decode import decode, plain_jpeg
from clipsearch.devicejpeg import Jpeg, decode_jpegs, upright
from clipsearch.discover import FileEntry
from clipsearch.errors import BadOption
from clipsearch.perceptual import NEAR_BITS, distances
from clipsearch.pipeline import jpeg_bytes, shm_bytes_per_worker

CPU = torch.device("cpu")
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    """Photo-like: a smooth colour field with grain, so that decoders and resizers have detail to differ on."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    grain = rng.integers(-12, 13, (size[1], size[0], 1))
    return Image.fromarray(np.clip(np.asarray(field, dtype=np.int16) + grain, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, orientation: int = 1, **params) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    exif[272] = "Test Camera"  # Model
    exif.get_ifd(0x8769)[36867] = "2022:05:04 10:11:12"  # DateTimeOriginal
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif, **params)
    return out.getvalue()


DEVICE_KINDS = {  # name: the file's bytes, decoded on the device
    "upright.jpg": lambda: jpeg(picture(1, (160, 120))),
    "large.jpg": lambda: jpeg(picture(17, (800, 600))),  # draft-decoded at 1/8 on the CPU path
    "turned6.jpg": lambda: jpeg(picture(2, (150, 100)), orientation=6),
    "turned8.jpg": lambda: jpeg(picture(3, (150, 100)), orientation=8),
    "mirrored2.jpg": lambda: jpeg(picture(4, (130, 90)), orientation=2),
    "transversed7.jpg": lambda: jpeg(picture(5, (130, 90)), orientation=7),
    "grey.jpg": lambda: jpeg(picture(6, (120, 100)).convert("L")),
    "small.jpg": lambda: jpeg(picture(7, (40, 30))),  # below the model's side: cropped, then scaled up
    "strip.jpg": lambda: jpeg(picture(8, (300, 40))),
}
CPU_KINDS = {  # name: the file's bytes, decoded on the CPU (or refused there)
    "progressive.jpg": lambda: jpeg(picture(9, (160, 120)), progressive=True),
    "cmyk.jpg": lambda: jpeg(picture(10, (120, 90)).convert("CMYK")),
    "profile.jpg": lambda: jpeg(picture(11, (120, 90)), icc_profile=SRGB),
    "trailer.jpg": lambda: jpeg(picture(12, (120, 90))) + b"trailing bytes",
    "shape.png": lambda: png(picture(13, (100, 80))),
    "truncated.jpg": lambda: jpeg(picture(14, (160, 120)))[:1500],
    "no-end-marker.jpg": lambda: jpeg(picture(15, (160, 120)))[:-2],
    "header-only.jpg": lambda: jpeg(picture(16, (160, 120)))[:300],
    "empty.jpg": lambda: b"",
}
SKIPPED = {"truncated.jpg", "no-end-marker.jpg", "header-only.jpg", "empty.jpg"}


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def mixed_tree(tmp_path) -> Path:
    root = tmp_path / "mixed"
    root.mkdir()
    for name, make in {**DEVICE_KINDS, **CPU_KINDS}.items():
        (root / name).write_bytes(make())
    return root


def tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def on_device(data: bytes) -> torch.Tensor:
    """What the main process makes of a plain JPEG: decoded on the device (here the CPU) and turned upright."""
    _, orientation = plain_jpeg(data)
    return decode_jpegs([Jpeg(tensor(data), orientation)], CPU)[0]


def test_only_plain_jpegs_are_left_to_the_device():
    for name, make in DEVICE_KINDS.items():
        assert plain_jpeg(make()) is not None, name
    for name, make in CPU_KINDS.items():
        assert plain_jpeg(make()) is None, name
    meta, orientation = plain_jpeg(DEVICE_KINDS["turned6.jpg"]())
    assert orientation == 6 and (meta.width, meta.height) == (100, 150)  # as seen: portrait
    assert (meta.format, meta.camera, meta.taken_at) == ("JPEG", "Test Camera", "2022-05-04T10:11:12")
    assert plain_jpeg(DEVICE_KINDS["upright.jpg"]())[0] == decode(DEVICE_KINDS["upright.jpg"]())[1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_pictures_are_turned_upright_as_pillow_turns_them(orientation):
    image = picture(orientation, (7, 5))
    image.getexif()[274] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image)).transpose(2, 0, 1)
    got = upright(torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()), orientation)
    assert np.array_equal(got.numpy(), expected)


@pytest.mark.parametrize("name", DEVICE_KINDS)
def test_device_crops_equal_the_cpu_crops_of_a_full_decode_within_a_few_levels(tiny, name):
    """The CPU path draft-decodes JPEGs at a reduced scale; the device decodes them whole and resizes them with
    torchvision's antialiased bicubic. Against Pillow resizing the same full decode, that is at most 1 level in 255
    where the picture is scaled down, 3 where it is scaled up (Pillow rounds between its two passes)."""
    data = DEVICE_KINDS[name]()
    full, _ = decode(data)
    crop = tiny.tensor_pixels(on_device(data))
    expected = tiny.pixels(full)
    assert crop.dtype == torch.uint8 and crop.shape == expected.shape
    assert (crop.int() - expected.int()).abs().max() <= (3 if min(full.size) < tiny.image_size else 1)


def vectors(library: Path) -> dict[str, tuple]:
    with Library.open(library) as lib:
        rows = lib.catalog.db.execute(
            "SELECT path, vector, phash, hash, width, height, format, taken_at, camera FROM images").fetchall()
    return {Path(r[0]).name: (np.frombuffer(r[1], np.float32), np.frombuffer(r[2], np.uint8), *r[3:]) for r in rows}


def index(tree: Path, library: Path, tiny, decode_device: str | None):
    with Library.open(library, create=True, encoder=tiny) as lib:
        return lib.index([tree], model=model_spec("clipsearch-tiny"), workers=2, batch_size=4,
                         decode_device=decode_device)


def skips(report) -> list[tuple[str, str]]:
    return sorted((s.path, s.reason) for s in report.skipped)


def test_indexing_with_device_decoding_gives_the_cpu_paths_results(mixed_tree, tmp_path, tiny, monkeypatch):
    cpu_report = index(mixed_tree, tmp_path / "cpu", tiny, None)
    monkeypatch.setattr(pipeline, "WORKER_BATCH", 3)  # worker batches mixing both kinds, joined in order
    real, decoded = devicejpeg.decode_jpeg, []
    monkeypatch.setattr(devicejpeg, "decode_jpeg", lambda data, **kw: decoded.extend(data) or real(data, **kw))
    report = index(mixed_tree, tmp_path / "device", tiny, "cpu")
    assert sorted(bytes(d.numpy()) for d in decoded) == sorted((mixed_tree / n).read_bytes() for n in DEVICE_KINDS)
    assert report.added == cpu_report.added == len(DEVICE_KINDS) + len(CPU_KINDS) - len(SKIPPED)
    assert skips(report) == skips(cpu_report)
    assert {Path(s.path).name for s in report.skipped} == SKIPPED
    expected, got = vectors(tmp_path / "cpu"), vectors(tmp_path / "device")
    assert expected.keys() == got.keys()
    for name, (vector, phash, *meta) in got.items():
        assert tuple(meta) == expected[name][2:], name  # content hash, size as seen, format, date, camera
        if name in CPU_KINDS:  # decoded by the same code: the same pixels
            assert np.abs(vector - expected[name][0]).max() < 1e-5, name
            assert np.array_equal(phash, expected[name][1]), name
        else:  # a full decode instead of a draft one, resized by torchvision: the same pixels to pHash
            assert float(vector @ expected[name][0]) > 0.999, name
            assert distances(phash[None], expected[name][1][None])[0][0] <= NEAR_BITS, name


def test_a_jpeg_the_device_rejects_is_decoded_on_the_cpu(mixed_tree, tmp_path, tiny, monkeypatch):
    rejected = tensor((mixed_tree / "turned6.jpg").read_bytes())
    real, calls = devicejpeg.decode_jpeg, []

    def picky(data, **kwargs):
        calls.append(len(data))
        if any(torch.equal(d, rejected) for d in data):
            raise RuntimeError("Error while decoding JPEG images")
        return real(data, **kwargs)

    monkeypatch.setattr(devicejpeg, "decode_jpeg", picky)
    cpu_report = index(mixed_tree, tmp_path / "cpu", tiny, None)
    report = index(mixed_tree, tmp_path / "device", tiny, "cpu")
    assert report.added == cpu_report.added and skips(report) == skips(cpu_report)
    assert max(calls) > 1 and 1 in calls  # the batch failed, then each of its JPEGs was tried alone
    expected, got = vectors(tmp_path / "cpu")["turned6.jpg"], vectors(tmp_path / "device")["turned6.jpg"]
    assert np.abs(got[0] - expected[0]).max() < 1e-5 and np.array_equal(got[1], expected[1])


def test_a_picture_the_device_cannot_crop_is_decoded_on_the_cpu(mixed_tree, tmp_path, tiny, monkeypatch):
    def failing(picture):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(pipeline, "thumbnail", failing)
    cpu_report = index(mixed_tree, tmp_path / "cpu", tiny, None)
    report = index(mixed_tree, tmp_path / "device", tiny, "cpu")
    assert report.added == cpu_report.added and skips(report) == skips(cpu_report)
    expected, got = vectors(tmp_path / "cpu"), vectors(tmp_path / "device")
    assert max(np.abs(got[n][0] - expected[n][0]).max() for n in expected) < 1e-5


def test_gpu_decode_without_cuda_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "a.jpg").write_bytes(DEVICE_KINDS["upright.jpg"]())
    result = CliRunner().invoke(main, ["index", str(tmp_path), "--db", str(tmp_path / "lib"), "--model",
                                       "clipsearch-tiny", "--gpu-decode"])
    assert result.exit_code == 1
    assert result.output == "Error: --gpu-decode needs a CUDA device\n"
    assert not (tmp_path / "lib" / "catalog.db").exists() or Library.open(tmp_path / "lib").count() == 0


def test_an_unknown_decode_device_is_refused(tmp_path, tiny):
    with Library.open(tmp_path / "lib", create=True, encoder=tiny) as lib:
        with pytest.raises(BadOption, match="Unknown decode device"):
            lib.index([tmp_path], decode_device="gpu")


def test_jpegs_handed_over_whole_bound_the_workers_by_their_size():
    entries = [FileEntry("a.jpg", 4_000_000, 1), FileEntry("b.JPEG", 2_000_000, 1), FileEntry("c.png", 9, 1)]
    assert jpeg_bytes(entries) == 3_000_000
    assert jpeg_bytes(entries[2:]) == 0
    assert shm_bytes_per_worker(224, file_bytes=3_000_000) == 2 * 32 * 3_000_000
    assert shm_bytes_per_worker(224, file_bytes=1_000) == shm_bytes_per_worker(224)  # pixels take more
