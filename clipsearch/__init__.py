"""clipsearch: semantic image search over a photo library with CLIP, FAISS and SQLite."""
from .errors import ClipsearchError
from .filters import Filters
from .library import Library
from .models import ModelSpec, model_spec
from .results import (DedupReport, DuplicateGroup, DuplicateMember, EmbedReport, IndexReport, IngestReport, LibraryInfo,
                      SearchResult, Skip, TagCount, TagReport)

__all__ = ["ClipsearchError", "DedupReport", "DuplicateGroup", "DuplicateMember", "EmbedReport", "Filters",
           "IndexReport", "IngestReport", "Library", "LibraryInfo", "ModelSpec", "SearchResult", "Skip", "TagCount",
           "TagReport", "model_spec"]
