"""A search in a fresh process imports only what it uses: never the image decoders or torch, and for a text
searched before or an indexed image, no model at all (what makes `clipsearch search` answer fast). It only
reads the catalog, so it never imports sqlite-utils (the catalog's writer), nor importlib.metadata."""
import json
import subprocess
import sys

import pytest

import clipsearch
from clipsearch import Library, model_spec

IMAGE_STACK = ["PIL", "pillow_heif", "rawpy", "av", "imagehash"]
TORCH_STACK = ["torch", "torchvision", "open_clip"]
TEXT_TOWER = ["onnxruntime", "tokenizers"]
OTHER_COMMANDS = ["fastapi", "uvicorn", "watchfiles", "ray", "pandas", "clipsearch.indexer", "clipsearch.pipeline"]
CATALOG_WRITER = ["sqlite_utils"]
PACKAGE_METADATA = ["importlib.metadata"]  # the open_clip version is read from open_clip's version.py
WATCHED = IMAGE_STACK + TORCH_STACK + TEXT_TOWER + OTHER_COMMANDS + CATALOG_WRITER + PACKAGE_METADATA

CHILD = """
import json, sys
from clipsearch.cli import main
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    print(json.dumps([m for m in json.loads(sys.argv[1]) if m in sys.modules]), file=sys.stderr)
"""


def results(out: str) -> list[str]:
    """The result lines of a search's output (a note such as "no good match" may come first)."""
    return [line for line in out.splitlines() if line.endswith(".png")]


def imported_by(*args: str) -> tuple[str, list[str]]:
    """The output of `clipsearch ARGS` run in a fresh process, and which of WATCHED it imported."""
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(WATCHED), *args], capture_output=True, text=True,
                          check=True)
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.fixture
def indexed(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
    return str(library_dir)


@pytest.mark.parametrize("text", ["a green square", "a square by J. Smith", "squares & stars: 3.5 of them"])
def test_a_new_text_runs_the_text_tower_alone_and_a_repeated_one_no_model(indexed, text):
    out, imported = imported_by("search", text, "--db", indexed, "-n", "1")
    assert len(results(out)) == 1 and imported == TEXT_TOWER
    again, imported = imported_by("search", text, "--db", indexed, "-n", "1")  # from the library's text cache
    assert again == out and imported == []


@pytest.mark.parametrize("args", [["--json"], ["--sort", "date", "--min-score", "-1"],
                                  ["--min-width", "1", "--ext", "png"]])
def test_search_options_import_nothing_more(indexed, args):
    imported_by("search", "a red star", "--db", indexed)  # caches the text
    out, imported = imported_by("search", "a red star", "--db", indexed, *args)
    assert out and imported == []


def test_similar_of_an_indexed_image_imports_no_model_or_decoder(indexed, shape_tree):
    out, imported = imported_by("similar", str(shape_tree / "a" / "red_star.png"), "--db", indexed, "-n", "2")
    assert len(results(out)) == 2 and "red_star.png" not in out and imported == []


def test_the_package_imports_its_names_on_first_use():
    code = ("import sys, clipsearch; print(sorted(m for m in sys.modules if m.startswith('clipsearch.'))); "
            "from clipsearch import Library, model_spec; print(Library.__module__, model_spec.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "clipsearch.library clipsearch.models"]
    assert set(clipsearch.__all__) <= set(dir(clipsearch))
    assert all(getattr(clipsearch, name).__name__ == name for name in clipsearch.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Libary'"):
        clipsearch.Libary  # noqa: B018
