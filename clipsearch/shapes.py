"""Generated pictures of coloured shapes with captions, in English and Chinese.

They are the training data and test domain of the bundled `clipsearch-tiny` model and the
sample data of the demo. Everything is deterministic for a given seed: no global random state.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "orange": (245, 130, 20),
    "purple": (140, 40, 170),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS: dict[str, RGB] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
CHINESE: dict[str, tuple[str, ...]] = {
    "red": ("红色", "红"), "green": ("绿色", "绿"), "blue": ("蓝色", "蓝"), "yellow": ("黄色", "黄"),
    "orange": ("橙色", "橘色", "橙"), "purple": ("紫色", "紫"),
    "circle": ("圆形", "圆", "圆圈"), "square": ("正方形", "方形", "方块"), "triangle": ("三角形", "三角"),
    "star": ("星星", "五角星", "星形"), "cross": ("十字", "十字形", "加号"),
    "white": ("白色", "白"), "black": ("黑色", "黑"), "grey": ("灰色", "灰"),
}
"""Chinese names of every colour, shape and background: the usual one first, then synonyms."""
_SUPERSAMPLE = 2  # draw at twice the size and downsample: cheap antialiasing


@dataclass(frozen=True)
class ShapeSpec:
    colour: str
    shape: str
    background: str = "white"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _as_random(rng: random.Random | np.random.Generator) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    return random.Random(int(rng.integers(2**63)))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape centred at (cx, cy) with outer radius r, rotated by angle (radians)."""
    if shape == "cross":  # a plus sign as a 12-gon
        w = r * 0.33
        points = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
                  (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]
    radii, n, offset = {
        "square": ([r * 0.9], 4, math.pi / 4),
        "triangle": ([r], 3, -math.pi / 2),
        "star": ([r, r * 0.42], 10, -math.pi / 2),
    }[shape]
    return [(cx + radii[i % len(radii)] * math.cos(angle + offset + 2 * math.pi * i / n),
             cy + radii[i % len(radii)] * math.sin(angle + offset + 2 * math.pi * i / n))
            for i in range(n)]


def _jitter(rgb: RGB, rng: random.Random, amount: int) -> RGB:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _background(rgb: RGB, rng: random.Random, size: int) -> Image.Image:
    """A gentle linear gradient between two tones of the colour, in one of four directions."""
    mask = Image.linear_gradient("L").resize((size, size), Image.BILINEAR)
    mask = mask.rotate(90 * rng.randrange(4))
    first, second = (Image.new("RGB", (size, size), _jitter(rgb, rng, 14)) for _ in range(2))
    return Image.composite(first, second, mask)


def render(spec: ShapeSpec, rng: random.Random | np.random.Generator, size: int = 64) -> Image.Image:
    """Draw one shape at a random size, position and slight rotation on a gradient background."""
    rng = _as_random(rng)
    big = size * _SUPERSAMPLE
    image = _background(BACKGROUNDS[spec.background], rng, big)
    r = rng.uniform(0.26, 0.45) * big
    cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
    fill = _jitter(COLOURS[spec.colour], rng, 18)
    draw = ImageDraw.Draw(image)
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(spec.shape, cx, cy, r, rng.uniform(-0.3, 0.3)), fill=fill)
    return image.resize((size, size), Image.BILINEAR)


def sample_specs(n: int, seed: int) -> list[ShapeSpec]:
    """n specs drawn uniformly, never a shape on a background of its own colour."""
    rng = random.Random(seed)
    specs: list[ShapeSpec] = []
    while len(specs) < n:
        spec = ShapeSpec(rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS)))
        if spec.colour != spec.background:
            specs.append(spec)
    return specs


def generate(n: int, seed: int, size: int = 64) -> list[tuple[ShapeSpec, Image.Image]]:
    rng = random.Random(f"render-{seed}")  # a stream apart from the one that picks the specs
    return [(spec, render(spec, rng, size)) for spec in sample_specs(n, seed)]
