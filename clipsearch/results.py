"""Small frozen result objects returned by the library; `--json` is built from them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .paths import path_fields


@dataclass(frozen=True)
class SearchResult:
    path: str
    score: float
    width: int
    height: int
    taken_at: str | None
    """Date taken (EXIF), if the file records one."""
    date: str
    """Date taken, else the file's modification time: what `sort="date"` orders by."""
    snippet: str | None = None
    """The lines of text read in the image that hold the query's words (see textsearch.py), if any."""
    highlights: tuple[tuple[int, int], ...] = ()
    """(start, end) character offsets of each matched word in `snippet`."""
    fused: float | None = None
    """The reciprocal rank fusion score results are ordered by when CLIP and the text were ranked together."""
    time_s: float | None = None
    """For a video: its best-matching moment, in seconds from the start (None for a photo)."""
    good: bool | None = None
    """Whether it is a good match for a text query: its score beats generic captions' on the same image by the
    model's margin, or the words were found in it (see relevance.py); None when not judged (image queries)."""


@dataclass(frozen=True)
class ListedImage:
    """An image listed without a query (`Library.newest`)."""

    path: str
    width: int
    height: int
    taken_at: str | None
    date: str
    """Date taken, else the file's modification time: what the list is ordered by."""
    camera: str | None


@dataclass(frozen=True)
class FilterValues:
    """The values the camera, extension and tag filters can take in a library, each with its number of
    images, most common first."""

    cameras: tuple[tuple[str, int], ...]
    extensions: tuple[tuple[str, int], ...]
    """Lower case without the dot; "" for files without one."""
    tags: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


@dataclass(frozen=True)
class PassedOver:
    """Files an index run found and left out because their extension is not an image format's."""

    extension: str
    """Lower case with its dot (".txt"), or "" for files without one."""
    files: int


@dataclass(frozen=True)
class OfflineRoot:
    """A root given to `index` that looks unmounted or emptied: its rows were kept, not removed."""

    root: str
    found: int
    """Of its indexed files, how many were found (moved files included)."""
    indexed: int
    """How many files the library held under it before the run."""
    exists: bool

    @property
    def kept(self) -> int:
        return self.indexed - self.found


@dataclass(frozen=True)
class IndexReport:
    added: int
    updated: int
    moved: int
    removed: int
    unchanged: int
    skipped: tuple[Skip, ...]
    elapsed_s: float
    passed_over: tuple[PassedOver, ...] = ()
    """Most files first."""
    offline: tuple[OfflineRoot, ...] = ()
    """Roots whose missing files were kept (see `Library.index`'s `prune`)."""
    ocr: OcrReport | None = None
    """The OCR pass that followed, when the library reads text in images."""

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class OcrReport:
    """What an OCR pass did (see ocr.py)."""

    read: int
    """Images whose text was read (with or without finding any)."""
    gated_out: int
    """Images the gate judged to hold no text, so not read."""
    with_text: int
    """Read images in which some text was found."""
    skipped: tuple[Skip, ...]
    full_text_index: bool
    """Whether SQLite's FTS5 trigram index serves text searches (else they scan the text)."""
    elapsed_s: float

    @property
    def images_per_s(self) -> float:
        """Images read or gated out per second."""
        done = self.read + self.gated_out
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class LibraryInfo:
    path: str
    model: dict[str, Any]
    images: int
    index_type: str
    """The type of the index file: "flat", "ivf", "ivfpq", "hnsw" (or "none" before the first save)."""
    index: dict[str, Any]
    """Its type, the type asked for ("choice": auto or a type), parameters and build record."""
    size_bytes: int
    last_indexed: str | None
    preprocessing: dict[str, Any] | None = None
    """How images were turned into model input, and the open_clip version (None in older libraries)."""
    warning: str | None = None
    """Set when the installed open_clip differs from the recorded one (see `Library.preprocessing_warning`)."""


def to_dict(result: Any) -> dict[str, Any]:
    """A result as plain data for JSON: every `path` as `paths.path_fields` gives it (readable, plus the
    exact bytes in `path_bytes_b64` where the name is not UTF-8)."""
    return _with_path_fields(asdict(result))


def _with_path_fields(data: Any) -> Any:
    if isinstance(data, dict):
        fields = {k: _with_path_fields(v) for k, v in data.items()}
        return {**fields, **path_fields(data["path"])} if isinstance(data.get("path"), str) else fields
    if isinstance(data, (list, tuple)):
        return [_with_path_fields(v) for v in data]
    return data


@dataclass(frozen=True)
class DuplicateMember:
    id: int
    """The image's catalog id."""
    path: str
    size: int
    width: int
    height: int
    date: str
    """Date taken (EXIF), or the file's modification time when it has none."""
    tier: str
    """Why it is in its group: "keeper" (the suggested one to keep), "exact" (same bytes as the keeper or as
    another member), "near" (same pixels: resized, re-encoded, brightness/contrast), "edited" (crop, flip,
    rotation, filter), "series" (another shot of the same moment), "alias" (a hard link or symlink to another
    member: the same file) or "pair" (the RAW or JPEG of the keeper's shot)."""
    similarity: float
    """Cosine similarity to the group's keeper (1.0 for exact copies and aliases)."""
    phash_distance: int | None
    """Bits (of 256) in which its perceptual hash differs from the keeper's (videos: the largest distance from a
    sampled frame of either to its nearest frame in the other); None when either is unknown."""
    kind: str = "photo"
    """"photo" or "video": a group holds one kind only."""
    duration_s: float | None = None
    """A video's length in seconds, where known."""
    mirrored: bool = False
    """A mirror image of the keeper (a flipped copy): phash_distance is then counted to the keeper's mirror image."""


RECLAIMABLE_TIERS = ("exact", "near")
"""Members that deleting frees space without losing a picture: the delete list and --move-to take only these."""


@dataclass(frozen=True)
class DuplicateGroup:
    tier: str
    """The loosest tier of its copies: "exact", "near", "edited"; "series" when it holds no copy, only other shots;
    "pair" for a RAW+JPEG pair alone."""
    members: tuple[DuplicateMember, ...]
    """The suggested keeper first."""
    keeper_reason: str
    """Why the keeper was chosen over the others, e.g. "original name (the others look derived)"."""
    reclaimable_bytes: int
    """What deleting the exact and near members would free (edited copies, series, aliases and pairs are kept)."""

    @property
    def keeper(self) -> DuplicateMember:
        return self.members[0]

    @property
    def reclaimable(self) -> tuple[DuplicateMember, ...]:
        return tuple(m for m in self.members if m.tier in RECLAIMABLE_TIERS)


@dataclass(frozen=True)
class DedupReport:
    threshold: float | None
    """None with exact_only."""
    series_threshold: float | None
    images: int
    groups: tuple[DuplicateGroup, ...]
    reclaimable_bytes: int
    """Freed by deleting every exact and near member (the keepers, edits, series, aliases and pairs stay)."""
    exact_copies: int
    """Files with the same bytes as another member of their group, whatever the group's tier."""
    exact_bytes: int
    aliases: int
    """Hard links and symlinks to another member: the same file, never counted as reclaimable."""
    exact_only: bool
    elapsed_s: float

    def of_tier(self, tier: str) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.groups if g.tier == tier)

    def reclaimable(self) -> list[DuplicateMember]:
        """Every exact and near member, in report order: the delete list."""
        return [m for g in self.groups for m in g.reclaimable]


@dataclass(frozen=True)
class MoveReport:
    """What `dedup --move-to` or `undo-move` did: files moved, and those left alone with the reason."""

    moved: tuple[tuple[str, str], ...]
    """(from, to) pairs."""
    skipped: tuple[Skip, ...]
    manifest: str | None
    already: tuple[str, ...] = ()
    """undo-move only: files already back at their origin (restored by an earlier undo)."""


@dataclass(frozen=True)
class TagReport:
    labels: tuple[str, ...]
    tagged: int
    already_tagged: int
    elapsed_s: float


@dataclass(frozen=True)
class TagCount:
    label: str
    images: int


@dataclass(frozen=True)
class EmbedReport:
    """What `clipsearch embed` did: shards written now, shards found already written, files skipped."""

    shards: int
    written: int
    already_written: int
    embedded: int
    skipped: tuple[Skip, ...]
    elapsed_s: float

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class IngestReport:
    shards: int
    added: int
    updated: int
    unchanged: int
    """Files the library already held in this version or a newer one."""
    skipped: tuple[Skip, ...]
    elapsed_s: float
