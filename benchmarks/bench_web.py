"""Latency of the web app's JSON API over real HTTP (uvicorn on loopback), warm.

Indexes generated shapes with the bundled tiny model, optionally pads the catalog with random
vectors to look like a big library, starts the app, and times each endpoint: median and p95
over repeated requests after a warm-up. Prints one line per endpoint; the last line is JSON.

    python benchmarks/bench_web.py --images 300 --extra 100000
"""
from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from clipsearch import Library, model_spec
from clipsearch.catalog import NewImage
from clipsearch.shapes import generate
from clipsearch.webapp import create_app
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)


def build(root: Path, images: int, extra: int) -> Library:
    photos = root / "photos"
    photos.mkdir()
    for i, (spec, picture) in enumerate(generate(images, seed=1, size=256)):
        picture.save(photos / f"{i:05d}_{spec.colour}_{spec.shape}.png")
    lib = Library.open(root / "lib", create=True)
    lib.index([photos], model=model_spec("clipsearch-tiny"), device="cpu", workers=0)
    rng = np.random.default_rng(0)
    dim = lib.encoder.dim
    for start in range(0, extra, 10_000):
        vectors = rng.standard_normal((min(10_000, extra - start), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        lib.catalog.write_batch([NewImage(f"/synthetic/{start + i}.jpg", 1, 1, f"h{start + i}", 64, 64, "JPEG",
                                          None, None, v) for i, v in enumerate(vectors)], [], [])
    return lib


def timed(client: httpx.Client, repeat: int, method: str, url: str, **kwargs) -> dict[str, float]:
    for _ in range(3):
        client.request(method, url, **kwargs).raise_for_status()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.request(method, url, **kwargs).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="generated images to index")
    parser.add_argument("--extra", type=int, default=0, help="random vectors added to the catalog")
    parser.add_argument("--repeat", type=int, default=50)
    add_save_option(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp), args.images, args.extra)
        started = time.perf_counter()
        app = create_app(lib)
        app_setup_s = time.perf_counter() - started
        # IPPROTO_TCP named explicitly: only then does asyncio set TCP_NODELAY on accepted connections,
        # without which every keep-alive response waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        upload = io.BytesIO()
        generate(1, seed=99, size=256)[0][1].save(upload, "PNG")
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
            first = client.get("/api/search", params={"q": "a red star", "k": 20}).json()["results"][0]["id"]
            figures = {
                "search": timed(client, args.repeat, "GET", "/api/search", params={"q": "a red star", "k": 20}),
                "similar": timed(client, args.repeat, "GET", f"/api/images/{first}/similar", params={"k": 20}),
                "upload": timed(client, args.repeat, "POST", "/api/search/image",
                                files={"file": ("q.png", upload.getvalue(), "image/png")}),
                "thumb_cached": timed(client, args.repeat, "GET", f"/api/images/{first}/thumb"),
                "info": timed(client, args.repeat, "GET", "/api/info"),
            }
        server.should_exit = True
        thread.join()
        total = lib.catalog.count()
        lib.close()
    for name, f in figures.items():
        print(f"{name:13} median {f['median_ms']:7.2f} ms   p95 {f['p95_ms']:7.2f} ms")
    print(f"{'app setup':13} {app_setup_s:.2f} s (create_app in this process on the library it just built, the model "
          f"already loaded: not a cold `clipsearch serve`), {total} images in the catalog")
    emit({"images": total, "app_setup_s": round(app_setup_s, 2), **figures}, args)


if __name__ == "__main__":
    main()
