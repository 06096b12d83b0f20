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
    assert (TextVectorCache(library_dir, model_spec("clipsearch-tiny"), len(vector)).get("a red star") == vector).all()
    assert TextVectorCache(library_dir, model_spec("ViT-B-32"), len(vector)).get("a red star") is None
    (library_dir / TEXT_CACHE_FILE).unlink()
    (library_dir / TEXT_CACHE_FILE).mkdir()  # neither readable nor writable as a database
    assert name(lib.search("a red star", k=1)[0]) == "red_star.png"


# --- damaged text cache, text that is not UTF-8 ---------------------------------------------------------
@pytest.fixture
def indexed(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
    return library_dir


def cli(*args):
    from click.testing import CliRunner

    from clipsearch.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def cached_vector(library_dir, text):
    import sqlite3

    from clipsearch.textcache import TEXT_CACHE_FILE

    with sqlite3.connect(library_dir / TEXT_CACHE_FILE) as db:
        return db.execute("SELECT vector FROM texts WHERE text = ?", (text,)).fetchone()[0]


def set_cached_vector(library_dir, text, value):
    import sqlite3

    from clipsearch.textcache import TEXT_CACHE_FILE

    with sqlite3.connect(library_dir / TEXT_CACHE_FILE) as db:
        assert db.execute("UPDATE texts SET vector = ? WHERE text = ?", (value, text)).rowcount == 1


@pytest.mark.parametrize("damage", ["5 bytes", "8 bytes", "one more float", "NaN", "infinite", "zeros", "not unit",
                                    "text", "null"])
def test_a_damaged_text_cache_row_is_ignored_and_replaced(indexed, tiny, damage):
    import numpy as np

    good = cli("search", "a red star", "--db", indexed, "-n", "3", "--json")
    stored = cached_vector(indexed, "a red star")
    vector = np.frombuffer(stored, dtype=np.float32)
    bad = {"5 bytes": b"\x01" * 5, "8 bytes": b"\x00" * 8, "one more float": stored + b"\x00" * 4,
           "NaN": b"\xff" * len(stored), "infinite": np.full_like(vector, np.inf).tobytes(),
           "zeros": bytes(len(stored)), "not unit": (vector * 3).tobytes(), "text": "a red star", "null": None}[damage]
    set_cached_vector(indexed, "a red star", bad)
    again = cli("search", "a red star", "--db", indexed, "-n", "3", "--json")
    assert again.exit_code == 0 and again.output == good.output and again.output.count('"path"') == 3
    assert cached_vector(indexed, "a red star") == stored  # encoded again, and the row replaced


@pytest.mark.parametrize("bad", [[float("nan")], [0.0]], ids=["NaN", "zero"])
def test_a_model_giving_no_usable_vector_is_one_clear_error_and_nothing_is_cached(indexed, tiny, monkeypatch, bad):
    import numpy as np

    from clipsearch.encoder import Encoder
    from clipsearch.textcache import TEXT_CACHE_FILE

    shutil.rmtree(text_model_dir(indexed, tiny.spec))  # so that the model itself encodes the text
    monkeypatch.setattr(Encoder, "encode_texts", lambda self, texts: np.full((len(texts), self.dim), bad[0], np.float32))
    result = cli("search", "a red star", "--db", indexed, "--json")
    assert result.exit_code == 1 and result.output == (
        "Error: The model clipsearch-tiny (bundled) gives no usable vector for the text 'a red star' (NaN, infinite or "
        "zero): its weights may be damaged\n")
    assert not (indexed / TEXT_CACHE_FILE).exists() or cached_vector_or_none(indexed, "a red star") is None


def cached_vector_or_none(library_dir, text):
    import sqlite3

    from clipsearch.textcache import TEXT_CACHE_FILE

    with sqlite3.connect(library_dir / TEXT_CACHE_FILE) as db:
        row = db.execute("SELECT vector FROM texts WHERE text = ?", (text,)).fetchone()
    return row and row[0]


CAFE = "caf\udce9"  # `caf\xe9` (Latin-1) on a UTF-8 command line, as Python and click pass it (PEP 383)
NOT_UTF8 = "Error: The query 'caf\\xe9' is not valid UTF-8 text (and no file has that name)\n"


@pytest.mark.parametrize("args", [[CAFE], ["a star", "--add", CAFE], ["a star", "--sub", f"{CAFE}:0.5"],
                                  ["--add", CAFE], [CAFE, "--json"], [CAFE, "--good-only"]])
@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
def test_a_query_that_is_not_utf8_is_one_clear_error(indexed, monkeypatch, args, read_only):
    if read_only:
        monkeypatch.setattr("clipsearch.library._read_only", lambda directory: True)
    result = cli("search", *args, "--db", indexed)
    assert result.exit_code == 1 and result.output == NOT_UTF8


def test_a_mistyped_image_path_that_is_not_utf8_is_one_clear_error(indexed, tmp_path):
    missing = str(tmp_path / f"{CAFE}_nonexist.png")
    result = cli("search", missing, "--db", indexed)
    shown = missing.replace(CAFE, "caf\\xe9")
    assert result.exit_code == 1
    assert result.output == f"Error: The query '{shown}' is not valid UTF-8 text (and no file has that name)\n"
    result = cli("similar", missing, "--db", indexed)
    assert result.exit_code == 1 and result.output == f"Error: No such file: {shown}\n"


def test_an_existing_image_path_that_is_not_utf8_is_searched(indexed, shape_tree, tmp_path):
    image = tmp_path / f"{CAFE}.png"
    shutil.copy(shape_tree / "a" / "red_star.png", image)
    for args in ([str(image)], ["a star", "--add", str(image)], ["--image", str(image)]):
        result = cli("search", *args, "--db", indexed, "-n", "1")
        assert result.exit_code == 0 and "red_star.png" in result.output


@pytest.mark.parametrize("args, message", [
    (["search", "--text", CAFE], "--text 'caf\\xe9' is not valid UTF-8 text"),
    (["search", "a star", "--tag", CAFE], "The label 'caf\\xe9' is not valid UTF-8 text"),
    (["tag", "--labels", f"{CAFE},dog"], "The label 'caf\\xe9' is not valid UTF-8 text"),
])
def test_other_texts_that_are_not_utf8_are_one_clear_error(indexed, args, message):
    result = cli(*args, "--db", indexed)
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"
