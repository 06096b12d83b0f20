"""A library: a directory with the SQLite catalog and the FAISS index, and the verbs on it."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .catalog import CATALOG_FILE, Catalog, now_iso
from .discover import list_images
from .duplicates import DEFAULT_THRESHOLD, find_duplicates
from .errors import BadImage, BadPath, BadQuery, LibraryCorrupt, LibraryLocked, LibraryNotFound
from .filters import Filters, by_date, image_date
from .models import ModelSpec, check_same_model, load_encoder, model_spec
from .ranking import combine, split_weight, top_k
from .results import DedupReport, IndexReport, LibraryInfo, SearchResult, TagCount, TagReport
from .tagging import DEFAULT_MIN_PROBABILITY, DEFAULT_TOP, TEMPLATES, tag_catalog, tag_counts
from .vectorindex import INDEX_FILE, VectorIndex, rebuild

LOCK_FILE = "lock"
SORTS = ("score", "date")
DEFAULT_BATCH = {"cpu": 32, "mps": 64, "cuda": 256}


def default_library_dir() -> Path:
    """$CLIPSEARCH_DB, else $CLIPSEARCH_HOME, else the user data dir (~/.local/share/clipsearch)."""
    env = os.environ.get("CLIPSEARCH_DB") or os.environ.get("CLIPSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("clipsearch"))


class Library:
    """Open with `Library.open(path)`; hand in an `encoder` to reuse a loaded model."""

    def __init__(self, path: Path, catalog: Catalog | None, encoder=None):
        self.path = path
        self._catalog = catalog
        self._encoder = encoder
        self._vectors: VectorIndex | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, create: bool = False, encoder=None) -> "Library":
        """Open a library; with `create`, a missing one is created on its first write."""
        directory = Path(path).expanduser().absolute() if path else default_library_dir().absolute()
        if (directory / CATALOG_FILE).exists():
            return cls(directory, Catalog.open(directory), encoder)
        if create:
            return cls(directory, None, encoder)
        raise LibraryNotFound(f"No clipsearch library at {directory}; create one with `clipsearch index PATH`")

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- parts ---------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._catalog = Catalog.open(self.path, create=True)
        return self._catalog

    @property
    def model(self) -> ModelSpec | None:
        if self._catalog is None:
            return None
        recorded = self._catalog.get_meta("model")
        return ModelSpec.from_dict(recorded) if recorded else None

    @property
    def encoder(self):
        """The model that built this library (loaded once, on first use)."""
        if self._encoder is None:
            if self.model is None:
                raise LibraryNotFound(f"The library at {self.path} is empty; index some images first")
            self._encoder = load_encoder(self.model)
        return self._encoder

    @property
    def vectors(self) -> VectorIndex:
        """The FAISS index, brought in line with the catalog (in memory) if the file is stale."""
        if self._vectors is None:
            file = self.path / INDEX_FILE
            loaded = VectorIndex.load(file) if file.exists() else None
            dim = self._dim()
            self._vectors = loaded if loaded is not None and loaded.dim == dim else VectorIndex.create(dim)
        with self.catalog.snapshot():
            self._vectors.sync(self.catalog)
        return self._vectors

    def _dim(self) -> int:
        return int(self.catalog.get_meta("dim") or self.encoder.dim)

    def save_index(self) -> None:
        if self._vectors is not None:
            self._vectors.save(self.path / INDEX_FILE)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One writer at a time; a second fails fast instead of interleaving writes."""
        self.catalog  # ensure the directory exists
        with open(self.path / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LibraryLocked(
                    f"Another clipsearch process is writing to the library at {self.path}; "
                    f"wait for it to finish and run again"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- verbs -----------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        model: ModelSpec | None = None,
        device: str = "auto",
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        reindex: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        progress=None,
    ) -> IndexReport:
        """Add, update, move and remove images under `paths` so the library mirrors them."""
        from .indexer import IndexRun
        from .pipeline import default_workers

        started = time.monotonic()
        if not paths:
            raise BadPath("Give at least one file or directory to index")
        listing = list_images(paths, exclude, include_hidden)
        recorded = self.model
        wanted = model or recorded or model_spec()
        if recorded is not None and not reindex:
            check_same_model(recorded, wanted)
        if self._encoder is None or not self._encoder.spec.same_weights(wanted):
            self._encoder = load_encoder(wanted, device)
        with self._lock():
            if reindex or recorded is None:
                self._reset(wanted)
            run = IndexRun(self.catalog, self.vectors, self._encoder, self.save_index,
                           batch_size or DEFAULT_BATCH.get(self._encoder.device.type, 32),
                           default_workers() if workers is None else workers, progress)
            report = run.run(listing, started)
            self.catalog.set_meta("last_indexed", now_iso())
        return report

    def _reset(self, spec: ModelSpec) -> None:
        self.catalog.reset({"model": spec.to_dict(), "dim": self._encoder.dim})
        self._vectors = VectorIndex.create(self._encoder.dim)

    def search(
        self,
        query: str | None = None,
        *,
        k: int = 20,
        add: Sequence[str] = (),
        sub: Sequence[str] = (),
        images: Sequence[str] = (),
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> list[SearchResult]:
        """Text and/or image query; `add`/`sub` terms take an optional ':weight' suffix."""
        terms = []
        if query is not None:
            if not query.strip():
                raise BadQuery("Empty query: give some text or an image file")
            terms.append((1.0, self.term_vector(query)))
        terms += [(w, self.term_vector(t)) for t, w in map(split_weight, add)]
        terms += [(-w, self.term_vector(t)) for t, w in map(split_weight, sub)]
        terms += [(1.0, self.image_vector(p)) for p in images]
        return self.nearest(combine(terms), k=k, filters=filters, min_score=min_score, sort=sort)

    def similar(
        self,
        image: str | os.PathLike[str],
        *,
        k: int = 20,
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> list[SearchResult]:
        """Nearest neighbours of an image file, leaving the image itself out when it is indexed."""
        path = os.path.abspath(os.fspath(image))
        row = self.catalog.row_by_path(path)
        exclude = {row["id"]} if row else set()
        return self.nearest(self.image_vector(path), k=k, filters=filters, min_score=min_score, sort=sort,
                            exclude=exclude)

    def term_vector(self, term: str) -> np.ndarray:
        """A query term is an image if it names an existing file, else text."""
        if not term.strip():
            raise BadQuery("Empty query term")
        if os.path.isfile(term):
            return self.image_vector(term)
        return self.encoder.encode_texts([term])[0]

    def image_vector(self, image: str | os.PathLike[str]) -> np.ndarray:
        """The stored vector when the file is indexed and unchanged, else a fresh embedding."""
        from .decode import load

        path = os.path.abspath(os.fspath(image))
        if not os.path.exists(path):
            raise BadPath(f"No such file: {os.fspath(image)}")
        row = self.catalog.row_by_path(path)
        st = os.stat(path)
        if row and (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            return np.frombuffer(row["vector"], dtype=np.float32)
        try:
            picture, _ = load(path, self.encoder.image_size)
        except BadImage as e:
            raise BadImage(f"{os.fspath(image)} is not a usable image ({e})") from None
        return self.encoder.encode_pil([picture])[0]

    def nearest(
        self,
        vector: np.ndarray,
        *,
        k: int = 20,
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
        exclude: set[int] = frozenset(),
    ) -> list[SearchResult]:
        """The k best matches among the images passing `filters` (searched among those alone, so k come
        back whenever k match); with sort="date", those same results oldest first."""
        if k < 1:
            raise BadQuery("The number of results must be at least 1")
        if sort not in SORTS:
            raise BadQuery(f"Unknown sort order {sort!r}; use one of {', '.join(SORTS)}")
        vectors = self.vectors
        if len(vectors) == 0:
            return []
        with self.catalog.snapshot():
            allowed = filters.allowed_ids(self.catalog) if filters else None
            scores, ids = vectors.search(vector[None, :], k + len(exclude), allowed)
            chosen = top_k(scores[0], ids[0], k, lambda i: i not in exclude, min_score)
            rows = self.catalog.rows(i for i, _ in chosen)
        chosen = [(i, s) for i, s in chosen if i in rows]
        if sort == "date":
            chosen = by_date(chosen, [image_date(rows[i]["taken_at"], rows[i]["mtime_ns"]) for i, _ in chosen])
        return [
            SearchResult(rows[i]["path"], s, rows[i]["width"], rows[i]["height"], rows[i]["taken_at"])
            for i, s in chosen
        ]

    def check(self) -> list[str]:
        """What is wrong with the library on disk (empty when catalog and index file agree)."""
        problems = self.catalog.integrity_problems()
        file = self.path / INDEX_FILE
        if not file.exists():
            return problems + (["the vector index file is missing"] if self.catalog.count() else [])
        try:
            on_disk = VectorIndex.load(file)
        except LibraryCorrupt as e:
            return problems + [str(e)]
        if on_disk.dim != self._dim():
            return problems + [f"the vector index has {on_disk.dim}-d vectors, the catalog {self._dim()}-d"]
        with self.catalog.snapshot():
            ids, wanted = on_disk.ids(), self.catalog.all_ids()
        if len(ids) != len(np.unique(ids)):
            problems.append("the vector index holds some ids more than once")
        orphans, missing = np.setdiff1d(ids, wanted), np.setdiff1d(wanted, ids)
        if len(orphans):
            problems.append(f"{len(orphans)} vectors in the index have no catalog row")
        if len(missing):
            problems.append(f"{len(missing)} catalog rows are missing from the index")
        return problems

    def repair(self) -> int:
        """Rebuild the vector index from the vectors kept in the catalog; returns its size."""
        with self._lock():
            self._vectors = rebuild(self.catalog, self._dim())
            self.save_index()
        return len(self._vectors)

    def tag(
        self,
        labels: Sequence[str],
        *,
        templates: Sequence[str] = TEMPLATES,
        top: int = DEFAULT_TOP,
        min_probability: float = DEFAULT_MIN_PROBABILITY,
    ) -> TagReport:
        """Zero-shot tag the images not yet tagged with this set of labels (see tagging.py)."""
        with self._lock():
            return tag_catalog(self.catalog, lambda: self.encoder, labels, templates=templates, top=top,
                               min_probability=min_probability)

    def tags(self) -> list[TagCount]:
        """Every label with the number of images carrying it, most common first."""
        return tag_counts(self.catalog)

    def duplicates(
        self,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        series_threshold: float | None = None,
        filters: Filters | None = None,
    ) -> DedupReport:
        """Exact and near-duplicate groups, plus similar series with a `series_threshold` (see duplicates.py).

        Only reads the catalog: no file is ever deleted or moved.
        """
        with self.catalog.snapshot():
            allowed = filters.allowed_ids(self.catalog) if filters else None
            return find_duplicates(self.catalog, threshold=threshold, series_threshold=series_threshold,
                                   allowed=allowed)

    def info(self) -> LibraryInfo:
        model = self.model
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return LibraryInfo(
            path=str(self.path),
            model={**(model.to_dict() if model else {}), "dim": self.catalog.get_meta("dim")},
            images=self.catalog.count(),
            index_type=self.catalog.get_meta("index_type", "flat"),
            size_bytes=size,
            last_indexed=self.catalog.get_meta("last_indexed"),
        )
