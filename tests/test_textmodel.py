"""Text queries without torch: the ONNX text tower beside the catalog gives open_clip's tokens and vectors."""
import json
import os
import random
import shutil
import string
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import draw_shape

from clipsearch import Library, model_spec
from clipsearch.cli import main
from clipsearch.models import ModelSpec, load_encoder
from clipsearch.textexport import export_text_model
from clipsearch.textmodel import (GRAPH_FILE, TEXT_MODEL_PREFIX, TOKENIZER_FILE, TextModel, text_model_dir,
                                  text_model_written)

TEXTS = [
    "a red star", "", "   ", "a", "Hello, World! It's I'M 'S 're", "x " * 100, "word" * 60,
    "café naïve 東京 😀 ﬁne “quoted” ‘single’ — dash", "&amp; &lt;b&gt; &amp;amp;amp; AT&T",
    "tab\tnew\nline\r\nend", "１２３ ｆｕｌｌ-ｗｉｄｔｈ", "ǅ İstanbul ß Σίσυφος",
    "x<start_of_text>y <end_of_text> z", "\x1b[31mred\x1b[0m", "mojibake: Ã©tÃ© â€œquotedâ€\x9d",
    "Ω≈ç√∫˜µ≤≥÷ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u200b zero\u00a0width", "12345678901234567890",
]


def fuzz(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    ascii_only = ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40))) for _ in range(n)]
    unicode = ["".join(chr(rng.choice([rng.randint(32, 127), rng.randint(128, 0x2FFF), rng.randint(0x3000, 0x1FFFF)]))
                       for _ in range(rng.randint(1, 50))) for _ in range(n)]
    return ascii_only + unicode


def padded(ids: np.ndarray, length: int) -> np.ndarray:
    return np.pad(ids, ((0, 0), (0, length - ids.shape[1])))


@pytest.fixture(scope="module")
def tiny_tower(tmp_path_factory, tiny):
    directory = tmp_path_factory.mktemp("tiny-tower")
    export_text_model(directory, tiny)
    return TextModel.load(directory, tiny.spec)


@pytest.fixture(scope="module")
def vit_b32():
    """ViT-B-32 with random weights (no weights are reachable offline): 77-token context, 512-d."""
    encoder = load_encoder(ModelSpec("ViT-B-32", None), device="cpu")
    return encoder


@pytest.fixture(scope="module")
def vit_b32_tower(tmp_path_factory, vit_b32):
    directory = tmp_path_factory.mktemp("b32-tower")
    export_text_model(directory, vit_b32)
    return TextModel.load(directory, vit_b32.spec)


@pytest.mark.parametrize("texts", [TEXTS, fuzz(0, 300)], ids=["chosen", "fuzz"])
def test_token_ids_equal_open_clips(tiny, tiny_tower, texts):
    for text in texts:
        expected = tiny.tokenizer([text]).numpy()
        assert (padded(tiny_tower.tokenize([text]), expected.shape[1]) == expected).all(), repr(text)


def test_a_batch_is_padded_to_its_longest_text(tiny, tiny_tower):
    expected = tiny.tokenizer(TEXTS).numpy()
    assert (padded(tiny_tower.tokenize(TEXTS), expected.shape[1]) == expected).all()


def test_vectors_equal_open_clips(tiny, tiny_tower):
    assert np.abs(tiny_tower.encode(TEXTS) - tiny.encode_texts(TEXTS)).max() < 1e-4
    for text in TEXTS[:5]:  # one at a time, as queries come, cut to their own length
        assert np.abs(tiny_tower.encode([text])[0] - tiny.encode_texts([text])[0]).max() < 1e-4


def test_a_tower_too_large_for_one_protobuf_is_traced_through_a_file(tmp_path, tiny, tiny_tower,
                                                                      monkeypatch):
    """Towers over 2 GB (ViT-bigG's, say) cannot be traced in memory: the file route gives the same tower."""
    import clipsearch.textexport

    monkeypatch.setattr(clipsearch.textexport, "PROTOBUF_LIMIT_BYTES", 0)
    folder = export_text_model(tmp_path, tiny)
    assert sorted(f.name for f in folder.iterdir()) == [GRAPH_FILE, GRAPH_FILE + ".data", TOKENIZER_FILE]
    assert np.abs(TextModel.load(tmp_path, tiny.spec).encode(TEXTS) - tiny_tower.encode(TEXTS)).max() < 1e-6


NON_ASCII = [
    "红色的星星", "蓝色的圆形", "一张绿色正方形的照片", "灰色背景上的黄色三角形", "白色背景上的红色正方形的", "紫色", "十字",
    "红色的 star", "a 红色 star", "東京タワー", "빨간 별", "звезда", "نجمة حمراء", "étoile rouge", "😀⭐", "ｒｅｄ　ｓｔａｒ",
]
"""Chinese queries (the tiny model knows them; one cut at its context), mixed with English, other scripts."""


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii_queries_vectors_equal_open_clips(tiny, tiny_tower, text):
    """One at a time, as queries come (cut to their own length); tokens, vector and whether it was cut."""
    expected = tiny.tokenizer([text]).numpy()
    assert (padded(tiny_tower.tokenize([text]), expected.shape[1]) == expected).all()
    assert np.abs(tiny_tower.encode([text])[0] - tiny.encode_texts([text])[0]).max() < 1e-4
    assert tiny_tower.truncated(text) == tiny.truncated(text)


def test_vit_b32_tokens_and_vectors_equal_open_clips(vit_b32, vit_b32_tower):
    texts = TEXTS + fuzz(1, 50)
    expected = vit_b32.tokenizer(texts).numpy()
    assert expected.shape[1] == 77
    assert (padded(vit_b32_tower.tokenize(texts), 77) == expected).all()
    assert np.abs(vit_b32_tower.encode(TEXTS) - vit_b32.encode_texts(TEXTS)).max() < 1e-4
    assert np.abs(vit_b32_tower.encode(["a dog"])[0] - vit_b32.encode_texts(["a dog"])[0]).max() < 1e-4


# --- in a library ---------------------------------------------------------------------------------------
@pytest.fixture
def indexed(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
    return library_dir


def test_indexing_writes_the_text_tower(indexed, tiny):
    assert text_model_written(indexed, tiny.spec)
    assert [p.name for p in indexed.iterdir() if p.name.startswith((TEXT_MODEL_PREFIX, ".text-model"))] == \
        [text_model_dir(indexed, tiny.spec).name]


def test_an_index_run_exports_the_tower_only_when_missing_or_another_models(indexed, shape_tree, tiny, monkeypatch):
    """Every run below loads the model (it embeds a new image): an up-to-date tower is left as it is, and one is
    written where the library holds none, or only another model's."""
    import clipsearch.textexport

    exported = []
    export = clipsearch.textexport.export_text_model
    monkeypatch.setattr(clipsearch.textexport, "export_text_model",
                        lambda directory, encoder: exported.append(encoder.spec) or export(directory, encoder))
    folder = text_model_dir(indexed, tiny.spec)
    written = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in folder.iterdir()}

    def index_a_new_image(n: int) -> None:
        draw_shape(shape_tree / "new" / f"{n}.png", "red", "square", seed=100 + n)
        result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(indexed)])
        assert result.exit_code == 0 and result.output.startswith("added 1,")

    index_a_new_image(0)
    assert exported == [] and {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in folder.iterdir()} == written
    shutil.rmtree(folder)
    index_a_new_image(1)
    assert exported == [tiny.spec] and text_model_written(indexed, tiny.spec)
    stale = text_model_dir(indexed, ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))
    os.replace(folder, stale)
    index_a_new_image(2)
    assert exported == [tiny.spec] * 2 and text_model_written(indexed, tiny.spec) and not stale.exists()
    assert TextModel.load(indexed, tiny.spec) is not None


def test_library_text_vector_comes_from_the_tower_and_equals_open_clips(indexed, tiny):
    with Library.open(indexed) as lib:
        vector = lib.text_vector("a blue circle")
        assert lib._encoder is None  # answered without loading the model
    assert np.abs(vector - tiny.encode_texts(["a blue circle"])[0]).max() < 1e-4


QUERY_CHILD = """
import json, sys
from clipsearch.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps([m for m in ("torch", "open_clip", "torchvision") if m in sys.modules]), file=sys.stderr)
"""


def run_child(*args: str) -> tuple[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", QUERY_CHILD, *args], capture_output=True, text=True, check=True)
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def test_new_text_search_and_similar_never_import_torch(indexed, shape_tree):
    out, imported = run_child("search", "a green square", "--db", str(indexed), "-n", "1")
    assert "green_square.png" in out and imported == []
    out, imported = run_child("search", "a green square", "--db", str(indexed), "-n", "1")  # from the text cache
    assert "green_square.png" in out and imported == []
    out, imported = run_child("similar", str(shape_tree / "a" / "red_star.png"), "--db", str(indexed), "-n", "1")
    assert imported == [] and "red_star.png" not in out


def test_an_unchanged_index_run_never_imports_torch(indexed, shape_tree):
    """Nothing to embed: the run stats the files and loads no model (a new library's tower is exported beside the
    run only once the model is loaded)."""
    out, imported = run_child("index", str(shape_tree), "--db", str(indexed))
    assert out.startswith("added 0,") and imported == []


def test_a_missing_or_damaged_tower_falls_back_to_open_clip_and_is_written_again(indexed, tiny):
    folder = text_model_dir(indexed, tiny.spec)
    expected = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "3"]).output
    for damage in (lambda: shutil.rmtree(folder), lambda: (folder / GRAPH_FILE).write_bytes(b"not onnx")):
        damage()
        (indexed / "text-vectors.db").unlink(missing_ok=True)
        result = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "3"])
        assert result.exit_code == 0 and result.output == expected
        assert TextModel.load(indexed, tiny.spec) is not None


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"], ids=["zeros", "NaN"])
def test_a_tower_giving_unusable_vectors_falls_back_and_poisons_no_cache(indexed, tiny, fill):
    """Weights damaged in place (same size, so the tower still loads): its zero or NaN vectors are not used, nor
    cached; the model answers, and writes the tower again."""
    from clipsearch.textcache import TEXT_CACHE_FILE

    def search() -> list[tuple[str, float]]:
        result = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "3", "--json"])
        assert result.exit_code == 0
        return [(r["path"], round(r["score"], 4)) for r in json.loads(result.output)]

    expected = search()
    assert len(expected) == 3
    (indexed / TEXT_CACHE_FILE).unlink()
    weights = text_model_dir(indexed, tiny.spec) / (GRAPH_FILE + ".data")
    weights.write_bytes(fill * weights.stat().st_size)
    assert not np.isfinite(TextModel.load(indexed, tiny.spec).encode(["a red star"])).all() or \
        not np.linalg.norm(TextModel.load(indexed, tiny.spec).encode(["a red star"])).any()
    assert search() == expected
    assert search() == expected  # from the text cache
    tower = TextModel.load(indexed, tiny.spec).encode(["a red star"])[0]
    assert np.abs(tower - tiny.encode_texts(["a red star"])[0]).max() < 1e-4
    with Library.open(indexed) as lib:
        assert np.abs(lib.text_vector("a red star") - tower).max() < 1e-4


def test_a_tower_that_fails_while_running_falls_back(indexed, tiny, monkeypatch):
    """A graph that loads but fails when run (onnxruntime raises its own errors): the model answers, no traceback."""
    expected = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "3"]).output
    (indexed / "text-vectors.db").unlink(missing_ok=True)

    def fails(self, texts):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")

    monkeypatch.setattr(TextModel, "encode", fails)
    result = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "3"])
    assert result.exit_code == 0 and result.output == expected


def test_another_models_tower_is_replaced(indexed, tiny):
    stale = text_model_dir(indexed, ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))
    os.replace(text_model_dir(indexed, tiny.spec), stale)
    result = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "1"])
    assert result.exit_code == 0 and "red_star.png" in result.output
    assert text_model_written(indexed, tiny.spec) and not stale.exists()


def test_a_library_that_cannot_be_written_searches_through_open_clip(indexed, tiny, monkeypatch):
    import clipsearch.textexport

    def read_only(directory, encoder):
        raise PermissionError(13, "Permission denied", str(directory))

    shutil.rmtree(text_model_dir(indexed, tiny.spec))
    monkeypatch.setattr(clipsearch.textexport, "export_text_model", read_only)
    result = CliRunner().invoke(main, ["search", "a red star", "--db", str(indexed), "-n", "1"])
    assert result.exit_code == 0 and "red_star.png" in result.output
    assert not text_model_written(indexed, tiny.spec)


# --- the export beside an index run (a forked process on CPU) -----------------------------------------------------
def staging_folders(library) -> list[str]:
    return sorted(p.name for p in library.iterdir() if p.name.startswith(".text-model"))


@pytest.mark.parametrize("moment", ["during the run", "after the run"])
@pytest.mark.parametrize("stall", ["waiting", "stopped"])
def test_an_interrupted_run_stops_the_export_beside_it_and_leaves_no_staging_folder(shape_tree, library_dir, tiny,
                                                                                   monkeypatch, stall, moment):
    """Ctrl-C while the tower is being written beside the run, during the run or once its images are saved (while
    the run waits for the export): the KeyboardInterrupt stops the export, whose half-written folder is removed
    (the export process ignores Ctrl-C itself, so it prints no traceback); an export process that is itself
    stopped (SIGSTOP: it would never act on SIGTERM) does not hold the run up, nor its exit."""
    import multiprocessing
    import signal

    import clipsearch.indexer
    import clipsearch.textexport

    staged, never = multiprocessing.Event(), multiprocessing.Event()

    def stalled_export(directory, encoder):  # runs in the forked process: stages a folder, then stalls
        (directory / f".text-model-{os.getpid()}-stalled").mkdir()
        staged.set()
        if stall == "stopped":
            os.kill(os.getpid(), signal.SIGSTOP)
        never.wait()

    def interrupted(*args):
        assert staged.wait(60)
        raise KeyboardInterrupt

    monkeypatch.setattr(clipsearch.textexport, "export_text_model", stalled_export)
    if moment == "during the run":
        monkeypatch.setattr(clipsearch.indexer.IndexRun, "run", interrupted)
    else:  # the run's images are saved; then the index is saved and the export waited for
        monkeypatch.setattr(Library, "_rebuild_if_due", interrupted)
    with Library.open(library_dir, create=True, encoder=tiny) as lib, pytest.raises(KeyboardInterrupt):
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
    assert staging_folders(library_dir) == [] and not text_model_written(library_dir, tiny.spec)
    assert multiprocessing.active_children() == []


def test_an_export_that_dies_beside_the_run_is_done_again_in_the_run(shape_tree, library_dir, tiny, monkeypatch):
    """The export process killed (for memory, say): the run writes the tower itself before it returns."""
    monkeypatch.setattr(Library, "_write_text_model_forked", lambda self: os._exit(9))
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        report = lib.index([shape_tree], model=model_spec("clipsearch-tiny"))
    assert report.added == 8 and text_model_written(library_dir, tiny.spec) and staging_folders(library_dir) == []


def test_staging_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    from clipsearch.textexport import remove_abandoned_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (f".text-model-{dead.stdout.strip()}-abc", f".text-model-{os.getpid()}-def", ".text-model-old1234",
                 "text-model-0123456789abcdef"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "graph.onnx").write_bytes(b"half")
    remove_abandoned_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".text-model-{os.getpid()}-def",
                                                          "text-model-0123456789abcdef"]
