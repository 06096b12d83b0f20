"""Turning preprocessed images and texts into L2-normalised CLIP vectors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from .decode import model_view
from .models import DEFAULT_BATCH, ModelSpec

Split = tuple[Callable[[Image.Image], Image.Image], torch.Tensor, torch.Tensor]
"""open_clip's preprocess in two: the PIL steps (resize, crop, RGB), and the mean and std it normalises with."""


@dataclass(frozen=True)
class CenterFirst:
    """A CLIP preprocessing that scales the short side to `side` and crops the center square, applied to
    `decode.model_view` of the picture: small or elongated pictures are cropped before they are scaled
    up, so memory does not depend on their shape. (A class, so that Ray can pickle it.)"""

    transform: Callable[[Image.Image], Any]
    """open_clip's preprocess (a tensor out), or only its PIL steps (a picture out; see `split_preprocess`)."""
    side: int

    def __call__(self, image: Image.Image | torch.Tensor) -> Any:
        """A picture, or a (C, H, W) tensor where `transform` takes tensors (torchvision's Resize and CenterCrop do)."""
        return self.transform(model_view(image, self.side) if isinstance(image, Image.Image)
                              else _tensor_view(image, self.side))


def _tensor_view(picture: torch.Tensor, side: int) -> torch.Tensor:
    """`decode.model_view` of a (C, H, W) tensor."""
    h, w = picture.shape[-2:]
    short = min(w, h)
    if short >= side or w == h:
        return picture
    left, top = (w - short) // 2, (h - short) // 2
    return picture[..., top : top + short, left : left + short]


@dataclass
class Encoder:
    spec: ModelSpec
    model: Any
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    _split: "Split | None" = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._split = split_preprocess(self.preprocess)

    @property
    def dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(min(size) if isinstance(size, (tuple, list)) else size)

    @property
    def default_batch_size(self) -> int:
        """Images per batch: on a CUDA GPU from its free memory (see `batch_for_memory`), else by device type."""
        if self.device.type != "cuda" or self.image_bytes() is None:
            return DEFAULT_BATCH.get(self.device.type, 32)
        free, _ = torch.cuda.mem_get_info(self.device)
        return batch_for_memory(free, self.image_bytes())

    def image_bytes(self) -> int | None:
        """Device memory one image takes while a ViT encodes it (its input and the largest activations of
        a block, with room to spare), None for other image towers."""
        transformer = getattr(self.model.visual, "transformer", None)
        patch = getattr(getattr(self.model.visual, "conv1", None), "kernel_size", None)
        if transformer is None or patch is None:
            return None
        tokens = (self.image_size // patch[0]) ** 2 + 1
        heads = transformer.resblocks[0].attn.num_heads
        size = torch.finfo(self.dtype).bits // 8
        activations = size * (12 * tokens * transformer.width + 2 * heads * tokens * tokens)
        return activations + 3 * self.image_size ** 2 * (1 + 4 + size)

    @property
    def moves_uint8(self) -> bool:
        """Whether `pixels` is available (open_clip's usual resize, crop, to-tensor, normalise pipeline)."""
        return self._split is not None

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """An RGB image resized and cropped for the model but not normalised: uint8 (3, H, W), a quarter of
        the bytes of `preprocess`'s float32 tensor. `encode_images` normalises it on the device, to the
        same values as `preprocess`."""
        geometry, _, _ = self._split
        return torch.from_numpy(np.array(geometry(image), dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def tensor_pixels(self, picture: torch.Tensor) -> torch.Tensor:
        """`pixels` of a picture decoded into a uint8 (3, H, W) RGB tensor, computed on the tensor's device: the same
        crop, resized by torchvision's antialiased bicubic instead of Pillow's (see docs/gpu.md for how close)."""
        geometry, _, _ = self._split
        return geometry(picture)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> np.ndarray:
        """Encode a batch of images (N, 3, H, W) into float32 unit vectors (N, dim): float32 from
        `preprocess`, or uint8 from `pixels` or `tensor_pixels` (on any device)."""
        pin = self.device.type == "cuda" and batch.device.type == "cpu"
        x = (batch.pin_memory() if pin else batch).to(self.device, non_blocking=pin)
        if x.dtype == torch.uint8:
            _, mean, std = self._split
            x = x.to(torch.float32).div(255).sub(mean.to(self.device)).div(std.to(self.device))
        return _unit(self.model.encode_image(x.to(self.dtype)))

    @property
    def context_length(self) -> int | None:
        """The most tokens a text may have, its start and end tokens included; the rest is cut off."""
        return getattr(self.tokenizer, "context_length", None)

    def truncated(self, text: str) -> bool:
        """Whether `text` has more tokens than `context_length`; False where the tokenizer cannot tell (open_clip's
        CLIP tokenizer and its `HFTokenizer` count a text's tokens apart from their padding)."""
        context = self.context_length
        if context is None:
            return False
        encode = getattr(self.tokenizer, "encode", None)  # open_clip's CLIP tokenizer: without start and end tokens
        if callable(encode):
            return len(encode(text)) + 2 > context
        hf, clean = getattr(self.tokenizer, "tokenizer", None), getattr(self.tokenizer, "clean_fn", None)
        if callable(hf) and callable(clean):  # open_clip's HFTokenizer: transformers' tokenizer after its cleaning
            return len(hf(clean(text)).input_ids) > context
        return False

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return _unit(self.model.encode_text(tokens))

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))


BATCH_MEMORY_SHARE = 0.25
"""The share of a GPU's free memory a batch's activations may take (the rest: other work, fragmentation)."""


def batch_for_memory(free_bytes: int, image_bytes: int, smallest: int = 32, largest: int = 1024) -> int:
    """The largest power of two from `smallest` to `largest` whose images fit `BATCH_MEMORY_SHARE` of
    `free_bytes`; `smallest` when none does."""
    batch = largest
    while batch > smallest and batch * image_bytes > free_bytes * BATCH_MEMORY_SHARE:
        batch //= 2
    return max(batch, smallest)


def split_preprocess(preprocess: Any) -> Split | None:
    """open_clip's transform as (the PIL steps before ToTensor, mean (1, 3, 1, 1), std (1, 3, 1, 1)),
    or None for a transform of another shape."""
    if isinstance(preprocess, CenterFirst):  # the same crop first, then open_clip's PIL steps
        inner = split_preprocess(preprocess.transform)
        return None if inner is None else (CenterFirst(inner[0], preprocess.side), inner[1], inner[2])
    steps = list(getattr(preprocess, "transforms", []))
    cut = next((i for i, step in enumerate(steps) if isinstance(step, transforms.ToTensor)), None)
    if cut is None or cut != len(steps) - 2 or not isinstance(steps[-1], transforms.Normalize):
        return None
    normalise = steps[-1]
    shape = (1, -1, 1, 1)
    return (transforms.Compose(steps[:cut]), torch.tensor(normalise.mean, dtype=torch.float32).view(shape),
            torch.tensor(normalise.std, dtype=torch.float32).view(shape))


def _unit(features: torch.Tensor) -> np.ndarray:
    v = features.float()
    return torch.nn.functional.normalize(v, dim=-1).cpu().numpy()
