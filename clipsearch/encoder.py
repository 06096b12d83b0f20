"""Turning preprocessed images and texts into L2-normalised CLIP vectors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .decode import model_view
from .models import ModelSpec


@dataclass(frozen=True)
class CenterFirst:
    """A CLIP preprocessing that scales the short side to `side` and crops the center square, applied to
    `decode.model_view` of the picture: small or elongated pictures are cropped before they are scaled
    up, so memory does not depend on their shape. (A class, so that Ray can pickle it.)"""

    transform: Callable[[Image.Image], torch.Tensor]
    side: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(model_view(image, self.side))


@dataclass
class Encoder:
    spec: ModelSpec
    model: Any
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    device: torch.device
    dtype: torch.dtype

    @property
    def dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(min(size) if isinstance(size, (tuple, list)) else size)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> np.ndarray:
        """Encode a batch of preprocessed images (N, 3, H, W) into float32 unit vectors."""
        pin = self.device.type == "cuda"
        x = (batch.pin_memory() if pin else batch).to(self.device, self.dtype, non_blocking=pin)
        return _unit(self.model.encode_image(x))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return _unit(self.model.encode_text(tokens))

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))


def _unit(features: torch.Tensor) -> np.ndarray:
    v = features.float()
    return torch.nn.functional.normalize(v, dim=-1).cpu().numpy()
