"""clipsearch: semantic image search over a photo library with CLIP, FAISS and SQLite.

The public names below are imported on first use (PEP 562 `__getattr__`), so that a command needs to
import only the modules it runs: a search in a fresh process never imports Pillow, torch or the
indexing stages (tests/test_cold_query.py).
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import ClipsearchError
    from .filters import Filters
    from .library import Library
    from .models import ModelSpec, model_spec
    from .results import (DedupReport, DuplicateGroup, DuplicateMember, EmbedReport, IndexReport, IngestReport,
                          LibraryInfo, SearchResult, Skip, TagCount, TagReport)

_SOURCES = {
    "ClipsearchError": "errors", "Filters": "filters", "Library": "library", "ModelSpec": "models",
    "model_spec": "models", "DedupReport": "results", "DuplicateGroup": "results", "DuplicateMember": "results",
    "EmbedReport": "results", "IndexReport": "results", "IngestReport": "results", "LibraryInfo": "results",
    "SearchResult": "results", "Skip": "results", "TagCount": "results", "TagReport": "results",
}
"""Each public name and the module that defines it."""

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
