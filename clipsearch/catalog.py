"""The SQLite catalog: one row per indexed image with its metadata and its vector.

The catalog is the source of truth. Vectors are stored here as float32 blobs, so the FAISS
index is a rebuildable artefact. Schema changes are numbered migrations tracked in
`PRAGMA user_version`; every write is one transaction, so a crash loses at most the batch
in flight.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

from .errors import LibraryCorrupt, LibraryVersionError
from .paths import catalog_text, from_catalog

if TYPE_CHECKING:
    import sqlite_utils

CATALOG_FILE = "catalog.db"

@dataclass(frozen=True)
class AddColumn:
    """A migration adding a column, idempotent like the others (SQLite has no ADD COLUMN IF NOT EXISTS)."""

    table: str
    column: str
    type: str

    def script(self, conn: sqlite3.Connection) -> str:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({self.table})")}
        return "" if self.column in present else f"ALTER TABLE {self.table} ADD COLUMN {self.column} {self.type};"


def _script(migration: "str | AddColumn", conn: sqlite3.Connection) -> str:
    return migration if isinstance(migration, str) else migration.script(conn)


MIGRATIONS: tuple["str | AddColumn", ...] = (
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        hash TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        format TEXT NOT NULL,
        taken_at TEXT,
        camera TEXT,
        indexed_at TEXT NOT NULL,
        vector BLOB NOT NULL
    );
    CREATE INDEX images_hash ON images(hash);
    CREATE TABLE failures (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Zero-shot tags (see tagging.py), and an index covering the metadata filters (see filters.py).
    # Idempotent, so that a second process opening the catalog mid-migration finds nothing left to do.
    """
    CREATE TABLE IF NOT EXISTS label_sets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        labels TEXT NOT NULL UNIQUE,
        settings TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS image_tags (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        label_set_id INTEGER NOT NULL REFERENCES label_sets(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        probability REAL NOT NULL,
        rank INTEGER NOT NULL,
        PRIMARY KEY (image_id, label_set_id, label)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS image_tags_label ON image_tags(label, image_id);
    CREATE INDEX IF NOT EXISTS image_tags_set ON image_tags(label_set_id, image_id);
    CREATE INDEX IF NOT EXISTS images_filters ON images(taken_at, mtime_ns, camera, width, height);
    """,
    # The state of every file, so that diffing a listing against the catalog (`states_under`) reads this
    # index alone: a row with its 2 KB vector fills a 4 KB page, so reading the rows themselves would
    # read the whole catalog (4 GB at a million images).
    """
    CREATE INDEX IF NOT EXISTS images_state ON images(path, size, mtime_ns, hash);
    """,
    # The number of images, kept by triggers: every open checks the index against the catalog's count,
    # and SQLite's count(*) reads a whole index (0.4 s at a million rows). Rows are only ever INSERTed
    # and DELETEd (never REPLACEd, which would skip the delete trigger).
    """
    CREATE TABLE IF NOT EXISTS image_count (n INTEGER NOT NULL);
    INSERT INTO image_count SELECT count(*) FROM images WHERE NOT EXISTS (SELECT 1 FROM image_count);
    CREATE TRIGGER IF NOT EXISTS images_counted AFTER INSERT ON images BEGIN UPDATE image_count SET n = n + 1; END;
    CREATE TRIGGER IF NOT EXISTS images_uncounted AFTER DELETE ON images BEGIN UPDATE image_count SET n = n - 1; END;
    """,
    # Each file's identity (device, inode, ctime), so that a file replaced by another of the same size and
    # mtime (`cp -p`, `touch -r`, sync tools) is noticed; rows written before have none until the next run
    # records it. A table of its own rather than new columns, so that the migration is idempotent. The size
    # index finds the rows a new file may have been moved from, anywhere in the library.
    """
    CREATE TABLE IF NOT EXISTS file_identity (
        image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        dev INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS images_size ON images(size);
    """,
    # The text read in images (OCR; see textsearch.py, which also creates its full-text index).
    """
    CREATE TABLE IF NOT EXISTS ocr_text (
        image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        text TEXT NOT NULL,
        lines TEXT NOT NULL,
        read_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS ocr_text_found ON ocr_text(image_id) WHERE text != '';
    """,
    # The perceptual fingerprint of each image's pixels (perceptual.py), NULL for rows indexed before it: dedup
    # tells resized copies from edits and retakes with it. SQLite has no ADD COLUMN IF NOT EXISTS: see AddColumn.
    AddColumn("images", "phash", "BLOB"),
    # Pairs of pictures (by content hash, so a rename keeps them) a user said are not duplicates.
    """
    CREATE TABLE IF NOT EXISTS dismissed_pairs (
        hash_a TEXT NOT NULL,
        hash_b TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (hash_a, hash_b)
    ) WITHOUT ROWID;
    """,
    # Video frames (see video.py): a video is one `images` row (its file, hash and the mean of its frame
    # vectors), and each sampled frame a row here, with its own vector in the index under `vector_id`.
    # Those ids start above FRAME_IDS (seeded in sqlite_sequence), so they never meet an image id. Counted
    # by triggers like the images; a deleted video takes its frames with it.
    """
    CREATE TABLE IF NOT EXISTS video_frames (
        vector_id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        frame_ms INTEGER NOT NULL,
        vector BLOB NOT NULL,
        UNIQUE (image_id, frame_ms)
    );
    INSERT INTO sqlite_sequence(name, seq) SELECT 'video_frames', 1099511627776
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'video_frames');
    CREATE TABLE IF NOT EXISTS frame_count (n INTEGER NOT NULL);
    INSERT INTO frame_count SELECT count(*) FROM video_frames WHERE NOT EXISTS (SELECT 1 FROM frame_count);
    CREATE TRIGGER IF NOT EXISTS frames_counted AFTER INSERT ON video_frames
        BEGIN UPDATE frame_count SET n = n + 1; END;
    CREATE TRIGGER IF NOT EXISTS frames_uncounted AFTER DELETE ON video_frames
        BEGIN UPDATE frame_count SET n = n - 1; END;
    """,
    # A video's length in seconds (NULL for photos and for videos indexed before it): dedup tells a re-encoded
    # copy from a longer or shorter clip with it. A video's `phash` holds its frames' fingerprints, in the order
    # of their `video_frames` rows' times.
    AddColumn("images", "duration_s", "REAL"),
)
SCHEMA_VERSION = len(MIGRATIONS)
FRAME_IDS = 1 << 40
"""Vector ids above this are video frames (`video_frames.vector_id`), below it images (`images.id`)."""
IN_CHUNK = 500
"""Values per `IN (...)` list: well under SQLite's limit on a statement's parameters."""

IMAGE_COLUMNS = "id, path, size, mtime_ns, hash, width, height, format, taken_at, camera, indexed_at"


STATES = ("SELECT path, id, size, mtime_ns, hash, dev, inode, ctime_ns FROM images"
          " LEFT JOIN file_identity ON image_id = id")
"""Each row's FileState, by path; add a WHERE clause."""


@dataclass(frozen=True)
class FileState:
    """A catalog row's record of its file; `dev`, `inode` and `ctime_ns` are None where not recorded yet."""

    id: int
    size: int
    mtime_ns: int
    hash: str
    dev: int | None = None
    inode: int | None = None
    ctime_ns: int | None = None


def _states(cursor: Iterable[Sequence[Any]]) -> dict[str, FileState]:
    """The rows of a STATES query by path."""
    return {from_catalog(r[0]): FileState(*r[1:]) for r in cursor}


@dataclass(frozen=True)
class NewImage:
    path: str
    size: int
    mtime_ns: int
    hash: str
    width: int
    height: int
    format: str
    taken_at: str | None
    camera: str | None
    vector: np.ndarray
    dev: int | None = None
    """The file's device, inode and ctime (see FileState), where known."""
    inode: int | None = None
    ctime_ns: int | None = None
    phash: bytes | None = None
    """The perceptual fingerprint of the pixels (perceptual.py), where computed."""
    frames: tuple[tuple[int, np.ndarray], ...] = ()
    """For a video: (time in ms, vector) of each sampled frame."""
    duration_s: float | None = None
    """For a video: its length in seconds, where the container says."""


class FileStamp(Protocol):
    """What the catalog records of a file on disk (a discover.FileEntry)."""

    path: str
    size: int
    mtime_ns: int
    dev: int | None
    inode: int | None
    ctime_ns: int | None


def _image_row(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    found = dict(zip(names, row))
    found["path"] = from_catalog(found["path"])
    return found


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def under_clause(roots: Sequence[str]) -> tuple[str, list[str]]:
    """SQL matching paths equal to, or inside, any root, using the path index (range scans)."""
    parts, params = [], []
    for root in map(catalog_text, roots):
        prefix = root.rstrip(os.sep) + os.sep
        parts.append("(path = ? OR (path >= ? AND path < ?))")
        params += [root, prefix, prefix[:-1] + chr(ord(os.sep) + 1)]
    return "(" + " OR ".join(parts) + ")", params


def _create(path: Path) -> None:
    """Build a new catalog under a temporary name, then rename it into place, so that a reader
    opening the library at any moment sees either no catalog or a complete one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.new")
    db = sqlite3.connect(tmp)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        for number, migration in enumerate(MIGRATIONS):
            db.executescript(f"BEGIN; {_script(migration, db)} PRAGMA user_version = {number + 1}; COMMIT;")
    finally:
        db.close()
    os.replace(tmp, path)


READ_ONLY_MODES = ("mode=ro", "immutable=1")


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write, by the first of READ_ONLY_MODES that can read the catalog."""
    if not path.is_file():
        raise sqlite3.DatabaseError(f"{path} is missing")
    error: sqlite3.Error | None = None
    for mode in READ_ONLY_MODES:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as e:
            conn.close()
            error = e
    raise sqlite3.DatabaseError(f"cannot be opened read-only ({error})")


def _import_sqlite_utils() -> Any:
    """sqlite_utils, imported here rather than with the module (`clipsearch --help` opens no library), and
    without pandas: where pandas is installed, sqlite_utils imports it (0.3 s of a cold query) only to
    type pandas timestamps, which clipsearch never stores."""
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        import sqlite_utils

        return sqlite_utils
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` raise ImportError
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]
    return sqlite_utils


def _paged_vectors(conn: sqlite3.Connection, table: str, id_column: str, after_id: int,
                   chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 vectors) of `table`'s rows with `id_column` above `after_id`, in id order, `chunk` rows at a
    time (keyset paging: memory stays bounded)."""
    last = after_id
    while True:
        rows = conn.execute(f"SELECT {id_column}, vector FROM {table} WHERE {id_column} > ? "
                            f"ORDER BY {id_column} LIMIT ?", [last, chunk]).fetchall()
        if not rows:
            return
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        yield ids, np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        last = int(ids[-1])


class Catalog:
    """The catalog over one SQLite connection. Reads go through `conn` itself; writes and migrations through
    `db`, sqlite-utils' Database over the same connection, made on first use: a query, which only reads,
    never imports sqlite-utils (most of a repeated text query's import time, see docs/performance.md)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    @cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils' Database over `conn`. No sqlite-utils plugins: they are not the catalog's, and finding
        them reads every installed package."""
        return _import_sqlite_utils().Database(self.conn, execute_plugins=False)

    @classmethod
    def open(cls, directory: Path, create: bool = False, readonly: bool = False) -> "Catalog":
        """Open (with `create`, first create) the catalog in `directory`; `readonly` opens it without writing
        anything (SQLite `mode=ro`, else `immutable=1` where not even that can be opened, e.g. a WAL
        catalog on read-only media), and runs no migration."""
        path = directory / CATALOG_FILE
        if create and not readonly and not path.exists():
            _create(path)
        try:
            # The web app calls one Library from worker threads, one call at a time (its own lock).
            catalog = cls(_connect_read_only(path) if readonly else sqlite3.connect(path, check_same_thread=False))
            catalog.conn.execute("PRAGMA busy_timeout = 30000")
            catalog.conn.execute("PRAGMA foreign_keys = ON")  # a deleted image takes its tags with it
            if not readonly:
                if catalog.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    catalog.db.enable_wal()
                catalog.conn.execute("PRAGMA synchronous = NORMAL")
            catalog._migrate(readonly)
        except sqlite3.DatabaseError as e:
            raise LibraryCorrupt(f"The catalog {path} is damaged or not a clipsearch catalog ({e})") from None
        return catalog

    def _migrate(self, readonly: bool = False) -> None:
        """Bring the schema up to SCHEMA_VERSION; one PRAGMA when it is already there (every query's open)."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise LibraryVersionError(
                f"This library was written by a newer clipsearch (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade clipsearch to use it"
            )
        if version == 0 and "images" not in self.db.table_names():
            raise LibraryCorrupt("The catalog has no clipsearch tables")
        if readonly:
            raise LibraryVersionError(
                f"This library was written by an older clipsearch (schema {version}, this one uses "
                f"{SCHEMA_VERSION}) and is read-only here; upgrade it once with a run that can write to it "
                f"(e.g. `clipsearch index` on one of its folders)"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.db.conn:
                script = _script(MIGRATIONS[number], self.db.conn)
                self.db.conn.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {number + 1}; COMMIT;")

    def close(self) -> None:
        self.conn.close()

    # --- meta ---------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self.db.conn:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [key, json.dumps(value)])

    # --- reading ------------------------------------------------------------
    def count(self) -> int:
        return self.conn.execute("SELECT n FROM image_count").fetchone()[0]

    def max_id(self) -> int:
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()[0]

    def states_under(self, roots: Sequence[str]) -> dict[str, FileState]:
        where, params = under_clause(roots)
        return _states(self.conn.execute(f"{STATES} WHERE {where}", params))

    def states_of(self, paths: Sequence[str]) -> dict[str, FileState]:
        """The rows of these paths, where there are any."""
        sql = f"{STATES} WHERE path IN ({{}})"
        return {p: s for cursor in self._select_in(sql, [catalog_text(p) for p in paths])
                for p, s in _states(cursor).items()}

    def states_of_size(self, sizes: Iterable[int]) -> dict[str, FileState]:
        """The rows of files of these sizes (in bytes), anywhere in the library."""
        sql = f"{STATES} WHERE size IN ({{}})"
        return {p: s for cursor in self._select_in(sql, sorted(set(sizes))) for p, s in _states(cursor).items()}

    def count_under(self, roots: Sequence[str]) -> int:
        where, params = under_clause(roots)
        return self.conn.execute(f"SELECT count(*) FROM images WHERE {where}", params).fetchone()[0]

    def _select_in(self, sql: str, values: Sequence[Any]) -> Iterator[sqlite3.Cursor]:
        """`sql` with its `IN ({})` filled by IN_CHUNK values at a time (SQLite caps a statement's
        parameters), a cursor per chunk."""
        for start in range(0, len(values), IN_CHUNK):
            chunk = list(values[start : start + IN_CHUNK])
            yield self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk)

    def shots(self, shots: Iterable[str]) -> dict[str, list[tuple[int, str]]]:
        """(id, path) of the files of each shot: its path without an extension, with any extension
        (a range scan of the path index per shot)."""
        found: dict[str, list[tuple[int, str]]] = {}
        for shot in set(shots):
            rows = self.conn.execute("SELECT id, path FROM images WHERE path >= ? AND path < ?",
                                   [catalog_text(shot + "."), catalog_text(shot + "/")])
            paths = [(i, from_catalog(p)) for i, p in rows]
            found[shot] = [(i, p) for i, p in paths if os.path.splitext(p)[0] == shot]
        return found

    # --- video frames ---------------------------------------------------------
    def frame_count(self) -> int:
        return self.conn.execute("SELECT n FROM frame_count").fetchone()[0]

    def frame_ids(self, image_ids: Sequence[int]) -> np.ndarray:
        """The vector ids of these images' video frames (none for photos)."""
        if not self.frame_count():
            return np.zeros(0, dtype=np.int64)
        sql = "SELECT vector_id FROM video_frames WHERE image_id IN ({}) ORDER BY vector_id"
        return np.array([r[0] for c in self._select_in(sql, [int(i) for i in image_ids]) for r in c], dtype=np.int64)

    def frame_owners(self, vector_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """vector id -> (image id of its video, frame time in ms), for the ids that are frames."""
        sql = "SELECT vector_id, image_id, frame_ms FROM video_frames WHERE vector_id IN ({})"
        wanted = [int(i) for i in vector_ids if i > FRAME_IDS]
        return {r[0]: (r[1], r[2]) for c in self._select_in(sql, wanted) for r in c}

    def frames_of(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(times in ms, vectors) of a video's frames, in time order; empty for a photo."""
        rows = self.conn.execute("SELECT frame_ms, vector FROM video_frames WHERE image_id = ? ORDER BY frame_ms",
                               [image_id]).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return (np.array([r[0] for r in rows], dtype=np.int64),
                np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))

    def video_ids(self) -> np.ndarray:
        """The ids of the images that are videos (those with frames), ascending; reads only the frames' index."""
        if not self.frame_count():
            return np.zeros(0, dtype=np.int64)
        rows = self.conn.execute("SELECT DISTINCT image_id FROM video_frames ORDER BY image_id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def frame_times(self, image_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The times in seconds of these videos' sampled frames, ascending (the order of their fingerprints)."""
        sql = "SELECT image_id, frame_ms FROM video_frames WHERE image_id IN ({}) ORDER BY image_id, frame_ms"
        times: dict[int, list[int]] = {}
        for cursor in self._select_in(sql, [int(i) for i in image_ids]):
            for image_id, ms in cursor:
                times.setdefault(image_id, []).append(ms)
        return {i: np.array(ms, dtype=np.float64) / 1000 for i, ms in times.items()}

    def durations(self, ids: Iterable[int]) -> dict[int, float | None]:
        """The length in seconds of each of these videos (None where unknown or indexed before it was stored)."""
        sql = "SELECT id, duration_s FROM images WHERE id IN ({})"
        return {r[0]: r[1] for cursor in self._select_in(sql, [int(i) for i in ids]) for r in cursor}

    def failures_under(self, roots: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        where, params = under_clause(roots)
        sql = f"SELECT path, size, mtime_ns, reason FROM failures WHERE {where}"
        return {from_catalog(r[0]): (r[1], r[2], r[3]) for r in self.conn.execute(sql, params)}

    def all_ids(self) -> np.ndarray:
        """Every image id, ascending (sorted here: ORDER BY id would read the table instead of an index)."""
        rows = self.conn.execute("SELECT id FROM images").fetchall()
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def version(self) -> tuple[int, int]:
        """Changes whenever the catalog does, by this connection or another one (cheap: no table is read)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0], self.conn.total_changes

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, content hashes) of every image, in id order (the order of `iter_vectors`)."""
        rows = self.conn.execute("SELECT id, hash FROM images ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=str)

    def rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        sql = f"SELECT {IMAGE_COLUMNS} FROM images WHERE id IN ({{}})"
        for cursor in self._select_in(sql, [int(i) for i in ids]):
            names = [d[0] for d in cursor.description]
            found.update({row[0]: _image_row(names, row) for row in cursor})
        return found

    def row_by_path(self, path: str) -> dict[str, Any] | None:
        cursor = self.conn.execute(f"SELECT {IMAGE_COLUMNS}, vector FROM images WHERE path = ?", [catalog_text(path)])
        row = cursor.fetchone()
        return _image_row([d[0] for d in cursor.description], row) if row else None

    def iter_vectors(self, after_id: int = 0, chunk: int = 20000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in id order, a chunk at a time, so memory stays bounded."""
        yield from _paged_vectors(self.conn, "images", "id", after_id, chunk)

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        sql = "SELECT id, vector FROM images WHERE id IN ({})"
        got = {r[0]: np.frombuffer(r[1], dtype=np.float32)
               for cursor in self._select_in(sql, [int(i) for i in ids]) for r in cursor}
        return np.vstack([got[int(i)] for i in ids])

    def phashes(self, ids: Iterable[int]) -> dict[int, bytes | None]:
        """The perceptual fingerprint of each of these images (a video's: its frames', concatenated in time order;
        None for rows indexed before it was computed)."""
        sql = "SELECT id, phash FROM images WHERE id IN ({})"
        return {r[0]: r[1] for cursor in self._select_in(sql, [int(i) for i in ids]) for r in cursor}

    def dismissed_pairs(self) -> set[tuple[str, str]]:
        """Content-hash pairs (a < b) a user marked as not duplicates."""
        return {(r[0], r[1]) for r in self.conn.execute("SELECT hash_a, hash_b FROM dismissed_pairs")}

    def dismiss_pair(self, hash_a: str, hash_b: str) -> None:
        """Remember that the pictures with these content hashes are not duplicates (either order)."""
        with self.db.conn:
            self.db.conn.execute("INSERT OR IGNORE INTO dismissed_pairs(hash_a, hash_b, created_at) VALUES (?, ?, ?)",
                                 (*sorted((hash_a, hash_b)), now_iso()))

    def by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        sql = "SELECT hash, id FROM images WHERE hash IN ({})"
        return {r[0]: r[1] for cursor in self._select_in(sql, list(set(hashes))) for r in cursor}

    # --- writing (each call is one transaction) -------------------------------
    def write_batch(
        self, images: Sequence[NewImage], replaced_ids: Sequence[int], failures: Sequence[tuple[str, int, int, str]]
    ) -> list[int]:
        """Insert new images (dropping the rows they replace) and record failures, atomically."""
        stamp = now_iso()
        with self.db.conn:
            self._delete(replaced_ids)
            self.db.conn.executemany(
                "DELETE FROM failures WHERE path = ?", [(catalog_text(im.path),) for im in images]
            )
            ids = [self._insert(im, stamp) for im in images]
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO failures(path, size, mtime_ns, reason) VALUES (?, ?, ?, ?)",
                [(catalog_text(p), size, mtime, reason) for p, size, mtime, reason in failures]
            )
        return ids

    def _insert(self, im: NewImage, stamp: str) -> int:
        cursor = self.db.conn.execute(
            "INSERT INTO images(path, size, mtime_ns, hash, width, height, format, taken_at, camera, indexed_at, vector,"
            " phash, duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (catalog_text(im.path), im.size, im.mtime_ns, im.hash, im.width, im.height, im.format, im.taken_at,
             im.camera, stamp, np.ascontiguousarray(im.vector, dtype=np.float32).tobytes(), im.phash, im.duration_s),
        )
        image_id = int(cursor.lastrowid)
        self._identify([(image_id, im)])
        self.db.conn.executemany(
            "INSERT INTO video_frames(image_id, frame_ms, vector) VALUES (?, ?, ?)",
            [(image_id, ms, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for ms, v in im.frames],
        )
        return image_id

    def _identify(self, files: Sequence[tuple[int, FileStamp]]) -> None:
        """Record the identity of the files of these rows, where known."""
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO file_identity(image_id, dev, inode, ctime_ns) VALUES (?, ?, ?, ?)",
            [(i, f.dev, f.inode, f.ctime_ns) for i, f in files if f.inode is not None])

    def move(self, moves: Sequence[tuple[int, FileStamp]]) -> None:
        """Point rows at new paths: (id, the file now holding its content)."""
        with self.db.conn:
            self.db.conn.executemany(
                "UPDATE images SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
                [(catalog_text(f.path), f.size, f.mtime_ns, i) for i, f in moves],
            )
            self._identify(moves)

    def touch(self, updates: Sequence[tuple[int, FileStamp]]) -> None:
        """Record the new size/mtime/identity of rows whose content did not change: (id, its file)."""
        with self.db.conn:
            self.db.conn.executemany("UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?",
                                     [(f.size, f.mtime_ns, i) for i, f in updates])
            self._identify(updates)

    def delete(self, ids: Sequence[int], failure_paths: Sequence[str] = ()) -> None:
        with self.db.conn:
            self._delete(ids)
            self.db.conn.executemany("DELETE FROM failures WHERE path = ?", [(catalog_text(p),) for p in failure_paths])

    def _delete(self, ids: Sequence[int]) -> None:
        self.db.conn.executemany("DELETE FROM images WHERE id = ?", [(int(i),) for i in ids])

    def reset(self, meta: dict[str, Any]) -> None:
        """Empty the catalog and record new metadata (e.g. another model) in one transaction."""
        with self.db.conn:
            self.db.conn.execute("DELETE FROM images")
            self.db.conn.execute("DELETE FROM failures")
            self.db.conn.execute("DELETE FROM label_sets")
            self.db.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                     [(k, json.dumps(v)) for k, v in meta.items()])

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every read inside sees one consistent state, even while a writer commits."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def integrity_problems(self) -> list[str]:
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        problems = [r[0] for r in rows if r[0] != "ok"]
        dim = self.get_meta("dim")
        if dim:
            bad = self.conn.execute("SELECT count(*) FROM images WHERE length(vector) != ?", [4 * dim]).fetchone()[0]
            if bad:
                problems.append(f"{bad} catalog rows have vectors of the wrong size")
        rows, counted = self.conn.execute("SELECT count(*) FROM images").fetchone()[0], self.count()
        if rows != counted:
            problems.append(f"the catalog counts {counted} images but holds {rows}")
        return problems

    def recount(self) -> None:
        """Set the running image count from the rows themselves (see the last migration)."""
        with self.db.conn:
            self.db.conn.execute("UPDATE image_count SET n = (SELECT count(*) FROM images)")


class IndexedVectors:
    """Every vector the vector index holds, as a `VectorSource`: one per catalog row (a video's is the mean
    of its frames) under the row's id, and one per video frame under its vector id (above FRAME_IDS)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.conn = catalog.conn

    def count(self) -> int:
        return self.catalog.count() + self.catalog.frame_count()

    def max_id(self) -> int:
        frames = self.conn.execute("SELECT coalesce(max(vector_id), 0) FROM video_frames").fetchone()[0]
        return max(self.catalog.max_id(), frames)

    def all_ids(self) -> np.ndarray:
        rows = self.conn.execute("SELECT vector_id FROM video_frames").fetchall()
        frames = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return np.concatenate([self.catalog.all_ids(), np.sort(frames)])

    def iter_vectors(self, after_id: int = 0, chunk: int = 20000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in id order: the images', then the frames'."""
        if after_id < FRAME_IDS:
            yield from self.catalog.iter_vectors(after_id, chunk)
        yield from _paged_vectors(self.conn, "video_frames", "vector_id", max(after_id, FRAME_IDS), chunk)

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        frames = [i for i in ids if i > FRAME_IDS]
        if not frames:
            return self.catalog.vectors_for(ids)
        sql = "SELECT vector_id, vector FROM video_frames WHERE vector_id IN ({})"
        got = {r[0]: np.frombuffer(r[1], dtype=np.float32) for c in self.catalog._select_in(sql, frames) for r in c}
        images = [i for i in ids if i <= FRAME_IDS]
        if images:
            got.update(zip(images, self.catalog.vectors_for(images)))
        return np.vstack([got[i] for i in ids])
