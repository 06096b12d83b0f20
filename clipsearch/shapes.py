"""Generated pictures of coloured shapes with captions: the training data and test domain of
`clipsearch-tiny`, and the sample data of the demo. Deterministic for a given seed."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "orange": (245, 130, 20),
    "purple": (140, 40, 170),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class ShapeSpec:
    colour: str
    shape: str
    background: str = "white"

    @property
    def caption(self) -> str:
        return f"{article(self.colour)} {self.colour} {self.shape} on a {self.background} background"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape centred at (cx, cy) with outer radius r, rotated by angle (radians)."""
    if shape == "square":
        radii, n = [r * 0.8], 4
    elif shape == "triangle":
        radii, n = [r], 3
    elif shape == "hexagon":
        radii, n = [r], 6
    elif shape == "star":
        radii, n = [r, r * 0.42], 10
    else:  # cross: a plus sign as a 12-gon
        w = r * 0.33
        pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    offset = angle + (math.pi / 4 if shape == "square" else -math.pi / 2)
    return [
        (cx + radii[i % len(radii)] * math.cos(offset + 2 * math.pi * i / n),
         cy + radii[i % len(radii)] * math.sin(offset + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def render(spec: ShapeSpec, rng: random.Random, size: int = 64) -> Image.Image:
    """Draw one shape at a random size, position and rotation on a slightly textured background."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), _jitter(BACKGROUNDS[spec.background], rng, 12))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 3)):  # faint background blotches so the task is not trivial
        x, y, r = rng.uniform(0, big), rng.uniform(0, big), rng.uniform(big * 0.05, big * 0.2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(BACKGROUNDS[spec.background], rng, 25))
    r = rng.uniform(0.22, 0.42) * big
    cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
    fill = _jitter(COLOURS[spec.colour], rng, 18)
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(spec.shape, cx, cy, r, rng.uniform(-0.3, 0.3)), fill=fill)
    return image.filter(ImageFilter.GaussianBlur(0.6)).resize((size, size), Image.BILINEAR)


def sample_specs(n: int, seed: int) -> list[ShapeSpec]:
    rng = random.Random(seed)
    specs = []
    while len(specs) < n:
        colour, shape, background = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(BACKGROUNDS))
        specs.append(ShapeSpec(colour, shape, background))
    return specs


def generate(n: int, seed: int, size: int = 64) -> list[tuple[ShapeSpec, Image.Image]]:
    rng = random.Random(seed + 1_000_003)
    return [(spec, render(spec, rng, size)) for spec in sample_specs(n, seed)]
