"""Photos decoded while the model loads (headstart.py): the same as the decode stage's, in a fresh `clipsearch index`
process as in one that decodes every photo itself."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsearch.catalog import Catalog
from clipsearch.discover import FileEntry
from clipsearch.headstart import HeadStart
from clipsearch.models import ModelSpec, input_side, model_spec
from clipsearch.pipeline import load_entry

SIDE = 64
"""The bundled tiny model's input side."""


def photo(path: Path, size: tuple[int, int], seed: int, fmt: str | None = None, orientation: int | None = None,
          mode: str = "RGB") -> Path:
    """A noisy gradient, so that every decode step (draft scale, turn, colour conversion) shows in the pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.array([1.0, 0.5, 0.2], np.float32)
    pixels = np.clip(ramp + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, fmt, exif=exif) if fmt in (None, "JPEG") else image.save(path, fmt)
    return path


def collection(folder: Path) -> list[Path]:
    """Photos of the kinds a library holds (large and small JPEGs, turned by EXIF, CMYK, PNG, WebP, grey) and a
    broken one, which the head start leaves to the decode stage."""
    folder.mkdir(parents=True)
    paths = [photo(folder / "large.jpg", (1600, 1200), 1), photo(folder / "turned.jpg", (1200, 900), 2, orientation=6),
             photo(folder / "small.jpg", (48, 40), 3), photo(folder / "cmyk.jpg", (640, 480), 4, mode="CMYK"),
             photo(folder / "lossless.png", (500, 300), 5, "PNG"), photo(folder / "web.webp", (320, 240), 6, "WEBP"),
             photo(folder / "grey.jpg", (400, 700), 7, mode="L")]
    broken = folder / "broken.jpg"
    broken.write_bytes(paths[0].read_bytes()[:300])
    return [*paths, broken]


def entries(paths: list[Path]) -> list[FileEntry]:
    return [FileEntry.of(str(p), p.stat()) for p in paths]


def decoded_to_the_end(paths: list[Path], side: int = SIDE) -> HeadStart:
    """A head start that has reached the last of `paths`: a FIFO put last blocks it until opened here for writing,
    then reads as an empty file (no image, so left to the decode stage)."""
    gate = paths[0].parent / "gate.jpg"
    os.mkfifo(gate)
    ahead = HeadStart(entries([*paths, gate]), side)
    with open(gate, "wb"):
        pass
    return ahead


def test_photos_decoded_ahead_are_those_the_decode_stage_gives(tmp_path, tiny):
    paths = collection(tmp_path / "photos")
    photos = decoded_to_the_end(paths).finish(SIDE)
    assert sorted(photos) == sorted(str(p) for p in paths if p.name != "broken.jpg")
    for entry in entries(paths[:-1]):
        own, pixels = load_entry(entry, tiny.preprocess, SIDE)
        given, given_pixels = load_entry(entry, tiny.preprocess, SIDE, ahead=photos[entry.path])
        assert given == own and own.error is None
        assert torch.equal(given_pixels, pixels)


def test_photos_decoded_for_another_input_side_are_not_used(tmp_path):
    assert decoded_to_the_end(collection(tmp_path / "photos")).finish(SIDE * 2) == {}


def test_a_head_start_that_died_hands_nothing_over_and_the_run_goes_on(tmp_path):
    ahead = HeadStart(entries(collection(tmp_path / "photos")), SIDE)
    os.kill(ahead.process.pid, signal.SIGKILL)
    assert ahead.finish(SIDE) == {}
    assert not ahead.process.is_alive()


def test_a_stopped_head_start_is_gone(tmp_path):
    gate = tmp_path / "gate.jpg"
    os.mkfifo(gate)
    ahead = HeadStart(entries([gate]), SIDE)  # blocked on the FIFO, as on a file that takes long to read
    ahead.stop()
    assert not ahead.process.is_alive()


@pytest.mark.parametrize("arch, side", [("clipsearch-tiny", SIDE), ("ViT-B-32", 224), ("ViT-L-14-336", 336),
                                        ("ViT-SO400M-14-SigLIP-384", 384), ("hf-hub:timm/some-model", None),
                                        ("no-such-architecture", None)])
def test_the_input_side_is_known_before_the_model_loads(arch, side):
    assert input_side(ModelSpec(arch, None)) == side


def test_the_input_side_read_ahead_is_the_loaded_models(tiny):
    assert input_side(model_spec("clipsearch-tiny")) == tiny.image_size


def stored(library: Path) -> dict[str, tuple[tuple, np.ndarray]]:
    """Each indexed file's catalog row (hash, pHash, bytes, width, height, format, date) and vector, by path."""
    catalog = Catalog.open(library, readonly=True)
    try:
        ids = [int(i) for i in catalog.all_ids()]
        rows, vectors = catalog.rows(ids), catalog.vectors_for(ids)
        phashes = catalog.phashes(ids)
        return {rows[i]["path"]: ((rows[i]["hash"], phashes[i], rows[i]["size"], rows[i]["width"], rows[i]["height"],
                                   rows[i]["format"], rows[i]["taken_at"]), v) for i, v in zip(ids, vectors)}
    finally:
        catalog.close()


def test_a_fresh_index_process_stores_what_a_run_decoding_every_photo_stores(tmp_path, tiny):
    """`clipsearch index` as a user runs it (torch not imported yet: photos are decoded while it loads) against the
    library API in this process (torch imported: no head start), on the same photos."""
    from clipsearch import Library

    paths = collection(tmp_path / "photos")
    for i in range(40):  # enough that some are decoded ahead, and some by the workers
        photo(tmp_path / "photos" / f"more-{i:02}.jpg", (800, 600), 100 + i, orientation=(1, 3, 6, 8)[i % 4])
    done = subprocess.run([sys.executable, "-m", "clipsearch", "index", str(tmp_path / "photos"), "--model",
                           "clipsearch-tiny", "--db", str(tmp_path / "fresh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "added 47," in done.stdout and "skipped 1" in done.stdout, done.stdout
    assert str(paths[-1]) in done.stdout + done.stderr  # the broken photo is listed with its reason
    with Library.open(tmp_path / "here", create=True, encoder=tiny) as lib:
        lib.index([tmp_path / "photos"], model=model_spec("clipsearch-tiny"))
    fresh, here = stored(tmp_path / "fresh"), stored(tmp_path / "here")
    assert sorted(fresh) == sorted(here) and len(fresh) == 47
    for path, (row, vector) in here.items():
        assert fresh[path][0] == row, path
        assert np.abs(fresh[path][1] - vector).max() < 1e-6, path


def test_a_fresh_run_that_cannot_start_a_head_start_decodes_every_photo_itself(tmp_path):
    """No process to spare for the head start (a limit on processes or memory): the run goes on without it."""
    paths = collection(tmp_path / "photos")
    script = ("import sys, clipsearch.headstart as h\n"
              "def refused(*args): raise OSError(11, 'Resource temporarily unavailable')\n"
              "h.HeadStart.__init__ = refused\n"
              "from clipsearch.cli import main\n"
              "main(sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", script, "index", str(tmp_path / "photos"), "--model",
                           "clipsearch-tiny", "--db", str(tmp_path / "lib")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"added {len(paths) - 1}," in done.stdout and "skipped 1" in done.stdout, done.stdout


def test_a_head_start_stopped_midway_is_killed_and_the_run_goes_on(tmp_path, monkeypatch):
    """A head start that cannot answer (stopped, say) costs the run a bounded wait, not a hang."""
    import clipsearch.headstart

    monkeypatch.setattr(clipsearch.headstart, "HAND_OVER_TIMEOUT_S", 0.5)
    gate = tmp_path / "gate.jpg"
    os.mkfifo(gate)
    ahead = HeadStart(entries([gate]), SIDE)
    os.kill(ahead.process.pid, signal.SIGSTOP)
    assert ahead.finish(SIDE) == {}
    assert not ahead.process.is_alive()


RUN_KILLED_BEFORE_THE_HAND_OVER = """
import os, signal, sys
from pathlib import Path
from clipsearch.discover import FileEntry
from clipsearch.headstart import HeadStart
ahead = HeadStart([FileEntry.of(p, os.stat(p)) for p in sys.argv[1:]], 64)
print(ahead.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_head_start_whose_run_was_killed_ends_rather_than_blocking_forever(tmp_path):
    """`clipsearch index` killed (SIGKILL) while its head start decodes: the head start, left with more decoded
    photos than the pipe buffers (2.9 MB here), must end, not wait forever to hand them to a run that is gone."""
    import select

    (tmp_path / "photos").mkdir()
    paths = [str(photo(tmp_path / "photos" / f"{i}.jpg", (1600, 1200), i)) for i in range(8)]
    printed = tmp_path / "pid"
    with open(printed, "w") as out:  # a file, not a pipe: a head start left behind would hold a pipe open
        run = subprocess.run([sys.executable, "-c", RUN_KILLED_BEFORE_THE_HAND_OVER, *paths], stdout=out)
    assert run.returncode == -signal.SIGKILL
    pid = int(printed.read_text())
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:  # ended already
        return
    try:
        ended = select.select([handle], [], [], 60)[0]
        if not ended:
            os.kill(pid, signal.SIGKILL)
        assert ended, "the head start outlived its run"
    finally:
        os.close(handle)


def test_a_photo_large_once_decoded_is_left_to_the_workers(tmp_path, tiny):
    """A 6-megapixel PNG decodes at full size (no draft scale): held for the whole run, it would cost 18 MB."""
    (tmp_path / "photos").mkdir()
    paths = [photo(tmp_path / "photos" / "huge.png", (3000, 2000), 8, "PNG"),
             *(photo(tmp_path / "photos" / f"jpeg-{i}.jpg", (3000, 2000), 9 + i) for i in range(2))]
    photos = decoded_to_the_end(paths).finish(SIDE)
    assert sorted(photos) == sorted(str(p) for p in paths[1:])


FRESH_RUN = """
import sys
import clipsearch.headstart, clipsearch.indexer
def recorded(where, load_decoding_ahead):
    def call(*args):
        encoder, ahead = load_decoding_ahead(*args)
        print(where, "decoded ahead:", len(ahead), file=sys.stderr)
        return encoder, ahead
    return call
clipsearch.headstart.load_decoding_ahead = recorded("new library", clipsearch.headstart.load_decoding_ahead)
clipsearch.indexer.load_decoding_ahead = recorded("new files", clipsearch.indexer.load_decoding_ahead)
from clipsearch.cli import main
main(sys.argv[1:])
"""


def test_a_fresh_process_decodes_ahead_for_a_new_library_and_for_new_files_in_an_existing_one(tmp_path):
    (tmp_path / "photos").mkdir()
    for i in range(6):
        photo(tmp_path / "photos" / f"first-{i}.jpg", (800, 600), i)
    command = [sys.executable, "-c", FRESH_RUN, "index", str(tmp_path / "photos"), "--model", "clipsearch-tiny",
               "--db", str(tmp_path / "lib")]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0 and "added 6," in first.stdout, first.stderr
    assert "new library decoded ahead: 0" not in first.stderr and "new library decoded ahead:" in first.stderr
    for i in range(6):
        photo(tmp_path / "photos" / f"later-{i}.jpg", (800, 600), 50 + i)
    later = subprocess.run([*command[:3], "index", str(tmp_path / "photos"), "--db", str(tmp_path / "lib")],
                           capture_output=True, text=True)
    assert later.returncode == 0 and "added 6," in later.stdout, later.stderr
    assert "new files decoded ahead: 0" not in later.stderr and "new files decoded ahead:" in later.stderr
