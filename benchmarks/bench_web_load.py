"""The web server under load: peak memory and errors when many clients ask for uncached thumbnails.

Generates large photos (35 megapixels by default, with detail and noise so they decode like real
ones), indexes them with the bundled tiny model, and for each number of concurrent clients starts a
fresh `clipsearch serve` on 127.0.0.1 with an empty thumbnail cache, then sends every client's
request at once, in two patterns:

- one: every client asks for the same thumbnail (the small one of the first photo);
- spread: the clients ask, in turn, for each photo's small and large thumbnail.

Reports the server's peak resident memory above its resident memory before the load (Linux
/proc VmHWM - VmRSS), the requests not answered 200, and the wall time; medians over --runs runs
with min and max. Requests go to loopback only. The last line is JSON.

    python benchmarks/bench_web_load.py --clients 32 128
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from clipsearch import Library, model_spec
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)


def make_photos(folder: Path, count: int, megapixels: float, fmt: str) -> list[Path]:
    """`count` 3:2 photos of about `megapixels`: gradients and stripes at every scale, plus noise."""
    folder.mkdir(parents=True)
    width = int((megapixels * 1e6 * 1.5) ** 0.5)
    height = int(width / 1.5)
    rng = np.random.default_rng(0)
    x, y = np.arange(width, dtype=np.int32)[None, :], np.arange(height, dtype=np.int32)[:, None]
    paths = []
    for i in range(count):
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[..., 0] = ((x + 13 * i) // 7) % 256
        pixels[..., 1] = (y // 5) % 256
        pixels[..., 2] = ((x + y) // (11 + i)) % 256
        pixels += rng.integers(0, 24, size=pixels.shape, dtype=np.uint8)
        path = folder / f"photo{i}.{'jpg' if fmt == 'jpeg' else fmt}"
        Image.fromarray(pixels).save(path, **({"quality": 92} if fmt == "jpeg" else {"compress_level": 1}))
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kb(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (resident at most, so far) of a process, in kB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


async def fire(base: str, urls: list[str]) -> Counter:
    """Every URL requested at once, one connection each; counts the answers by status (or error)."""
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=600) as client:
        async def one(url: str) -> str:
            try:
                return str((await client.get(url)).status_code)
            except httpx.HTTPError as e:
                return type(e).__name__

        return Counter(await asyncio.gather(*(one(u) for u in urls)))


def run_once(library: Path, urls: list[str]) -> dict[str, float]:
    """A fresh server with an empty thumbnail cache, all `urls` at once: memory, failures, time."""
    shutil.rmtree(library / "thumbs", ignore_errors=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "clipsearch", "serve", "--db", str(library), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # wait for it to listen: up to 2 minutes
            try:
                httpx.get(f"{base}/api/info", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None:
                    raise RuntimeError(server.stderr.read().decode()) from None
                time.sleep(0.2)
        before_kb = memory_kb(server.pid, "VmRSS")
        started = time.perf_counter()
        answers = asyncio.run(fire(base, urls))
        wall_s = time.perf_counter() - started
        peak_kb = memory_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait()
    return {"errors": sum(n for status, n in answers.items() if status != "200"),
            "peak_rss_mb": round((peak_kb - before_kb) / 1024, 1), "wall_s": round(wall_s, 2),
            "answers": dict(answers)}


def summary(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 128], help="concurrent clients, each level")
    parser.add_argument("--photos", type=int, default=4, help="photos generated")
    parser.add_argument("--megapixels", type=float, default=35)
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    parser.add_argument("--pattern", choices=["one", "spread"], nargs="+", default=["one", "spread"])
    parser.add_argument("--runs", type=int, default=3, help="runs of each level and pattern (fresh server each)")
    add_save_option(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp) / "photos", args.photos, args.megapixels, args.format)
        library = Path(tmp) / "lib"
        with Library.open(library, create=True) as lib:
            lib.index([str(Path(tmp) / "photos")], model=model_spec("clipsearch-tiny"), device="cpu", workers=0)
            ids = [lib.catalog.row_by_path(str(p))["id"] for p in photos]
        thumbs = [f"/api/images/{i}/thumb?size={size}" for size in ("small", "large") for i in ids]
        results = {}
        for clients in args.clients:
            for pattern in args.pattern:
                urls = [thumbs[0]] * clients if pattern == "one" else [thumbs[n % len(thumbs)] for n in range(clients)]
                runs = [run_once(library, urls) for _ in range(args.runs)]
                results[f"{pattern}_{clients}"] = {k: summary(runs, k) for k in ("errors", "peak_rss_mb", "wall_s")}
                r = results[f"{pattern}_{clients}"]
                print(f"{clients:4} clients, {pattern:6}: errors {r['errors']['median']:g} "
                      f"(min {r['errors']['min']:g}, max {r['errors']['max']:g}); peak memory "
                      f"+{r['peak_rss_mb']['median']:.0f} MB (min {r['peak_rss_mb']['min']:.0f}, "
                      f"max {r['peak_rss_mb']['max']:.0f}); {r['wall_s']['median']:.1f} s; "
                      f"answers {[run['answers'] for run in runs]}", flush=True)
    emit({"megapixels": args.megapixels, "format": args.format, "photos": args.photos,
                      "runs": args.runs, "cpu": cpu_name(), "cpus": os.cpu_count(), **results}, args)


if __name__ == "__main__":
    main()
