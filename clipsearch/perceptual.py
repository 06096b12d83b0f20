"""Perceptual hashes: a model-independent signal of how much two files share their pixels.

A 256-bit pHash (`imagehash.phash` with hash_size=16: the signs of the lowest 16×16 DCT frequencies of a
64×64 grey thumbnail) stays within a few bits under resizing, re-encoding and brightness or contrast
changes, moves by roughly 40–90 bits under a 10% crop or a 5° rotation, and by 100 or more between
unrelated pictures (measured on the sample photos: see benchmarks/bench_dedup.py and docs/dedup.md).
Each file's fingerprint, computed once at index time from its decoded pixels and stored in the catalog,
is the pHash of the picture followed by the pHash of its mirror image, so a flipped copy is recognised.
A video's fingerprint is that of each of its sampled frames, concatenated in time order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import BadImage
from .video import Sampling, is_video, sample

if TYPE_CHECKING:
    from PIL import Image

HASH_SIZE = 16
HASH_BYTES = HASH_SIZE * HASH_SIZE // 8
THUMBNAIL = 4 * HASH_SIZE
"""The side of the grey thumbnail `imagehash.phash` takes the DCT of (its default highfreq_factor, 4)."""
NEAR_BITS = 24
"""Up to this many differing bits (of 256), the same pixels: resized, re-encoded, brightness ±30%."""
EDIT_BITS = 64
"""Up to this many, the same picture edited (most 10% crops and 5° rotations); unrelated photos differ by 100+
and the sample stereo pair (another shot, a series) by 70–76."""
SERIES_BITS = 96
"""Up to this many, possibly another shot of the same moment (the sample stereo pair differs by 76)."""


def fingerprint(image: Image.Image) -> bytes:
    """The pHash of a decoded picture and of its mirror image: 2 × 32 bytes."""
    import imagehash
    from PIL import ImageOps

    def bits(picture: Image.Image) -> bytes:
        return np.packbits(imagehash.phash(picture, hash_size=HASH_SIZE).hash.ravel()).tobytes()

    return bits(image) + bits(ImageOps.mirror(image))


def fingerprint_of_file(path: str) -> bytes | None:
    """The fingerprint of an image file (EXIF orientation applied); None when it cannot be read or decoded, and
    for a video (see `clip_fingerprint_of_file`)."""
    from .decode import load

    if is_video(path):
        return None
    try:
        image, _ = load(path, THUMBNAIL)
    except BadImage:
        return None
    return fingerprint(image)


def clip_fingerprint_of_file(path: str) -> tuple[bytes, np.ndarray, float | None] | None:
    """(the fingerprints of a video's frames sampled as `index` samples them by default, their times in seconds,
    its length in seconds); None when it cannot be read or decoded."""
    try:
        clip = sample(path, Sampling(), 4 * HASH_SIZE)
    except BadImage:
        return None
    times = np.array([f.ms / 1000 for f in clip.frames])
    return b"".join(fingerprint(f.image) for f in clip.frames), times, clip.duration_s


def sequence_distance(a: np.ndarray, a_s: np.ndarray, b: np.ndarray, b_s: np.ndarray, slack_s: float) -> int:
    """How far apart two videos' frames are, in bits: the largest pHash distance from a frame of either to the
    nearest of the other's frames around the same moment (the other's last frame at or before it and first at or
    after it, `slack_s` seconds either way: two encodings sample different keyframes). `a` and `b` are
    (frames, 64) uint8 fingerprints, `a_s` and `b_s` their times in seconds, ascending. Small when every sampled
    moment of each has a near twin in the other at that point in the clip; large when either shows a scene the
    other lacks there (another scene, or the same scenes in another order)."""
    bits = np.unpackbits(np.bitwise_xor(a[:, None, :HASH_BYTES], b[None, :, :HASH_BYTES]), axis=2).sum(axis=2)
    far = 8 * HASH_BYTES
    a_to_b = np.where(_around(a_s, b_s, slack_s), bits, far).min(axis=1).max()
    b_to_a = np.where(_around(b_s, a_s, slack_s).T, bits, far).min(axis=0).max()
    return int(max(a_to_b, b_to_a))


def _around(x: np.ndarray, y: np.ndarray, slack_s: float) -> np.ndarray:
    """(len(x), len(y)) bool: for each time in x, the times in y from the last at or before it to the first at or
    after it (with `slack_s` either way; the first or last of y where none)."""
    before = np.clip(np.searchsorted(y, x + slack_s, side="right") - 1, 0, len(y) - 1)
    after = np.clip(np.searchsorted(y, x - slack_s, side="left"), 0, len(y) - 1)
    lo, hi = np.minimum(before, after), np.maximum(before, after)
    positions = np.arange(len(y))
    return (positions >= lo[:, None]) & (positions <= hi[:, None])


def distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise (pHash distance, distance between a's pHash and b's mirrored pHash), in bits, of two
    (n, 64) uint8 arrays of fingerprints."""
    xor = np.bitwise_xor(a[:, :HASH_BYTES], b[:, :HASH_BYTES])
    mirrored = np.bitwise_xor(a[:, :HASH_BYTES], b[:, HASH_BYTES:])
    return (np.unpackbits(xor, axis=1).sum(axis=1, dtype=np.int64),
            np.unpackbits(mirrored, axis=1).sum(axis=1, dtype=np.int64))
