"""Small frozen result objects returned by the library; `--json` is built from them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
    time_s: float | None = None
    """For a video: its best-matching moment, in seconds from the start (None for a photo)."""


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


@dataclass(frozen=True)
class IndexReport:
    added: int
    updated: int
    moved: int
    removed: int
    unchanged: int
    skipped: tuple[Skip, ...]
    elapsed_s: float

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.elapsed_s if self.elapsed_s > 0 else 0.0


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


def to_dict(result: Any) -> dict[str, Any]:
    return asdict(result)


@dataclass(frozen=True)
class DuplicateMember:
    path: str
    size: int
    width: int
    height: int
    date: str
    """Date taken (EXIF), or the file's modification time when it has none."""
    tier: str
    """Why it is in its group: "keeper" (the suggested one to keep), "exact" (same bytes as the keeper
    or as another member), "near" (a near-duplicate) or "series" (another shot of the same scene)."""
    similarity: float
    """Cosine similarity to the group's keeper."""


@dataclass(frozen=True)
class DuplicateGroup:
    tier: str
    """"exact" (all the same bytes), "near" (some near-duplicates) or "series"."""
    members: tuple[DuplicateMember, ...]
    """The suggested keeper first."""
    reclaimable_bytes: int
    """What deleting every member but the keeper would free."""

    @property
    def keeper(self) -> DuplicateMember:
        return self.members[0]


@dataclass(frozen=True)
class DedupReport:
    threshold: float
    series_threshold: float | None
    images: int
    groups: tuple[DuplicateGroup, ...]
    reclaimable_bytes: int
    """Freed by keeping only the keeper of each exact and near group (series groups not counted)."""
    elapsed_s: float

    def of_tier(self, tier: str) -> tuple[DuplicateGroup, ...]:
        return tuple(g for g in self.groups if g.tier == tier)


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
