"""Approximate indexes hold recall for text queries, which sit apart from the image cloud (the modality gap)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from clipsearch.calibration import calibration_texts, text_queries
from clipsearch.cli import main
from clipsearch.shapes import BACKGROUNDS, COLOURS, SHAPES, article, generate
from clipsearch.vectorindex import ArraySource, IndexPolicy, build, modelled_text_queries

N = 2000


def shape_queries():
    """131 texts a user of the shapes domain types: pairs, pairs on backgrounds, shapes alone, colours alone."""
    return ([f"{article(c)} {c} {s}" for c in COLOURS for s in SHAPES]
            + [f"{article(c)} {c} {s} on a {b} background" for c in COLOURS for s in SHAPES for b in BACKGROUNDS]
            + [f"a {s}" for s in SHAPES] + [f"{article(c)} {c} shape" for c in COLOURS])


@pytest.fixture(scope="module")
def shapes_collection(tiny):
    """2,000 generated pictures embedded by the tiny model, and its vectors for the 131 shape queries."""
    images = [image for _, image in generate(N, seed=1, size=tiny.image_size)]
    vectors = np.concatenate([tiny.encode_pil(images[i : i + 250]) for i in range(0, N, 250)])
    return ArraySource(np.arange(1, N + 1), vectors), tiny.encode_texts(shape_queries())


def recall_against_brute_force(index, source, queries):
    truth = np.argsort(-(queries @ source.vectors.T), axis=1)[:, :10] + 1
    _, found = index.search(queries, 10, exact=source.vectors_for)
    return float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth)]))


def test_the_tiny_model_has_a_modality_gap(shapes_collection):
    source, texts = shapes_collection
    image_mean, text_mean = source.vectors.mean(axis=0), texts.mean(axis=0)
    assert image_mean @ text_mean / np.linalg.norm(image_mean) / np.linalg.norm(text_mean) < -0.5
    assert len(texts) == 131


def test_calibrating_on_image_queries_alone_misses_text_queries_neighbours(shapes_collection):
    """The issue's figure in small: image queries at target, the same index below 0.95 for text queries."""
    source, texts = shapes_collection
    image_only = IndexPolicy(modelled_target_recall=0.0)  # the text queries no longer hold calibration back
    index, record = build(source, source.vectors.shape[1], "ivf", image_only)
    assert record.recall_at_10 >= 0.97
    assert recall_against_brute_force(index, source, texts) < 0.95


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_calibration_with_the_models_texts_holds_recall_for_text_queries(shapes_collection, tiny, kind):
    source, texts = shapes_collection
    index, record = build(source, source.vectors.shape[1], kind, texts=text_queries(tiny))
    assert record.recall_at_10 >= 0.97 and record.text_recall_at_10 >= 0.97
    assert record.text_queries == f"model vocabulary ({len(calibration_texts())} texts)"
    assert recall_against_brute_force(index, source, texts) >= 0.95  # texts the calibration never saw
    images = source.vectors[::20] + 0.05 * np.random.default_rng(0).standard_normal(source.vectors[::20].shape)
    images = (images / np.linalg.norm(images, axis=1, keepdims=True)).astype(np.float32)
    assert recall_against_brute_force(index, source, images) >= 0.95


def test_modelled_text_queries_hold_recall_without_the_model(shapes_collection):
    source, texts = shapes_collection
    index, record = build(source, source.vectors.shape[1], "ivf")
    assert record.text_queries == "modelled gap (200)" and record.text_recall_at_10 >= 0.99
    assert recall_against_brute_force(index, source, texts) >= 0.95


def test_modelled_text_queries_are_far_from_every_image(shapes_collection):
    source, _ = shapes_collection
    rng = np.random.default_rng(0)
    queries = modelled_text_queries(source.vectors[:100], source.vectors.mean(axis=0), rng)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    best_image_for_text = np.max(queries @ source.vectors.T, axis=1).mean()
    best_image_for_image = np.max(source.vectors[:100] @ source.vectors[100:].T, axis=1).mean()
    assert best_image_for_text < 0.6 < best_image_for_image


def test_info_shows_the_recall_for_image_and_text_queries(shape_tree, library_dir):
    runner = CliRunner()
    args = ["--db", str(library_dir), "--model", "clipsearch-tiny", "--index-type", "ivf"]
    assert runner.invoke(main, ["index", str(shape_tree), *args]).exit_code == 0
    index = json.loads(runner.invoke(main, ["info", "--db", str(library_dir), "--json"]).output)["index"]
    assert index["recall_at_10"] >= 0.95 and index["text_recall_at_10"] >= 0.95
    assert index["text_queries"].startswith("model vocabulary")
    out = runner.invoke(main, ["info", "--db", str(library_dir)]).output
    assert "text_recall_at_10=" in out and "text_queries=model vocabulary" in out
    repaired = runner.invoke(main, ["repair", "--db", str(library_dir)]).output
    assert "for image queries" in repaired and "for text queries" in repaired
