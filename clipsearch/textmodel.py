"""A library's text tower as ONNX files beside the catalog, so that a new text query needs neither
torch nor open_clip: ONNX Runtime runs the tower, Hugging Face `tokenizers` runs open_clip's BPE (or, for a model
with a Hugging Face tokenizer, transformers' own tokenizer after open_clip's cleaning step, see `CLEANING`).

Importing torch and open_clip takes seconds; this path takes a fraction of one. The files are
written by a process that has the model loaded anyway (an index run that embedded images, or a
query that fell back to torch; see textexport.py) into `text-model-<key>/`, the key naming the
model's identity, so a library re-indexed with another model never uses a stale tower. They are
an optimisation only: when they are missing, damaged or cannot be written, queries go through
open_clip as before. Vectors equal open_clip's within 1e-5 (tests/test_textmodel.py).
"""
from __future__ import annotations

import hashlib
import html
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .models import ModelSpec

TEXT_MODEL_PREFIX = "text-model-"
GRAPH_FILE = "text-optimised.onnx"
"""The graph, optimised for ONNX Runtime's CPU provider at export; its weights are in `text-optimised.onnx.data`,
which ONNX Runtime memory-maps instead of parsing. (A library's tower written before graphs were optimised at
export, `text.onnx`, is not used: the next query writes this one.)"""
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "text-model.json"
"""{"cleaning": a key of `CLEANING`}: written beside a tower whose tokenizer is a Hugging Face one; without it the
tokenizer is open_clip's CLIP BPE, fed the words of `words`."""


def text_model_dir(directory: Path, spec: ModelSpec) -> Path:
    """Where the text tower of the model `spec` lives in the library at `directory`."""
    return directory / (TEXT_MODEL_PREFIX + hashlib.sha256(spec.identity.encode()).hexdigest()[:16])


def text_model_written(directory: Path, spec: ModelSpec) -> bool:
    """Whether the library at `directory` holds the files of the text tower of `spec` (not whether they load)."""
    folder = text_model_dir(directory, spec)
    return all((folder / name).is_file() for name in (GRAPH_FILE, GRAPH_FILE + ".data", TOKENIZER_FILE))


WORDS = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
"""open_clip's `SimpleTokenizer` pattern, which splits a cleaned text into the words BPE then encodes."""


def words(text: str) -> list[str]:
    """The words of `text` as open_clip's CLIP tokenizer sees them: cleaned (ftfy, HTML entities, spaces,
    lower case: its `_clean_lower`), then split by its pattern with the same `regex` module (Oniguruma's
    Unicode tables, used by `tokenizers`' own splitter, class some rare letters differently)."""
    import regex

    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return regex.findall(WORDS, " ".join(text.split()).strip().lower(), regex.IGNORECASE)


def _basic_clean(text: str) -> str:
    """open_clip's `basic_clean`: ftfy, HTML entities, surrounding spaces."""
    return html.unescape(html.unescape(_fix_text(text))).strip()


def _canonicalize(text: str) -> str:
    """open_clip's `canonicalize_text` (after `basic_clean`): underscores as spaces, no ASCII punctuation, lower case,
    single spaces."""
    text = _basic_clean(text).replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
    return " ".join(text.split()).strip()


def _whitespace(text: str) -> str:
    """open_clip's `whitespace_clean` (after `basic_clean`): single spaces."""
    return " ".join(_basic_clean(text).split()).strip()


CLEANING: dict[str, Callable[[str], str]] = {
    "whitespace": _whitespace,
    "lower": lambda text: _whitespace(text).lower(),
    "canonicalize": _canonicalize,
}
"""open_clip's cleaning steps before a Hugging Face tokenizer (its `get_clean_fn`), by name, without open_clip."""


def _fix_text(text: str) -> str:
    """ftfy.fix_text, which leaves printable ASCII without HTML entities as it is: such a text (most
    queries) skips importing ftfy, a tenth of a cold query."""
    if text.isascii() and text.isprintable() and "&" not in text:
        return text
    import ftfy

    return ftfy.fix_text(text)


@dataclass
class TextModel:
    session: Any  # onnxruntime.InferenceSession: (N, L) int64 token ids -> (N, dim) float32 features
    tokenizer: Any  # tokenizers.Tokenizer: adds the special tokens, truncates, pads (to the longest, or the context)
    cleaning: str | None = None
    """For a Hugging Face tokenizer, the name of open_clip's cleaning step before it (see `CLEANING`); None for
    open_clip's CLIP tokenizer, fed the words of `words`."""

    @classmethod
    def load(cls, directory: Path, spec: ModelSpec) -> "TextModel | None":
        """The text tower of `spec` in the library at `directory`, or None when it is missing or unusable."""
        if not text_model_written(directory, spec):
            return None
        return cls.read(text_model_dir(directory, spec))

    @classmethod
    def read(cls, folder: Path) -> "TextModel | None":
        """The text tower written in `folder`, or None when it is unusable."""
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: a damaged file falls back to open_clip quietly
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # done at export
        # Repacking every weight matrix at load costs more than it saves in the one query a process runs.
        options.add_session_config_entry("session.disable_prepacking", "1")
        try:
            session = onnxruntime.InferenceSession(str(folder / GRAPH_FILE), options,
                                                   providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
            config = folder / CONFIG_FILE
            cleaning = json.loads(config.read_text(encoding="utf-8"))["cleaning"] if config.is_file() else None
        except Exception:  # onnxruntime and tokenizers raise their own untyped errors for damaged files
            return None
        if cleaning is not None and cleaning not in CLEANING:
            return None
        return cls(session, tokenizer, cleaning)

    def _encodings(self, texts: Sequence[str]) -> list[Any]:
        if self.cleaning is None:
            return self.tokenizer.encode_batch([words(t) for t in texts], is_pretokenized=True)
        return self.tokenizer.encode_batch([CLEANING[self.cleaning](t) for t in texts])

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids (N, L) as open_clip's tokenizer gives them: for its CLIP tokenizer cut after the longest text's
        end token, for a Hugging Face one padded to the context length as open_clip pads them."""
        return np.array([e.ids for e in self._encodings(texts)], dtype=np.int64)

    @property
    def context_length(self) -> int:
        """The most tokens a text may have, its start and end tokens included; the rest is cut off."""
        return int(self.tokenizer.truncation["max_length"])

    def truncated(self, text: str) -> bool:
        """Whether `text` has more tokens than `context_length` (open_clip's tokenizer cuts it the same way)."""
        return bool(self._encodings([text])[0].overflowing)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 text vectors (N, dim)."""
        features = self.session.run(None, {"tokens": self.tokenize(texts)})[0].astype(np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)
