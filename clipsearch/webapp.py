"""The web app: one HTML page and a JSON API over a Library (`clipsearch serve`).

Images are addressed by catalog row id, never by a path taken from the request, so only
files in the catalog can ever be served. FastAPI runs the endpoints in worker threads; one
lock serialises calls into the Library, whose SQLite connection and in-memory FAISS index
they share.
"""
from __future__ import annotations

import mimetypes
import os
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image
from pydantic import BaseModel

from .decode import decode
from .duplicates import DEFAULT_SERIES_THRESHOLD
from .errors import BadImage, BadPath, BadQuery, ClipsearchError, LibraryLocked, LibraryNotFound
from .library import Library
from .ranking import combine
from .results import LibraryInfo, SearchResult, to_dict
from .thumbnails import THUMBS_DIR, thumbnail

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
THUMB_SIDES = {"small": 320, "large": 1280}
PAGE = Path(__file__).parent / "web" / "index.html"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

STATUS = {BadQuery: 400, BadImage: 415, BadPath: 404, LibraryNotFound: 404, LibraryLocked: 409}

Count = Query(20, ge=1, le=500, description="Number of results")
Pairs = Query(True, description="One result per RAW+JPEG pair (same name, same folder): the JPEG is shown")


class Hit(BaseModel):
    id: int
    path: str
    score: float
    width: int
    height: int
    taken_at: str | None
    date: str
    """Date taken, else the file's modification time."""
    time_s: float | None = None
    """For a video: its best-matching moment, in seconds from the start."""


class Results(BaseModel):
    results: list[Hit]
    elapsed_ms: float


class DuplicateImage(BaseModel):
    id: int
    path: str
    size: int
    width: int
    height: int
    date: str
    tier: str
    similarity: float


class DuplicateSet(BaseModel):
    tier: str
    members: list[DuplicateImage]
    reclaimable_bytes: int


class Duplicates(BaseModel):
    threshold: float
    series_threshold: float | None
    images: int
    groups: list[DuplicateSet]
    reclaimable_bytes: int
    elapsed_s: float


class ImageDetail(BaseModel):
    id: int
    path: str
    size: int
    width: int
    height: int
    format: str
    taken_at: str | None
    camera: str | None
    indexed_at: str


def create_app(library: Library, *, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The app for an open library; loads its model and vector index now, not on the first query.

    Requests naming any other host are refused (400), so a web page whose domain is rebound to
    127.0.0.1 (DNS rebinding) cannot read the library; pass ["*"] when serving to a network.
    """
    lock = threading.Lock()
    thumbs = library.path / THUMBS_DIR
    with lock:  # warm up: the first query should be as fast as the rest
        library.encoder.encode_texts(["warm up"])
        library.vectors
    page = (PAGE.read_text(encoding="utf-8").replace("__MAX_UPLOAD_BYTES__", str(MAX_UPLOAD_BYTES))
            .replace("__SERIES_THRESHOLD__", str(DEFAULT_SERIES_THRESHOLD)))

    app = FastAPI(
        title="clipsearch",
        version=version("clipsearch"),
        description="Semantic image search over a clipsearch library. Images are addressed by catalog id.",
    )

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(ClipsearchError)
    def library_error(request: Request, exc: ClipsearchError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=STATUS.get(type(exc), 500))

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Callable) -> Any:
        """Refuse an oversized upload from its Content-Length, before its body is read."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
            return JSONResponse({"detail": _too_large()}, status_code=413)
        return await call_next(request)

    def answer(query: Callable[[], list[SearchResult]]) -> Results:
        started = time.perf_counter()
        with lock:
            hits = [Hit(id=row["id"], **to_dict(r)) for r in query() if (row := library.catalog.row_by_path(r.path))]
        return Results(results=hits, elapsed_ms=round((time.perf_counter() - started) * 1000, 2))

    def catalog_row(image_id: int) -> dict[str, Any]:
        with lock:
            row = library.catalog.rows([image_id]).get(image_id)
        if row is None:
            raise HTTPException(404, f"No image with id {image_id} in the catalog")
        return row

    def file_of(image_id: int) -> dict[str, Any]:
        """The catalog row of an image whose file is still a regular file on disk."""
        row = catalog_row(image_id)
        if not os.path.isfile(row["path"]):
            raise HTTPException(404, f"Image {image_id} is no longer on disk")
        return row

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        return page

    @app.get("/api/search", summary="Search by text")
    def search(q: str = Query(..., description="What to look for, e.g. 'a dog on a beach'"), k: int = Count,
               group_pairs: bool = Pairs) -> Results:
        """Always text: unlike the CLI, a query naming a file on the server is not read as an image."""
        if not q.strip():
            raise BadQuery("Empty query: type what you are looking for")
        return answer(lambda: library.nearest(combine([(1.0, library.text_vector(q))]), k=k, group_pairs=group_pairs))

    @app.post("/api/search/image", summary="Search by example: upload an image")
    def search_image(file: UploadFile = File(..., description="An image file"), k: int = Count,
                     group_pairs: bool = Pairs) -> Results:
        """The upload is decoded in memory and never written to the library."""
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, _too_large())
        try:
            picture, _ = decode(data, library.encoder.image_size, file.filename or "")
        except BadImage as e:
            raise BadImage(f"{file.filename or 'The upload'} is not a usable image ({e})") from None
        return answer(lambda: library.nearest(library.encoder.encode_pil([picture])[0], k=k, group_pairs=group_pairs))

    @app.get("/api/images/{image_id:int}", summary="An image's metadata")
    def image(image_id: int) -> ImageDetail:
        return ImageDetail(**catalog_row(image_id))

    @app.get("/api/images/{image_id:int}/similar", summary="Images similar to a catalog image")
    def similar(image_id: int, k: int = Count, group_pairs: bool = Pairs) -> Results:
        def query() -> list[SearchResult]:
            with library.catalog.snapshot():
                if image_id not in library.catalog.rows([image_id]):
                    raise HTTPException(404, f"No image with id {image_id} in the catalog")
                vector = library.catalog.vectors_for([image_id])[0]
                return library.nearest(vector, k=k, exclude={image_id}, group_pairs=group_pairs)

        return answer(query)

    @app.get("/api/images/{image_id:int}/thumb", response_class=FileResponse, summary="A JPEG thumbnail")
    def thumb(image_id: int, size: Literal["small", "large"] = "small",
              t: float | None = Query(None, ge=0, description="For a video: the moment shown, in seconds")
              ) -> FileResponse:
        """Fits in 320 (small) or 1280 (large) pixels, EXIF orientation applied; cached on disk."""
        path = file_of(image_id)["path"]
        return FileResponse(thumbnail(path, image_id, THUMB_SIDES[size], thumbs, t), media_type="image/jpeg")

    @app.get("/api/images/{image_id:int}/full", response_class=FileResponse, summary="The original file")
    def full(image_id: int) -> FileResponse:
        row = file_of(image_id)
        media_type = Image.MIME.get(row["format"]) or mimetypes.guess_type(row["path"])[0]
        return FileResponse(row["path"], media_type=media_type or "application/octet-stream")

    @app.get("/api/duplicates", summary="Groups of duplicate images, the suggested keeper first")
    def duplicates(
        threshold: float | None = Query(None, description="Cosine similarity for near-duplicates; "
                                        "default: the one measured for the library's model"),
        series_threshold: float | None = Query(None, description="Also group similar series down to this cosine"),
    ) -> Duplicates:
        """Read on a connection of its own, so a long grouping never holds up searches."""
        with Library.open(library.path) as reader, reader.catalog.snapshot():
            report = reader.duplicates(threshold=threshold, series_threshold=series_threshold)
            ids = {m.path: reader.catalog.row_by_path(m.path)["id"] for g in report.groups for m in g.members}
        groups = [DuplicateSet(tier=g.tier, reclaimable_bytes=g.reclaimable_bytes,
                               members=[DuplicateImage(id=ids[m.path], **to_dict(m)) for m in g.members])
                  for g in report.groups]
        return Duplicates(**{**to_dict(report), "groups": groups})

    @app.get("/api/info", summary="About the library")
    def info() -> LibraryInfo:
        with lock:
            return library.info()

    return app


def _too_large() -> str:
    return f"The upload is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit"
