"""Reading the text in indexed images (OCR), offline, with RapidOCR.

RapidOCR runs PaddleOCR's PP-OCR models (text detection, then recognition of each detected line,
Chinese and English) in ONNX Runtime; the models ship inside the `rapidocr` wheel, so nothing is
downloaded. It is the optional extra `clipsearch[ocr]`. Detection sees the image with its longest
side at most OCR_SIDE pixels (PaddleOCR's default `det_limit_side_len`); lines are recognised from
the image decoded at up to twice that. The 180-degree line classifier is not run: upside-down text
is not read.

The gate. OCR costs far more per image than the embedding, and most photos hold no text, so with
the "auto" gate an image is read only when
  1. its CLIP vector (already in the catalog: nothing to compute) says it looks like text: the
     softmax, at the model's logit scale, of its cosine similarity to TEXT_PROMPTS and PHOTO_PROMPTS
     gives the text prompts at least GATE_PROBABILITY together (screenshots, documents, receipts,
     slides, whose small text the next test would miss), or
  2. the text detector alone, run on a GATE_SIDE-pixel thumbnail (a JPEG is decoded at reduced scale
     for it: a fraction of the cost of reading),
     finds at least one box shaped like a line of text, at least LINE_ASPECT times as long as it is
     high, either way (signs, posters, captions: large text; a lone glyph or blob does not count).
Images passing neither are recorded as "gated" and not read. The "all" gate reads every image.

The pass is incremental and crash-safe like the embeddings: it reads only images without a text
row (plus the gated ones under the "all" gate), writes each chunk's results in one transaction, and
checks each file's content hash against the catalog, so text is never filed under a changed image.
"""
from __future__ import annotations

import functools
import importlib.util
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .catalog import Catalog
from .errors import BadImage, BadOption, ExtraNotInstalled
from .results import OcrReport, Skip
from .tagging import logit_scale, probabilities
from .textsearch import TextLine, count_pending, ensure_fts, pending, write_text
from .video import file_hash, frame_at, is_video

if TYPE_CHECKING:
    from PIL import Image

    from .encoder import Encoder

GATES = ("auto", "all")
OCR_SIDE = 960
GATE_SIDE = 320
GATE_PROBABILITY = 0.5
TEXT_PROMPTS = ("a screenshot", "a document", "a receipt", "a sign with text", "text", "a page of text",
                "a slide with text", "a poster with words")
PHOTO_PROMPTS = ("a photo", "a photo of a person", "a photo of an animal", "a photo of a landscape",
                 "a photo of a building", "a photo of food", "a photo of an object", "a drawing")
MIN_LINE_SCORE = 0.5
"""Recognised lines less certain than this are dropped (RapidOCR's default `text_score`)."""
MIN_LINE_CHARS = 2
"""Lines shorter than this are dropped: a lone "O" or "X" is far more often a shape than a word."""
LINE_ASPECT = 1.5
CHUNK = 16
"""Images per transaction."""
INSTALL_HINT = "pip install 'clipsearch[ocr]'"

Progress = Callable[[int, int], None]


def require_engine() -> None:
    """Raise ExtraNotInstalled, naming the install command, unless the OCR engine can be imported."""
    if importlib.util.find_spec("rapidocr") is None or importlib.util.find_spec("onnxruntime") is None:
        raise ExtraNotInstalled(f"Reading text in images needs the ocr extra: {INSTALL_HINT}")


def checked_gate(gate: str) -> str:
    if gate not in GATES:
        raise BadOption(f"Unknown OCR gate {gate!r}; use one of {', '.join(GATES)}")
    return gate


class Reader:
    """The OCR engine; loading it (importing OpenCV and ONNX Runtime, checking and loading the models) takes seconds."""

    def __init__(self) -> None:
        require_engine()
        from rapidocr import RapidOCR

        self._engine = RapidOCR(params={
            "Global.log_level": "critical", "Global.use_cls": False, "Global.text_score": MIN_LINE_SCORE,
            "Det.limit_type": "max", "Det.limit_side_len": OCR_SIDE,
        })

    def finds_text(self, image: Image.Image) -> bool:
        """Whether the detector finds a box shaped like a line of text in a GATE_SIDE thumbnail of an RGB image."""
        small = image.copy()
        small.thumbnail((GATE_SIDE, GATE_SIDE))
        found = self._engine(small, use_det=True, use_cls=False, use_rec=False)
        return found.boxes is not None and any(_line_shaped(np.asarray(box, float)) for box in found.boxes)

    def read(self, image: Image.Image, scale: float = 1.0) -> list[TextLine]:
        """The lines of text in an RGB image, top to bottom; boxes in its pixels times `scale`."""
        found = self._engine(image, use_det=True, use_cls=False, use_rec=True)
        if found.txts is None:
            return []
        return [TextLine(text, float(score), tuple((round(float(x) * scale), round(float(y) * scale)) for x, y in box))
                for text, score, box in zip(found.txts, found.scores, found.boxes)
                if len(text.strip()) >= MIN_LINE_CHARS]


def _line_shaped(box: np.ndarray) -> bool:
    """Whether a (4, 2) quadrilateral is at least LINE_ASPECT times longer one way than the other."""
    width = np.linalg.norm(box[1] - box[0])
    height = np.linalg.norm(box[3] - box[0])
    return max(width, height) >= LINE_ASPECT * max(min(width, height), 1.0)


@functools.cache
def shared_reader() -> Reader:
    """One Reader per process, loaded on first use."""
    return Reader()


class Gate:
    """Step 1 of the "auto" gate: which CLIP vectors look like text (see the module docstring)."""

    def __init__(self, encoder: "Encoder"):
        self.prompts = encoder.encode_texts(list(TEXT_PROMPTS + PHOTO_PROMPTS))
        self.scale = logit_scale(encoder)

    def looks_like_text(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) unit vectors -> (n,) booleans."""
        p = probabilities(vectors, self.prompts, self.scale)
        return p[:, : len(TEXT_PROMPTS)].sum(axis=1) >= GATE_PROBABILITY


def read_catalog(catalog: Catalog, encoder: Callable[[], "Encoder"], gate: str = "auto",
                 progress: Progress | None = None) -> OcrReport:
    """Read the text in the images that have none recorded yet; `encoder` is called only for the "auto" gate
    and only if there is something to read. A file that cannot be read, or changed since it was indexed, is
    skipped and counted (and tried again next run)."""
    started = time.monotonic()
    retry_gated = checked_gate(gate) == "all"
    require_engine()
    indexed = ensure_fts(catalog)
    todo = count_pending(catalog, retry_gated)
    counts = {"read": 0, "gated": 0, "text": 0}
    skipped: list[Skip] = []
    if todo:
        reader = shared_reader()
        clip_gate = Gate(encoder()) if gate == "auto" else None
        last = 0
        while rows := pending(catalog, retry_gated, last, CHUNK):
            last = rows[-1]["id"]
            likely = (clip_gate.looks_like_text(np.vstack([np.frombuffer(r["vector"], np.float32) for r in rows]))
                      if clip_gate else np.ones(len(rows), bool))
            results = []
            for row, wanted in zip(rows, likely):
                outcome = _read_one(reader, row, force=bool(wanted))
                if isinstance(outcome, Skip):
                    skipped.append(outcome)
                    continue
                results.append((row["id"], *outcome))
                counts[outcome[0]] += 1
                counts["text"] += bool(outcome[1])
            write_text(catalog, results)
            if progress:
                progress(len(rows), todo)
    return OcrReport(counts["read"], counts["gated"], counts["text"], tuple(skipped), indexed,
                     time.monotonic() - started)


def _picture(path: str, data: bytes | None, side: int) -> Image.Image:
    """What OCR reads of a file: its picture (the name marks RAW files), or a video's (`data` None) first frame,
    at least `side` px a side where the file allows. Raises BadImage."""
    from .decode import decode

    return frame_at(path, 0.0, side) if data is None else decode(data, side, path)[0]


def _read_one(reader: Reader, row: dict[str, Any], force: bool) -> tuple[str, Sequence[TextLine]] | Skip:
    """("read", lines) or ("gated", []) for one catalog row, or why it was skipped."""
    from .decode import content_hash, read_file

    path = row["path"]
    try:
        data = None if is_video(path) else read_file(path)  # a video is never read whole into memory
        if (file_hash(path) if data is None else content_hash(data)) != row["hash"]:
            return Skip(path, "changed since it was indexed; run `clipsearch index` first")
        if not force and not reader.finds_text(_picture(path, data, GATE_SIDE)):  # a JPEG decodes at 1/8 scale
            return "gated", []
        image = _picture(path, data, OCR_SIDE)
        return "read", reader.read(image, scale=row["width"] / image.width)
    except OSError as e:
        return Skip(row["path"], e.strerror or str(e))
    except BadImage as e:
        return Skip(row["path"], str(e))
    except Exception as e:  # the engine's errors (OpenCV, ONNX Runtime) share no base class
        return Skip(row["path"], f"OCR failed: {e}")
