"""The web app's JSON API through FastAPI's test client: queries, uploads, serving images safely."""
import asyncio
import hashlib
import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch import Library, model_spec, thumbnails, webapp
from clipsearch.cli import main
from clipsearch.webapp import create_app

from conftest import SHAPE_TREE, draw_shape, save_image, touch_later


@pytest.fixture
def lib(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"), workers=0)
        yield lib


@pytest.fixture
def client(lib):
    with TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        yield client


def name(hit):
    return hit["path"].rsplit("/", 1)[-1]


def image_id(client, filename):
    hits = client.get("/api/search", params={"q": "a shape", "k": 100}).json()["results"]
    return next(h["id"] for h in hits if name(h) == filename)


@pytest.mark.parametrize("colour,shape", SHAPE_TREE[:2])
def test_text_search_answers_what_the_library_answers(client, lib, colour, shape):
    query = f"a {colour} {shape}"
    response = client.get("/api/search", params={"q": query, "k": 3})
    assert response.status_code == 200
    body = response.json()
    expected = lib.search(query, k=3)
    assert [h["path"] for h in body["results"]] == [r.path for r in expected]
    # Same function computes the query vector on both paths; scores may still differ in the last bits
    # between CPUs' SIMD kernels, so compare them with a tolerance, never exactly.
    assert [h["score"] for h in body["results"]] == pytest.approx([r.score for r in expected], abs=1e-6)
    assert body["elapsed_ms"] >= 0
    assert set(body["results"][0]) == {"id", "path", "path_bytes_b64", "score", "width", "height", "taken_at", "date",
                                       "snippet", "highlights", "fused", "time_s", "good"}
    assert [lib.catalog.row_by_path(h["path"])["id"] for h in body["results"]] == [h["id"] for h in body["results"]]


def test_bad_queries_are_4xx_with_a_message(client):
    response = client.get("/api/search", params={"q": "  "})
    assert response.status_code == 400 and "Empty query" in response.json()["detail"]
    assert client.get("/api/search").status_code == 422
    assert client.get("/api/search", params={"q": "star", "k": 0}).status_code == 422


def test_a_query_naming_a_server_file_is_only_text(client, shape_tree):
    """The CLI reads a query that names a file as an image; the web app must never open it."""
    for q in ["/etc/passwd", str(shape_tree / "a" / "red_star.png")]:
        response = client.get("/api/search", params={"q": q, "k": 8})
        assert response.status_code == 200 and len(response.json()["results"]) == 8


def test_image_metadata_and_similar_images(client, lib, shape_tree):
    star = image_id(client, "red_star.png")
    meta = client.get(f"/api/images/{star}").json()
    assert meta["path"] == str(shape_tree / "a" / "red_star.png")
    assert (meta["width"], meta["height"], meta["format"]) == (128, 128, "PNG")
    similar = client.get(f"/api/images/{star}/similar", params={"k": 3}).json()["results"]
    assert [h["path"] for h in similar] == [r.path for r in lib.similar(meta["path"], k=3)]
    assert star not in [h["id"] for h in similar]


def test_upload_finds_the_same_picture_and_writes_nothing(client, library_dir, shape_tree):
    before = library_state(library_dir)
    picture = (shape_tree / "b" / "yellow_square.png").read_bytes()
    response = client.post("/api/search/image", params={"k": 2}, files={"file": ("query.png", picture, "image/png")})
    assert response.status_code == 200
    top = response.json()["results"][0]
    assert name(top) == "yellow_square.png" and top["score"] > 0.999
    assert library_state(library_dir) == before


def library_state(directory):
    """Names of everything in the library directory and the content of its data files."""
    data = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.iterdir() if p.name in ("catalog.db", "catalog.db-wal", "vectors.faiss")}
    return sorted(p.name for p in directory.rglob("*")), data


@pytest.mark.parametrize("filename,content", [
    ("notes.txt", b"just some text"),
    ("empty.jpg", b""),
    ("truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
])
def test_a_non_image_upload_is_415_with_a_clear_message(client, filename, content):
    response = client.post("/api/search/image", files={"file": (filename, content, "image/png")})
    assert response.status_code == 415
    assert response.json()["detail"].startswith(f"{filename} is not a usable image")


def test_an_upload_without_a_file_is_422(client):
    assert client.post("/api/search/image", data={"other": "x"}).status_code == 422


def test_an_oversized_upload_is_413(client, monkeypatch):
    monkeypatch.setattr(webapp, "MAX_UPLOAD_BYTES", 10_000)
    response = client.post("/api/search/image", files={"file": ("big.png", b"\0" * 20_000, "image/png")})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_an_oversized_chunked_upload_is_413(client, monkeypatch):
    """Without a Content-Length, the endpoint stops reading at the limit."""
    monkeypatch.setattr(webapp, "MAX_UPLOAD_BYTES", 10_000)
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + b"\0" * 20_000 + b"\r\n--b--\r\n")
    response = client.post("/api/search/image", content=iter([body]),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413


@pytest.mark.parametrize("url", [
    "/api/images/99999",
    "/api/images/99999/full",
    "/api/images/99999/thumb",
    "/api/images/99999/similar",
    "/api/images/-1/full",
    "/api/images/1.5/full",
    "/api/images/..%2F..%2Fetc%2Fpasswd/full",
    "/api/images/%2e%2e/full",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumb",
    "/api/images/%2Fetc%2Fpasswd/full",
    "/api/images//etc/passwd/full",
    "/api/images/1/full/../../../../etc/passwd",
    "/api/images/1/%2e%2e/%2e%2e/catalog.db",
    "/etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/catalog.db",
    "/thumbs/1-320-0.jpg",
    "/api/similar?path=/etc/passwd",
    "/api/full?path=/etc/passwd",
])
def test_only_catalog_images_are_served_everything_else_is_404(client, url):
    assert client.get(url).status_code == 404


def test_an_image_gone_from_disk_is_404(client, shape_tree):
    star = image_id(client, "red_star.png")
    (shape_tree / "a" / "red_star.png").unlink()
    assert client.get(f"/api/images/{star}/full").status_code == 404
    assert client.get(f"/api/images/{star}/thumb").status_code == 404


def test_full_serves_the_original_file(client, shape_tree):
    star = image_id(client, "red_star.png")
    response = client.get(f"/api/images/{star}/full")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (shape_tree / "a" / "red_star.png").read_bytes()


def test_thumbnails_are_oriented_cached_and_refreshed(client, lib, shape_tree, library_dir):
    # Stored landscape (red left, blue right) with EXIF orientation 6: shown rotated 90° clockwise,
    # so red on top and blue at the bottom.
    photo = shape_tree / "rotated.jpg"
    stored = Image.new("RGB", (600, 300), "red")
    stored.paste((0, 0, 255), (300, 0, 600, 300))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(photo, exif=exif.tobytes(), quality=95)
    lib.index([shape_tree])
    rotated = image_id(client, "rotated.jpg")

    small = Image.open(io.BytesIO(client.get(f"/api/images/{rotated}/thumb").content))
    assert small.format == "JPEG" and small.size == (160, 320)
    top, bottom = small.getpixel((80, 40)), small.getpixel((80, 280))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60
    large = Image.open(io.BytesIO(client.get(f"/api/images/{rotated}/thumb", params={"size": "large"}).content))
    assert large.size == (300, 600)  # never enlarged

    cache = library_dir / "thumbs"
    cached = sorted(cache.iterdir())
    assert len(cached) == 2 and all(p.name.startswith(f"{rotated}-") for p in cached)
    stamps = [p.stat().st_mtime_ns for p in cached]
    client.get(f"/api/images/{rotated}/thumb")
    assert [p.stat().st_mtime_ns for p in sorted(cache.iterdir())] == stamps

    touch_later(photo)  # an edited photo gets a fresh thumbnail; the old one goes once it is stale
    client.get(f"/api/images/{rotated}/thumb")
    small = {p for p in cache.iterdir() if "-320-" in p.name}
    assert len(small) == 2 and set(cached) < set(cache.iterdir())  # the old one may still be being sent
    for old in small:
        age(old, thumbnails.STALE_AFTER_S + 1)
    touch_later(photo)
    client.get(f"/api/images/{rotated}/thumb")
    assert {p for p in cache.iterdir() if "-320-" in p.name}.isdisjoint(small) and len(list(cache.iterdir())) == 2
    assert client.get(f"/api/images/{rotated}/thumb", params={"size": "huge"}).status_code == 422


def age(path, seconds):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_duplicate_groups_name_their_images_by_id(client, lib, shape_tree):
    original = shape_tree / "a" / "red_star.png"
    shutil.copy(original, shape_tree / "b" / "copy_of_star.png")
    lib.index([shape_tree])
    body = client.get("/api/duplicates", params={"threshold": 0.9999}).json()
    assert body["images"] == 9 and body["threshold"] == 0.9999 and body["series_threshold"] is None
    group = next(g for g in body["groups"] if "copy_of_star.png" in map(name, g["members"]))
    assert group["tier"] == "exact"
    assert [(name(m), m["tier"]) for m in group["members"]] == [("red_star.png", "keeper"), ("copy_of_star.png", "exact")]
    for m in group["members"]:
        assert client.get(f"/api/images/{m['id']}").json()["path"] == m["path"]
        assert client.get(f"/api/images/{m['id']}/thumb").status_code == 200
    assert client.get("/api/duplicates", params={"series_threshold": 0.5}).json()["series_threshold"] == 0.5


def test_not_duplicates_is_remembered(client, lib, shape_tree):
    from PIL import Image

    original = shape_tree / "a" / "red_star.png"
    Image.open(original).resize((64, 64)).save(shape_tree / "b" / "small_star.png")
    lib.index([shape_tree])
    group = next(g for g in client.get("/api/duplicates").json()["groups"]
                 if "small_star.png" in map(name, g["members"]))
    keeper, small = group["members"][0]["id"], next(m["id"] for m in group["members"] if name(m) == "small_star.png")
    assert client.post("/api/duplicates/dismiss", json={"a": keeper, "b": small}).status_code == 204
    after = client.get("/api/duplicates").json()["groups"]
    assert not any({keeper, small} <= {m["id"] for m in g["members"]} for g in after)
    assert client.post("/api/duplicates/dismiss", json={"a": keeper, "b": 10**6}).status_code == 400
    assert client.post("/api/duplicates/dismiss", json={"a": keeper, "b": keeper}).status_code == 400


def test_a_bad_duplicate_threshold_is_400(client):
    response = client.get("/api/duplicates", params={"threshold": 2})
    assert response.status_code == 400 and "threshold" in response.json()["detail"]


def test_info(client, library_dir):
    info = client.get("/api/info").json()
    assert info["images"] == 8 and info["path"] == str(library_dir)
    assert info["model"]["arch"] == "clipsearch-tiny"


def test_concurrent_requests_share_the_library_safely(client):
    star = image_id(client, "red_star.png")
    urls = ["/api/search?q=a+blue+circle", f"/api/images/{star}/similar", f"/api/images/{star}",
            f"/api/images/{star}/thumb", "/api/info", "/api/duplicates"] * 8
    with ThreadPoolExecutor(8) as pool:
        assert {r.status_code for r in pool.map(client.get, urls)} == {200}


def test_queries_work_while_an_index_run_writes(client, library_dir, tiny, tmp_path):
    more = tmp_path / "more"
    for i in range(6):
        draw_shape(more / f"extra{i}.png", "blue", "circle", seed=500 + i)
    seen = []

    def query_mid_run(done, total):
        response = client.get("/api/search", params={"q": "a blue circle", "k": 100})
        assert response.status_code == 200
        seen.append(len(response.json()["results"]))

    with Library.open(library_dir, encoder=tiny) as writer:
        writer.index([more], batch_size=2, workers=0, progress=query_mid_run)
    assert seen == [8, 10, 12, 14]  # before the first batch (the progress bar's 0/N), then each batch at once

    with sqlite3.connect(library_dir / "catalog.db") as other:  # a write transaction left open
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO meta(key, value) VALUES ('busy', '1')")
        response = client.get("/api/search", params={"q": "a red star", "k": 3})
        assert response.status_code == 200 and len(response.json()["results"]) == 3
        other.rollback()


def test_other_host_names_are_refused(client, lib):
    """A page on a domain rebound to 127.0.0.1 (DNS rebinding) must not read the library."""
    assert client.get("/api/info", headers={"host": "attacker.example:8000"}).status_code == 400
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
    with TestClient(create_app(lib, allowed_hosts=["*"]), base_url="http://photos.lan:8000") as lan:
        assert lan.get("/api/info").status_code == 200


def test_the_page_and_the_api_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text and f"MAX_UPLOAD_BYTES = {webapp.MAX_UPLOAD_BYTES};" in page.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/search/image", "/api/images/{image_id}/similar", "/api/duplicates",
            "/api/info"} <= set(paths)


def test_serve_command_loads_the_library_and_binds_to_loopback(lib, library_dir, monkeypatch):
    served = []

    def run(app, host, port, **options):
        with TestClient(app, base_url="http://localhost:8000") as fresh:
            star = fresh.get("/api/search", params={"q": "a red star", "k": 8}).json()["results"]
        served.append((host, port, len(star)))

    monkeypatch.setattr("uvicorn.run", run)
    result = CliRunner().invoke(main, ["serve", "--db", str(library_dir)])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8000/" in result.output
    assert served == [("127.0.0.1", 8000, 8)]


# --- under load and bad requests ----------------------------------------------


def detailed_photo(path, size):
    """A photo-sized picture with detail at every scale (coloured gradients and stripes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size[1], size[0]
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 11) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return path


class Decodes:
    """Wraps decode functions: counts calls and the most running at once. Each call waits (in the
    wrapper, no sleep) until `overlap` calls run together or all `expected` calls have started, so a
    server that does not bound its decodes shows more than its bound running at once."""

    def __init__(self, expected, overlap=1):
        self.expected, self.overlap = expected, overlap
        self.calls = self.running = self.most = 0
        self.changed = threading.Condition()

    def wrap(self, decode):
        def counted(*args, **kwargs):
            with self.changed:
                self.calls += 1
                self.running += 1
                self.most = max(self.most, self.running)
                self.changed.notify_all()
                self.changed.wait_for(lambda: self.running >= self.overlap or self.calls >= self.expected, timeout=30)
            try:
                return decode(*args, **kwargs)
            finally:
                with self.changed:
                    self.running -= 1
                    self.changed.notify_all()
        return counted


def all_at_once(calls):
    """Runs every call in a thread of its own, released together."""
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_one_thumbnail_asked_for_by_32_clients_at_once_is_made_once(client, lib, shape_tree, library_dir,
                                                                     monkeypatch):
    detailed_photo(shape_tree / "big.jpg", (4000, 3000))
    lib.index([shape_tree])
    big = image_id(client, "big.jpg")
    decodes = Decodes(expected=32)
    monkeypatch.setattr(thumbnails, "load", decodes.wrap(thumbnails.load))
    responses = all_at_once([lambda: client.get(f"/api/images/{big}/thumb")] * 32)
    assert [r.status_code for r in responses] == [200] * 32
    assert len({r.content for r in responses}) == 1 and Image.open(io.BytesIO(responses[0].content)).size == (320, 240)
    made = f"{big}-320-{(shape_tree / 'big.jpg').stat().st_mtime_ns}.jpg"
    assert decodes.calls == 1 and [p.name for p in (library_dir / "thumbs").iterdir()] == [made]


def test_originals_decode_a_bounded_number_at_a_time(lib, tmp_path, shape_tree, monkeypatch):
    """Thumbnails and uploads share the bound: 12 thumbnails of 6 large photos and 4 uploads at once."""
    photos = [detailed_photo(tmp_path / "big" / f"{i}.png", (1600 + i, 1200)) for i in range(6)]
    lib.index([tmp_path / "big"])
    ids = [lib.catalog.row_by_path(str(p))["id"] for p in photos]
    monkeypatch.setattr(webapp, "DECODE_SLOTS", 2)
    decodes = Decodes(expected=16, overlap=2)
    monkeypatch.setattr(thumbnails, "load", decodes.wrap(thumbnails.load))
    monkeypatch.setattr(webapp, "decode", decodes.wrap(webapp.decode))
    picture = (shape_tree / "a" / "red_star.png").read_bytes()
    with TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        calls = [lambda i=i, size=size: client.get(f"/api/images/{i}/thumb", params={"size": size})
                 for i in ids for size in ("small", "large")]
        calls += [lambda: client.post("/api/search/image", files={"file": ("q.png", picture, "image/png")})] * 4
        assert {r.status_code for r in all_at_once(calls)} == {200}
    assert decodes.calls == 16 and decodes.most == 2


def test_the_decode_bound_fits_the_machine():
    assert 1 <= webapp.decode_slots() <= (os.cpu_count() or 1)


IMAGE_ROUTES = ["", "/thumb", "/similar", "/full"]


def test_ids_outside_the_catalog_are_404(client):
    for bad_id in [2**63, 2**64, 10**40, 2**63 - 1, 0]:
        for route in IMAGE_ROUTES:
            for method in ("GET", "HEAD"):
                assert client.request(method, f"/api/images/{bad_id}{route}").status_code == 404, (bad_id, route)


def test_image_routes_answer_head_like_get(client):
    star = image_id(client, "red_star.png")
    for route in IMAGE_ROUTES:
        got, head = (client.request(method, f"/api/images/{star}{route}") for method in ("GET", "HEAD"))
        assert got.status_code == head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"] and int(head.headers["content-length"]) > 0
        if route in ("/thumb", "/full"):  # files (a JSON answer's elapsed_ms differs from one call to the next)
            assert head.headers["content-length"] == str(len(got.content))
            assert head.headers["etag"] == got.headers["etag"]


def test_a_fresh_server_sends_an_originals_type_and_name(lib, library_dir, shape_tree, tmp_path):
    """Pillow learns a format's MIME type when it first reads one; a new server process has read none."""
    webp = save_image(shape_tree / "a" / "photo.webp", fmt="WEBP")
    camera = shape_tree / "a" / "DSCF0001.JPG"  # a camera JPEG with a second picture: Pillow calls it MPO
    Image.new("RGB", (64, 48), "red").save(camera, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 24))])
    lib.index([shape_tree])
    assert lib.catalog.row_by_path(str(camera))["format"] == "MPO"
    ids = [lib.catalog.row_by_path(str(p))["id"] for p in (webp, shape_tree / "a" / "red_star.png", camera)]
    script = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from clipsearch import Library\n"
        "from clipsearch.webapp import create_app\n"
        "with Library.open(sys.argv[1]) as lib, TestClient(create_app(lib), base_url='http://127.0.0.1') as c:\n"
        "    print(json.dumps([dict(c.request(m, f'/api/images/{i}/full').headers)\n"
        "                      for i in sys.argv[2:] for m in ('GET', 'HEAD')]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", script, str(library_dir), *map(str, ids)], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    headers = json.loads(out.splitlines()[-1])
    assert [(h["content-type"], h["content-disposition"]) for h in headers] == [
        ("image/webp", "inline; filename=\"photo.webp\"; filename*=UTF-8''photo.webp")] * 2 + [
        ("image/png", "inline; filename=\"red_star.png\"; filename*=UTF-8''red_star.png")] * 2 + [
        ("image/jpeg", "inline; filename=\"DSCF0001.JPG\"; filename*=UTF-8''DSCF0001.JPG")] * 2
    assert headers[1]["content-length"] == str(webp.stat().st_size)


def test_an_original_is_sent_under_its_own_name(client, lib, shape_tree):
    names = {  # the name, its ASCII fallback, the name percent-encoded as UTF-8
        "café ☕.png": ("caf_ _.png", "caf%C3%A9%20%E2%98%95.png"),
        'say "cheese"; 100%.png': ("say _cheese_; 100_.png", "say%20%22cheese%22%3B%20100%25.png"),
        "line\nbreak.png": ("line_break.png", "line%0Abreak.png"),
    }
    for name in names:
        draw_shape(shape_tree / name, "red", "star")
    lib.index([shape_tree])
    for name, (fallback, encoded) in names.items():
        response = client.get(f"/api/images/{lib.catalog.row_by_path(str(shape_tree / name))['id']}/full")
        assert response.status_code == 200 and response.content == (shape_tree / name).read_bytes()
        assert response.headers["content-disposition"] == f"inline; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def test_a_name_that_is_not_utf8_is_sent_readably(client, lib, shape_tree):
    """A file name whose bytes are not UTF-8: U+FFFD in their place, so every browser can read it."""
    photo = save_image(Path(os.fsdecode(os.fsencode(shape_tree) + b"/caf\xe9.png")))
    lib.index([shape_tree])
    response = client.get(f"/api/images/{lib.catalog.row_by_path(str(photo))['id']}/full")
    assert response.status_code == 200 and response.content == photo.read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == "inline; filename=\"caf_.png\"; filename*=UTF-8''caf%EF%BF%BD.png"


def test_a_chunked_upload_is_read_no_further_than_the_limit(lib, monkeypatch):
    """Without a Content-Length the server stops reading the body once it passes the limit, not
    after spooling all of it."""
    monkeypatch.setattr(webapp, "MAX_UPLOAD_BYTES", 10_000)
    app = create_app(lib)
    chunks = [b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
              b"Content-Type: image/png\r\n\r\n"] + [b"\0" * 1000] * 1000 + [b"\r\n--b--\r\n"]
    pulled = []
    sent = []

    async def receive():
        if len(pulled) == len(chunks):
            return {"type": "http.disconnect"}
        pulled.append(chunks[len(pulled)])
        return {"type": "http.request", "body": pulled[-1], "more_body": len(pulled) < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/search/image", "raw_path": b"/api/search/image", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8000"), (b"transfer-encoding", b"chunked"),
                         (b"content-type", b"multipart/form-data; boundary=b")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and b"limit" in sent[1]["body"]
    assert sum(map(len, pulled)) <= 10_000 + 1000 + len(chunks[0])


def test_serve_on_any_loopback_address_refuses_other_host_names(lib, library_dir, monkeypatch):
    """The DNS rebinding check stays on for every loopback address, IPv6 included."""
    answers = {}

    def run(app, host, port, **options):
        with TestClient(app) as client:
            answers.update({n: client.get("/api/info", headers={"host": n}).status_code for n in names})
        answers["bound"] = host

    monkeypatch.setattr("uvicorn.run", run)
    for bind, url_host in [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]"),
                           ("localhost", "localhost"), ("LOCALHOST", "LOCALHOST"), ("127.0.0.2", "127.0.0.2")]:
        names = [f"{url_host}:8000", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.1",
                 "attacker.example:8000", "attacker.example", "127.0.0.1.attacker.example"]
        answers.clear()
        result = CliRunner().invoke(main, ["serve", "--db", str(library_dir), "--host", bind])
        assert result.exit_code == 0, result.output
        assert f"http://{url_host}:8000/" in result.output and answers.pop("bound") == bind.strip("[]")
        assert answers == {n: 400 if "attacker" in n else 200 for n in names}, bind


def test_serve_on_a_network_address_answers_any_host_name(lib, library_dir, monkeypatch):
    answers = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: answers.append(
        TestClient(app).get("/api/info", headers={"host": "photos.lan:8000"}).status_code))
    assert CliRunner().invoke(main, ["serve", "--db", str(library_dir), "--host", "0.0.0.0"]).exit_code == 0
    assert answers == [200]


def test_any_failure_to_decode_is_415_with_a_reason(client, shape_tree, monkeypatch):
    """Whatever Pillow raises on an upload or a photo, the request is refused with a reason, never 500."""
    picture = (shape_tree / "a" / "red_star.png").read_bytes()
    star = image_id(client, "red_star.png")
    for error in [TypeError("unsupported operand"), ValueError("bad value"), KeyError(274), IndexError("out of range"),
                  struct.error("unpack requires"), ZeroDivisionError("division by zero"), RuntimeError("oops"),
                  MemoryError()]:
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(webapp, "decode", fail)
        monkeypatch.setattr(thumbnails, "load", fail)
        upload = client.post("/api/search/image", files={"file": ("photo.jpg", picture, "image/jpeg")})
        assert upload.status_code == 415 and upload.json()["detail"].startswith("photo.jpg is not a usable image (")
        assert type(error).__name__ in upload.json()["detail"]
        thumb = client.get(f"/api/images/{star}/thumb")
        assert thumb.status_code == 415 and thumb.json()["detail"].startswith("cannot make a thumbnail")


def test_a_read_only_library_is_served_without_writing_into_it(lib, library_dir, tiny):
    """Thumbnails of a read-only library (a mounted backup) go to a temporary folder, never into the library."""
    lib.close()
    with Library.open(library_dir, readonly=True, encoder=tiny) as reader, \
            TestClient(create_app(reader), base_url="http://127.0.0.1:8000") as client:
        star = image_id(client, "red_star.png")
        assert client.get(f"/api/images/{star}/thumb").status_code == 200
        assert client.get("/api/search", params={"q": "a red star", "k": 2}).status_code == 200
    assert not (library_dir / webapp.THUMBS_DIR).exists()


def test_browse_lists_every_image_newest_first_page_by_page(client, lib, shape_tree):
    newest = shape_tree / "b" / "blue_star.png"
    touch_later(newest)
    lib.index([shape_tree], workers=0)
    first = client.get("/api/browse", params={"k": 3}).json()
    assert name(first["results"][0]) == "blue_star.png" and first["total"] == 8 and first["next_offset"] == 3
    assert set(first["results"][0]) == {"id", "path", "path_bytes_b64", "width", "height", "taken_at", "date", "camera"}
    pages, offset = [first], 3
    while offset is not None:
        pages.append(client.get("/api/browse", params={"k": 3, "offset": offset}).json())
        offset = pages[-1]["next_offset"]
    listed = [h for page in pages for h in page["results"]]
    assert len(listed) == 8 and len({h["id"] for h in listed}) == 8
    assert [h["date"] for h in listed] == sorted((h["date"] for h in listed), reverse=True)


def test_search_pages_beyond_the_first_and_counts_the_matches(client, lib):
    whole = client.get("/api/search", params={"q": "a red star", "k": 8}).json()
    assert whole["total"] == 8 and whole["next_offset"] is None
    first = client.get("/api/search", params={"q": "a red star", "k": 5}).json()
    second = client.get("/api/search", params={"q": "a red star", "k": 5, "offset": 5}).json()
    assert first["next_offset"] == 5 and second["next_offset"] is None
    assert [h["id"] for h in first["results"] + second["results"]] == [h["id"] for h in whole["results"]]


@pytest.mark.parametrize("params,expected", [
    ({"under": "{root}/a"}, {"red_star.png", "green_square.png", "red_circle.png", "green_triangle.png"}),
    ({"ext": "png", "min_width": 100, "camera": ""}, {f"{c}_{s}.png" for c, s in SHAPE_TREE}),
    ({"min_width": 129}, set()),
    ({"after": "2999-01-01"}, set()),
    ({"before": "2999-01-01", "ext": "jpg"}, set()),
])
def test_the_cli_filters_narrow_browsing_and_search(client, shape_tree, params, expected):
    params = {k: v.format(root=shape_tree) if isinstance(v, str) else v for k, v in params.items()}
    for url, extra in [("/api/browse", {}), ("/api/search", {"q": "a shape"})]:
        body = client.get(url, params={**params, **extra, "k": 20}).json()
        assert {name(h) for h in body["results"]} == expected and body["total"] == len(expected)


def test_a_bad_filter_is_400_or_422(client):
    assert client.get("/api/browse", params={"after": "yesterday"}).status_code == 400
    assert "Not a date" in client.get("/api/search", params={"q": "x", "before": "31/12"}).json()["detail"]
    assert client.get("/api/browse", params={"min_width": 0}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "offset": -1}).status_code == 422


def test_tags_filter_and_filter_values(client, lib):
    lib.tag(["star", "circle"])
    values = client.get("/api/filters").json()
    assert values["extensions"] == [["png", 8]] and values["cameras"] == []
    tags = dict(values["tags"])
    assert set(tags) <= {"star", "circle"} and tags
    label, count = values["tags"][0]
    assert client.get("/api/browse", params={"tag": label}).json()["total"] == count


def test_an_uploaded_image_is_searched_again_by_its_key(client, shape_tree):
    picture = (shape_tree / "b" / "yellow_square.png").read_bytes()
    posted = client.post("/api/search/image", params={"k": 3}, files={"file": ("query.png", picture, "image/png")}).json()
    assert posted["upload"]["name"] == "query.png" and posted["next_offset"] == 3
    again = client.get(f"/api/search/upload/{posted['upload']['key']}", params={"k": 3}).json()
    assert [h["id"] for h in again["results"]] == [h["id"] for h in posted["results"]]
    narrowed = client.get(f"/api/search/upload/{posted['upload']['key']}", params={"k": 3, "under": str(shape_tree / "a")})
    assert "yellow_square.png" not in {name(h) for h in narrowed.json()["results"]}
    gone = client.get("/api/search/upload/0123456789abcdef0123", params={"k": 3})
    assert gone.status_code == 404 and "upload it again" in gone.json()["detail"]


@pytest.mark.parametrize("path", ["/", "/?q=a+red+star&after=2020-01-01", "/duplicates", "/info", "/image/1",
                                  "/upload/abc"])
def test_the_page_is_served_at_each_of_its_addresses(client, path):
    response = client.get(path)
    assert response.status_code == 200 and "<title>clipsearch</title>" in response.text
