"""Decode throughput of phone and camera formats, one core, against JPEG; video frame sampling.

N photo-like pictures (see bench_index.py) are written as JPEG, HEIC, AVIF and DNG (a 12-bit RGGB
mosaic: once with a full-size embedded JPEG preview, as cameras write them, once without, which
forces a half-size demosaic), once into the cache folder. Each format is then decoded the way
`clipsearch index` decodes it (read, content hash, decode towards the model's input side,
orientation), in this process, `--repeat` times; images/s is N over each run's time.

Videos: `--videos` clips of `--video-seconds` at `--video-size`, 30 frames/s, H.264 in MP4, a
keyframe every 2 s and a cut every 10 s (a different photo-like picture per scene, sliding
sideways), are sampled as `clipsearch index` samples them (content hash in chunks, keyframe
index, seeks, default sampling: one frame per 5 s plus scene changes, at most 50): videos/s and
kept frames/s.

    python benchmarks/bench_formats.py
    python benchmarks/bench_formats.py --n 4 --size 2000x1500 --repeat 2 --videos 2 --video-seconds 20

The last line printed is one JSON object: per figure, the median with min and max.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_index import photo  # noqa: E402
from generated import write_clip, write_dng  # noqa: E402

from clipsearch.decode import content_hash, decode  # noqa: E402
from clipsearch.video import Sampling, file_hash, sample  # noqa: E402
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

FAST_ENCODE = {"heic": {"enc_params": {"preset": "ultrafast"}}, "avif": {"speed": 10}}
"""Encoder settings that make generating the files minutes faster; decoding costs the same."""
FORMATS = {"jpeg": ".jpg", "heic": ".heic", "avif": ".avif", "raw_preview": ".dng", "raw_demosaic": ".dng"}


def ensure(folder: Path, kind: str, n: int, size: tuple[int, int]) -> list[Path]:
    """The n files of one kind, generated once (cached across runs)."""
    def write(path: Path, seed: int) -> None:
        picture = photo(seed, size)
        if kind.startswith("raw"):
            rgb = np.asarray(picture)
            write_dng(path, rgb, preview=rgb if kind == "raw_preview" else None)
        else:
            fmt = {"jpeg": "JPEG", "heic": "HEIF", "avif": "AVIF"}[kind]
            picture.save(path, fmt, quality=90, **FAST_ENCODE.get(kind, {}))

    return _cached(folder / f"{kind}-{size[0]}x{size[1]}", FORMATS[kind], n, write)


def _cached(folder: Path, suffix: str, n: int, write: Callable[[Path, int], None]) -> list[Path]:
    """`folder`/000`suffix`... : each missing file written by `write(path, number)` to a temporary name, then
    renamed, so an interrupted run never leaves a half-written file behind."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}{suffix}" for i in range(n)]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        print(f"writing {path}", flush=True)
        tmp = path.with_name("tmp-" + path.name)
        write(tmp, i)
        tmp.rename(path)
    return paths


def images_per_s(paths: list[Path], min_side: int) -> float:
    started = time.perf_counter()
    for path in paths:
        data = path.read_bytes()
        content_hash(data)
        decode(data, min_side, str(path))
    return len(paths) / (time.perf_counter() - started)


def ensure_videos(folder: Path, n: int, seconds: int, size: tuple[int, int]) -> list[Path]:
    def write(path: Path, i: int) -> None:
        scenes = [np.asarray(photo(100 * i + j, size)) for j in range(max(1, seconds // 10))]
        write_clip(path, scenes, seconds_each=seconds / len(scenes), fps=30, gop=60)

    return _cached(folder / f"video-{seconds}s-{size[0]}x{size[1]}", ".mp4", n, write)


def videos_per_s(paths: list[Path], min_side: int) -> tuple[float, float]:
    """(videos/s, kept frames/s)."""
    started, frames = time.perf_counter(), 0
    for path in paths:
        file_hash(str(path))
        frames += len(sample(str(path), Sampling(), min_side).frames)
    elapsed = time.perf_counter() - started
    return len(paths) / elapsed, frames / elapsed


def summary(runs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(runs), 2), "min": round(min(runs), 2), "max": round(max(runs), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8, help="files per format")
    parser.add_argument("--size", default="4032x3024", help="WIDTHxHEIGHT (an iPhone's 12 MP)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--min-side", type=int, default=224, help="the model's input side")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ",".join(FORMATS))
    parser.add_argument("--videos", type=int, default=4, help="video clips (0: none)")
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument("--video-size", default="1280x720")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench-cache" / "formats")
    add_save_option(parser)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    figures: dict[str, object] = {"n": args.n, "size": args.size, "min_side": args.min_side, "repeat": args.repeat}
    for kind in args.formats.split(","):
        paths = ensure(args.cache, kind, args.n, size)
        runs = [images_per_s(paths, args.min_side) for _ in range(args.repeat)]
        figures[f"{kind}_images_per_s"] = summary(runs)
        print(f"{kind:13} {statistics.median(runs):7.2f} images/s (min {min(runs):.2f}, max {max(runs):.2f})",
              flush=True)
    if args.videos:
        video_size = tuple(int(v) for v in args.video_size.split("x"))
        paths = ensure_videos(args.cache, args.videos, args.video_seconds, video_size)
        runs = [videos_per_s(paths, args.min_side) for _ in range(args.repeat)]
        figures.update(videos=args.videos, video_seconds=args.video_seconds, video_size=args.video_size,
                       video_videos_per_s=summary([r[0] for r in runs]),
                       video_frames_per_s=summary([r[1] for r in runs]))
        print(f"video         {statistics.median([r[0] for r in runs]):7.2f} videos/s, "
              f"{statistics.median([r[1] for r in runs]):.2f} frames/s", flush=True)
    emit(figures, args)


if __name__ == "__main__":
    main()
