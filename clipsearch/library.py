"""A library: a directory with the SQLite catalog and the FAISS index, and the verbs on it."""
from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .catalog import CATALOG_FILE, Catalog, IndexedVectors, now_iso
from .discover import list_images
from .errors import (BadImage, BadOption, BadPath, BadQuery, BadShard, LibraryCorrupt, LibraryLocked,
                     LibraryNotFound, LibraryReadOnly, ModelMismatch, ModelUnavailable)
from .filters import Filters, by_date, count_passing, facets, image_date, newest_ids
from .models import (DEFAULT_BATCH, TINY_MODEL, ModelSpec, Preprocessing, check_same_model, input_side, load_encoder,
                     model_spec, open_clip_version, preprocessing_of)
from .paths import check_text, readable
from .ranking import are_unit_vectors, combine, exhausted, split_weight, top_k, unit
from .results import (DedupReport, FilterValues, IndexReport, IngestReport, LibraryInfo, ListedImage, MoveReport,
                      OcrReport, SearchResult, TagCount, TagReport)
from .tagging import DEFAULT_MIN_PROBABILITY, DEFAULT_TOP, TEMPLATES, tag_catalog, tag_counts
from .textmodel import TextModel, text_model_written
from .vectorindex import (DEFAULT_POLICY, INDEX_FILE, INDEX_TYPES, BuildRecord, IndexPolicy, VectorIndex, build,
                          rebuild_reason, wanted_kind)
from .video import Sampling, bad_moment, frame_at, is_video, parse_moment, sample

# The stages that read pixels (decode, raw) and those of one verb alone (indexer, duplicates, quarantine, ocr...)
# are imported by the methods that use them, so that a search never imports them (see clipsearch/__init__.py).
if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from .encoder import Encoder
    from .headstart import DecodedPhoto

LOCK_FILE = "lock"
EXPORT_ASIDE_TIMEOUT_S = 300.0
"""How long an index run waits, once done, for the text tower's export beside it before doing it itself."""
SORTS = ("score", "date")


def default_library_dir() -> Path:
    """$CLIPSEARCH_DB, else $CLIPSEARCH_HOME, else the user data dir (~/.local/share/clipsearch)."""
    env = os.environ.get("CLIPSEARCH_DB") or os.environ.get("CLIPSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("clipsearch"))


def _read_only(directory: Path) -> bool:
    return not (os.access(directory, os.W_OK) and os.access(directory / CATALOG_FILE, os.W_OK))


def _outermost(roots: Iterable[str]) -> list[str]:
    """The roots not inside another, sorted."""
    unique = sorted(set(roots))
    return [r for r in unique if not any(r != o and r.startswith(o.rstrip(os.sep) + os.sep) for o in unique)]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _shown(text: str) -> str:
    """A query as error messages and notes show it: its first 40 characters."""
    return text if len(text) <= 40 else text[:37] + "..."


def _check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise BadQuery(f"Unknown sort order {sort!r}; use one of {', '.join(SORTS)}")


def _checked_index_type(index_type: str) -> str:
    if index_type not in INDEX_TYPES:
        raise BadOption(f"Unknown index type {index_type!r}; use one of {', '.join(INDEX_TYPES)}")
    return index_type


def _check_decode_device(device: str) -> None:
    """A device JPEGs can be decoded on here (a CUDA device only where CUDA is available); BadOption otherwise."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise BadOption(f"Unknown decode device {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadOption("--gpu-decode needs a CUDA device")


class Library:
    """Open with `Library.open(path)`; hand in an `encoder` to reuse a loaded model, an `index_policy`
    to change when the vector index turns approximate (see vectorindex.py)."""

    def __init__(self, path: Path, catalog: Catalog | None, encoder=None, index_policy: IndexPolicy = DEFAULT_POLICY,
                 readonly: bool = False):
        self.path = path
        self.readonly = readonly
        """Opened without write access: reading works, commands that write raise LibraryReadOnly."""
        self._catalog = catalog
        self._encoder = encoder
        self.index_policy = index_policy
        self._vectors: VectorIndex | None = None
        self._text_model: TextModel | None = None
        self._synced_at: tuple[int, int] | None = None
        self._file_seen: tuple[int, int, int] | None = None
        self.query_notes: list[str] = []
        """What the last `search` should tell its user about its query, e.g. a text cut to the model's context."""

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, create: bool = False, encoder=None,
             index_policy: IndexPolicy = DEFAULT_POLICY, readonly: bool | None = None) -> "Library":
        """Open a library; with `create`, a missing one is created on its first write.

        `readonly` (default: whether the library's folder or catalog may not be written, as `os.access` tells,
        which read-only media tell even to root) opens it without writing anything: no migration, no caches.
        """
        directory = Path(path).expanduser().absolute() if path else default_library_dir().absolute()
        if (directory / CATALOG_FILE).exists():
            readonly = _read_only(directory) if readonly is None else readonly
            return cls(directory, Catalog.open(directory, readonly=readonly), encoder, index_policy, readonly)
        if create:
            return cls(directory, None, encoder, index_policy, bool(readonly))
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
            self._check_writable()
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryReadOnly(f"Cannot create the library at {self.path}: {e.strerror or e}") from None
            self._catalog = Catalog.open(self.path, create=True)
        return self._catalog

    def _check_writable(self) -> None:
        if self.readonly:
            raise LibraryReadOnly(
                f"The library at {self.path} is read-only (no write permission, or read-only media); searching "
                f"works, but indexing, tagging, repair and ingest need to write to it")

    @property
    def model(self) -> ModelSpec | None:
        if self._catalog is None:
            return None
        recorded = self._catalog.get_meta("model")
        return ModelSpec.from_dict(recorded) if recorded else None

    @property
    def preprocessing(self) -> Preprocessing | None:
        """The preprocessing and open_clip version the library's vectors were made with (None if not recorded)."""
        recorded = self._catalog.get_meta("preprocessing") if self._catalog is not None else None
        return Preprocessing.from_dict(recorded) if recorded else None

    def demo_model_note(self) -> str | None:
        """One line when the library uses the bundled demo model `clipsearch-tiny`, which knows only coloured
        shapes, else None."""
        model = self.model
        if model is None or model.arch != TINY_MODEL:
            return None
        return (f"note: this library uses the demo model {TINY_MODEL}, which knows only coloured shapes, not photos; "
                "for photos index with a real model (see `clipsearch models`)")

    def preprocessing_warning(self) -> str | None:
        """One line when the model here would embed differently from the library's recorded preprocessing, else None.

        With the model loaded, every field is compared; without, only the open_clip version (which decides the
        preprocessing of a model and tag), so that opening a library never loads the model to check."""
        recorded = self.preprocessing
        if recorded is None:
            return None
        if self._encoder is not None and self._encoder.spec.same_weights(self.model):
            differences = recorded.differences(preprocessing_of(self._encoder))
        else:
            current = open_clip_version()
            differences = [] if current == recorded.open_clip else [f"open_clip {recorded.open_clip} -> {current}"]
        if not differences:
            return None
        return (f"warning: this library's vectors were made with other preprocessing ({'; '.join(differences)}): "
                f"new vectors may not compare with them; `clipsearch index --reindex` on every indexed folder "
                f"re-embeds them")

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
        if the file is stale. Checked again only after the catalog changed, so queries skip the check.

        When another process has since replaced the index file (an `index` run that rebuilt it, a `repair`),
        the new file is loaded in place of the old one: a long-lived reader such as `serve` follows it. One
        stat() per access tells."""
        seen = self._index_file_identity()
        if self._vectors is None or seen != self._file_seen:
            file = self.path / INDEX_FILE
            loaded = VectorIndex.load(file) if seen is not None else None
            dim = self._dim()
            fresh = loaded if loaded is not None and loaded.dim == dim else VectorIndex.create(dim)
            if self._vectors is None:
                self._vectors = fresh
            else:
                self._vectors.adopt(fresh)  # whoever holds the object sees the new index
            self._synced_at, self._file_seen = None, seen
        with self.catalog.snapshot():
            version = self.catalog.version()
            if version != self._synced_at:
                self._vectors.sync(IndexedVectors(self.catalog))
                self._synced_at = version
        return self._vectors

    def _set_vectors(self, vectors: VectorIndex) -> None:
        self._vectors, self._synced_at, self._file_seen = vectors, None, self._index_file_identity()

    def _index_file_identity(self) -> tuple[int, int, int] | None:
        """(inode, mtime ns, size) of the index file, None when there is none: a rename over it changes the inode."""
        try:
            st = (self.path / INDEX_FILE).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _save_vectors(self, vectors: VectorIndex) -> None:
        vectors.save(self.path / INDEX_FILE)
        self._file_seen = self._index_file_identity()  # our own write: nothing to reload

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
        """Write the index file, rebuilding the index instead when its type or size calls for it (writers only)."""
        if self._vectors is not None and not self._rebuild_if_due():
            self._save_vectors(self._vectors)

    def _rebuild_if_due(self) -> bool:
        """Rebuild (and save) the index if its type or size calls for it; whether it did."""
        if self._vectors is None or rebuild_reason(self._vectors, self._build_record(), self.index_type,
                                                   self.index_policy) is None:
            return False
        self._rebuild(wanted_kind(self.index_type, len(self._vectors), self._vectors.kind, self.index_policy))
        return True

    def _rebuild(self, kind: str) -> BuildRecord:
        """Build a `kind` index from the catalog's vectors, save it, then record how it was built.

        The new index replaces the old one's contents in place: an index run holding the object goes on
        adding to the rebuilt index."""
        texts = self._calibration_texts() if kind != "flat" else None
        with self.catalog.snapshot():
            vectors, record = build(IndexedVectors(self.catalog), self._dim(), kind, self.index_policy, texts)
        self._save_vectors(vectors)
        self.catalog.set_meta("index_build", record.to_dict())
        if self._vectors is None:
            self._vectors = vectors
        else:
            self._vectors.adopt(vectors)
        self._synced_at = None
        return record

    def _calibration_texts(self) -> np.ndarray | None:
        """The model's own text vectors to calibrate an approximate index with (calibration.py), or None when the
        model cannot be loaded here (e.g. shards embedded elsewhere): the index is then calibrated on modelled
        text queries."""
        from .calibration import text_queries

        try:
            return text_queries(self.encoder)
        except (ModelUnavailable, LibraryNotFound):
            return None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One writer at a time (an OS file lock, via filelock); a second fails fast instead of interleaving."""
        from filelock import FileLock, Timeout

        self._check_writable()
        self.catalog  # ensure the directory exists
        try:
            with FileLock(self.path / LOCK_FILE, timeout=0):
                yield
        except Timeout:
            raise LibraryLocked(
                f"Another clipsearch process is writing to the library at {self.path}; "
                f"wait for it to finish and run again"
            ) from None

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
        rehash: bool = False,
        prune: bool = False,
        batch_size: int | None = None,
        workers: int | None = None,
        progress=None,
        index_type: str | None = None,
        ocr: str | None = None,
        ocr_progress=None,
        video: Sampling = Sampling(),
        decode_device: str | None = None,
        stage: Callable[[str], None] | None = None,
    ) -> IndexReport:
        """Add, update, move and remove images and videos under `paths` so the library mirrors them.

        `video` says how frames are sampled from videos (see video.py). `decode_device` ("cuda": nvJPEG) decodes the
        JPEGs that decoder turns into Pillow's picture on that torch device instead of in the decode workers, file
        by file falling back to them (see devicejpeg.py); BadOption where there is no such device.

        Never removes what it cannot see: a path that looks offline (missing, empty, or more than half of its
        indexed files and at least `indexer.OFFLINE_MIN_LOST` gone at once) keeps its rows, listed in the
        report's `offline`, unless `prune`; a path that no longer exists but has rows is such a path. New
        files with the content of rows whose files are gone, anywhere in the library, are moves (vector and
        tags kept). `reindex` re-embeds the files under `paths` and keeps every other image; with another
        model it needs every indexed folder, as a library holds one model's vectors (else ModelMismatch).
        `rehash` compares every file's content, not only those whose size, mtime, inode or ctime changed.
        The library's own folder is never indexed. `index_type` ("auto", "flat", "ivf", "ivfpq", "hnsw") is
        recorded and kept for later runs; None keeps the recorded one. So is `ocr`: "auto" or "all" (the OCR
        gate, see ocr.py) reads the text in new images after embedding them, "off" stops doing so. Raises
        ExtraNotInstalled, before any work, when OCR is on and its extra is missing. `stage`, when given, is
        told what the run is doing before each step that can take a while before `progress` starts:
        "listing files", "loading the model ...".
        """
        from .headstart import load_decoding_ahead  # Pillow and the decoders: not for searches
        from .indexer import IndexRun, Options
        from .ocr import checked_gate, require_engine

        started = time.monotonic()
        self._check_writable()
        if not paths:
            raise BadPath("Give at least one file or directory to index")
        if decode_device is not None:
            _check_decode_device(decode_device)
        from .models import weights_file

        existing, vanished = self._split_roots(paths)
        recorded = self.model
        wanted = model or recorded or model_spec()
        new_model = recorded is not None and not recorded.same_weights(wanted)
        if new_model and not reindex:
            check_same_model(recorded, wanted)
        if new_model or recorded is None:
            weights_file(wanted)  # weights neither cached nor downloadable fail now, not after listing the files
        if stage:
            stage("listing files")
        listing = list_images(existing, exclude, include_hidden, skip_dirs=[self.path])
        listing.roots += tuple(vanished)
        if new_model:
            self._check_covered(listing.roots, wanted)

        def encoder() -> "Encoder":
            if self._encoder is None or not self._encoder.spec.same_weights(wanted):
                if stage:
                    stage(f"loading the model {wanted.label}")
                self._encoder = load_encoder(wanted, device)
            return self._encoder

        side = input_side(wanted)  # the photos decoded ahead are decoded for it
        ahead: dict[str, "DecodedPhoto"] = {}
        if new_model or recorded is None:
            # a new library needs the embedding size; a missing model fails before anything is written
            _, ahead = load_decoding_ahead(encoder, [e for e in listing.files if not is_video(e.path)], side)
        if index_type is not None:
            _checked_index_type(index_type)  # before any work
        gate = self.ocr_gate if ocr is None else None if ocr == "off" else checked_gate(ocr)
        if gate is not None:
            require_engine()
        with self._lock():
            if new_model or recorded is None:
                self._reset(wanted, self._encoder.dim)
            self._set_index_type(index_type)
            if ocr is not None:
                self.catalog.set_meta("ocr", gate)
            # Saves during the run only write the index; a rebuild it calls for (a minute at 1,000,000 images)
            # waits until the run's writes are committed. Searches meanwhile read the previous file.
            vectors = self.vectors
            run = IndexRun(self.catalog, vectors, encoder, lambda: self._save_vectors(vectors), batch_size, workers,
                           progress, video, Options(reindex=reindex, rehash=rehash, prune=prune), decode_device,
                           side, ahead)
            exporting = self._export_text_model_aside()
            try:
                report = run.run(listing, started)
                if self._encoder is not None and 0 < report.added + report.updated == self.catalog.count():
                    # every vector was made by this run (a --reindex of every folder, say): record how
                    self.catalog.set_meta("preprocessing", preprocessing_of(self._encoder).to_dict())
                self.catalog.set_meta("roots", _outermost([*self.catalog.get_meta("roots", []), *existing]))
                self.catalog.set_meta("last_indexed", now_iso())
                self._rebuild_if_due()
                if exporting is not None:
                    exporting.join(EXPORT_ASIDE_TIMEOUT_S)
            except BaseException:  # Ctrl-C or a failure, during the run or while waiting for the export beside it:
                if exporting is not None:  # the export stops with it, leaving nothing
                    self._stop_export(exporting)
                raise
            if exporting is not None and exporting.exitcode is None:
                self._stop_export(exporting)  # stuck (not seen since settle_forked's gc.freeze): written here instead
            if (exporting is None or exporting.exitcode != 0) and self._encoder is not None \
                    and not text_model_written(self.path, self._encoder.spec):
                self._write_text_model()  # also where the export beside the run died (killed for memory, say)
            if gate is not None:
                report = replace(report, ocr=self._read_text(gate, ocr_progress))
        return report

    def index_changes(self, changed: Iterable[str], roots: Sequence[str], **options) -> IndexReport | None:
        """One burst of file-system changes under the watched folders `roots` (paths, e.g. from watchfiles):
        the normal incremental `index` (with `options` as `index` takes them) of the roots that hold a changed
        path outside the library's own folder; None when none does. As in `index`, a root that has gone or
        looks offline (an unmounted drive) keeps its images."""
        own = str(self.path)
        changed = [os.path.abspath(p) for p in changed]
        touched = [root for root in roots if any(_under(p, os.path.abspath(root)) and not _under(p, own)
                                                 for p in changed)]
        return self.index(touched, **options) if touched else None

    @property
    def ocr_gate(self) -> str | None:
        """The OCR gate `index` uses ("auto" or "all"), or None when it reads no text (the default)."""
        return self.catalog.get_meta("ocr") if self._catalog is not None else None

    def read_text(self, gate: str | None = None, *, progress=None) -> OcrReport:
        """Read the text in the indexed images not read yet (see ocr.py); `gate` defaults to the library's
        setting, else "auto". Does not change the setting."""
        from .ocr import checked_gate

        gate = checked_gate(gate or self.ocr_gate or "auto")
        with self._lock():
            return self._read_text(gate, progress)

    def _read_text(self, gate: str, progress) -> OcrReport:
        from .ocr import read_catalog

        return read_catalog(self.catalog, lambda: self.encoder, gate, progress)


    def _split_roots(self, paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
        """The paths that exist, and those that do not but have rows (a vanished or unmounted folder)."""
        existing, vanished = [], []
        for path in paths:
            root = os.path.abspath(os.fspath(path))
            if os.path.lexists(root):
                existing.append(root)
            elif self._catalog is not None and self.catalog.count_under([root]):
                vanished.append(root)
            else:
                raise BadPath(f"No such file or directory: {readable(os.fspath(path))}")
        return existing, vanished

    def _check_covered(self, roots: Sequence[str], wanted: ModelSpec) -> None:
        """Refuse a model change that would drop the images outside `roots`."""
        outside = self.catalog.count() - self.catalog.count_under(roots)
        if not outside:
            return
        left = [r for r in self.catalog.get_meta("roots", [])
                if not any(r == g or r.startswith(g.rstrip(os.sep) + os.sep) for g in roots)
                and self.catalog.count_under([r])]
        named = ", ".join(readable(r) for r in left) if left else "folders not given"
        raise ModelMismatch(
            f"Re-indexing with {wanted.label} re-embeds the whole library (it holds one model's vectors), but "
            f"{outside} indexed images are outside the paths given ({named}) and would be lost; give those "
            f"folders too, or use another --db")

    def _reset(self, spec: ModelSpec, dim: int) -> None:
        """Empty the library for `spec`, recording the loaded encoder's preprocessing (none for ingested shards)."""
        preprocessing = preprocessing_of(self._encoder).to_dict() if self._encoder is not None else None
        self.catalog.reset({"model": spec.to_dict(), "dim": dim, "index_build": None, "preprocessing": preprocessing})
        self._set_vectors(VectorIndex.create(dim))

    def ingest(self, shards_dir: str | os.PathLike[str], *, progress=None) -> IngestReport:
        """Merge the embedding shards written by `clipsearch embed` into the library (see ingest.py).

        The first shards record their model in an empty library; re-ingesting adds nothing twice.
        """
        from .ingest import merge_shards
        from .shards import read_header, shard_files

        started = time.monotonic()
        self._check_writable()
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
            self._index_ingested()
            self.catalog.set_meta("last_indexed", now_iso())
        return report

    def _index_ingested(self) -> None:
        """Bring the index in line with the catalog after an ingest, in memory bounded by the index's own size.

        An index file of the type the collection now calls for takes the new vectors chunk by chunk; otherwise
        the wanted index is built straight from the catalog (trained on a sample, then filled chunk by chunk),
        never by first loading every vector into an exact float32 index (200 GB at 10^8 vectors of 512-d)."""
        record = self._build_record()
        on_disk = self._index_file_identity() is not None and record is not None
        current = record.params["type"] if on_disk else "flat"
        kind = wanted_kind(self.index_type, self.catalog.count(), current, self.index_policy)
        if kind == "flat" or (on_disk and kind == current):
            self.vectors  # adds what the file lacks, whatever its type
            self.save_index()
        else:
            self._rebuild(kind)

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
        good_only: bool = False,
    ) -> list[SearchResult]:
        """Text and/or image query; `add`/`sub` terms take an optional ':weight' suffix; `group_pairs`:
        see `nearest`. When every term is text, each result says whether it is a good match (see `judge`);
        `good_only` keeps only those (BadQuery with an image term). Afterwards
        `query_notes` says which texts were longer than the model's context (only their beginning counts)."""
        self.query_notes = []
        named = ([query] if query is not None else []) + [split_weight(t)[0] for t in (*add, *sub)]
        texts_only = not images and not any(map(os.path.isfile, named))
        if good_only and not texts_only:
            raise BadQuery("Only text queries are judged good matches or not: give no image with --good-only")
        terms = []
        if query is not None:
            if not query.strip():
                raise BadQuery("Empty query: give some text or an image file")
            terms.append((1.0, self.term_vector(query)))
        terms += [(w, self.term_vector(t)) for t, w in map(split_weight, add)]
        terms += [(-w, self.term_vector(t)) for t, w in map(split_weight, sub)]
        terms += [(1.0, self.image_vector(p)) for p in images]
        vector = combine(terms)
        if query is not None and not os.path.isfile(query):
            results = self.fused(query, vector, k=k, filters=filters, min_score=min_score, sort=sort,
                                 group_pairs=group_pairs)
        else:
            results = self.nearest(vector, k=k, filters=filters, min_score=min_score, sort=sort,
                                   group_pairs=group_pairs)
        if not texts_only:
            return results
        judged = self.judge(results)
        return [r for r in judged if r.good] if good_only else judged

    def judge(self, results: Sequence[SearchResult]) -> list[SearchResult]:
        """The results of a text query with `good` set: a good match scores above the neutral captions on its
        image by the model's margin, or holds the query's words (a snippet); see relevance.py. The captions'
        vectors are encoded on the first call for a library and model, then read from the library folder."""
        from .relevance import good_matches, neutral_vectors, rule_for

        model = self.model
        if not results or model is None:
            return list(results)
        with self.catalog.snapshot():
            ids = {path: state.id for path, state in self.catalog.states_of([r.path for r in results]).items()}
            kept = [r for r in results if r.path in ids]
            if not kept:  # removed from the catalog since: nothing to judge them by
                return [replace(r, good=bool(r.snippet)) for r in results]
            vectors = self.catalog.vectors_for([ids[r.path] for r in kept])
            for n, r in enumerate(kept):
                if r.time_s is not None:  # a video is scored at its best-matching frame: judged there too
                    times, frames = self.catalog.frames_of(ids[r.path])
                    vectors[n] = frames[int(np.argmin(np.abs(times - r.time_s * 1000)))]
        neutral = neutral_vectors(self.path, model, self._dim(), self._encode_texts, write=not self.readonly)
        good = good_matches(np.array([r.score for r in kept]), vectors, neutral, rule_for(model.arch))
        flags = dict(zip((r.path for r in kept), good.tolist()))
        return [replace(r, good=bool(r.snippet) or flags.get(r.path, False)) for r in results]

    def fused(
        self,
        text: str,
        vector: np.ndarray,
        *,
        k: int = 20,
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
        group_pairs: bool = False,
    ) -> list[SearchResult]:
        """The CLIP results for `vector` and the images whose recognised text holds words of `text`, ranked
        together by reciprocal rank fusion (see textsearch.py); just the CLIP results when no image has text.
        `min_score` applies to the CLIP ranking: a text match is kept whatever its cosine similarity; a video
        keeps the moment of its CLIP match. `group_pairs`: see `nearest`."""
        from . import textsearch

        _check_sort(sort)
        if not textsearch.has_text(self.catalog):
            return self.nearest(vector, k=k, filters=filters, min_score=min_score, sort=sort, group_pairs=group_pairs)
        depth = max(k, textsearch.FUSION_DEPTH)
        with self.catalog.snapshot():
            by_clip = self.nearest(vector, k=depth, filters=filters, min_score=min_score, group_pairs=group_pairs)
            ids = {path: state.id for path, state in self.catalog.states_of([r.path for r in by_clip]).items()}
            allowed = filters.allowed_ids(self.catalog) if filters else None
            by_text = [m.image_id for m in textsearch.match(self.catalog, text, every=False, allowed=allowed,
                                                              limit=depth)]
            chosen = textsearch.fuse([[ids[r.path] for r in by_clip], by_text])[:k]
            rows = self.catalog.rows(i for i, _ in chosen)
            cosines = dict(zip(rows, self.catalog.vectors_for(list(rows)) @ vector)) if rows else {}
            words = textsearch.query_words(text)
            found = textsearch.texts(self.catalog, rows)
        moments = {r.path: r.time_s for r in by_clip}
        results = [self._result(rows[i], float(cosines[i]), found.get(i), words, fused=f,
                                time_s=moments.get(rows[i]["path"])) for i, f in chosen if i in rows]
        return by_date(results, [r.date for r in results]) if sort == "date" else results

    def search_text(
        self, words: str, *, k: int = 20, filters: Filters | None = None, sort: str = "score"
    ) -> list[SearchResult]:
        """Images whose recognised text holds every one of `words` (any case), best BM25 first; the score is
        the BM25 relevance (higher is better). Needs no model. Raises BadQuery when no text was read yet."""
        from . import textsearch

        if k < 1:
            raise BadQuery("The number of results must be at least 1")
        check_text(words, "--text")
        _check_sort(sort)
        with self.catalog.snapshot():
            if not textsearch.has_text(self.catalog):
                raise BadQuery("No text has been read in this library's images yet; run `clipsearch ocr`")
            allowed = filters.allowed_ids(self.catalog) if filters else None
            matches = textsearch.match(self.catalog, words, every=True, allowed=allowed, limit=k)
            rows = self.catalog.rows(m.image_id for m in matches)
            found = textsearch.texts(self.catalog, rows)
        terms = textsearch.query_words(words)
        results = [self._result(rows[m.image_id], -m.bm25 or 0.0, found.get(m.image_id), terms)
                   for m in matches if m.image_id in rows]
        return by_date(results, [r.date for r in results]) if sort == "date" else results

    @staticmethod
    def _result(row: dict, score: float, text: str | None, words: Sequence[str],
                fused: float | None = None, time_s: float | None = None) -> SearchResult:
        from .textsearch import snippet

        found = snippet(text, words) if text else None
        return SearchResult(row["path"], score, row["width"], row["height"], row["taken_at"],
                            image_date(row["taken_at"], row["mtime_ns"]),
                            found.text if found else None, found.highlights if found else (), fused, time_s)

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
        video = bad_moment(os.fspath(image)) if not os.path.exists(image) else None
        if video is not None:
            raise BadQuery(f"{os.fspath(image).rpartition('@')[2]!r} is not a moment of {readable(video)}: give "
                           "seconds (83.5) or HH:MM:SS (00:01:23)")
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
        """The embedding of the frame a video shows at `seconds`: BadPath for no such file, BadImage for one
        that is not a usable video, BadQuery for a moment past its end."""
        if not os.path.isfile(video):
            raise BadPath(f"No such file: {readable(video)}")
        try:
            picture = frame_at(video, seconds, self.encoder.image_size)
        except BadImage as e:
            raise BadImage(f"{readable(video)} is not a usable video ({e})") from None
        except BadQuery as e:
            raise BadQuery(f"{readable(video)}: {e}") from None
        return self.encoder.encode_pil([picture])[0]

    def term_vector(self, term: str) -> np.ndarray:
        """A query term is an image if it names an existing file, else text (BadQuery for one that is not UTF-8)."""
        if not term.strip():
            raise BadQuery("Empty query term")
        if os.path.isfile(term):
            return self.image_vector(term)
        return self.text_vector(check_text(term, "The query", " (and no file has that name)"))

    def text_vector(self, text: str) -> np.ndarray:
        """A text's embedding; a text searched before is read from the library's text cache, without
        loading the model (see textcache.py). A text longer than the model's context is encoded from its
        beginning, noted in `query_notes`, and not cached (so that it is noted every time). BadQuery for a
        text that is not valid UTF-8, and for one the model gives no usable vector (see `_encode_text`)."""
        from .textcache import TextVectorCache

        check_text(text, "The query")
        model = self.model
        cache = TextVectorCache(self.path, model, self._dim()) if model is not None else None
        vector = cache.get(text) if cache is not None else None
        if vector is None:
            vector, context = self._encode_text(text)
            if context is not None:
                self.query_notes.append(f"The query {_shown(text)!r} is longer than the model's context of "
                                        f"{context} tokens: only its beginning is searched")
            elif cache is not None and not self.readonly:
                cache.put(text, vector)
        return vector

    def _encode_text(self, text: str) -> tuple[np.ndarray, int | None]:
        """The vector (dim,) and, when the text was cut to fit, the model's context length in tokens.
        By the model when it is loaded; else by the library's ONNX text tower, without importing torch
        (see textmodel.py); else by loading the model, then writing the tower for the next query. A tower that
        gives a vector that is not a finite unit vector (damaged weights) counts as unusable, like one that cannot
        be read: the model encodes the text and writes the tower again. BadQuery when the model's own vector is not
        usable either."""
        vectors = self._tower_vectors([text])
        if vectors is not None and self._text_model is not None:
            return vectors[0], self._text_model.context_length if self._text_model.truncated(text) else None
        written = self._encoder is not None or self.model is None
        encoder = self.encoder
        vector = self._usable(encoder.encode_texts([text]), [text])[0]
        if not written:
            self._write_text_model()
        return vector, encoder.context_length if encoder.truncated(text) else None

    def _encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts' vectors (len(texts), dim): by the library's ONNX text tower when the model is not loaded and the
        tower is written and gives finite unit vectors (see textmodel.py), else by the model (BadQuery when its
        vectors are not usable either)."""
        vectors = self._tower_vectors(texts)
        return vectors if vectors is not None else self._usable(self.encoder.encode_texts(texts), texts)

    def _tower_vectors(self, texts: Sequence[str]) -> np.ndarray | None:
        """The texts' vectors (len(texts), dim) by the library's ONNX text tower, when the model is not loaded and
        the tower is written, runs and gives finite unit vectors; else None (and the tower is dropped: damaged)."""
        model = self.model
        if self._encoder is not None or model is None:
            return None
        self._text_model = self._text_model or TextModel.load(self.path, model)
        if self._text_model is None:
            return None
        try:
            vectors = self._text_model.encode(texts)
        except Exception:  # noqa: BLE001 - onnxruntime raises its own untyped errors for a damaged graph
            vectors = None
        if vectors is not None and are_unit_vectors(vectors, self._dim()):
            return vectors
        self._text_model = None
        return None

    def _usable(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """The model's text `vectors` (n, dim) when all are finite unit vectors, else BadQuery naming the first text
        whose vector is not (NaN, infinite or zero: damaged weights)."""
        dim = self._dim()
        for text, vector in zip(texts, vectors):
            if not are_unit_vectors(vector, dim):
                raise BadQuery(f"The model {self.encoder.spec.label} gives no usable vector for the text "
                               f"{_shown(text)!r} (NaN, infinite or zero): its weights may be damaged")
        return vectors

    def _export_text_model_aside(self) -> "BaseProcess | None":
        """`_write_text_model` started in a forked process, to run beside an indexing run on CPU: its decode workers
        leave cores idle while they start and finish, and the export (about 5 s for ViT-B-32) fills them. None where
        the model is not loaded yet (it is exported after the run then), its tower is written already, or it is not
        a CPU model in a process that can fork (see `pipeline.workers_can_encode`)."""
        encoder = self._encoder
        if encoder is None or text_model_written(self.path, encoder.spec):
            return None
        from .pipeline import workers_can_encode  # imports torch: only once the model is loaded

        if not workers_can_encode(encoder.device):
            return None
        process = multiprocessing.get_context("fork").Process(target=self._write_text_model_forked, daemon=True)
        process.start()
        return process

    def _write_text_model_forked(self) -> None:
        import torch

        from .headstart import settle_forked

        settle_forked()
        torch.set_num_threads(1)  # an OpenMP thread team does not survive a fork: it would wait for its lost threads
        self._write_text_model()

    def _stop_export(self, process: "BaseProcess") -> None:
        """Stop an export started by `_export_text_model_aside` and remove the folder it was writing. Killed: it
        holds nothing to save, and a stopped process would not act on SIGTERM."""
        from .textexport import remove_abandoned_staging

        process.kill()
        process.join()
        remove_abandoned_staging(self.path)

    def _write_text_model(self) -> None:
        """Export the loaded model's text tower into the library; skipped quietly where it cannot be written."""
        from .textexport import export_text_model

        try:
            export_text_model(self.path, self._encoder)
        except (OSError, RuntimeError):  # a read-only library, a full disk, an exporter that cannot trace
            pass

    def image_vector(self, image: str | os.PathLike[str]) -> np.ndarray:
        """The stored vector when the file is indexed and unchanged, else a fresh embedding."""
        path = os.path.abspath(os.fspath(image))
        if not os.path.exists(path):
            raise BadPath(f"No such file: {readable(os.fspath(image))}")
        row = self.catalog.row_by_path(path)
        st = os.stat(path)
        if row and (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            return np.frombuffer(row["vector"], dtype=np.float32)
        return self._embed_file(path, os.fspath(image))

    def _embed_file(self, path: str, given: str) -> np.ndarray:
        """The embedding (dim,) of the image or video at `path` (`given` as the user named it, for errors)."""
        from .decode import identify, load
        from .raw import is_raw

        try:
            if is_video(path):  # not indexed: the mean of its sampled frames, as indexing would store
                clip = sample(path, Sampling(), self.encoder.image_size)
                return unit(self.encoder.encode_pil([f.image for f in clip.frames]).mean(axis=0))
            if not is_raw(path):  # (Pillow cannot read a RAW file's header)
                identify(path)  # before the model loads: a text file given by mistake fails at once
            picture, _ = load(path, self.encoder.image_size)
            pixels = self.encoder.preprocess(picture)
        except BadImage as e:
            raise BadImage(f"{readable(given)} is not a usable image ({e})") from None
        except Exception as e:  # noqa: BLE001 - whatever preprocessing raises, the file is not usable
            raise BadImage(f"{readable(given)} is not a usable image ({type(e).__name__}: {e})") from None
        return self.encoder.encode_images(pixels[None])[0]

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
        _check_sort(sort)
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
                         time_s=moments[i] / 1000 if i in moments else None)
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
        from .raw import is_pair, is_raw, shot_of

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
        prefer: Sequence[str] = (),
        exact_only: bool = False,
    ) -> DedupReport:
        """Duplicate groups around keepers, plus similar series with a `series_threshold` (see duplicates.py).

        `threshold` defaults to the one measured for the library's model; `exact_only` groups byte-identical
        files from their content hashes alone (no model, no vectors). Files under a `prefer` folder win as
        keepers. Only reads the catalog: no file is ever deleted or moved.
        """
        from .duplicates import default_threshold, find_duplicates

        if exact_only:
            threshold, series_threshold = None, None
        elif threshold is None:
            threshold = default_threshold(self.model.arch if self.model else None)
        with self.catalog.snapshot():
            allowed = filters.allowed_ids(self.catalog) if filters else None
            return find_duplicates(self.catalog, threshold=threshold, series_threshold=series_threshold,
                                   allowed=allowed, prefer=prefer)

    def check_quarantine_folder(self, folder: str | os.PathLike[str]) -> None:
        """Raises BadPath when `folder` is inside a folder this library indexes, where its copies would be
        indexed again (symbolic links resolved on both sides)."""
        wanted = {os.path.abspath(folder), os.path.realpath(folder)}
        for root in self.catalog.get_meta("roots", []):
            if any(_under(w, r) for w in wanted for r in {root, os.path.realpath(root)}):
                outside = f"{root.rstrip(os.sep)}-duplicates"
                hint = f", e.g. {readable(outside)}" if os.path.dirname(root) != root else ""
                where = "is" if wanted & {root, os.path.realpath(root)} else "is inside"
                raise BadPath(f"{readable(os.fspath(folder))} {where} {readable(root)}, a folder this library "
                              f"indexes: its copies would be indexed again; move them to a folder outside it{hint}")
        library = {os.path.abspath(self.path), os.path.realpath(self.path)}
        if any(_under(w, r) for w in wanted for r in library):
            raise BadPath(f"{readable(os.fspath(folder))} is in the library's own folder {readable(os.fspath(self.path))}: "
                          "removing the library would lose the copies; move them to a folder outside it")

    def quarantine(self, report: DedupReport, folder: str | os.PathLike[str]) -> MoveReport:
        """Move the exact and near members of the report's groups into `folder` (see quarantine.py), each
        only if it and its keeper still hold the bytes they were indexed with; writes the undo manifest.
        Raises BadPath, moving nothing, for a folder inside one the library indexes."""
        from .quarantine import PlannedMove, move_to

        self.check_quarantine_folder(folder)
        wanted = [m.id for g in report.groups for m in (g.keeper, *g.reclaimable)]
        hashes = {i: row["hash"] for i, row in self.catalog.rows(wanted).items()}
        return move_to([PlannedMove(m.path, hashes.get(m.id, ""), g.keeper.path, hashes.get(g.keeper.id, ""))
                        for g in report.groups for m in g.reclaimable], folder)

    def dismiss(self, image_a: int, image_b: int) -> None:
        """Remember that two images are not duplicates: dedup never links their pictures again.

        Raises BadQuery when either id is not in the catalog or both hold the same bytes."""
        rows = self.catalog.rows([image_a, image_b])
        missing = [i for i in (image_a, image_b) if i not in rows]
        if missing:
            raise BadQuery(f"No image with id {missing[0]} in the catalog")
        if rows[image_a]["hash"] == rows[image_b]["hash"]:
            raise BadQuery("These files hold the same bytes: they are duplicates")
        self.catalog.dismiss_pair(rows[image_a]["hash"], rows[image_b]["hash"])

    def newest(self, filters: Filters = Filters(), *, offset: int = 0, limit: int = 40) -> list[ListedImage]:
        """Browsing without a query: the images passing `filters`, newest first by date taken (else file time),
        `limit` of them from position `offset` (0-based)."""
        if limit < 1 or offset < 0:
            raise BadQuery("The number of results must be at least 1 and the offset at least 0")
        with self.catalog.snapshot():
            ids = newest_ids(self.catalog, filters, offset, limit)
            rows = self.catalog.rows(ids)
        return [ListedImage(r["path"], r["width"], r["height"], r["taken_at"], image_date(r["taken_at"], r["mtime_ns"]),
                            r["camera"]) for r in (rows[i] for i in ids if i in rows)]

    def matching(self, filters: Filters) -> int:
        """How many images pass `filters`."""
        return count_passing(self.catalog, filters)

    def filter_values(self) -> FilterValues:
        """The cameras, extensions and tags the library's images have, each with its number of images."""
        with self.catalog.snapshot():
            cameras, extensions = facets(self.catalog)
            tags = tag_counts(self.catalog)
        return FilterValues(tuple(cameras), tuple(extensions), tuple((t.label, t.images) for t in tags))

    def count(self) -> int:
        """The number of images in the library; 0 for one not created yet (nothing is written)."""
        return 0 if self._catalog is None else self.catalog.count()

    def info(self) -> LibraryInfo:
        model = self.model
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        file = self.path / INDEX_FILE
        on_disk = VectorIndex.load(file) if file.exists() else None
        index: dict[str, object] = {"type": on_disk.kind if on_disk else "none", "choice": self.index_type}
        if on_disk is not None:
            record = self._build_record()
            index.update(on_disk.params(), vectors=len(on_disk))
            if record is not None and record.describes(on_disk):
                index.update(built_for=record.built_for, recall_at_10=record.recall_at_10,
                             text_recall_at_10=record.text_recall_at_10, text_queries=record.text_queries,
                             build_s=round(record.build_s, 1))
        return LibraryInfo(
            path=str(self.path),
            model={**(model.to_dict() if model else {}), "dim": self.catalog.get_meta("dim")},
            images=self.catalog.count(),
            index_type=str(index["type"]),
            index=index,
            size_bytes=size,
            last_indexed=self.catalog.get_meta("last_indexed"),
            preprocessing=self.catalog.get_meta("preprocessing"),
            warning=self.preprocessing_warning(),
        )
