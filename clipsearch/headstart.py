"""Decoding a run's first photos while its model loads.

A fresh `clipsearch index` spends its first seconds importing torch, torchvision and open_clip and building the
model: about 6 s of one core for ViT-B-32, with the other cores idle, before the decode workers start. A process
forked before those imports (a small one then) decodes the run's first photos meanwhile, in file order, up to the
model's preprocessing: read, hash, decode, fingerprint (`decode_photo`, the decode stage's own code for a photo).
The workers then only preprocess and encode those photos (pipeline.load_entry); a photo the head start could not
decode, or would hold too large (`PHOTO_BYTES`), is decoded there, and one that fails fails there with its reason.

Nothing here imports torch: that is what the head start runs beside.
"""
from __future__ import annotations

import gc
import io
import multiprocessing
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Callable, Sequence

from PIL import Image

from .decode import ImageMeta, content_hash, decode
from .discover import FileEntry, read_entry
from .perceptual import fingerprint

if TYPE_CHECKING:
    from .encoder import Encoder

AHEAD_BYTES = 256 * 2**20
"""The most decoded pixels a head start holds (about 450 draft-decoded 12 MP JPEGs for a 224-pixel model)."""
PHOTO_BYTES = 16 * 2**20
"""The most decoded pixels of one photo a head start keeps: a JPEG of any size, draft-decoded (a 100 MP one is
5 MB for a 224-pixel model); a PNG or HEIC is held at full size, and one over 5 megapixels is left to the workers,
so that the photos handed over, held for the whole run, stay small."""
HAND_OVER_TIMEOUT_S = 10.0
"""How long the run waits for the head start to hand over its photos once told to stop (it finishes the photo
it is decoding first); past that it is stopped and the workers decode everything."""


@dataclass(frozen=True)
class DecodedPhoto:
    """A photo through the decode stage, before the model's preprocessing."""

    entry: FileEntry
    """The file as it was read (it may have changed since it was listed)."""
    hash: str
    meta: ImageMeta
    phash: bytes
    image: Image.Image
    """RGB in sRGB, upright; JPEGs draft-decoded no smaller than the model's input side."""


def decode_photo(entry: FileEntry, data: bytes, min_side: int | None) -> DecodedPhoto:
    """The decode stage for a photo read as `entry` with content `data`. Raises BadImage (see decode.decode)."""
    image, meta = decode(data, min_side, entry.path)
    return DecodedPhoto(entry, content_hash(data), meta, fingerprint(image), image)


class HeadStart:
    """A forked process decoding `photos` in order, no smaller than `min_side`, until told to stop or done (every
    photo decoded, or `AHEAD_BYTES` of them held)."""

    def __init__(self, photos: Sequence[FileEntry], min_side: int):
        self.min_side = min_side
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_decode_until_stopped, args=(child, self._conn, photos, min_side),
                                       daemon=True)
        self.process.start()
        child.close()

    def finish(self, min_side: int) -> dict[str, DecodedPhoto]:
        """Stop, and the photos decoded so far, by path: none where the model's input side turned out to be
        another than `min_side` (the JPEGs' draft scale depends on it), or where the process failed."""
        try:
            self._conn.send(None)
        except OSError:  # it has handed everything over and ended
            pass
        photos: list[DecodedPhoto] = []
        receiver = threading.Thread(target=self._receive, args=(photos,), daemon=True)
        receiver.start()
        receiver.join(HAND_OVER_TIMEOUT_S)
        if receiver.is_alive():  # stuck midway (a stopped process, say): what it sent is dropped
            self.process.kill()
            receiver.join()
            photos.clear()
        self.stop()
        return {p.entry.path: p for p in photos} if min_side == self.min_side else {}

    def _receive(self, into: list[DecodedPhoto]) -> None:
        try:
            into.extend(self._conn.recv())
        except (OSError, EOFError):  # it died (killed for memory, or by `finish`): the workers decode everything
            pass

    def stop(self) -> None:
        """Stop without handing anything over (the run failed or was interrupted). Killed: it holds nothing to save,
        and a stopped process would not act on SIGTERM."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self._conn.close()


def load_decoding_ahead(load: Callable[[], "Encoder"], photos: Sequence[FileEntry], min_side: int | None
                        ) -> tuple["Encoder", dict[str, DecodedPhoto]]:
    """`load()`, with a `HeadStart` decoding `photos` meanwhile where that pays: when torch is not imported yet
    (a fresh process: the load takes seconds), there are photos and the model's input side is known before it
    loads (`min_side`, see models.input_side); on Linux, where forking a process that has not started threads of
    its own is safe. The photos are decoded in order: the batches holding them go fast, and whichever worker takes
    them takes more batches after (pipeline.decoded_batches). Returns the encoder and the photos decoded ahead, by
    path."""
    if (not photos or min_side is None or "torch" in sys.modules or sys.platform != "linux"
            or multiprocessing.current_process().daemon):  # a daemonic process may not start processes
        return load(), {}
    try:
        ahead = HeadStart(photos, min_side)
    except OSError:  # no process to spare (a limit on processes or memory): the workers decode everything
        return load(), {}
    try:
        encoder = load()
    except BaseException:
        ahead.stop()
        raise
    return encoder, ahead.finish(encoder.image_size)


def settle_forked() -> None:
    """What a process forked beside an index run (this head start, the text tower's export) does first."""
    # What it inherited is never collected here: freeing a native object of the parent's (an ONNX Runtime session
    # waiting on threads that were not forked) can wait forever.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it stops this process


def _decode_until_stopped(conn: Connection, run_end: Connection, photos: Sequence[FileEntry], min_side: int) -> None:
    settle_forked()
    # The run's end of the pipe, forked along: closed here, a run that dies (SIGKILL) ends the pipe, and this process
    # with it, instead of leaving it blocked forever on a send no one reads.
    run_end.close()
    done: list[DecodedPhoto] = []
    held = 0
    for entry in photos:
        if conn.poll() or held + PHOTO_BYTES > AHEAD_BYTES:
            break
        try:
            read, data = read_entry(entry)
            if _too_large(data):  # left to the workers, undecoded here
                continue
            photo = decode_photo(read, data, min_side)
        except Exception:  # noqa: BLE001 - left to the decode stage, which gives the reason
            continue
        size = len(photo.image.getbands()) * photo.image.width * photo.image.height
        if size > PHOTO_BYTES:  # left to the workers (held + PHOTO_BYTES fits AHEAD_BYTES: checked above)
            continue
        done.append(photo)
        held += size
    try:
        conn.send(done)
    except OSError:  # the run is gone
        pass


def _too_large(data: bytes) -> bool:
    """Whether the photo in `data` would decode to more than `PHOTO_BYTES`, read from its header: a format without
    a draft scale (PNG, HEIC, TIFF...) decodes at full size. False where the header cannot be read (a RAW file's
    preview, say: decode_photo finds out)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format not in ("JPEG", "MPO") and 3 * image.width * image.height > PHOTO_BYTES
    except Exception:  # noqa: BLE001 - any header Pillow cannot read
        return False
