"""Model handling: offline failures, the model list, and embeddings equal to open_clip's own."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clipsearch import Library
from clipsearch.cli import main
from clipsearch.decode import load
from clipsearch.encoder import Encoder
from clipsearch.models import ModelSpec, TINY_WEIGHTS, load_encoder, model_spec, pretrained_table, register_tiny

SAMPLE_PHOTOS = sorted((Path(__file__).parent.parent / "sample_data" / "photos").glob("*.jpg"))


def test_uncached_weights_offline_fail_with_one_clear_line(shape_tree, library_dir, isolated):
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir)])
    assert result.exit_code == 1
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message
    assert str(isolated / "hf" / "hub") in message
    assert "network access" in message and "--checkpoint FILE" in message
    assert ("download open_clip_pytorch_model.bin (about 605 MB) from https://huggingface.co/laion/"
            "CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_pytorch_model.bin") in message
    assert "`clipsearch models --cached`" in message
    assert not library_dir.exists()


CLI_IN_A_FRESH_PROCESS = """
import sys
from clipsearch.cli import main
try:
    main(sys.argv[1:], prog_name="clipsearch")
except SystemExit as done:
    print("exit", done.code, "imported", sorted({"torch", "open_clip"} & set(sys.modules)), file=sys.stderr)
"""


def fresh_cli(*args, env=None):
    """The CLI in a new interpreter (this one has torch loaded), without a proxy: its stdout, and its stderr ending
    with what it imported."""
    direct = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run([sys.executable, "-c", CLI_IN_A_FRESH_PROCESS, *map(str, args)], capture_output=True,
                            text=True, env={**direct, **(env or {})}, timeout=120)
    return result.stdout, result.stderr


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable hub"])
def test_the_default_model_missing_offline_fails_before_torch_is_imported(shape_tree, library_dir, offline):
    env = {"HF_HUB_OFFLINE": "1"} if offline == "HF_HUB_OFFLINE" else {"HF_ENDPOINT": "http://127.0.0.1:9"}
    out, err = fresh_cli("index", shape_tree, "--db", library_dir, env=env)
    assert out == "" and err.endswith("exit 1 imported []\n") and len(err.splitlines()) == 2
    assert err.startswith("Error: Model weights for ViT-B-32 (laion2b_s34b_b79k) are not in the cache")
    assert not library_dir.exists()


def test_models_lists_without_importing_torch():
    out, err = fresh_cli("models")
    assert err == "exit 0 imported []\n"
    *lines, legend = out.splitlines()
    assert len(lines) == 1 + len(pretrained_table()) and lines[0].split() == ["*", "clipsearch-tiny", "bundled",
                                                                             "7.6", "MB", "multilingual"]
    assert lines[1:] == [line for line in lines[1:] if line.startswith("  ")]  # nothing cached here
    assert legend.startswith("(* = weights and tokenizer cached, works offline; multilingual = ")


def test_the_pretrained_table_is_open_clip_s():
    """clipsearch/pretrained.json against the installed open_clip: run scripts/pretrained_table.py if this fails."""
    from clipsearch.models import PRETRAINED_TABLE, open_clip_pretrained, open_clip_version

    assert json.loads(PRETRAINED_TABLE.read_text())["open_clip"] == open_clip_version()
    table = pretrained_table()
    assert [replace(w, params=None) for w in table.values()] == open_clip_pretrained()
    assert table[("ViT-B-32", "laion2b_s34b_b79k")].params == sum(
        p.numel() for p in open_clip.create_model("ViT-B-32").parameters())


def test_the_open_clip_version_is_read_from_its_file_as_the_package_metadata_says(monkeypatch):
    """Read from open_clip's version.py (no importlib.metadata on a query), with the metadata's answer where that
    file cannot be found: the same either way, and the one open_clip itself reports."""
    import importlib.metadata
    import importlib.util

    from clipsearch.models import open_clip_version

    assert open_clip_version() == importlib.metadata.version("open_clip_torch") == open_clip.__version__
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert open_clip_version() == open_clip.__version__


def test_unknown_tag_names_the_known_ones(shape_tree, library_dir):
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--pretrained", "nope"])
    assert result.exit_code == 1 and "laion2b_s34b_b79k" in result.output


def reference(model, preprocess, tokenizer, paths, texts):
    """Embeddings exactly as open_clip's README computes them."""
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(p)) for p in paths])
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    return img.numpy(), txt.numpy()


@pytest.fixture(scope="module")
def random_vit_b_32():
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return Encoder(ModelSpec("ViT-B-32", None), model, preprocess, tokenizer, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def tiny_reference():
    register_tiny()
    model, _, preprocess = open_clip.create_model_and_transforms("clipsearch-tiny", pretrained=str(TINY_WEIGHTS))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer("clipsearch-tiny")


def indexed_vectors(encoder, paths, library_dir):
    with Library.open(library_dir, create=True, encoder=encoder) as lib:
        lib.index(paths, model=encoder.spec)
        return np.stack([np.frombuffer(lib.catalog.row_by_path(str(p))["vector"], np.float32) for p in paths])


TEXTS = ["a red star", "a photo of a cat", ""]


def test_tiny_model_matches_open_clip(tiny, tiny_reference, shape_tree, library_dir):
    paths = sorted(shape_tree.glob("*/*.png"))
    ref_img, ref_txt = reference(*tiny_reference, paths, TEXTS)
    assert np.abs(indexed_vectors(tiny, paths, library_dir) - ref_img).max() < 1e-4
    assert np.abs(tiny.encode_texts(TEXTS) - ref_txt).max() < 1e-4


def test_vit_b_32_matches_open_clip(random_vit_b_32, shape_tree, library_dir):
    paths = sorted(shape_tree.glob("*/*.png"))
    enc = random_vit_b_32
    ref_img, ref_txt = reference(enc.model, enc.preprocess, enc.tokenizer, paths, TEXTS)
    assert np.abs(indexed_vectors(enc, paths, library_dir) - ref_img).max() < 1e-4
    assert np.abs(enc.encode_texts(TEXTS) - ref_txt).max() < 1e-4


@pytest.mark.parametrize("which, bound", [("tiny", 0.98), ("vit_b_32", 0.99)])
def test_fast_jpeg_path_stays_close_to_the_reference(which, bound, tiny, random_vit_b_32, library_dir):
    """Draft-mode JPEG decoding vs a full decode, on the sample photos.

    The tiny model's 64 px input lets the draft decode shrink photos furthest, so its bound is lower.
    """
    assert SAMPLE_PHOTOS, "sample_data/photos is missing"
    enc = tiny if which == "tiny" else random_vit_b_32
    full = enc.encode_pil([load(str(p))[0] for p in SAMPLE_PHOTOS])
    fast = indexed_vectors(enc, SAMPLE_PHOTOS, library_dir)
    cosines = (full * fast).sum(axis=1)
    assert cosines.min() >= bound, dict(zip([p.name for p in SAMPLE_PHOTOS], cosines.round(4)))


def test_reference_decode_path_equals_open_clip_on_photos(random_vit_b_32):
    enc = random_vit_b_32
    ref_img, _ = reference(enc.model, enc.preprocess, enc.tokenizer, SAMPLE_PHOTOS, ["x"])
    ours = enc.encode_pil([load(str(p))[0] for p in SAMPLE_PHOTOS])
    assert np.abs(ours - ref_img).max() < 1e-4


def fake_hub_cache(cache: Path, repo: str, filename: str) -> Path:
    """Lay out a file the way huggingface_hub caches downloads."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    target = folder / "snapshots" / "abc123" / filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"weights")
    return target


@pytest.fixture
def another_open_clip(monkeypatch):
    """The installed open_clip is not the version clipsearch/pretrained.json was written for."""
    import clipsearch.models

    monkeypatch.setattr(clipsearch.models, "open_clip_version", lambda: "0.0.1")
    pretrained_table.cache_clear()
    yield
    pretrained_table.cache_clear()


def test_with_another_open_clip_its_own_table_is_read(another_open_clip):
    table = pretrained_table()
    assert ("ViT-B-32", "laion2b_s34b_b79k") in table and all(w.params is None for w in table.values())
    lines = CliRunner().invoke(main, ["models"]).output.splitlines()[:-1]
    assert [line.split() for line in lines if "(default)" in line] == [["ViT-B-32", "laion2b_s34b_b79k", "?",
                                                                       "(default)"]]


def test_models_marks_cached_weights(isolated):
    target = fake_hub_cache(isolated / "hf" / "hub", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                            "open_clip_model.safetensors")
    assert pretrained_table()[("ViT-B-32", "laion2b_s34b_b79k")].cached() == str(target)
    out = CliRunner().invoke(main, ["models", "--cached"]).output.splitlines()[:-1]
    assert [line.split() for line in out] == [["*", "clipsearch-tiny", "bundled", "7.6", "MB", "multilingual"],
                                             ["*", "ViT-B-32", "laion2b_s34b_b79k", "7", "B", "(default)"]]


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_checkpoint_loads_the_weights_open_clip_loads(tmp_path, zip_format):
    """load_encoder makes the model without random initial weights and maps zip checkpoints into memory: the model
    it gives holds exactly the weights open_clip's own loading gives, for torch.save's zip and older formats."""
    register_tiny()
    torch.manual_seed(1)
    weights = open_clip.create_model("clipsearch-tiny").state_dict()
    checkpoint = tmp_path / "weights.pt"
    torch.save(weights, checkpoint, _use_new_zipfile_serialization=zip_format)
    ours = load_encoder(model_spec("clipsearch-tiny", checkpoint=str(checkpoint)), "cpu").model.state_dict()
    theirs = open_clip.create_model("clipsearch-tiny", pretrained=str(checkpoint)).state_dict()
    assert ours.keys() == theirs.keys() == weights.keys()
    assert all(torch.equal(ours[k], theirs[k]) and torch.equal(ours[k], weights[k]) for k in weights)


def test_a_model_made_after_loading_gets_random_initial_weights(tiny):
    """Skipping the random initial weights lasts while a checkpoint loads, not after (nor torch.load's mapping)."""
    from torch.utils.serialization import config

    register_tiny()
    assert not config.load.mmap
    torch.manual_seed(2)
    a = open_clip.create_model("clipsearch-tiny").state_dict()
    torch.manual_seed(3)
    b = open_clip.create_model("clipsearch-tiny").state_dict()
    assert not torch.equal(a["visual.proj"], b["visual.proj"])
    assert float(a["token_embedding.weight"].std()) > 0


def tiny_weights() -> dict:
    register_tiny()
    torch.manual_seed(4)
    return open_clip.create_model("clipsearch-tiny").state_dict()


def damaged_checkpoints(folder: Path) -> dict[str, Path]:
    """Files a user may pass as --checkpoint that hold no usable tiny-model weights, by kind."""
    import safetensors.torch

    weights = tiny_weights()
    files = {"empty.pt": b"", "photo.pt": (Path(__file__).parent.parent / "sample_data" / "photos").glob("*.jpg")}
    out = {}
    folder.mkdir(exist_ok=True)
    (folder / "empty.pt").write_bytes(b"")
    (folder / "photo.pt").write_bytes(next(files["photo.pt"]).read_bytes()[:50_000])
    (folder / "empty.safetensors").write_bytes(b"")
    safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()}, folder / "whole.safetensors")
    data = (folder / "whole.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[:len(data) // 2])
    (folder / "whole.safetensors").unlink()
    torch.save([1, 2, 3], folder / "a-list.pt")
    torch.save({k: v for k, v in weights.items() if k != "visual.proj"}, folder / "missing-key.pt")
    torch.save({**weights, "visual.proj": torch.zeros(3, 3)}, folder / "wrong-shape.pt")
    truncated = folder / "truncated.pt"
    torch.save(weights, truncated)
    truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 2])
    for path in sorted(folder.iterdir()):
        out[path.name] = path
    return out


def test_every_damaged_checkpoint_is_one_line_naming_the_problem(tmp_path, shape_tree):
    for name, path in damaged_checkpoints(tmp_path / "checkpoints").items():
        result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(tmp_path / f"lib-{name}"),
                                           "--model", "clipsearch-tiny", "--checkpoint", str(path)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: Cannot load"), (name, lines)
        assert "Traceback" not in result.output and "Aborted" not in result.output
    missing = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(tmp_path / "lib-m"), "--model",
                                        "clipsearch-tiny", "--checkpoint", str(tmp_path / "checkpoints" / "missing-key.pt")])
    assert "visual.proj" in missing.output


def test_a_checkpoint_that_is_not_a_regular_file_says_so(tmp_path, shape_tree):
    read, write = os.pipe()
    try:
        result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(tmp_path / "lib"), "--model",
                                           "clipsearch-tiny", "--checkpoint", f"/dev/fd/{read}"])
    finally:
        os.close(read)
        os.close(write)
    assert result.exit_code == 1 and "not a regular file" in result.output


def test_weights_that_give_nan_vectors_stop_the_run_before_anything_is_stored(tmp_path, shape_tree):
    weights = tiny_weights()
    weights["visual.proj"] = torch.full_like(weights["visual.proj"], float("nan"))
    checkpoint = tmp_path / "nan.pt"
    torch.save(weights, checkpoint)
    library = tmp_path / "lib"
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library), "--model", "clipsearch-tiny",
                                       "--checkpoint", str(checkpoint)])
    assert result.exit_code == 1 and "gives no usable vectors for images" in result.output
    assert "Traceback" not in result.output
    with Library.open(library) as lib:
        assert lib.count() == 0
