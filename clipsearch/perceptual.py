"""Perceptual hashes: a model-independent signal of how much two files share their pixels.

A 256-bit pHash (`imagehash.phash` with hash_size=16: the signs of the lowest 16×16 DCT frequencies of a
64×64 grey thumbnail) stays within a few bits under resizing, re-encoding and brightness or contrast
changes, moves by roughly 40–90 bits under a 10% crop or a 5° rotation, and by 100 or more between
unrelated pictures (measured on the sample photos: see benchmarks/bench_dedup.py and docs/dedup.md).
Each file's fingerprint, computed once at index time from its decoded pixels and stored in the catalog,
is the pHash of the picture followed by the pHash of its mirror image, so a flipped copy is recognised.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from .decode import load
from .errors import BadImage
from .video import is_video

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

    def bits(picture: Image.Image) -> bytes:
        return np.packbits(imagehash.phash(picture, hash_size=HASH_SIZE).hash.ravel()).tobytes()

    return bits(image) + bits(ImageOps.mirror(image))


def fingerprint_of_file(path: str) -> bytes | None:
    """The fingerprint of an image file (EXIF orientation applied); None when it cannot be read or decoded, and
    for a video (which has none: its frames are compared by their vectors alone)."""
    if is_video(path):
        return None
    try:
        image, _ = load(path, THUMBNAIL)
    except BadImage:
        return None
    return fingerprint(image)


def distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise (pHash distance, distance between a's pHash and b's mirrored pHash), in bits, of two
    (n, 64) uint8 arrays of fingerprints."""
    xor = np.bitwise_xor(a[:, :HASH_BYTES], b[:, :HASH_BYTES])
    mirrored = np.bitwise_xor(a[:, :HASH_BYTES], b[:, HASH_BYTES:])
    return (np.unpackbits(xor, axis=1).sum(axis=1, dtype=np.int64),
            np.unpackbits(mirrored, axis=1).sum(axis=1, dtype=np.int64))
