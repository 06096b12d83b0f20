"""Fuzz clipsearch's decode stage: mutated JPEG, PNG, TIFF, WebP and GIF files, EXIF blocks included.

    python scripts/fuzz_decode.py --cases 50000 --seed 1

Seed files are generated with Pillow (small pictures carrying EXIF with orientation, dates, GPS and
maker text, ICC profiles, PNG text chunks, TIFF tags, GIF transparency and frames). Each case applies
one to four mutations: bytes flipped, bits flipped, truncation, a slice deleted or duplicated (JPEG
segments and PNG chunks whole), 2- and 4-byte words set to offsets pointing anywhere, and the type
and count fields of TIFF/EXIF directory entries replaced; PNG chunk CRCs are then made valid again
half of the time, so that mutations reach past the CRC check.

Every case must give an RGB picture within the pixel cap (then cropped as the model sees it) or
`BadImage`: anything else is a finding, printed with its seed file, case number and exception. The
pixel cap is lowered (--max-pixels), so that any allocation the cap does not bound shows: a case that
raises the peak resident memory by more than --max-rise-mb is a finding too.
The last line is JSON: cases, findings, outcomes, the slowest case and the peak resident memory.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import resource
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageCms, ImageDraw, PngImagePlugin  # noqa: E402

from clipsearch import decode as decode_module  # noqa: E402
from clipsearch.decode import decode, model_view  # noqa: E402
from clipsearch.errors import BadImage  # noqa: E402

MIN_SIDE = 64


def _picture(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        box = sorted(rng.sample(range(size[0]), 2)), sorted(rng.sample(range(size[1]), 2))
        draw.rectangle((box[0][0], box[1][0], box[0][1], box[1][1]), fill=tuple(rng.randrange(256) for _ in "rgb"))
    return img.convert(mode) if mode != "RGB" else img


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x0110] = "Fuzz Camera"
    exif[0x0132] = "2020:02:03 04:05:06"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2019:01:02 03:04:05"
    sub[0x9011] = "+02:00"
    sub[0x927C] = b"maker note" * 8
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.5)
    return exif


def seed_files() -> dict[str, bytes]:
    """Small valid files of every fuzzed format, with metadata for the mutations to hit."""
    out: dict[str, bytes] = {}
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[24:36] = bytes(12)  # the creation time, so that a seed gives the same cases on every run
    icc = bytes(icc)

    def save(name: str, img: Image.Image, fmt: str, **params: object) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **params)
        out[name] = buf.getvalue()

    rgb = _picture("RGB", (48, 32), 1)
    save("exif.jpg", rgb, "JPEG", exif=_exif(6), icc_profile=icc, quality=80)
    save("progressive.jpg", rgb, "JPEG", exif=_exif(3), progressive=True)
    save("gray.jpg", _picture("L", (40, 40), 2), "JPEG")
    save("cmyk.jpg", _picture("CMYK", (32, 24), 3), "JPEG")
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "a picture")
    text.add_text("workflow", "{\"nodes\": []}" * 20, zip=True)
    text.add_itxt("Description", "une image", lang="fr", zip=True)
    save("rgba.png", _picture("RGBA", (40, 30), 4), "PNG", pnginfo=text, exif=_exif(8), icc_profile=icc)
    save("palette.png", _picture("P", (32, 32), 5), "PNG", transparency=0)
    save("gray16.png", _picture("I;16", (24, 24), 6), "PNG")
    save("exif.tif", rgb, "TIFF", exif=_exif(6))
    save("lzw.tif", _picture("RGBA", (40, 24), 7), "TIFF", compression="tiff_lzw")
    save("deflate.tif", _picture("L", (30, 30), 8), "TIFF", compression="tiff_adobe_deflate")
    save("exif.webp", rgb, "WEBP", exif=_exif(5), icc_profile=icc, quality=70)
    save("lossless.webp", _picture("RGBA", (32, 32), 9), "WEBP", lossless=True)
    save("still.gif", _picture("P", (40, 30), 10), "GIF", transparency=3)
    frames = [_picture("P", (32, 32), s) for s in (11, 12, 13)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["animated.gif"] = buf.getvalue()
    return out


INTERESTING = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


def _tiff_entries(data: bytes) -> list[tuple[int, str]]:
    """Positions of the directory entries of every TIFF structure in `data` (TIFF files, EXIF blocks)."""
    found = []
    for marker, order in ((b"II*\x00", "<"), (b"MM\x00*", ">")):
        start = data.find(marker)
        while start != -1 and len(found) < 200:
            seen = set()
            (offset,) = struct.unpack_from(order + "I", data, start + 4) if start + 8 <= len(data) else (0,)
            while 8 <= offset < len(data) - start - 2 and offset not in seen and len(seen) < 8:
                seen.add(offset)
                (count,) = struct.unpack_from(order + "H", data, start + offset)
                entries = start + offset + 2
                for i in range(min(count, 64)):
                    if entries + 12 * i + 12 <= len(data):
                        found.append((entries + 12 * i, order))
                after = entries + 12 * count
                offset = struct.unpack_from(order + "I", data, after)[0] if after + 4 <= len(data) else 0
            start = data.find(marker, start + 1)
    return found


def _segments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the JPEG marker segments or PNG chunks of `data`; empty for other formats."""
    spans = []
    if data.startswith(b"\x89PNG"):
        pos = 8
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            spans.append((pos, min(len(data), pos + 12 + length)))
            pos += 12 + length
    elif data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
            (length,) = struct.unpack_from(">H", data, pos + 2)
            spans.append((pos, min(len(data), pos + 2 + length)))
            pos += 2 + length
    return spans


def _fix_png_crcs(data: bytearray) -> None:
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        struct.pack_into(">I", data, end, zlib.crc32(bytes(data[pos + 4:end])) & 0xFFFFFFFF)
        pos = end + 4


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        kind = rng.randrange(8)
        pos = rng.randrange(len(out))
        if kind == 0:  # bytes replaced
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] = rng.randrange(256)
        elif kind == 1:  # bits flipped
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == 2:  # truncated
            del out[pos:]
        elif kind == 3:  # a slice deleted
            del out[pos:pos + rng.randint(1, 64)]
        elif kind == 4:  # a segment or slice duplicated
            spans = _segments(bytes(out))
            start, end = rng.choice(spans) if spans and rng.random() < 0.7 else (pos, pos + rng.randint(1, 256))
            at = rng.choice([s for s, _ in spans]) if spans else rng.randrange(len(out))
            out[at:at] = out[start:end]
        elif kind in (5, 6):  # an offset or size pointing anywhere
            width = 4 if kind == 5 else 2
            if pos + width <= len(out):
                value = rng.choice([*INTERESTING, len(out), rng.randrange(len(out) + 1), rng.getrandbits(8 * width)])
                order = rng.choice("<>")
                struct.pack_into(order + ("I" if width == 4 else "H"), out, pos, value % (1 << (8 * width)))
        else:  # a TIFF/EXIF directory entry with the wrong type, count or value offset
            entries = _tiff_entries(bytes(out))
            if entries:
                at, order = rng.choice(entries)
                field = rng.randrange(3)
                if field == 0:
                    struct.pack_into(order + "H", out, at + 2, rng.choice([*range(0, 19), 0xFFFF]))
                elif field == 1:
                    struct.pack_into(order + "I", out, at + 4, rng.choice(INTERESTING))
                else:
                    struct.pack_into(order + "I", out, at + 8, rng.choice([*INTERESTING, rng.randrange(len(out))]))
    if out.startswith(b"\x89PNG") and rng.random() < 0.5:
        _fix_png_crcs(out)
    return bytes(out)


def run_case(data: bytes, max_pixels: int) -> str:
    """'ok' or a BadImage reason class; raises what decode should never raise."""
    try:
        picture, _ = decode(data, MIN_SIDE)
    except BadImage as e:
        return "bad: " + str(e).split(":")[0][:40]
    w, h = picture.size
    if picture.mode != "RGB" or w * h > max_pixels:
        raise AssertionError(f"decode returned a {picture.mode} picture of {w}x{h}")
    view = model_view(picture, MIN_SIDE)
    if min(view.size) < MIN_SIDE and view.size[0] != view.size[1]:
        raise AssertionError(f"model_view left {view.size} for {picture.size}")
    return "ok"


def _peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM where Linux has it (ru_maxrss carries over the peak of
    the process that forked us, e.g. a test runner), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-pixels", type=int, default=4_000_000,
                        help="the pixel cap during the run (lower than clipsearch's, so memory stays small)")
    parser.add_argument("--max-rise-mb", type=float, default=128,
                        help="a case that raises the process's peak memory by more than this is a finding")
    parser.add_argument("--save", type=Path, help="folder to write the inputs of findings to")
    args = parser.parse_args()
    decode_module.MAX_PIXELS = args.max_pixels
    seeds = seed_files()
    names = sorted(seeds)
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    findings: list[dict[str, object]] = []
    slowest = biggest_jump = (0.0, "")
    started = time.perf_counter()
    for case in range(args.cases):
        name = names[case % len(names)]
        data = mutate(seeds[name], rng)
        t, rss_before = time.perf_counter(), _peak_rss_mb()
        try:
            outcomes[run_case(data, args.max_pixels)] += 1
        except Exception as e:  # noqa: BLE001 - what the fuzzer is looking for
            where = traceback.extract_tb(e.__traceback__)[-1]
            finding = {"case": case, "seed_file": name, "error": f"{type(e).__name__}: {e}"[:200],
                       "where": f"{Path(where.filename).name}:{where.lineno}"}
            findings.append(finding)
            print("FINDING", json.dumps(finding), flush=True)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"case{case}-{name}").write_bytes(data)
        elapsed, jump = time.perf_counter() - t, _peak_rss_mb() - rss_before
        if elapsed > slowest[0]:
            slowest = (elapsed, f"case {case} ({name})")
        if jump > biggest_jump[0]:
            biggest_jump = (jump, f"case {case} ({name})")
        if jump > args.max_rise_mb:
            finding = {"case": case, "seed_file": name, "error": f"peak memory rose by {jump:.0f} MB", "where": ""}
            findings.append(finding)
            print("FINDING", json.dumps(finding), flush=True)
    total = time.perf_counter() - started
    peak_mb = _peak_rss_mb()
    for outcome, n in outcomes.most_common(12):
        print(f"{n:7d}  {outcome}")
    print(f"{args.cases} cases in {total:.1f}s, {len(findings)} findings, peak memory {peak_mb:.0f} MB")
    print(json.dumps({"cases": args.cases, "seed": args.seed, "findings": findings, "ok": outcomes["ok"],
                      "bad_image": args.cases - outcomes["ok"] - len(findings), "seconds": round(total, 2),
                      "slowest_case_s": round(slowest[0], 4), "slowest_case": slowest[1],
                      "peak_rss_mb": round(peak_mb, 1), "largest_peak_rise_mb": round(biggest_jump[0], 1),
                      "largest_peak_rise_case": biggest_jump[1], "max_pixels": args.max_pixels}))


if __name__ == "__main__":
    main()
