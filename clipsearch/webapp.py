"""The web app: one HTML page and a JSON API over a Library (`clipsearch serve`).

Images are addressed by catalog row id, never by a path taken from the request, so only
files in the catalog can ever be served. FastAPI runs the endpoints in worker threads; one
lock serialises calls into the Library, whose SQLite connection and in-memory FAISS index
they share, and a semaphore bounds how many originals (thumbnails, uploads) decode at once.
Request bodies are cut off at MAX_UPLOAD_BYTES as they are read, whatever their headers say.
"""
from __future__ import annotations

import hashlib
import ipaddress
import mimetypes
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Literal, Sequence
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .decode import MAX_PIXELS, decode
from .duplicates import SERIES_GAP
from .errors import BadImage, BadPath, BadQuery, ClipsearchError, LibraryLocked, LibraryNotFound
from .filters import Filters, image_date, parse_when
from .library import Library
from .paths import path_fields
from .ranking import combine
from .results import FilterValues, LibraryInfo, ListedImage, SearchResult, to_dict
from .textsearch import text_of
from .thumbnails import THUMBS_DIR, Thumbnails

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
THUMB_SIDES = {"small": 320, "large": 1280}
PAGE = Path(__file__).parent / "web" / "index.html"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
"""Host names a server on a loopback address answers to (Host headers; IPv6 in brackets)."""
MAX_ID = 2**63 - 1
"""SQLite's largest integer: no catalog id is above it."""
MIME_TYPES = {"MPO": "image/jpeg", "3GP": "video/3gpp", "DNG": "image/x-adobe-dng"}
"""Types for formats Pillow names otherwise or Python guesses wrong: an MPO (many cameras' JPEGs) is a JPEG
with more pictures after the first; a phone's .3gp is a video (Python's table says audio)."""
DECODE_BYTES = MAX_PIXELS * 8
"""Memory one decode may need at worst: the largest image decode accepts, twice as RGBA."""

STATUS = {BadQuery: 400, BadImage: 415, BadPath: 404, LibraryNotFound: 404, LibraryLocked: 409}

UPLOADS_KEPT = 64
"""How many uploaded images' vectors the server keeps, so that a search by upload survives a reload."""
MAX_OFFSET = 10_000
"""The deepest page a ranked search serves: results from this position on are not ranked."""

Count = Query(20, ge=1, le=500, description="Number of results")
Offset = Query(0, ge=0, le=MAX_OFFSET, description="Results to skip (paging): the `next_offset` of the previous page")
Pairs = Query(True, description="One result per RAW+JPEG pair (same name, same folder): the JPEG is shown")


@dataclass(frozen=True, kw_only=True)
class Hit(SearchResult):
    id: int
    path_bytes_b64: str | None = None
    """The path's exact bytes in base64 where `path` (readable: bytes that are not UTF-8 shown as \\xNN,
    see docs/paths.md) is not exact, else null."""


@dataclass(frozen=True)
class Upload:
    key: str
    """Names the uploaded image's vector kept by the server: `GET /api/search/upload/{key}` searches again."""
    name: str


@dataclass(frozen=True)
class Results:
    results: list[Hit]
    elapsed_ms: float
    total: int | None = None
    """How many images pass the filters: all of them are ranked, so paging can go on that far."""
    next_offset: int | None = None
    """The `offset` of the next page; null on the last one."""
    upload: Upload | None = None


@dataclass(frozen=True, kw_only=True)
class Listed(ListedImage):
    id: int
    path_bytes_b64: str | None = None


@dataclass(frozen=True)
class Listing:
    results: list[Listed]
    elapsed_ms: float
    total: int
    """How many images pass the filters."""
    next_offset: int | None
    """The `offset` of the next page; null on the last one."""


def filter_params(
    under: list[str] = Query([], description="Only images inside this folder (repeatable)"),
    after: str | None = Query(None, description="Taken on or after this date (2021-05-01 or an ISO datetime): "
                              "the EXIF date taken, else the file time"),
    before: str | None = Query(None, description="Taken before this date"),
    camera: list[str] = Query([], description="Camera model name contains this, any case (repeatable: any)"),
    min_width: int | None = Query(None, ge=1, le=MAX_ID, description="At least this many pixels wide"),
    min_height: int | None = Query(None, ge=1, le=MAX_ID, description="At least this many pixels high"),
    ext: list[str] = Query([], description="File extension, e.g. jpg (repeatable: any)"),
    tag: str | None = Query(None, description="Tagged with this label (see `clipsearch tag`)"),
) -> Filters:
    """The metadata filters of `clipsearch search` as query parameters; empty values are left out. Raises
    BadQuery (400) for a date that is not one."""
    return Filters(tuple(u for u in under if u), parse_when(after) if after else None,
                   parse_when(before) if before else None, tuple(c for c in camera if c), min_width, min_height,
                   tuple(e for e in ext if e), tag or None)


Filtered = Depends(filter_params)


class DuplicateImage(BaseModel):
    id: int
    path: str
    path_bytes_b64: str | None = None
    size: int
    width: int
    height: int
    date: str
    tier: str
    similarity: float
    phash_distance: int | None
    kind: str = "photo"
    """"photo" or "video": a group holds one kind only."""
    duration_s: float | None = None
    """A video's length in seconds, where known."""
    mirrored: bool = False
    """A mirror image of the keeper: phash_distance is counted to the keeper's mirror image."""


class DuplicateSet(BaseModel):
    tier: str
    members: list[DuplicateImage]
    keeper_reason: str
    reclaimable_bytes: int


class Duplicates(BaseModel):
    threshold: float | None
    series_threshold: float | None
    images: int
    groups: list[DuplicateSet]
    reclaimable_bytes: int
    exact_copies: int
    exact_bytes: int
    aliases: int
    exact_only: bool
    elapsed_s: float


class NotDuplicates(BaseModel):
    a: int = Field(ge=-MAX_ID - 1, le=MAX_ID)  # SQLite's integers: any other is refused (422), never 500
    b: int = Field(ge=-MAX_ID - 1, le=MAX_ID)


class ImageDetail(BaseModel):
    id: int
    path: str
    path_bytes_b64: str | None = None
    size: int
    width: int
    height: int
    format: str
    taken_at: str | None
    date: str
    """Date taken, else the file's modification time (local time)."""
    camera: str | None
    indexed_at: str
    text: str | None = None
    """The text read in the image (`clipsearch ocr`), one line per line; None if it was not read."""


def _thumbnail_cache(library: Library) -> Path:
    """The library's `thumbs/` folder; for a read-only library (a mounted backup), a temporary folder that
    lives as long as the process, so that serving never writes into the library."""
    if not library.readonly:
        return library.path / THUMBS_DIR
    return Path(tempfile.mkdtemp(prefix="clipsearch-thumbs-"))


def create_app(library: Library, *, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The app for an open library; loads its model and vector index now, not on the first query.

    Requests naming any other host are refused (400), so a web page whose domain is rebound to
    127.0.0.1 (DNS rebinding) cannot read the library; pass ["*"] when serving to a network.
    """
    lock = threading.Lock()
    decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
    thumbs = Thumbnails(_thumbnail_cache(library), decode_slots)
    Image.init()  # every plugin registered: Image.MIME is otherwise filled only as formats are first read
    with lock:  # warm up: the first query should be as fast as the rest
        library.encoder.encode_texts(["warm up"])
        library.vectors
    page = (PAGE.read_text(encoding="utf-8").replace("__MAX_UPLOAD_BYTES__", str(MAX_UPLOAD_BYTES))
            .replace("__SERIES_GAP__", str(SERIES_GAP)))

    app = FastAPI(
        title="clipsearch",
        version=version("clipsearch"),
        description="Semantic image search over a clipsearch library. Images are addressed by catalog id.",
    )

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(BodyLimit)

    @app.exception_handler(ClipsearchError)
    def library_error(request: Request, exc: ClipsearchError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=STATUS.get(type(exc), 500))

    uploads: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()  # the last UPLOADS_KEPT, by content

    def answer(query: Callable[[int], list[SearchResult]], filters: Filters, offset: int, k: int,
               upload: Upload | None = None) -> Results:
        """The page of `k` results from `offset` of `query(number of results wanted)`."""
        started = time.perf_counter()
        with lock:
            found = query(offset + k)
            total = library.matching(filters)
            # Fields as they are (tuples stay tuples, as Hit declares them), the path as output names files
            hits = [Hit(id=row["id"], **{**vars(r), **path_fields(r.path)})
                    for r in found[offset:] if (row := library.catalog.row_by_path(r.path))]
        end = offset + k
        more = len(found) >= end and end < total and end <= MAX_OFFSET
        return Results(results=hits, elapsed_ms=round((time.perf_counter() - started) * 1000, 2), total=total,
                       next_offset=end if more else None, upload=upload)

    def catalog_row(image_id: int) -> dict[str, Any]:
        if not 0 <= image_id <= MAX_ID:
            raise HTTPException(404, f"No image with id {image_id} in the catalog")
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
    @app.get("/duplicates", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/info", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/image/{image_id:int}", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/upload/{key}", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        """The page, at every address it shows (the page reads what to show from its URL)."""
        return page

    @app.get("/api/search", summary="Search by text")
    def search(q: str = Query(..., description="What to look for, e.g. 'a dog on a beach'"), k: int = Count,
               offset: int = Offset, group_pairs: bool = Pairs,
               words: bool = Query(False, description="Only the words read in the images (OCR), all of them"),
               good_only: bool = Query(False, description="Only the good matches (see docs/relevance.md)"),
               filters: Filters = Filtered) -> Results:
        """Always text: unlike the CLI, a query naming a file on the server is not read as an image. Where text
        was read in the images, CLIP and that text are ranked together (see `clipsearch search`). Each hit's
        `good` says whether it is a good match (with `words`: null, every hit holds the words)."""
        if not q.strip():
            raise BadQuery("Empty query: type what you are looking for")
        if words:
            return answer(lambda n: library.search_text(q, k=n, filters=filters), filters, offset, k)

        def query(n: int) -> list[SearchResult]:
            judged = library.judge(library.fused(q, combine([(1.0, library.text_vector(q))]), k=n, filters=filters,
                                                 group_pairs=group_pairs))
            return [r for r in judged if r.good] if good_only else judged

        return answer(query, filters, offset, k)

    @app.get("/api/browse", summary="Every image, newest first, without a query")
    def browse(k: int = Count, offset: int = Query(0, ge=0, le=MAX_ID, description="Images to skip (paging)"),
               filters: Filters = Filtered) -> Listing:
        """Newest first by date taken (EXIF), else by file time."""
        started = time.perf_counter()
        with lock:
            listed = library.newest(filters, offset=offset, limit=k)
            total = library.matching(filters)
            ids = {r.path: library.catalog.row_by_path(r.path) for r in listed}
        results = [Listed(id=row["id"], **{**vars(r), **path_fields(r.path)}) for r in listed if (row := ids[r.path])]
        end = offset + len(listed)
        return Listing(results=results, elapsed_ms=round((time.perf_counter() - started) * 1000, 2), total=total,
                       next_offset=end if len(listed) == k and end < total else None)

    @app.get("/api/filters", summary="The cameras, extensions and tags the filters can take")
    def filter_values() -> FilterValues:
        with lock:
            return library.filter_values()

    @app.post("/api/search/image", summary="Search by example: upload an image")
    def search_image(file: UploadFile = File(..., description="An image file"), k: int = Count,
                     offset: int = Offset, group_pairs: bool = Pairs, filters: Filters = Filtered) -> Results:
        """The upload is decoded in memory and never written to the library; its vector is kept in memory (the
        last UPLOADS_KEPT uploads) under the `upload.key` of the answer, for `GET /api/search/upload/{key}`."""
        data = file.file.read()
        name = file.filename or "the upload"
        try:
            with decode_slots:
                picture, _ = decode(data, library.encoder.image_size, file.filename or "")
        except Exception as e:  # noqa: BLE001 - whatever an upload makes Pillow raise, it is the upload's fault
            reason = str(e) if isinstance(e, BadImage) else f"{type(e).__name__}: {e}"
            raise BadImage(f"{file.filename or 'The upload'} is not a usable image ({reason})") from None
        key = hashlib.sha256(data).hexdigest()[:20]
        with lock:
            vector = library.encoder.encode_pil([picture])[0]
            uploads[key] = (name, vector)
            uploads.move_to_end(key)
            while len(uploads) > UPLOADS_KEPT:
                uploads.popitem(last=False)
        return answer(lambda n: library.nearest(vector, k=n, filters=filters, group_pairs=group_pairs), filters,
                      offset, k, Upload(key, name))

    @app.get("/api/search/upload/{key}", summary="Search again by an image uploaded before")
    def search_upload(key: str, k: int = Count, offset: int = Offset, group_pairs: bool = Pairs,
                      filters: Filters = Filtered) -> Results:
        """404 once the server no longer keeps the upload (restarted, or UPLOADS_KEPT newer uploads since)."""
        with lock:
            kept = uploads.get(key)
        if kept is None:
            raise HTTPException(404, "The server no longer has this uploaded image: upload it again")
        name, vector = kept
        return answer(lambda n: library.nearest(vector, k=n, filters=filters, group_pairs=group_pairs), filters,
                      offset, k, Upload(key, name))

    @app.get("/api/images/{image_id:int}", summary="An image's metadata and the text read in it")
    def image(image_id: int) -> ImageDetail:
        row = catalog_row(image_id)
        with lock:
            read = text_of(library.catalog, image_id)
        return ImageDetail(**{**row, **path_fields(row["path"])}, date=image_date(row["taken_at"], row["mtime_ns"]),
                           text=read[0] if read else None)

    @app.get("/api/images/{image_id:int}/similar", summary="Images similar to a catalog image")
    def similar(image_id: int, k: int = Count, group_pairs: bool = Pairs) -> Results:
        def query(n: int) -> list[SearchResult]:
            with library.catalog.snapshot():
                if not 0 <= image_id <= MAX_ID or image_id not in library.catalog.rows([image_id]):
                    raise HTTPException(404, f"No image with id {image_id} in the catalog")
                vector = library.catalog.vectors_for([image_id])[0]
                return library.nearest(vector, k=n, exclude={image_id}, group_pairs=group_pairs)

        return answer(query, Filters(), 0, k)

    @app.get("/api/images/{image_id:int}/thumb", response_class=FileResponse, summary="A JPEG thumbnail")
    def thumb(image_id: int, size: Literal["small", "large"] = "small",
              t: float | None = Query(None, ge=0, le=10**7, description="For a video: the moment shown, in seconds")
              ) -> FileResponse:
        """Fits in 320 (small) or 1280 (large) pixels, EXIF orientation applied; cached on disk."""
        path = file_of(image_id)["path"]
        return FileResponse(thumbs.get(path, image_id, THUMB_SIDES[size], t), media_type="image/jpeg")

    @app.get("/api/images/{image_id:int}/full", response_class=FileResponse, summary="The original file")
    def full(image_id: int) -> FileResponse:
        """Shown inline under its own name, typed by the format it was decoded as."""
        row = file_of(image_id)
        known = MIME_TYPES.get(row["format"]) or Image.MIME.get(row["format"])
        media_type = known or mimetypes.guess_type(row["path"])[0] or "application/octet-stream"
        return FileResponse(row["path"], media_type=media_type, headers={"content-disposition": _inline(row["path"])})

    @app.get("/api/duplicates", summary="Groups of duplicate images, the suggested keeper first")
    def duplicates(
        threshold: float | None = Query(None, description="Cosine similarity for near-duplicates; "
                                        "default: the one measured for the library's model"),
        series_threshold: float | None = Query(None, description="Also group similar series down to this cosine"),
    ) -> Duplicates:
        """Read on a connection of its own, so a long grouping never holds up searches."""
        with Library.open(library.path) as reader:
            report = reader.duplicates(threshold=threshold, series_threshold=series_threshold)
        return Duplicates(**to_dict(report))

    @app.post("/api/duplicates/dismiss", summary="Remember that two images are not duplicates", status_code=204)
    def dismiss(pair: NotDuplicates) -> None:
        """Dedup never links the two pictures again (kept in the library, by content, across renames)."""
        with lock:
            library.dismiss(pair.a, pair.b)

    @app.get("/api/info", summary="About the library")
    def info() -> LibraryInfo:
        with lock:
            return library.info()

    for route in [r for r in app.routes if isinstance(r, APIRoute) and "GET" in r.methods]:
        app.add_api_route(route.path, route.endpoint, methods=["HEAD"], response_class=route.response_class,
                          name=route.name, include_in_schema=False)
    return app


def allowed_hosts(host: str) -> list[str]:
    """The Host headers a server bound to `host` answers. Bound to a loopback address (localhost,
    127.0.0.0/8, ::1), only loopback names, so a page whose domain is rebound to it cannot read the
    library; bound to any other address, it serves a network: any name."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() == "localhost"
    return [*LOOPBACK_HOSTS, f"[{host}]" if ":" in host else host.lower()] if loopback else ["*"]


def decode_slots() -> int:
    """How many originals to decode at once: one per CPU, fewer if half the memory cannot hold
    that many of the largest decodes (DECODE_BYTES each)."""
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): by CPUs alone
        return cpus
    return max(1, min(cpus, memory // 2 // DECODE_BYTES))


DECODE_SLOTS = decode_slots()


class BodyLimit:
    """ASGI middleware: a request body over MAX_UPLOAD_BYTES is refused with 413, by its
    Content-Length before any of it is read, else as soon as the bytes read pass the limit
    (a chunked upload has no Content-Length)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return await JSONResponse({"detail": _too_large()}, status_code=413)(scope, receive, send)
        read = 0

        async def limited() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > MAX_UPLOAD_BYTES:
                raise HTTPException(413, _too_large())  # FastAPI answers it wherever the body is being read
            return message

        await self.app(scope, limited, send)


def _too_large() -> str:
    return f"The upload is larger than the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit"


def _inline(path: str) -> str:
    """A Content-Disposition showing the file in the browser under its own name (RFC 6266): the name
    as UTF-8, bytes that are not UTF-8 replaced by U+FFFD, plus an ASCII fallback for old clients."""
    name = os.fsencode(os.path.basename(path)).decode("utf-8", "replace")
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\%' else "_" for c in name)
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
