"""Metadata filters (folder, date, camera, size, extension, tag) as SQL over the catalog.

A filter becomes the set of catalog ids it allows, which the vector search then searches
among (FAISS `IDSelectorBatch`), so k results come back whenever k images match.

Dates compare the EXIF date taken when there is one, else the file's mtime, both as local
wall-clock time (the camera's clock; a UTC offset the file records follows the time in `taken_at` and
does not change the comparison), written as `taken_at >= ? OR (taken_at IS
NULL AND mtime_ns >= ?)` rather than as a date computed per row, so that both branches search
the catalog's `images_filters` index. That index also covers camera and size, so no filter
reads the table's rows and the vectors in them (see benchmarks/bench_filters.py).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from .catalog import Catalog, under_clause
from .errors import BadQuery
from .tagging import normal_label


@dataclass(frozen=True)
class Filters:
    """Every field narrows the results; an empty Filters allows everything.

    `after` is inclusive, `before` exclusive; `cameras` and `exts` match any of theirs
    (a camera matches any part of the EXIF model name, ignoring case).
    """

    under: tuple[str, ...] = ()
    after: datetime | None = None
    before: datetime | None = None
    cameras: tuple[str, ...] = ()
    min_width: int | None = None
    min_height: int | None = None
    exts: tuple[str, ...] = ()
    tag: str | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) not in (None, ()) for f in fields(self))

    def where(self) -> tuple[str, list[Any]]:
        """An SQL condition over the `images` table and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        if self.under:
            clause, roots = under_clause([os.path.abspath(u) for u in self.under])
            parts.append(clause)
            params += roots
        if self.after is not None:
            parts.append("(taken_at >= ? OR (taken_at IS NULL AND mtime_ns >= ?))")
            params += [_iso(self.after), _epoch_ns(self.after)]
        if self.before is not None:
            parts.append("(taken_at < ? OR (taken_at IS NULL AND mtime_ns < ?))")
            params += [_iso(self.before), _epoch_ns(self.before)]
        if self.cameras:
            parts.append("(" + " OR ".join("instr(lower(camera), ?) > 0" for _ in self.cameras) + ")")
            params += [c.lower() for c in self.cameras]
        if self.min_width is not None:
            parts.append("width >= ?")
            params.append(self.min_width)
        if self.min_height is not None:
            parts.append("height >= ?")
            params.append(self.min_height)
        if self.exts:
            suffixes = ["." + e.lower().lstrip(".") for e in self.exts]
            parts.append("(" + " OR ".join("substr(lower(path), -?) = ?" for _ in suffixes) + ")")
            params += [p for s in suffixes for p in (len(s), s)]
        if self.tag is not None:
            parts.append("id IN (SELECT image_id FROM image_tags WHERE label = ? COLLATE NOCASE)")
            params.append(normal_label(self.tag))
        return " AND ".join(parts) or "1", params

    def allowed_ids(self, catalog: Catalog) -> np.ndarray:
        """The ids of the catalog rows that pass every filter."""
        where, params = self.where()
        rows = catalog.conn.execute(f"SELECT id FROM images WHERE {where}", params).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)


DATE_SQL = "coalesce(taken_at, strftime('%Y-%m-%dT%H:%M:%S', mtime_ns / 1000000000, 'unixepoch', 'localtime'))"
"""`image_date` in SQL: the EXIF date taken, else the file's mtime as local time."""


def count_passing(catalog: Catalog, filters: Filters) -> int:
    """How many images pass `filters` (the catalog's kept count when there are none)."""
    if not filters:
        return catalog.count()
    where, params = filters.where()
    return catalog.conn.execute(f"SELECT count(*) FROM images WHERE {where}", params).fetchone()[0]


def newest_ids(catalog: Catalog, filters: Filters, offset: int, limit: int) -> list[int]:
    """The ids of images passing `filters`, newest first by `image_date` (ties: the last indexed first),
    `limit` of them from position `offset`. Reads the filters' index, not the rows."""
    where, params = filters.where()
    rows = catalog.conn.execute(f"SELECT id FROM images WHERE {where} ORDER BY {DATE_SQL} DESC, id DESC "
                              "LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    return [r[0] for r in rows]


def facets(catalog: Catalog) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The values the camera and extension filters can take, each with its number of images, most first:
    (cameras, extensions); an extension in lower case without its dot, "" for files without one."""
    cameras = catalog.conn.execute("SELECT camera, count(*) AS n FROM images WHERE camera IS NOT NULL "
                                 "GROUP BY camera ORDER BY n DESC, camera").fetchall()
    extensions = Counter(os.path.splitext(path)[1].lower().lstrip(".")
                         for (path,) in catalog.conn.execute("SELECT path FROM images"))
    return [(c, n) for c, n in cameras], sorted(extensions.items(), key=lambda item: (-item[1], item[0]))


def parse_when(text: str) -> datetime:
    """'2021-05-01' (midnight) or a full ISO datetime; one with a UTC offset becomes local time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadQuery(f"Not a date: {text!r} (use YYYY-MM-DD or an ISO datetime such as 2021-05-01T14:30)") from None
    try:
        return when.astimezone().replace(tzinfo=None) if when.tzinfo else when
    except (OverflowError, ValueError):
        raise BadQuery(f"Date out of range: {text!r}") from None


def image_date(taken_at: str | None, mtime_ns: int) -> str:
    """When a photo was taken as a sortable local ISO string: EXIF date, else file mtime."""
    return taken_at or _iso(datetime.fromtimestamp(mtime_ns / 1e9))


def by_date(items: Sequence[Any], dates: Sequence[str]) -> list[Any]:
    """`items` reordered oldest first by their `dates` (ties keep their order)."""
    order = sorted(range(len(items)), key=lambda i: dates[i])
    return [items[i] for i in order]


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1


def _epoch_ns(when: datetime) -> int:
    """A naive local datetime as nanoseconds since the epoch, to compare with mtime_ns; dates beyond
    what the catalog's 64-bit nanoseconds hold (before 1677, after 2262) are clamped to its range."""
    try:
        ns = int(when.timestamp() * 1_000_000_000)
    except (OverflowError, ValueError, OSError):  # year 1 in a zone east of UTC, year 9999 west of it
        ns = _NS_MIN if when.year < 1970 else _NS_MAX
    return min(max(ns, _NS_MIN), _NS_MAX)
