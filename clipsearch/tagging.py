"""Zero-shot tagging: sort indexed images into labels named in words, as the CLIP paper does.

Each label becomes a text embedding averaged over prompt templates ("a photo of a {}.",
"a blurry photo of a {}.", ...): the template embeddings are L2-normalised, averaged and
renormalised (prompt ensembling). An image's probabilities over the labels are the softmax
of its cosine similarities times the model's logit scale (about 100 for CLIP). The image
vectors come from the catalog, so tagging decodes no image.

Tags are stored per label set (the labels as a set). An image carries its most probable
label and, among its next most probable `top` - 1, those with probability >= `min_probability`.
A label set's images are tagged once: a re-run tags only images added since, and a re-run
with other templates or thresholds re-tags them all.
"""
from __future__ import annotations

import json
import time
import unicodedata
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .catalog import Catalog, now_iso
from .errors import BadQuery
from .paths import check_text
from .results import TagCount, TagReport

if TYPE_CHECKING:
    from .encoder import Encoder

TEMPLATES: tuple[str, ...] = (
    # CLIP's ensemble for CIFAR-10/100: generic photo prompts, so the benchmark reproduces the paper.
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.",
    "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
)
SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)
DEFAULT_TOP = 3
DEFAULT_MIN_PROBABILITY = 0.2
TEXT_BATCH = 256
IMAGE_CHUNK = 4096


# --- labels and their embeddings ------------------------------------------------
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
"""Zero-width spaces and joiners, word joiner, byte-order mark and soft hyphen: dropped from labels."""


def normal_label(label: str) -> str:
    """A label as stored: NFC, invisible characters dropped, any run of spaces (NBSP too) as one space. BadQuery for
    one that is not valid UTF-8."""
    return " ".join(unicodedata.normalize("NFC", check_text(label, "The label")).translate(INVISIBLE).split())


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Normalised (`normal_label`), without blanks or repeats, where labels that differ only in case are one
    (the first spelling kept); at least two, or a softmax means nothing."""
    spellings: dict[str, str] = {}
    for label in map(normal_label, labels):
        if label:
            spellings.setdefault(label.casefold(), label)
    unique = tuple(spellings.values())
    if len(unique) < 2:
        raise BadQuery("Give at least two labels to choose between, e.g. --labels \"cat,dog\"")
    return unique


def prompts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every label, label-major."""
    return [template.format(label) for label in labels for template in templates]


def ensemble(template_vectors: np.ndarray, n_labels: int) -> np.ndarray:
    """(labels x templates, d) unit vectors, label-major -> (labels, d): mean per label, renormalised."""
    mean = template_vectors.reshape(n_labels, -1, template_vectors.shape[-1]).mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def label_vectors(encoder: "Encoder", labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    texts = prompts(labels, templates)
    encoded = [encoder.encode_texts(texts[i : i + TEXT_BATCH]) for i in range(0, len(texts), TEXT_BATCH)]
    return ensemble(np.vstack(encoded), len(labels))


def logit_scale(encoder: "Encoder") -> float:
    """The temperature the model was trained with (CLIP's learned logit scale, exponentiated)."""
    return float(encoder.model.logit_scale.detach().float().exp().cpu())


def probabilities(images: np.ndarray, labels: np.ndarray, scale: float) -> np.ndarray:
    """Softmax over labels of scale x cosine similarity: (images, d), (labels, d) -> (images, labels)."""
    logits = scale * (images @ labels.T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def top_labels(
    probs: np.ndarray, top: int, min_probability: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labels each image carries, as parallel arrays (image row, label column, probability, rank from 1)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    p = np.take_along_axis(probs, order, axis=1)
    keep = p >= min_probability
    keep[:, 0] = True
    rows, ranks = np.nonzero(keep)
    return rows, order[rows, ranks], p[rows, ranks], ranks + 1


# --- the catalog's tag tables -----------------------------------------------------
def label_set_id(catalog: Catalog, labels: Sequence[str], settings: dict) -> int:
    """The id of this set of labels; with other settings than last time, its old tags are dropped."""
    key, wanted = json.dumps(sorted(labels)), json.dumps(settings, sort_keys=True)
    row = catalog.conn.execute("SELECT id, settings FROM label_sets WHERE labels = ?", [key]).fetchone()
    if row and row[1] == wanted:
        return int(row[0])
    with catalog.db.conn:
        if row:
            catalog.db.conn.execute("DELETE FROM label_sets WHERE id = ?", [row[0]])
        cursor = catalog.db.conn.execute(
            "INSERT INTO label_sets(labels, settings, created_at) VALUES (?, ?, ?)", [key, wanted, now_iso()]
        )
    return int(cursor.lastrowid)


_UNTAGGED = "NOT EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = images.id AND t.label_set_id = ?)"


def count_untagged(catalog: Catalog, set_id: int) -> int:
    return catalog.conn.execute(f"SELECT count(*) FROM images WHERE {_UNTAGGED}", [set_id]).fetchone()[0]


def untagged(catalog: Catalog, set_id: int, chunk: int = IMAGE_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of the images this label set has not tagged yet, a chunk at a time."""
    last = 0
    while True:
        rows = catalog.conn.execute(
            f"SELECT id, vector FROM images WHERE id > ? AND {_UNTAGGED} ORDER BY id LIMIT ?", [last, set_id, chunk]
        ).fetchall()
        if not rows:
            return
        yield np.array([r[0] for r in rows], np.int64), np.vstack([np.frombuffer(r[1], np.float32) for r in rows])
        last = rows[-1][0]


def write_tags(catalog: Catalog, set_id: int, ids: np.ndarray, labels: Sequence[str], probs: np.ndarray,
               top: int, min_probability: float) -> None:
    rows, columns, p, ranks = top_labels(probs, top, min_probability)
    with catalog.db.conn:
        catalog.db.conn.executemany(
            "INSERT INTO image_tags(image_id, label_set_id, label, probability, rank) VALUES (?, ?, ?, ?, ?)",
            [(int(ids[r]), set_id, labels[c], round(float(q), 6), int(k)) for r, c, q, k in zip(rows, columns, p, ranks)],
        )


def tag_catalog(
    catalog: Catalog,
    encoder: Callable[[], "Encoder"],
    labels: Sequence[str],
    *,
    templates: Sequence[str] = TEMPLATES,
    top: int = DEFAULT_TOP,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
) -> TagReport:
    """Tag the images the label set has not tagged yet; `encoder` is called only if there are some."""
    started = time.monotonic()
    labels = check_labels(labels)
    if top < 1 or not 0 <= min_probability <= 1:
        raise BadQuery("--top must be at least 1 and --min-prob between 0 and 1")
    set_id = label_set_id(catalog, labels, {"templates": list(templates), "top": top,
                                            "min_probability": min_probability})
    todo = count_untagged(catalog, set_id)
    if todo:
        model = encoder()
        vectors, scale = label_vectors(model, labels, templates), logit_scale(model)
        for ids, images in untagged(catalog, set_id):
            write_tags(catalog, set_id, ids, labels, probabilities(images, vectors, scale), top, min_probability)
    return TagReport(labels, todo, catalog.count() - todo, time.monotonic() - started)


def tag_counts(catalog: Catalog) -> list[TagCount]:
    """Every label with the number of images carrying it, most common first."""
    rows = catalog.conn.execute(
        "SELECT label, count(DISTINCT image_id) AS n FROM image_tags GROUP BY label ORDER BY n DESC, label"
    ).fetchall()
    return [TagCount(label, n) for label, n in rows]
