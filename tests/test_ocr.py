"""Reading text in images (OCR): `index --ocr`, `clipsearch ocr`, text and hybrid search, the web API.

Images are rendered here with Pillow: a Latin font from the system (else Pillow's own), a CJK font
from the system for Chinese (Debian: fonts-wqy-microhei; those tests skip, saying so, without one).
OCR is slow on a small CPU, so the images are few and small.
"""
import importlib.util
import json
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont

from clipsearch import Library, textsearch
from clipsearch.cli import main
from clipsearch.errors import BadQuery
from clipsearch.webapp import create_app

from conftest import draw_shape

pytest.importorskip("rapidocr", reason="needs the ocr extra: pip install 'clipsearch[ocr]'")

LATIN_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def cjk_font_file() -> str | None:
    found = [f for f in CJK_FONTS if Path(f).exists()]
    if not found and shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True).stdout
        found = [line.split(":")[0] for line in listed.splitlines() if line.strip()]
    return found[0] if found else None


def font(size: int, cjk: bool = False) -> ImageFont.FreeTypeFont:
    if cjk:
        file = cjk_font_file()
        if file is None:
            pytest.skip("no CJK font on this machine (Debian: apt-get install fonts-wqy-microhei)")
        return ImageFont.truetype(file, size)
    file = next((f for f in LATIN_FONTS if Path(f).exists()), None)
    return ImageFont.truetype(file, size) if file else ImageFont.load_default(size)


def draw_text(path: Path, lines, cjk=False, size=(360, 140), ink="black", paper="white") -> Path:
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((16, 14 + 40 * i), line, font=font(26, cjk), fill=ink)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def reader():
    from clipsearch.ocr import shared_reader

    return shared_reader()


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A receipt, a sign, two shapes; indexed with --ocr into a library shared by the read-only tests."""
    root = tmp_path_factory.mktemp("texts")
    draw_text(root / "photos" / "receipt.png", ["BLUE BOTTLE COFFEE", "TOTAL 8.25"])
    draw_text(root / "photos" / "sign.png", ["NO PARKING", "TOW AWAY ZONE"], ink="white", paper="#b41e1e")
    draw_shape(root / "photos" / "red_star.png", "red", "star")
    draw_shape(root / "photos" / "blue_circle.png", "blue", "circle", seed=1)
    out = run("index", root / "photos", "--db", root / "lib", "--model", "clipsearch-tiny", "--ocr").output
    return root, out


def test_index_ocr_reads_text_and_reports_it(texts):
    root, out = texts
    line = out.splitlines()[1]
    assert line.startswith("text: read ") and "gated out" in line and "images/s" in line
    read, gated = int(line.split("read ")[1].split(",")[0]), int(line.split("gated out ")[1].split(",")[0])
    assert read + gated == 4 and read >= 2
    assert "text found in 2," in line  # the shapes' lone glyphs are not text


def test_text_search_finds_words_and_shows_them(texts):
    root, _ = texts
    lines = run("search", "--text", "tow away", "--db", root / "lib").output.splitlines()
    assert len(lines) == 1 and "sign.png" in lines[0] and '"[TOW] [AWAY] ZONE"' in lines[0]
    hits = json.loads(run("search", "--text", "bottle", "--db", root / "lib", "--json").output)
    assert [Path(h["path"]).name for h in hits] == ["receipt.png"]
    snippet, (start, end) = hits[0]["snippet"], hits[0]["highlights"][0]
    assert snippet == "BLUE BOTTLE COFFEE" and snippet[start:end] == "BOTTLE"
    assert run("search", "--text", "BOTTLE PARKING", "--db", root / "lib").output == ""  # every word


def test_search_fuses_clip_with_the_words(texts):
    root, _ = texts
    hits = json.loads(run("search", "blue bottle receipt", "--db", root / "lib", "--json", "-n", "4").output)
    assert Path(hits[0]["path"]).name == "receipt.png" and hits[0]["snippet"] == "BLUE BOTTLE COFFEE"
    assert all(h["fused"] is not None for h in hits)
    assert [h["fused"] for h in hits] == sorted((h["fused"] for h in hits), reverse=True)
    assert hits[0]["fused"] > 1 / 61 >= hits[1]["fused"]  # first in the text ranking, and in the CLIP one too
    assert run("search", "--text", "x", "a shape", "--db", root / "lib", ok=False).exit_code == 2


def test_web_shows_the_text_and_the_match(texts, tiny):
    root, _ = texts
    with Library.open(root / "lib", encoder=tiny) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        hits = client.get("/api/search", params={"q": "coffee", "k": 4}).json()["results"]
        assert hits[0]["path"].endswith("receipt.png") and hits[0]["snippet"] == "BLUE BOTTLE COFFEE"
        only = client.get("/api/search", params={"q": "parking", "words": "true"}).json()["results"]
        assert [h["path"].rsplit("/", 1)[1] for h in only] == ["sign.png"]
        detail = client.get(f"/api/images/{only[0]['id']}").json()
        assert detail["text"] == "NO PARKING\nTOW AWAY ZONE"
        star = lib.catalog.row_by_path(str(root / "photos" / "red_star.png"))["id"]
        assert client.get(f"/api/images/{star}").json()["text"] in (None, "")
        page = client.get("/").text
        assert "Text in the image" in page


def test_chinese_text_is_read_and_found(tmp_path, tiny):
    draw_text(tmp_path / "photos" / "menu.png", ["蓝瓶咖啡 菜单", "拿铁 32元"], cjk=True)
    run("index", tmp_path / "photos", "--db", tmp_path / "lib", "--model", "clipsearch-tiny", "--ocr", "all")
    for words in ("拿铁", "蓝瓶咖啡", "咖啡"):  # two characters: matched without the trigram index
        lines = run("search", "--text", words, "--db", tmp_path / "lib").output.splitlines()
        assert len(lines) == 1 and "menu.png" in lines[0] and f"[{words}]" in lines[0]


def word_recall(reader, images_and_words) -> float:
    found = total = 0
    for image, words in images_and_words:
        text = " ".join(line.text for line in reader.read(image)).casefold()
        squeezed = text.replace(" ", "")
        found += sum(w.casefold() in text or w.casefold() in squeezed for w in words)
        total += len(words)
    return found / total


VOCABULARY = ("invoice paid total amount coffee bottle station market garden window yellow orange "
              "museum ticket platform airport monday friday river bridge number street parking").split()
CHINESE = "咖啡 收据 发票 车站 市场 花园 博物馆 门票 机场 星期一 河流 大桥 街道 停车 出口 入口".split()


def held_out(words, per_line, seed, cjk=False):
    """Two images of three lines of words drawn at random (a seed the engine's authors never saw)."""
    rng = random.Random(seed)
    out = []
    for _ in range(2):
        lines = [" ".join(rng.sample(words, per_line)) for _ in range(3)]
        image = Image.new("RGB", (420, 150), "white")
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(lines):
            draw.text((14, 12 + 44 * i), line, font=font(28, cjk), fill="black")
        out.append((image, " ".join(lines).split()))
    return out


def test_word_recall_english(reader):
    assert word_recall(reader, held_out(VOCABULARY, 3, seed=18)) >= 0.9


def test_word_recall_chinese(reader):
    assert word_recall(reader, held_out(CHINESE, 3, seed=18, cjk=True)) >= 0.9


def test_the_detector_gate_tells_text_from_blank_and_glyphs(reader, tmp_path):
    sign = Image.open(draw_text(tmp_path / "sign.png", ["EXIT ONLY"]))
    assert reader.finds_text(sign)
    assert not reader.finds_text(Image.new("RGB", (300, 200), (90, 140, 200)))
    assert not reader.finds_text(Image.open(draw_shape(tmp_path / "star.png", "red", "star")))


def test_incremental_setting_kept_changed_and_removed_images(tmp_path, monkeypatch):
    photos, lib = tmp_path / "photos", tmp_path / "lib"
    draw_text(photos / "a.png", ["FIRST LABEL"])
    draw_text(photos / "b.png", ["SECOND NOTE"])
    run("index", photos, "--db", lib, "--model", "clipsearch-tiny", "--ocr", "all")
    assert "read 0, gated out 0" in run("ocr", "--db", lib).output  # nothing left to read
    draw_text(photos / "a.png", ["REPLACED WORDS"])  # changed: its old text goes with its old row
    (photos / "b.png").unlink()  # removed: its text goes too
    draw_text(photos / "c.png", ["THIRD THING"])  # new: read because the library keeps --ocr on
    out = run("index", photos, "--db", lib).output
    assert "text: read 2," in out
    assert run("search", "--text", "first", "--db", lib).output == ""
    assert run("search", "--text", "second", "--db", lib).output == ""
    assert "a.png" in run("search", "--text", "replaced", "--db", lib).output
    assert "c.png" in run("search", "--text", "third", "--db", lib).output
    db = sqlite3.connect(lib / "catalog.db")
    assert db.execute("SELECT count(*) FROM ocr_text").fetchone()[0] == 2
    db.execute("INSERT INTO ocr_fts(ocr_fts, rank) VALUES ('integrity-check', 1)")  # index matches its table
    db.close()
    draw_text(photos / "d.png", ["FOURTH"])
    out = run("index", photos, "--db", lib, "--no-ocr").output
    assert "text:" not in out and run("search", "--text", "fourth", "--db", lib).output == ""


def test_the_gate_all_reads_what_auto_gated_out(tmp_path, monkeypatch):
    from clipsearch import ocr

    monkeypatch.setattr(ocr, "GATE_PROBABILITY", 2.0)  # only the detector decides
    draw_text(tmp_path / "photos" / "note.png", ["MILK EGGS"])
    Image.new("RGB", (200, 150), (120, 160, 90)).save(tmp_path / "photos" / "plain.png")
    out = run("index", tmp_path / "photos", "--db", tmp_path / "lib", "--model", "clipsearch-tiny", "--ocr").output
    assert "read 1, gated out 1, text found in 1" in out
    assert "read 1, gated out 0, text found in 0" in run("ocr", "--db", tmp_path / "lib", "--gate", "all").output


def test_a_file_changed_since_indexing_is_skipped_not_misfiled(tmp_path):
    draw_text(tmp_path / "photos" / "a.png", ["OLD WORDS"])
    run("index", tmp_path / "photos", "--db", tmp_path / "lib", "--model", "clipsearch-tiny")
    draw_text(tmp_path / "photos" / "a.png", ["NEW WORDS"])
    out = run("ocr", "--db", tmp_path / "lib", "--gate", "all").output
    assert "skipped 1" in out and "changed since it was indexed" in out


def test_without_the_extra_index_ocr_fails_in_one_line_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rapidocr" else real(name, *a))
    draw_text(tmp_path / "photos" / "a.png", ["HELLO"])
    index = ["index", tmp_path / "photos", "--db", tmp_path / "lib", "--model", "clipsearch-tiny"]
    for args, created in ((index + ["--ocr"], False), (["ocr", "--db", tmp_path / "lib"], True)):
        if created:
            run(*index)
        result = run(*args, ok=False)
        assert result.exit_code == 1 and "pip install 'clipsearch[ocr]'" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert (tmp_path / "lib" / "catalog.db").exists() is created


def test_text_search_without_any_text_says_what_to_run(tmp_path):
    draw_shape(tmp_path / "photos" / "star.png", "red", "star")
    run("index", tmp_path / "photos", "--db", tmp_path / "lib", "--model", "clipsearch-tiny")
    result = run("search", "--text", "hello", "--db", tmp_path / "lib", ok=False)
    assert result.exit_code == 1 and "clipsearch ocr" in result.output


# --- textsearch without OCR: matching, snippets, fusion, the fallback without trigram --------------
def test_reciprocal_rank_fusion():
    fused = dict(textsearch.fuse([[1, 2, 3], [3, 4]]))
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61) and fused[1] == pytest.approx(1 / 61)
    assert [i for i, _ in textsearch.fuse([[1, 2, 3], [3, 4]])] == [3, 1, 2, 4]


def test_snippet_marks_every_word_any_case():
    snip = textsearch.snippet("Total 8.25\nBlue Bottle Coffee\nthanks", ["bottle", "BLUE", "%"])
    assert textsearch.marked(snip) == "[Blue] [Bottle] Coffee"
    assert textsearch.snippet("nothing here", ["absent"]) is None


@pytest.mark.parametrize("trigram", [True, False])
def test_matching_with_and_without_the_trigram_index(tmp_path, monkeypatch, trigram):
    from clipsearch.catalog import Catalog

    if not trigram:
        monkeypatch.setattr(textsearch.sqlite3, "sqlite_version_info", (3, 31, 1))
    catalog = Catalog.open(tmp_path, create=True)
    with catalog.db.conn:
        for i in (1, 2, 3):
            catalog.db.conn.execute("INSERT INTO images(id, path, size, mtime_ns, hash, width, height, format, "
                                    "indexed_at, vector) VALUES (?, ?, 1, 1, 'h', 1, 1, 'PNG', 'now', x'00')",
                                    [i, f"/p/{i}.png"])
    assert textsearch.ensure_fts(catalog) is trigram
    line = textsearch.TextLine
    textsearch.write_text(catalog, [(1, "read", [line("Blue Bottle 100%", 0.9, ((0, 0),) * 4)]),
                                    (2, "read", [line("蓝瓶咖啡 bottle", 0.9, ((0, 0),) * 4)]),
                                    (3, "gated", [])])
    assert [m.image_id for m in textsearch.match(catalog, "bottle blue", every=False)] == [1, 2]
    assert [m.image_id for m in textsearch.match(catalog, "bottle blue", every=True)] == [1]
    assert [m.image_id for m in textsearch.match(catalog, "咖啡", every=True)] == [2]
    assert [m.image_id for m in textsearch.match(catalog, "0%", every=True)] == [1]  # LIKE wildcards escaped
    with pytest.raises(BadQuery):  # punctuation alone leaves no word to look for
        textsearch.match(catalog, "_", every=True)
    assert [m.image_id for m in textsearch.match(catalog, "bottle", every=True, allowed=np.array([2]))] == [2]
    assert textsearch.text_of(catalog, 3) is None and textsearch.text_of(catalog, 1)[0] == "Blue Bottle 100%"
    catalog.close()


@pytest.mark.parametrize("query, words", [
    ("parking,", ["parking"]), ("NO-PARKING", ["NO", "PARKING"]), ("\u201cparking\u201d", ["parking"]),
    ("\uff30\uff21\uff32\uff2b\uff29\uff2e\uff27", ["PARKING"]), ("\u62ff\u94c1 \u5317\u4eac", ["\u62ff\u94c1", "\u5317\u4eac"]),
    ("blue  bottle blue", ["blue", "bottle"]),
])
def test_query_words_drop_punctuation_and_fold_full_width_letters(query, words):
    from clipsearch.textsearch import query_words

    assert query_words(query) == words


def test_ctrl_c_during_ocr_says_how_many_were_read_and_a_rerun_continues(shape_tree, tmp_path, monkeypatch):
    from clipsearch import ocr

    run("index", shape_tree, "--db", tmp_path / "lib", "--model", "clipsearch-tiny")
    calls = []

    def read_two_then_interrupt(reader, row, force):
        calls.append(row["path"])
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt
        return "read", []

    interrupt = True
    monkeypatch.setattr(ocr, "CHUNK", 1)
    monkeypatch.setattr(ocr, "_read_one", read_two_then_interrupt)
    result = run("ocr", "--db", tmp_path / "lib", "--gate", "all", ok=False)
    assert result.exit_code == 130 and "Aborted" not in result.output
    assert result.stderr == ("Interrupted: 2 images read and saved; run the same command again to continue where it "
                             "stopped\n")
    interrupt = False
    assert "text: read 6, gated out 0" in run("ocr", "--db", tmp_path / "lib", "--gate", "all").stdout
