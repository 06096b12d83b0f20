"""The words read in images (OCR, see ocr.py): their catalog tables, text search and fusion with CLIP.

Storage. `ocr_text` (a migration) holds one row per image the OCR pass has seen: its status ("read",
or "gated" when the gate skipped it), the recognised lines joined by newlines, and the lines as JSON
with their scores and boxes. Rows are keyed to image ids and deleted with their image (ON DELETE
CASCADE), so a changed or removed file drops its text and a moved one keeps it. `ocr_fts` is an
FTS5 index over that text with the trigram tokenizer (SQLite 3.34+), which needs no word breaks
and so works for Chinese as well as English. It is created by the first OCR run rather than by a
migration, because its tokenizer depends on the SQLite build: without trigram, searches scan
`ocr_text` instead (same results, slower).

Matching. A query is split into words at whitespace; a word matches an image whose text contains
it, ignoring case (a substring: "bottle" matches "Bottles"). Words of three characters or more
use the trigram index; shorter ones (two-character Chinese words) are matched with LIKE. Text-only
search (`every=True`) keeps the images containing every word, ranked by BM25.

Fusion. A hybrid search ranks the images by reciprocal rank fusion (Cormack et al., 2009) of the
CLIP ranking and the text ranking (most words matched, then BM25): each image scores
sum(1 / (RRF_K + rank)) over the two lists it appears in, ranks counted from 1, RRF_K = 60.
"""
from __future__ import annotations

import json
import re
import unicodedata
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .catalog import Catalog, now_iso
from .errors import BadQuery

RRF_K = 60
FUSION_DEPTH = 100
"""How many results of each ranking enter the fusion (more when more results are asked for)."""
SNIPPET_LINES = 3
TRIGRAM = 3
"""The shortest word the trigram index can match; shorter words are matched with LIKE."""
TRIGRAM_SQLITE = (3, 34, 0)

_FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS ocr_fts USING fts5(text, content='ocr_text', content_rowid='image_id',
                                                      tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS ocr_text_added AFTER INSERT ON ocr_text BEGIN
    INSERT INTO ocr_fts(rowid, text) VALUES (new.image_id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS ocr_text_removed AFTER DELETE ON ocr_text BEGIN
    INSERT INTO ocr_fts(ocr_fts, rowid, text) VALUES ('delete', old.image_id, old.text);
END;
INSERT INTO ocr_fts(ocr_fts) VALUES ('rebuild');
"""


@dataclass(frozen=True)
class TextLine:
    """One line of text read in an image: the text, the recogniser's confidence (0-1) and its box, four
    (x, y) corners in pixels of the image as stored (EXIF orientation applied), clockwise from top left."""

    text: str
    score: float
    box: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TextMatch:
    image_id: int
    words: int
    """How many of the query's words the image's text contains."""
    bm25: float
    """SQLite's BM25 (lower is better; 0 where the index could not rank)."""


@dataclass(frozen=True)
class Snippet:
    text: str
    """The recognised lines holding a match, joined by " / "."""
    highlights: tuple[tuple[int, int], ...]
    """(start, end) character offsets of each matched word in `text`."""


# --- storage --------------------------------------------------------------------------
def has_fts(catalog: Catalog) -> bool:
    found = catalog.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ocr_fts'").fetchone()
    return found is not None


def ensure_fts(catalog: Catalog) -> bool:
    """Create the trigram index over the recognised text where SQLite supports it; True if there is one."""
    if has_fts(catalog):
        return True
    if sqlite3.sqlite_version_info < TRIGRAM_SQLITE:
        return False
    try:
        catalog.db.conn.executescript(f"BEGIN IMMEDIATE; {_FTS} COMMIT;")
    except sqlite3.OperationalError:  # FTS5 not compiled in
        catalog.db.conn.rollback()
        return False
    return True


def write_text(catalog: Catalog, results: Sequence[tuple[int, str, Sequence[TextLine]]]) -> None:
    """Record (image id, status, lines) for a batch of images in one transaction; an image's earlier row
    (e.g. "gated", now read) is replaced."""
    stamp = now_iso()
    rows = [(image_id, status, "\n".join(line.text for line in lines),
             json.dumps([{"text": line.text, "score": round(line.score, 4), "box": line.box} for line in lines],
                        ensure_ascii=False), stamp)
            for image_id, status, lines in results]
    with catalog.db.conn:
        catalog.db.conn.executemany("DELETE FROM ocr_text WHERE image_id = ?", [(r[0],) for r in rows])
        catalog.db.conn.executemany(
            "INSERT INTO ocr_text(image_id, status, text, lines, read_at) VALUES (?, ?, ?, ?, ?)", rows)


def _pending_where(retry_gated: bool) -> str:
    skip = "AND o.status = 'read'" if retry_gated else ""
    return f"NOT EXISTS (SELECT 1 FROM ocr_text o WHERE o.image_id = images.id {skip})"


def count_pending(catalog: Catalog, retry_gated: bool) -> int:
    """Images the OCR pass has not seen (and, with `retry_gated`, those its gate skipped)."""
    sql = f"SELECT count(*) FROM images WHERE {_pending_where(retry_gated)}"
    return catalog.conn.execute(sql).fetchone()[0]


def pending(catalog: Catalog, retry_gated: bool, after_id: int, chunk: int) -> list[dict[str, Any]]:
    """The next `chunk` pending images after `after_id`, in id order: id, path, hash, width, height, vector."""
    cursor = catalog.conn.execute(
        f"SELECT id, path, hash, width, height, vector FROM images WHERE id > ? AND {_pending_where(retry_gated)} "
        "ORDER BY id LIMIT ?", [after_id, chunk])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def has_text(catalog: Catalog) -> bool:
    """Whether any image has recognised text (then searches fuse CLIP with it)."""
    return catalog.conn.execute("SELECT 1 FROM ocr_text WHERE text != '' LIMIT 1").fetchone() is not None


def text_of(catalog: Catalog, image_id: int) -> tuple[str, list[dict[str, Any]]] | None:
    """An image's recognised text and lines ({text, score, box}); None if the OCR pass has not read it."""
    row = catalog.conn.execute("SELECT text, lines FROM ocr_text WHERE image_id = ? AND status = 'read'",
                             [image_id]).fetchone()
    return (row[0], json.loads(row[1])) if row else None


def texts(catalog: Catalog, ids: Iterable[int]) -> dict[int, str]:
    """The recognised text of those of these images that have some."""
    sql = "SELECT image_id, text FROM ocr_text WHERE text != '' AND image_id IN ({})"
    return {r[0]: r[1] for cursor in catalog._select_in(sql, [int(i) for i in ids]) for r in cursor}


# --- matching -------------------------------------------------------------------------
def query_words(query: str) -> list[str]:
    """The distinct words of a query, in order: NFKC-normalised (full-width letters as ASCII), split at
    whitespace and punctuation, so that "parking," "NO-PARKING" and quoted words match the text read."""
    words = list(dict.fromkeys(w for w in re.split(r"[\W_]+", unicodedata.normalize("NFKC", query)) if w))
    if not words:
        raise BadQuery("Empty text query: give the words to look for")
    return words


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _like(word: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", word) + "%"


def _ids_containing(catalog: Catalog, word: str, fts: bool) -> set[int]:
    if fts and len(word) >= TRIGRAM:
        rows = catalog.conn.execute("SELECT rowid FROM ocr_fts WHERE ocr_fts MATCH ?", [_quoted(word)])
    else:
        rows = catalog.conn.execute("SELECT image_id FROM ocr_text WHERE text LIKE ? ESCAPE '\\'", [_like(word)])
    return {r[0] for r in rows}


def _bm25(catalog: Catalog, words: Sequence[str]) -> dict[int, float]:
    long_words = [w for w in words if len(w) >= TRIGRAM]
    if not long_words:
        return {}
    rows = catalog.conn.execute("SELECT rowid, bm25(ocr_fts) FROM ocr_fts WHERE ocr_fts MATCH ?",
                              [" OR ".join(map(_quoted, long_words))])
    return dict(rows.fetchall())


def match(catalog: Catalog, query: str, *, every: bool, allowed: np.ndarray | None = None,
          limit: int | None = None) -> list[TextMatch]:
    """Images whose recognised text contains the query's words (all of them with `every`, else any), best
    first: most words matched, then BM25, then id. `allowed` (image ids) narrows them."""
    words = query_words(query)
    fts = has_fts(catalog)
    counts: dict[int, int] = {}
    for word in words:
        for image_id in _ids_containing(catalog, word, fts):
            counts[image_id] = counts.get(image_id, 0) + 1
    if every:
        counts = {i: n for i, n in counts.items() if n == len(words)}
    if allowed is not None:
        permitted = set(allowed.tolist())
        counts = {i: n for i, n in counts.items() if i in permitted}
    scores = _bm25(catalog, words) if fts else {}
    found = sorted((TextMatch(i, n, float(scores.get(i, 0.0))) for i, n in counts.items()),
                   key=lambda m: (-m.words, m.bm25, m.image_id))
    return found[:limit] if limit is not None else found


def snippet(text: str, words: Sequence[str]) -> Snippet | None:
    """The lines of `text` holding any of `words` (up to SNIPPET_LINES), with where each word is; None if none."""
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)
    lines = [line for line in text.splitlines() if pattern.search(line)][:SNIPPET_LINES]
    if not lines:
        return None
    joined = " / ".join(lines)
    return Snippet(joined, tuple((m.start(), m.end()) for m in pattern.finditer(joined)))


def marked(snip: Snippet) -> str:
    """The snippet with each match in [brackets], for text output."""
    out, last = [], 0
    for start, end in snip.highlights:
        out += [snip.text[last:start], "[", snip.text[start:end], "]"]
        last = end
    return "".join(out + [snip.text[last:]])


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: (id, sum of 1/(k + rank)) over the rankings (ids best first), best first;
    ties keep the order in which ids first appear."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, image_id in enumerate(ranking, 1):
            scores[image_id] = scores.get(image_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])
