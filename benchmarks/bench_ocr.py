"""Reading text in images (OCR): throughput, the gate's share, and word recall on held-out rendered text.

A mixed set is indexed with the chosen model (no OCR): the sample photos (sample_data/photos/*.jpg),
the sample shapes (sample_data/shapes) and images of rendered text, English and (where a CJK font is
installed) Chinese, whose words are drawn at random from a list with a seed no test uses. Then the
OCR pass (`clipsearch ocr`) runs over the whole library, several times (its text dropped in between),
with the "auto" gate and with the "all" gate, and prints:
- images/s of each pass (images read or gated out, per second of the pass), median, min and max;
- the gate's share: the images the "auto" gate sends to OCR, overall and per kind (photo, shape,
  text), and how much each stage of the gate (CLIP prompts; the detector on a thumbnail) sends alone;
- word recall: the share of the rendered words found in the text read in their image (Chinese
  words also match with spaces removed), English and Chinese.

    python benchmarks/bench_ocr.py                     # offline: the bundled tiny model
    python benchmarks/bench_ocr.py --runs 5 --texts 24
    python benchmarks/bench_ocr.py --photo-mp 12       # photos enlarged to 12 megapixels, as a phone takes them
    python benchmarks/bench_ocr.py --model ViT-B-32    # the CLIP stage of the gate needs a real CLIP model

The last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipsearch import Library, model_spec
from clipsearch.decode import load
from clipsearch.ocr import OCR_SIDE, Gate, shared_reader
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
ENGLISH = ("receipt invoice total amount change cash card coffee latte bottle water bread butter cheese apple "
           "station platform train ticket return single exit entrance parking garage open closed sale "
           "monday tuesday friday sunday morning evening north south east west street avenue bridge river "
           "museum library garden market office hotel airport gate terminal departure arrival delay").split()
CHINESE = ("收据 发票 合计 金额 现金 咖啡 拿铁 面包 牛奶 苹果 车站 站台 火车 车票 出口 入口 停车 营业 "
           "星期一 星期五 早上 晚上 北京 上海 街道 大桥 河流 博物馆 图书馆 花园 市场 酒店 机场 登机口 到达 出发").split()
SEED = 20260


def cjk_font() -> str | None:
    found = [f for f in CJK_FONTS if Path(f).exists()]
    if not found and shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True).stdout
        found = [line.split(":")[0] for line in listed.splitlines() if line.strip()]
    return found[0] if found else None


def render_texts(folder: Path, count: int) -> dict[str, list[str]]:
    """`count` images of 3-5 lines of random words (a third Chinese, with a CJK font); file name -> words."""
    rng = random.Random(SEED)
    cjk = cjk_font()
    words_of: dict[str, list[str]] = {}
    for i in range(count):
        chinese = cjk is not None and i % 3 == 2
        vocabulary, font_file = (CHINESE, cjk) if chinese else (ENGLISH, LATIN_FONT)
        size = rng.choice((22, 28, 34))
        lines = [" ".join(rng.sample(vocabulary, rng.randint(2, 4))) for _ in range(rng.randint(3, 5))]
        font = ImageFont.truetype(font_file, size)
        paper = rng.choice(("white", "#f3ead8", "#e8eef7"))
        image = Image.new("RGB", (rng.choice((480, 640)), 40 + int(size * 1.6) * len(lines)), paper)
        draw = ImageDraw.Draw(image)
        for n, line in enumerate(lines):
            draw.text((20, 20 + int(size * 1.6) * n), line, font=font, fill="black")
        name = f"{'zh' if chinese else 'en'}_{i:03d}.png"
        image.save(folder / name)
        words_of[name] = " ".join(lines).split()
    return words_of


def kind(path: str) -> str:
    return "text" if "/texts/" in path else "shape" if "/shapes/" in path else "photo"


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clipsearch-tiny")
    parser.add_argument("--pretrained")
    parser.add_argument("--runs", type=int, default=3, help="OCR passes per gate")
    parser.add_argument("--texts", type=int, default=12, help="rendered text images")
    parser.add_argument("--photo-mp", type=float, default=0,
                        help="enlarge the photos to this many megapixels (JPEG quality 90); 0: as they are")
    add_save_option(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    try:
        for name in ("photos", "shapes"):
            shutil.copytree(SAMPLE / name, work / name, ignore=shutil.ignore_patterns("variants"))
        for photo in (work / "photos").glob("*.jpg") if args.photo_mp else ():
            image = Image.open(photo)
            factor = (args.photo_mp * 1e6 / (image.width * image.height)) ** 0.5
            image.resize((round(image.width * factor), round(image.height * factor)), Image.BICUBIC).save(photo,
                                                                                                      quality=90)
        (work / "texts").mkdir()
        words_of = render_texts(work / "texts", args.texts)
        lib = Library.open(work / "lib", create=True)
        lib.index([work / d for d in ("photos", "shapes", "texts")], model=model_spec(args.model, args.pretrained),
                  workers=0)
        rows = lib.catalog.rows(lib.catalog.all_ids())
        kinds = {i: kind(r["path"]) for i, r in rows.items()}
        print(f"{len(rows)} images: " + ", ".join(f"{sum(k == x for k in kinds.values())} {x}s"
                                                  for x in ("photo", "shape", "text")))

        passes: dict[str, list[float]] = {"auto": [], "all": []}
        for gate in ("auto", "all"):
            for run in range(args.runs):
                with lib.catalog.db.conn:
                    lib.catalog.db.conn.execute("DELETE FROM ocr_text")
                report = lib.read_text(gate)
                passes[gate].append(report.images_per_s)
                print(f"{gate:4} run {run + 1}: read {report.read}, gated out {report.gated_out}, "
                      f"text in {report.with_text}, {report.elapsed_s:.1f}s, {report.images_per_s:.2f} images/s")
                if gate == "auto" and run == 0:
                    status = dict(lib.catalog.db.execute("SELECT image_id, status FROM ocr_text").fetchall())
        sent = {x: [status[i] == "read" for i, k in kinds.items() if k == x] for x in ("photo", "shape", "text")}

        # Each stage of the gate alone.
        ids = sorted(rows)
        clip = Gate(lib.encoder).looks_like_text(lib.catalog.vectors_for(ids))
        reader = shared_reader()
        detector = [reader.finds_text(load(rows[i]["path"], OCR_SIDE)[0]) for i in ids]

        # Word recall, from the text the last "all" pass stored.
        recall: dict[str, list[float]] = {"en": [], "zh": []}
        by_path = {r["path"]: i for i, r in rows.items()}
        for name, words in words_of.items():
            text = (lib.catalog.db.execute("SELECT text FROM ocr_text WHERE image_id = ?",
                                           [by_path[str(work / "texts" / name)]]).fetchone() or [""])[0].casefold()
            found = [w.casefold() in text or w.casefold() in text.replace(" ", "") for w in words]
            recall[name[:2]].append(sum(found) / len(found))
        lib.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    share = {x: round(float(np.mean(v)), 3) for x, v in sent.items()}
    overall = sum(sum(v) for v in sent.values()) / sum(len(v) for v in sent.values())
    word_recall = {k: round(float(np.mean(v)), 3) for k, v in recall.items() if v}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"OCR pass, auto gate: {spread(passes['auto'])} images/s; all: {spread(passes['all'])} images/s")
    print(f"gate share (sent to OCR): {overall:.3f} overall; per kind {share}; "
          f"CLIP stage alone {float(np.mean(clip)):.3f}, detector stage alone {float(np.mean(detector)):.3f}")
    print(f"word recall: {word_recall}")
    emit({
        "benchmark": "ocr", "model": args.model, "cpu": cpu, "images": len(kinds), "runs": args.runs,
        "photo_mp": args.photo_mp,
        "images_per_s": {"auto": spread(passes["auto"]), "all": spread(passes["all"])},
        "gate_share": round(overall, 3), "gate_share_by_kind": share,
        "clip_stage_share": round(float(np.mean(clip)), 3), "detector_stage_share": round(float(np.mean(detector)), 3),
        "word_recall": word_recall, "text_images": len(words_of),
    }, args)


if __name__ == "__main__":
    main()
