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
    size_bytes: int
    last_indexed: str | None


def to_dict(result: Any) -> dict[str, Any]:
    return asdict(result)
