"""What a user sees from search and similar: ranking, filters, combined queries."""
import shutil

import pytest

from clipsearch import Library, model_spec
from clipsearch.errors import BadQuery
from clipsearch.filters import Filters
from clipsearch.textmodel import text_model_dir

from conftest import SHAPE_TREE, draw_shape


@pytest.fixture
def lib(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
        yield lib


def name(result):
    return result.path.rsplit("/", 1)[-1]


@pytest.mark.parametrize("colour,shape", SHAPE_TREE)
def test_text_query_ranks_the_matching_shape_first(lib, colour, shape):
    assert name(lib.search(f"a {colour} {shape}", k=3)[0]) == f"{colour}_{shape}.png"


def test_scores_descend_and_limit_holds(lib):
    results = lib.search("a red star", k=5)
    assert len(results) == 5
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_similar_finds_a_near_copy_first_and_leaves_itself_out(lib, shape_tree, tmp_path):
    original = shape_tree / "a" / "green_square.png"
    from PIL import Image

    Image.open(original).resize((100, 100)).save(shape_tree / "b" / "copy_small.jpg", quality=70)
    lib.index([shape_tree])
    results = lib.similar(original, k=3)
    assert name(results[0]) == "copy_small.jpg"
    assert str(original) not in [r.path for r in results]
    outside = draw_shape(tmp_path / "query.png", "yellow", "triangle", seed=1234)
    assert name(lib.similar(outside, k=1)[0]) == "yellow_triangle.png"


def test_under_restricts_to_a_folder(lib, shape_tree):
    results = lib.search("a red star", k=10, filters=Filters(under=(str(shape_tree / "b"),)))
    assert len(results) == 4 and all("/b/" in r.path for r in results)


def test_min_score_drops_weak_matches(lib):
    everything = lib.search("a red star", k=8)
    cut = everything[2].score
    assert [r.path for r in lib.search("a red star", k=8, min_score=cut)] == [r.path for r in everything[:3]]


def test_combined_queries_add_and_subtract(lib):
    # "red" plus "circle" minus nothing finds the red circle; subtracting red moves away from red.
    assert name(lib.search("a red shape", add=["a circle"], k=1)[0]) == "red_circle.png"
    top = lib.search("a star", sub=["a red shape:1.0"], k=1)[0]
    assert name(top) == "blue_star.png"


def test_image_terms(lib, shape_tree):
    image = str(shape_tree / "b" / "blue_star.png")
    assert name(lib.search(image, k=1)[0]) == "blue_star.png"
    assert name(lib.search(images=[image], k=1)[0]) == "blue_star.png"


def test_empty_queries_are_refused(lib):
    with pytest.raises(BadQuery):
        lib.search("   ")
    with pytest.raises(BadQuery):
        lib.search(None)


def test_a_repeated_text_query_is_answered_without_loading_the_model(lib, library_dir, monkeypatch):
    first = lib.search("a blue circle", k=3)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("clipsearch.library.load_encoder", no_model)
    with Library.open(library_dir) as fresh:
        assert fresh.search("a blue circle", k=3) == first
        fresh.search("a green square", k=3)  # a new text: the library's ONNX text tower (test_textmodel.py)
    shutil.rmtree(text_model_dir(library_dir, model_spec("clipsearch-tiny")))
    with Library.open(library_dir) as fresh, pytest.raises(AssertionError, match="the model was loaded"):
        fresh.search("a yellow star", k=3)


def test_the_text_cache_is_keyed_by_model_and_an_unusable_one_is_ignored(lib, library_dir):
    from clipsearch.textcache import TEXT_CACHE_FILE, TextVectorCache

    vector = lib.text_vector("a red star")
    assert (TextVectorCache(library_dir, model_spec("clipsearch-tiny")).get("a red star") == vector).all()
    assert TextVectorCache(library_dir, model_spec("ViT-B-32")).get("a red star") is None
    (library_dir / TEXT_CACHE_FILE).unlink()
    (library_dir / TEXT_CACHE_FILE).mkdir()  # neither readable nor writable as a database
    assert name(lib.search("a red star", k=1)[0]) == "red_star.png"
