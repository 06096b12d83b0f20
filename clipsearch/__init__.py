"""clipsearch: semantic image search over a photo library with CLIP, FAISS and SQLite."""
from .errors import ClipsearchError
from .library import Library
from .models import ModelSpec, model_spec
from .results import IndexReport, LibraryInfo, SearchResult, Skip

__all__ = ["ClipsearchError", "IndexReport", "Library", "LibraryInfo", "ModelSpec", "SearchResult", "Skip", "model_spec"]
