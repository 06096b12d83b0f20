"""The web app's JSON API through FastAPI's test client: queries, uploads, serving images safely."""
import hashlib
import io
import shutil
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch import Library, model_spec, webapp
from clipsearch.cli import main
from clipsearch.webapp import create_app

from conftest import SHAPE_TREE, draw_shape, touch_later


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
    assert set(body["results"][0]) == {"id", "path", "score", "width", "height", "taken_at", "date", "time_s"}
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

    touch_later(photo)  # an edited photo gets a fresh thumbnail, replacing the old one
    client.get(f"/api/images/{rotated}/thumb")
    assert len(list(cache.iterdir())) == 2 and sorted(cache.iterdir()) != cached
    assert client.get(f"/api/images/{rotated}/thumb", params={"size": "huge"}).status_code == 422


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
    assert seen == [10, 12, 14]  # each committed batch is searchable at once

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
