"""Chinese queries go the whole way, as English ones do: the CLI, the web API and the cold ONNX text tower
find the shapes they name with the bundled model, which was trained on captions in both languages."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from open_clip.tokenizer import SimpleTokenizer

from clipsearch import Library, model_spec
from clipsearch.cli import main
from clipsearch.textmodel import text_model_written
from clipsearch.webapp import create_app

from conftest import draw_shape

CLASSES = [(c, s) for c in ("red", "blue", "green", "yellow") for s in ("star", "circle", "square", "triangle")]
CLASSES += [("purple", "star"), ("orange", "cross")]
QUERIES = [  # Chinese, what it names, its English equivalent
    ("红色的星星", ("red", "star"), "a red star"),
    ("蓝色的圆形", ("blue", "circle"), "a blue circle"),
    ("绿色正方形", ("green", "square"), "a green square"),
    ("一个黄色的三角形", ("yellow", "triangle"), "a yellow triangle"),
    ("紫色的五角星", ("purple", "star"), "a purple star"),
    ("橙色十字", ("orange", "cross"), "an orange cross"),
]
PER_CLASS = 2


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny):
    """A library of two renders of each of 18 colour-and-shape classes, on varied backgrounds."""
    root = tmp_path_factory.mktemp("multilingual")
    for i, (colour, shape) in enumerate(CLASSES):
        for n in range(PER_CLASS):
            draw_shape(root / "photos" / f"{colour}_{shape}_{n}.png", colour, shape,
                       ("white", "grey", "black")[(i + n) % 3], seed=100 * i + n)
    with Library.open(root / "lib", create=True, encoder=tiny) as lib:
        lib.index([root / "photos"], model=model_spec("clipsearch-tiny"))
    assert text_model_written(root / "lib", tiny.spec)
    return root / "lib"


def classes(names: list[str]) -> set[str]:
    return {name.rsplit("/", 1)[-1].rsplit("_", 1)[0] for name in names}


def shown(out: str) -> list[str]:
    return [line.split()[-1] for line in out.splitlines() if line.endswith(".png")]


@pytest.mark.parametrize("query, named, english", QUERIES, ids=[q[2] for q in QUERIES])
def test_search_ranks_the_images_a_chinese_query_names_first(indexed, query, named, english):
    result = CliRunner().invoke(main, ["search", query, "--db", str(indexed), "-n", str(PER_CLASS)])
    assert result.exit_code == 0 and result.stderr == ""
    assert classes(shown(result.stdout)) == {"_".join(named)}


@pytest.mark.parametrize("query, named, english", QUERIES, ids=[q[2] for q in QUERIES])
def test_a_chinese_query_and_its_english_equivalent_find_the_same_images(indexed, tiny, query, named, english):
    with Library.open(indexed, encoder=tiny) as lib:
        chinese, english = (lib.search(text, k=PER_CLASS) for text in (query, english))
    assert {r.path for r in chinese} == {r.path for r in english}  # (whether they are good: bench_relevance.py)


def test_the_web_api_answers_chinese_queries(indexed):
    with Library.open(indexed) as lib, TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        for query, named, _ in QUERIES:
            response = client.get("/api/search", params={"q": query, "k": PER_CLASS})
            assert response.status_code == 200
            hits = response.json()["results"]
            assert classes([h["path"] for h in hits]) == {"_".join(named)} and hits[0]["good"]


COLD_CHILD = """
import json, sys
from clipsearch.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps([m for m in ("torch", "open_clip", "onnxruntime") if m in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize("query, named", [("一个红色的五角星", "red_star"), ("蓝色圆圈", "blue_circle"),
                                          ("绿色的方块", "green_square")])
def test_a_cold_process_answers_chinese_queries_with_the_onnx_tower_alone(indexed, query, named):
    """Texts no other test searched, so that no cached vector answers them."""
    done = subprocess.run([sys.executable, "-c", COLD_CHILD, "search", query, "--db", str(indexed),
                           "-n", str(PER_CLASS)], capture_output=True, text=True, check=True)
    assert classes(shown(done.stdout)) == {named}
    assert json.loads(done.stderr.strip().splitlines()[-1]) == ["onnxruntime"]  # neither torch nor open_clip


# 11 Chinese characters, one word to the tokenizer, 30 byte-level tokens: 32 with the start and end tokens,
# the context; one more character is 3 tokens more. Characters or words would not count them right.
FITS, CUT = "白色背景上的红色正方形", "白色背景上的红色正方形的"


def test_the_chinese_queries_tokens_are_counted_as_the_tokenizer_counts_them(tiny):
    assert tiny.context_length == 32
    assert [len(SimpleTokenizer().encode(t)) + 2 for t in (FITS, CUT)] == [32, 35]


@pytest.mark.parametrize("onnx", [True, False], ids=["onnx text tower", "open_clip"])
def test_a_chinese_query_longer_than_the_context_is_noted(indexed, tiny, onnx):
    with Library.open(indexed, encoder=None if onnx else tiny) as lib:
        lib.search(FITS, k=1)
        assert (lib._encoder is None) == onnx and lib.query_notes == []
        lib.search(CUT, k=1)
        assert len(lib.query_notes) == 1 and "context of 32 tokens" in lib.query_notes[0]


def test_search_warns_on_stderr_when_a_chinese_query_is_cut(indexed):
    result = CliRunner().invoke(main, ["search", CUT * 2, "--db", str(indexed), "-n", "1"])
    assert result.exit_code == 0 and len(shown(result.stdout)) == 1
    assert result.stderr.count("\n") == 1
    assert "longer than the model's context of 32 tokens: only its beginning is searched" in result.stderr
