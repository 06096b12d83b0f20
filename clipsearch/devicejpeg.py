"""Decoding JPEGs on a torch device: nvJPEG on a CUDA GPU, through `torchvision.io.decode_jpeg` (`index --gpu-decode`).

Decode workers read, hash and parse the header of every file as usual; the JPEGs any decoder turns into the same
picture as Pillow (`decode.plain_jpeg`) travel to the main process whole, where those of a worker batch are decoded
on the device in one call, turned upright by their EXIF orientation, and cropped there to the model's uint8 input
(`Encoder.tensor_pixels`) and to the grey thumbnail of their perceptual hash. Every other file, and any JPEG the
device rejects, is decoded on the CPU as without the option (pipeline.py).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from .perceptual import THUMBNAIL

_UPRIGHT: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda t: t.flip(-1),  # mirrored left-right
    3: lambda t: t.flip(-2, -1),  # upside down
    4: lambda t: t.flip(-2),  # mirrored top-bottom
    5: lambda t: t.transpose(-2, -1),  # transposed
    6: lambda t: t.transpose(-2, -1).flip(-1),  # turned 90 degrees: turned back clockwise
    7: lambda t: t.transpose(-2, -1).flip(-2, -1),  # transversed
    8: lambda t: t.transpose(-2, -1).flip(-2),  # turned back counter-clockwise
}
"""What each EXIF orientation but 1 (as stored) takes to turn a (C, H, W) picture upright, as `ImageOps.exif_transpose`."""


@dataclass(frozen=True)
class Jpeg:
    """A JPEG left for the device to decode (see `decode.plain_jpeg`)."""

    data: torch.Tensor
    """The file's bytes: uint8 (n,), in shared memory when it comes from a decode worker."""
    orientation: int
    """Its EXIF orientation, 1 (as stored) to 8."""


def decode_jpegs(jpegs: Sequence[Jpeg], device: torch.device) -> list[torch.Tensor | None]:
    """The pictures on `device`, upright: uint8 (3, H, W) RGB each; None for a JPEG the decoder rejects (decode it
    on the CPU instead). All are decoded in one call, which nvJPEG runs fastest; after a failure, one by one."""
    try:
        pictures: list[torch.Tensor | None] = list(_decode([j.data for j in jpegs], device))
    except Exception:  # noqa: BLE001 - one bad JPEG fails the whole call: find it
        pictures = [_decode_one(j.data, device) for j in jpegs]
    return [None if p is None else upright(p, j.orientation) for p, j in zip(pictures, jpegs)]


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return _decode([data], device)[0]
    except Exception:  # noqa: BLE001 - whatever the decoder raises, the CPU decodes this file
        return None


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec's, on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def upright(picture: torch.Tensor, orientation: int) -> torch.Tensor:
    """A (C, H, W) picture as its EXIF `orientation` says it is seen."""
    turn = _UPRIGHT.get(orientation)
    return turn(picture) if turn else picture


def thumbnail(picture: torch.Tensor) -> torch.Tensor:
    """The grey THUMBNAIL x THUMBNAIL picture a pHash is computed from, uint8 (THUMBNAIL, THUMBNAIL), on the
    picture's device: Pillow's grey weights, then torchvision's antialiased bicubic where imagehash uses Lanczos."""
    grey = F.rgb_to_grayscale(picture)
    return F.resize(grey, [THUMBNAIL, THUMBNAIL], InterpolationMode.BICUBIC, antialias=True)[0]
