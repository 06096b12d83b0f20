"""Regenerate sample_data/ deterministically (needs scikit-image for its bundled photographs).

    python scripts/make_sample_data.py

- sample_data/shapes/: generated coloured shapes, the domain of the bundled clipsearch-tiny model;
- sample_data/photos/: real photographs shipped with scikit-image (see sample_data/LICENSES.md);
- sample_data/photos/variants/: near-duplicates of some photos (resized, recompressed, cropped,
  brightened, flipped, and a renamed byte-for-byte copy) for the duplicates report.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapeSpec, render

ROOT = Path(__file__).resolve().parent.parent / "sample_data"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
          "hubble_deep_field", "retina")
WITH_VARIANTS = ("chelsea", "coffee", "rocket", "astronaut")
SHAPE_SIZE = 256


def make_shapes(folder: Path) -> None:
    rng = random.Random(2024)
    backgrounds = list(BACKGROUNDS)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    extra = [("red", "star"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle")]
    numbered = [(c, s, 1) for c, s in combos] + [(c, s, 2) for c, s in extra]
    for i, (colour, shape, n) in enumerate(numbered):
        spec = ShapeSpec(colour, shape, backgrounds[i % len(backgrounds)])
        render(spec, rng, SHAPE_SIZE).save(folder / f"{colour}_{shape}_{n:02d}.png", optimize=True)


def load_photo(name: str) -> Image.Image:
    from skimage import data

    array = data.stereo_motorcycle()[0 if name.endswith("left") else 1] if name.startswith("motorcycle") \
        else getattr(data, name)()
    return Image.fromarray(array).convert("RGB")


def make_variants(name: str, photo: Image.Image, source: Path, folder: Path) -> None:
    w, h = photo.size
    photo.resize((w // 2, h // 2), Image.LANCZOS).save(folder / f"{name}_resized.jpg", quality=90)
    photo.save(folder / f"{name}_recompressed.jpg", quality=30)
    dx, dy = int(w * 0.075), int(h * 0.075)
    photo.crop((dx, dy, w - dx, h - dy)).save(folder / f"{name}_cropped.jpg", quality=90)
    ImageEnhance.Brightness(photo).enhance(1.25).save(folder / f"{name}_brightened.jpg", quality=90)
    ImageOps.mirror(photo).save(folder / f"{name}_flipped.jpg", quality=90)
    shutil.copyfile(source, folder / f"{name}_copy_renamed.jpg")


def main() -> None:
    shapes, photos, variants = ROOT / "shapes", ROOT / "photos", ROOT / "photos" / "variants"
    for folder in (shapes, photos):
        shutil.rmtree(folder, ignore_errors=True)
    for folder in (shapes, photos, variants):
        folder.mkdir(parents=True)
    make_shapes(shapes)
    for name in PHOTOS:
        photo = load_photo(name)
        source = photos / f"{name}.jpg"
        photo.save(source, quality=90)
        if name in WITH_VARIANTS:
            make_variants(name, photo, source, variants)
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    print(f"wrote {sum(1 for f in ROOT.rglob('*') if f.is_file())} files, {total / 1e6:.1f} MB, under {ROOT}")


if __name__ == "__main__":
    main()
