"""`load_encoder`'s pretrained-tag path against open_clip's own `create_model_and_transforms(arch, pretrained=TAG)`,
offline: random weights laid out in a temporary Hugging Face cache, as a download would have left them."""
import random
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.pretrained import _PRETRAINED, _pcfg
from open_clip.transformer import QuickGELU

from clipsearch.models import (TINY_WEIGHTS, ModelSpec, load_encoder, model_spec, open_clip_pretrained, preprocessing_of,
                               pretrained_table, register_tiny)
from clipsearch.shapes import ShapeSpec, render

WIRING = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "interpolation": "bilinear", "resize_mode": "squash",
          "quick_gelu": True}
"""A tag whose every preprocessing setting differs from open_clip's defaults (bicubic, shortest, OpenAI mean/std)."""


def hub_file(cache: Path, hf_hub: str, source: Path) -> Path:
    """Put `source` where huggingface_hub caches the weights of an open_clip `hf_hub` location."""
    repo = hf_hub.rstrip("/")
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    target = snapshot / "open_clip_pytorch_model.bin"
    shutil.copyfile(source, target)
    return target


@pytest.fixture
def offline(isolated, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return isolated / "hf" / "hub"


def inputs():
    # 3:2 and larger than every input size here, so the model sees what open_clip's own preprocessing gives it
    image = render(ShapeSpec("red", "star", "grey"), random.Random(3), size=360).crop((0, 60, 360, 300))
    return image, ["a red star", "a photo of a dog"]


def embed(model, preprocess, tokenizer):
    image, texts = inputs()
    with torch.no_grad():
        pixels = preprocess(image)[None]
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()
    return pixels.numpy(), img, txt


def test_every_preprocessing_setting_of_a_tag_is_wired_as_open_clip_wires_it(offline, monkeypatch):
    register_tiny()
    monkeypatch.setitem(_PRETRAINED, "clipsearch-tiny", {"wiring": _pcfg(hf_hub="clipsearch/wiring-test/", **WIRING)})
    wiring = next(w for w in open_clip_pretrained() if w.arch == "clipsearch-tiny")
    monkeypatch.setitem(pretrained_table(), ("clipsearch-tiny", "wiring"), wiring)
    hub_file(offline, "clipsearch/wiring-test/", TINY_WEIGHTS)
    ours = load_encoder(ModelSpec("clipsearch-tiny", "wiring"), device="cpu")
    # open_clip applies a tag's mean, std, interpolation and resize mode itself, but only warns when the tag was
    # trained with QuickGELU and the architecture's config says GELU ("QuickGELU mismatch"): it is the caller's
    # to force it, as clipsearch does.
    model, _, preprocess = open_clip.create_model_and_transforms("clipsearch-tiny", pretrained="wiring",
                                                                 cache_dir=str(offline), force_quick_gelu=True)
    model.eval()
    recorded = preprocessing_of(ours)
    assert (recorded.mean, recorded.std, recorded.interpolation, recorded.resize_mode) == \
        (WIRING["mean"], WIRING["std"], "bilinear", "squash")
    assert ours.model.visual.preprocess_cfg == model.visual.preprocess_cfg
    assert any(isinstance(m, QuickGELU) for m in ours.model.modules())
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    for a, b in zip(embed(ours.model, ours.preprocess, ours.tokenizer), embed(model, preprocess, ours.tokenizer)):
        assert np.abs(a - b).max() < 1e-6
    bundled = load_encoder(model_spec("clipsearch-tiny"), device="cpu")  # the same weights, default settings
    assert np.abs(embed(bundled.model, bundled.preprocess, bundled.tokenizer)[1]
                  - embed(ours.model, ours.preprocess, ours.tokenizer)[1]).max() > 1e-3


def test_the_default_model_loads_from_the_hub_cache_as_open_clip_loads_it(offline, tmp_path):
    """ViT-B-32 / laion2b_s34b_b79k through the real path (cache lookup, tag config, weights), random weights."""
    torch.manual_seed(0)
    weights = tmp_path / "random.bin"
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), weights)
    hub_file(offline, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K/", weights)
    weights.unlink()
    ours = load_encoder(model_spec("ViT-B-32"), device="cpu")
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained="laion2b_s34b_b79k",
                                                                 cache_dir=str(offline))
    model.eval()
    assert ours.spec == ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    assert ours.model.visual.preprocess_cfg == model.visual.preprocess_cfg
    assert not any(isinstance(m, QuickGELU) for m in ours.model.modules())
    for a, b in zip(embed(ours.model, ours.preprocess, ours.tokenizer), embed(model, preprocess, ours.tokenizer)):
        assert np.abs(a - b).max() < 1e-6
