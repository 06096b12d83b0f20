"""A library: a directory with the SQLite catalog and the FAISS index, and the verbs on it."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from .catalog import CATALOG_FILE, Catalog, IndexedVectors, now_iso
from .discover import list_images
from .duplicates import default_threshold, find_duplicates
from .errors import (BadImage, BadOption, BadPath, BadQuery, BadShard, LibraryCorrupt, LibraryLocked,
                     LibraryNotFound, ModelMismatch)
from .filters import Filters, by_date, image_date
from .models import DEFAULT_BATCH, ModelSpec, check_same_model, load_encoder, model_spec
from .ranking import combine, exhausted, split_weight, top_k, unit
from .raw import is_pair, is_raw, shot_of
from .results import DedupReport, IndexReport, IngestReport, LibraryInfo, SearchResult, TagCount, TagReport
from .tagging import DEFAULT_MIN_PROBABILITY, DEFAULT_TOP, TEMPLATES, tag_catalog, tag_counts
from .vectorindex import (DEFAULT_POLICY, INDEX_FILE, INDEX_TYPES, BuildRecord, IndexPolicy, VectorIndex, build,
                          rebuild_reason, wanted_kind)
from .video import Sampling, frame_at, is_video, parse_moment, sample

if TYPE_CHECKING:
    from .encoder import Encoder

LOCK_FILE = "lock"
SORTS = ("score", "date")


def default_library_dir() -> Path:
    """$CLIPSEARCH_DB, else $CLIPSEARCH_HOME, else the user data dir (~/.local/share/clipsearch)."""
    env = os.environ.get("CLIPSEARCH_DB") or os.environ.get("CLIPSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("clipsearch"))


def _checked_index_type(index_type: str) -> str:
    if index_type not in INDEX_TYPES:
        raise BadOption(f"Unknown index type {index_type!r}; use one of {', '.join(INDEX_TYPES)}")
    return index_type


class Library:
    """Open with `Library.open(path)`; hand in an `encoder` to reuse a loaded model, an `index_policy`
    to change when the vector index turns approximate (see vectorindex.py)."""

    def __init__(self, path: Path, catalog: Catalog | None, encoder=None, index_policy: IndexPolicy = DEFAULT_POLICY):
        self.path = path
        self._catalog = catalog
        self._encoder = encoder
        self.index_policy = index_policy
        self._vectors: VectorIndex | None = None
        self._synced_at: tuple[int, int] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, create: bool = False, encoder=None,
             index_policy: IndexPolicy = DEFAULT_POLICY) -> "Library":
        """Open a library; with `create`, a missing one is created on its first write."""
        directory = Path(path).expanduser().absolute() if path else default_library_dir().absolute()
        if (directory / CATALOG_FILE).exists():
            return cls(directory, Catalog.open(directory), encoder, index_policy)
        if create:
            return cls(directory, None, encoder, index_policy)
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
        """The FAISS index (memory-mapped, never rebuilt here), brought in line with the catalog in memory
        if the file is stale. Checked again only after the catalog changed, so queries skip the check."""
        if self._vectors is None:
            file = self.path / INDEX_FILE
            loaded = VectorIndex.load(file) if file.exists() else None
            dim = self._dim()
            self._set_vectors(loaded if loaded is not None and loaded.dim == dim else VectorIndex.create(dim))
        with self.catalog.snapshot():
            version = self.catalog.version()
            if version != self._synced_at:
                self._vectors.sync(IndexedVectors(self.catalog))
                self._synced_at = version
        return self._vectors

    def _set_vectors(self, vectors: VectorIndex) -> None:
        self._vectors, self._synced_at = vectors, None

    def _dim(self) -> int:
        return int(self.catalog.get_meta("dim") or self.encoder.dim)

    @property
    def index_type(self) -> str:
        """The index type asked for: "auto" (the default: by collection size), "flat", "ivf", "ivfpq" or "hnsw"."""
        return self.catalog.get_meta("index_type", "auto") if self._catalog is not None else "auto"

    def _set_index_type(self, index_type: str | None) -> None:
        if index_type is not None and index_type != self.index_type:
            self.catalog.set_meta("index_type", _checked_index_type(index_type))

    def _build_record(self) -> BuildRecord | None:
        return BuildRecord.from_dict(self.catalog.get_meta("index_build"))

    def save_index(self) -> None:
        """Write the index file, rebuilding the index first when its type or size calls for it (writers only)."""
        if self._vectors is None:
            return
        reason = rebuild_reason(self._vectors, self._build_record(), self.index_type, self.index_policy)
        if reason is None:
            self._vectors.save(self.path / INDEX_FILE)
            return
        kind = wanted_kind(self.index_type, len(self._vectors), self._vectors.kind, self.index_policy)
        self._rebuild(kind)

    def _rebuild(self, kind: str) -> BuildRecord:
        """Build a `kind` index from the catalog's vectors, save it, then record how it was built.

        The new index replaces the old one's contents in place: an index run holding the object goes on
        adding to the rebuilt index."""
        with self.catalog.snapshot():
            vectors, record = build(IndexedVectors(self.catalog), self._dim(), kind, self.index_policy)
        vectors.save(self.path / INDEX_FILE)
        self.catalog.set_meta("index_build", record.to_dict())
        if self._vectors is None:
            self._vectors = vectors
        else:
            self._vectors.adopt(vectors)
        self._synced_at = None
        return record

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
        index_type: str | None = None,
        video: Sampling = Sampling(),
    ) -> IndexReport:
        """Add, update, move and remove images and videos under `paths` so the library mirrors them.

        `video` says how frames are sampled from videos (see video.py).

        `index_type` ("auto", "flat", "ivf", "ivfpq", "hnsw") is recorded and kept for later runs; None keeps
        the recorded one.
        """
        from .indexer import IndexRun

        started = time.monotonic()
        if not paths:
            raise BadPath("Give at least one file or directory to index")
        listing = list_images(paths, exclude, include_hidden)
        recorded = self.model
        wanted = model or recorded or model_spec()
        if recorded is not None and not reindex:
            check_same_model(recorded, wanted)

        def encoder() -> "Encoder":
            if self._encoder is None or not self._encoder.spec.same_weights(wanted):
                self._encoder = load_encoder(wanted, device)
            return self._encoder

        if reindex or recorded is None:
            encoder()  # a new library needs the embedding size; a missing model fails before anything is written
        if index_type is not None:
            _checked_index_type(index_type)  # before any work
        with self._lock():
            if reindex or recorded is None:
                self._reset(wanted, self._encoder.dim)
            self._set_index_type(index_type)
            run = IndexRun(self.catalog, self.vectors, encoder, self.save_index, batch_size, workers, progress, video)
            report = run.run(listing, started)
            self.catalog.set_meta("last_indexed", now_iso())
        return report

    def _reset(self, spec: ModelSpec, dim: int) -> None:
        self.catalog.reset({"model": spec.to_dict(), "dim": dim, "index_build": None})
        self._set_vectors(VectorIndex.create(dim))

    def ingest(self, shards_dir: str | os.PathLike[str], *, progress=None) -> IngestReport:
        """Merge the embedding shards written by `clipsearch embed` into the library (see ingest.py).

        The first shards record their model in an empty library; re-ingesting adds nothing twice.
        """
        from .ingest import merge_shards
        from .shards import read_header, shard_files

        started = time.monotonic()
        headers = [read_header(f) for f in shard_files(Path(shards_dir))]
        if not headers:
            raise BadShard(f"No embedding shards (shard-*.parquet) in {shards_dir}")
        model, dim = headers[0].model, headers[0].dim
        for header in headers:
            if not header.model.same_weights(model):
                raise ModelMismatch(f"{header.path} was embedded with {header.model.label} but {headers[0].path} "
                                    f"with {model.label}; ingest them into separate libraries")
        recorded = self.model
        if recorded is not None:
            check_same_model(recorded, model)
        with self._lock():
            if recorded is None:
                self._reset(model, dim)
            report = merge_shards(self.catalog, headers, started, progress)
            self.vectors  # brings the FAISS index in line with the catalog, whatever its index type
            self.save_index()
            self.catalog.set_meta("last_indexed", now_iso())
        return report

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
        group_pairs: bool = False,
    ) -> list[SearchResult]:
        """Text and/or image query; `add`/`sub` terms take an optional ':weight' suffix; `group_pairs`:
        see `nearest`."""
        terms = []
        if query is not None:
            if not query.strip():
                raise BadQuery("Empty query: give some text or an image file")
            terms.append((1.0, self.term_vector(query)))
        terms += [(w, self.term_vector(t)) for t, w in map(split_weight, add)]
        terms += [(-w, self.term_vector(t)) for t, w in map(split_weight, sub)]
        terms += [(1.0, self.image_vector(p)) for p in images]
        return self.nearest(combine(terms), k=k, filters=filters, min_score=min_score, sort=sort,
                            group_pairs=group_pairs)

    def similar(
        self,
        image: str | os.PathLike[str],
        *,
        k: int = 20,
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
        group_pairs: bool = False,
    ) -> list[SearchResult]:
        """Nearest neighbours of an image file, or of a video's frame given as VIDEO@SECONDS, leaving the
        image (the video) itself out when it is indexed (and with `group_pairs`, see `nearest`, its RAW+JPEG
        pair)."""
        moment = parse_moment(os.fspath(image))
        if moment is not None and not os.path.exists(image):
            path = os.path.abspath(moment[0])
            vector = self.frame_vector(path, moment[1])
        else:
            path = os.path.abspath(os.fspath(image))
            vector = self.image_vector(path)
        row = self.catalog.row_by_path(path)
        exclude = {row["id"]} if row else set()
        return self.nearest(vector, k=k, filters=filters, min_score=min_score, sort=sort, exclude=exclude,
                            group_pairs=group_pairs)

    def frame_vector(self, video: str, seconds: float) -> np.ndarray:
        """The embedding of the frame a video shows at `seconds`."""
        if not os.path.isfile(video):
            raise BadPath(f"No such file: {video}")
        try:
            picture = frame_at(video, seconds, self.encoder.image_size)
        except BadImage as e:
            raise BadImage(f"{video} is not a usable video ({e})") from None
        return self.encoder.encode_pil([picture])[0]

    def term_vector(self, term: str) -> np.ndarray:
        """A query term is an image if it names an existing file, else text."""
        if not term.strip():
            raise BadQuery("Empty query term")
        if os.path.isfile(term):
            return self.image_vector(term)
        return self.text_vector(term)

    def text_vector(self, text: str) -> np.ndarray:
        """A text's embedding; a text searched before is read from the library's text cache, without
        loading the model (see textcache.py)."""
        from .textcache import TextVectorCache

        model = self.model
        cache = TextVectorCache(self.path, model) if model is not None else None
        vector = cache.get(text) if cache is not None else None
        if vector is None:
            vector = self.encoder.encode_texts([text])[0]
            if cache is not None:
                cache.put(text, vector)
        return vector

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
            if is_video(path):  # not indexed: the mean of its sampled frames, as indexing would store
                clip = sample(path, Sampling(), self.encoder.image_size)
                return unit(self.encoder.encode_pil([f.image for f in clip.frames]).mean(axis=0))
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
        group_pairs: bool = False,
    ) -> list[SearchResult]:
        """The k best matches among the images passing `filters` (searched among those alone, so k come
        back whenever k match); with sort="date", those same results oldest first.

        With `group_pairs`, a RAW+JPEG pair (see raw.py) is one result: the rendered file (JPEG, HEIC...)
        is shown, with the better score of the two; the pair of an `exclude`d image is left out with it."""
        if k < 1:
            raise BadQuery("The number of results must be at least 1")
        if sort not in SORTS:
            raise BadQuery(f"Unknown sort order {sort!r}; use one of {', '.join(SORTS)}")
        with self.catalog.snapshot():  # the index is synced in the same read transaction as the rows
            vectors = self.vectors
            if len(vectors) == 0:
                return []
            allowed = filters.allowed_ids(self.catalog) if filters else None
            if allowed is not None:
                allowed = np.concatenate([allowed, self.catalog.frame_ids(allowed)])
            available = len(vectors) if allowed is None else len(allowed)
            fetch = k + len(exclude)
            while True:
                scores, ids = vectors.search(vector[None, :], fetch, allowed,
                                             exact=IndexedVectors(self.catalog).vectors_for)
                chosen, moments = self._one_per_video(vector, top_k(scores[0], ids[0], fetch, min_score=min_score))
                chosen = [(i, s) for i, s in chosen if i not in exclude]
                rows = self.catalog.rows(i for i, _ in chosen)
                chosen = [(i, s) for i, s in chosen if i in rows]
                if group_pairs:
                    chosen = self._one_per_shot(chosen, rows, allowed, exclude)
                if len(chosen) >= k or exhausted(scores[0], fetch, available, min_score):
                    break
                fetch *= 4
        chosen = chosen[:k]
        dates = {i: image_date(rows[i]["taken_at"], rows[i]["mtime_ns"]) for i, _ in chosen}
        if sort == "date":
            chosen = by_date(chosen, [dates[i] for i, _ in chosen])
        return [
            SearchResult(rows[i]["path"], s, rows[i]["width"], rows[i]["height"], rows[i]["taken_at"], dates[i],
                         moments[i] / 1000 if i in moments else None)
            for i, s in chosen
        ]

    def _one_per_video(self, vector: np.ndarray, chosen: list[tuple[int, float]]
                       ) -> tuple[list[tuple[int, float]], dict[int, int]]:
        """Hits on video frames (and on a video's own mean vector) as one hit per video, scored at its
        best-matching frame, best first; and that frame's time in ms per video id."""
        if not self.catalog.frame_count():
            return chosen, {}
        owners = self.catalog.frame_owners([i for i, _ in chosen])
        best: dict[int, float] = {}
        for i, score in chosen:
            image_id = owners[i][0] if i in owners else i
            best.setdefault(image_id, score)
        moments = {}
        for image_id in {owners[i][0] for i in owners} | set(best):
            times, vectors = self.catalog.frames_of(image_id)
            if len(times):
                scores = vectors @ vector
                j = int(np.argmax(scores))
                best[image_id], moments[image_id] = float(scores[j]), int(times[j])
        return sorted(best.items(), key=lambda item: -item[1]), moments

    def _one_per_shot(self, chosen: list[tuple[int, float]], rows: dict[int, dict], allowed: np.ndarray | None,
                      exclude: set[int]) -> list[tuple[int, float]]:
        """`chosen` with each RAW+JPEG pair reduced to its rendered file, at the pair's best score; the rows
        of files shown instead of their RAW are added to `rows`."""
        shots = {i: shot_of(rows[i]["path"]) for i, _ in chosen}
        left_out = {shot_of(r["path"]) for r in self.catalog.rows(exclude).values()}
        members = self.catalog.shots(set(shots.values()) | left_out)
        if allowed is not None:
            found = np.array([m for files in members.values() for m, _ in files], dtype=np.int64)
            passing = set(found[np.isin(found, allowed)].tolist())
            members = {shot: [(m, p) for m, p in files if m in passing] for shot, files in members.items()}
        result, seen = [], set()
        for i, score in chosen:
            shot, files = shots[i], members[shots[i]]
            if not is_pair([p for _, p in files]):
                result.append((i, score))
            elif shot not in seen and shot not in left_out:
                seen.add(shot)
                rendered = sorted((p, m) for m, p in files if not is_raw(p))
                result.append((i if not is_raw(rows[i]["path"]) else rendered[0][1], score))
        rows.update(self.catalog.rows(i for i, _ in result if i not in rows))
        return result

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
            ids, wanted = on_disk.ids(), IndexedVectors(self.catalog).all_ids()
        if len(ids) != len(np.unique(ids)):
            problems.append("the vector index holds some ids more than once")
        orphans, missing = np.setdiff1d(ids, wanted), np.setdiff1d(wanted, ids)
        if len(orphans):
            problems.append(f"{len(orphans)} vectors in the index have no catalog row")
        if len(missing):
            problems.append(f"{len(missing)} catalog rows are missing from the index")
        return problems

    def repair(self, index_type: str | None = None) -> BuildRecord:
        """Rebuild the vector index from the vectors kept in the catalog, as `index_type` if given (it is
        then recorded), and recount the catalog's images; returns how the index was built."""
        with self._lock():
            self.catalog.recount()
            self._set_index_type(index_type)
            record = self._build_record()
            current = record.params["type"] if record is not None else "flat"
            return self._rebuild(wanted_kind(self.index_type, self.catalog.count(), current, self.index_policy))

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
        threshold: float | None = None,
        series_threshold: float | None = None,
        filters: Filters | None = None,
    ) -> DedupReport:
        """Exact and near-duplicate groups, plus similar series with a `series_threshold` (see duplicates.py).

        `threshold` defaults to the one measured for the library's model. Only reads the catalog: no
        file is ever deleted or moved.
        """
        if threshold is None:
            threshold = default_threshold(self.model.arch if self.model else None)
        with self.catalog.snapshot():
            allowed = filters.allowed_ids(self.catalog) if filters else None
            return find_duplicates(self.catalog, threshold=threshold, series_threshold=series_threshold,
                                   allowed=allowed)

    def info(self) -> LibraryInfo:
        model = self.model
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        file = self.path / INDEX_FILE
        on_disk = VectorIndex.load(file) if file.exists() else None
        index: dict[str, object] = {"type": on_disk.kind if on_disk else "none", "choice": self.index_type}
        if on_disk is not None:
            record = self._build_record()
            index.update(on_disk.params(), vectors=len(on_disk))
            if record is not None and record.describes(on_disk):
                index.update(built_for=record.built_for, recall_at_10=record.recall_at_10,
                             build_s=round(record.build_s, 1))
        return LibraryInfo(
            path=str(self.path),
            model={**(model.to_dict() if model else {}), "dim": self.catalog.get_meta("dim")},
            images=self.catalog.count(),
            index_type=str(index["type"]),
            index=index,
            size_bytes=size,
            last_indexed=self.catalog.get_meta("last_indexed"),
        )
