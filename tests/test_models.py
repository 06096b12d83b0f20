"""Model handling: offline failures, and embeddings equal to open_clip's own."""
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
from clipsearch.models import ModelSpec, TINY_WEIGHTS, register_tiny

SAMPLE_PHOTOS = sorted((Path(__file__).parent.parent / "sample_data" / "photos").glob("*.jpg"))


def test_uncached_weights_offline_fail_with_one_clear_line(shape_tree, library_dir, isolated):
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir)])
    assert result.exit_code == 1
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message
    assert str(isolated / "hf" / "hub") in message
    assert "network access" in message and "--checkpoint FILE" in message
    assert not library_dir.exists()


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


def test_models_marks_cached_weights(isolated):
    target = fake_hub_cache(isolated / "hf" / "hub", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                            "open_clip_model.safetensors")
    from clipsearch.models import cached_weights
    from open_clip.pretrained import get_pretrained_cfg

    assert cached_weights(get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")) == str(target)
    out = CliRunner().invoke(main, ["models", "--cached"]).output.splitlines()
    assert [line.split() for line in out] == [["*", "clipsearch-tiny", "bundled"],
                                             ["*", "ViT-B-32", "laion2b_s34b_b79k", "(default)"]]
