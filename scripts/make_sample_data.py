"""Regenerate sample_data/ deterministically (needs scikit-image for its bundled photographs).

    pip install scikit-image && python scripts/make_sample_data.py

- sample_data/shapes/: generated coloured shapes, the domain of the bundled clipsearch-tiny model;
- sample_data/photos/: real photographs shipped with scikit-image (see sample_data/LICENSES.md);
- sample_data/photos/variants/: near-duplicates of some photos (resized, recompressed, cropped,
  brightened, flipped, and a renamed byte-for-byte copy) for the duplicates report;
- sample_data/text/: a receipt, a street sign and a Chinese menu, rendered, for reading text (OCR);
  needs DejaVu Sans and a CJK font (Debian: fonts-dejavu-core, fonts-wqy-microhei).

The same library versions write the same bytes: PNGs and JPEGs carry no timestamps.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, ShapeSpec, render

ROOT = Path(__file__).resolve().parent.parent / "sample_data"
# Colour photographs in skimage.data whose docstrings state a free licence (see LICENSES.md).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
WITH_VARIANTS = ("astronaut", "chelsea", "coffee", "rocket")
SECOND_COPIES = (("red", "star"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle"),
                 ("orange", "cross"), ("purple", "circle"), ("red", "square"), ("blue", "triangle"),
                 ("green", "star"), ("yellow", "cross"))
SHAPE_SIZE = 256
MAX_PHOTO_SIDE = 1024
JPEG_QUALITY = 90
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
TEXTS = (  # file, lines, font, size, ink, paper
    ("receipt.png", ("BLUE BOTTLE COFFEE", "Latte        4.50", "Croissant    3.75", "TOTAL        8.25"),
     LATIN_FONT, (400, 200), "black", "white"),
    ("sign.png", ("NO PARKING", "TOW AWAY ZONE"), LATIN_FONT, (320, 110), "white", "#b41e1e"),
    ("menu_zh.png", ("蓝瓶咖啡 菜单", "拿铁 32元", "可颂 18元"), CJK_FONT, (320, 150), "black", "#f3ead8"),
)


def make_shapes(folder: Path) -> None:
    """One picture of every colour and shape, and a second one of a few: 40 in all."""
    rng = random.Random(2024)
    backgrounds = list(BACKGROUNDS)
    numbered = [(c, s, 1) for c in COLOURS for s in SHAPES] + [(c, s, 2) for c, s in SECOND_COPIES]
    for i, (colour, shape, n) in enumerate(numbered):
        spec = ShapeSpec(colour, shape, backgrounds[i % len(backgrounds)])
        render(spec, rng, SHAPE_SIZE).save(folder / f"{colour}_{shape}_{n:02d}.png", optimize=True)


def load_photo(name: str) -> Image.Image:
    from skimage import data

    photo = Image.fromarray(getattr(data, name)()).convert("RGB")
    photo.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE), Image.LANCZOS)
    return photo


def make_variants(name: str, photo: Image.Image, source: Path, folder: Path) -> None:
    w, h = photo.size
    photo.resize((w // 2, h // 2), Image.LANCZOS).save(folder / f"{name}_resized.jpg", quality=JPEG_QUALITY)
    photo.save(folder / f"{name}_recompressed.jpg", quality=30)
    dx, dy = int(w * 0.075), int(h * 0.075)  # 15% of each side in all
    photo.crop((dx, dy, w - dx, h - dy)).save(folder / f"{name}_cropped.jpg", quality=JPEG_QUALITY)
    ImageEnhance.Brightness(photo).enhance(1.25).save(folder / f"{name}_brightened.jpg", quality=JPEG_QUALITY)
    ImageOps.mirror(photo).save(folder / f"{name}_flipped.jpg", quality=JPEG_QUALITY)
    shutil.copyfile(source, folder / f"{name}_copy_renamed.jpg")


def make_texts(folder: Path) -> None:
    for name, lines, font_file, size, ink, paper in TEXTS:
        image = Image.new("RGB", size, paper)
        draw, font = ImageDraw.Draw(image), ImageFont.truetype(font_file, 26)
        for i, line in enumerate(lines):
            draw.text((24, 20 + 42 * i), line, font=font, fill=ink)
        image.save(folder / name, optimize=True)


def main() -> None:
    shapes, photos, variants, texts = ROOT / "shapes", ROOT / "photos", ROOT / "photos" / "variants", ROOT / "text"
    for folder in (shapes, photos, texts):
        shutil.rmtree(folder, ignore_errors=True)
    for folder in (shapes, photos, variants, texts):
        folder.mkdir(parents=True)
    make_shapes(shapes)
    make_texts(texts)
    for name in PHOTOS:
        photo = load_photo(name)
        source = photos / f"{name}.jpg"
        photo.save(source, quality=JPEG_QUALITY)
        if name in WITH_VARIANTS:
            make_variants(name, photo, source, variants)
    files = [f for f in ROOT.rglob("*") if f.is_file()]
    print(f"wrote {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB in all, under {ROOT}")


if __name__ == "__main__":
    main()
