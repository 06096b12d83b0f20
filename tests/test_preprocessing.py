"""What a library records about how its vectors were made, and reference vectors of the bundled model."""
import json
import random
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner

from clipsearch import Library
from clipsearch.cli import main
from clipsearch.models import Preprocessing, open_clip_version, preprocessing_of
from clipsearch.shapes import ShapeSpec, render

REFERENCE = Path(__file__).parent / "data" / "tiny_reference.json"
TOLERANCE = 1e-4
"""Largest allowed difference of any vector component. The same build differs by about 1e-6 between CPUs
(AVX2 and AVX-512 kernels sum in other orders); a change of resampling filter moves components by 1e-2."""


@pytest.fixture(scope="module")
def reference():
    data = json.loads(REFERENCE.read_text())
    images = [render(ShapeSpec(i["colour"], i["shape"], i["background"]), random.Random(i["seed"]), size=data["size"])
              .crop(tuple(data["crop"])) for i in data["images"]]
    return data, images


def test_the_bundled_model_still_makes_the_reference_vectors(tiny, reference):
    """Fails when a dependency upgrade (open_clip, torch, Pillow) changes the embeddings; regenerate with
    scripts/reference_vectors.py only once the change is understood."""
    data, images = reference
    assert np.abs(tiny.encode_pil(images) - np.array(data["image_vectors"])).max() < TOLERANCE
    assert np.abs(tiny.encode_texts(data["texts"]) - np.array(data["text_vectors"])).max() < TOLERANCE
    recorded = Preprocessing.from_dict({**data["preprocessing"], "open_clip": open_clip_version()})
    assert preprocessing_of(tiny) == recorded


@pytest.mark.parametrize("change", [{"interpolation": "bilinear"}, {"resize_mode": "squash"},
                                    {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}])
def test_a_preprocessing_change_is_beyond_the_tolerance(tiny, reference, change):
    data, images = reference
    cfg = {**preprocessing_of(tiny).to_dict(), **change}
    transform = open_clip.image_transform(tuple(cfg["image_size"]), is_train=False, mean=cfg["mean"], std=cfg["std"],
                                          interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])
    changed = tiny.encode_images(torch.stack([transform(image) for image in images]))
    assert np.abs(changed - np.array(data["image_vectors"])).max() > 10 * TOLERANCE


def index_tiny(shape_tree, library_dir, *more):
    return CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model", "clipsearch-tiny",
                                     *map(str, more)])


def test_a_library_records_its_preprocessing(shape_tree, library_dir, tiny):
    assert index_tiny(shape_tree, library_dir).exit_code == 0
    info = json.loads(CliRunner().invoke(main, ["info", "--db", str(library_dir), "--json"]).stdout)
    assert info["preprocessing"] == json.loads(json.dumps(preprocessing_of(tiny).to_dict()))
    assert info["preprocessing"]["open_clip"] == open_clip_version() and info["warning"] is None
    result = CliRunner().invoke(main, ["info", "--db", str(library_dir)])
    assert "interpolation=bicubic" in result.stdout and result.stderr == ""


def record(library_dir, **changes):
    with Library.open(library_dir) as lib:
        lib.catalog.set_meta("preprocessing", {**lib.catalog.get_meta("preprocessing"), **changes})


def test_another_open_clip_version_is_one_warning_line_at_open(shape_tree, library_dir):
    assert index_tiny(shape_tree / "a", library_dir).exit_code == 0
    record(library_dir, open_clip="2.0.0")
    info = CliRunner().invoke(main, ["info", "--db", str(library_dir)])
    assert info.exit_code == 0 and len(info.stderr.splitlines()) == 1
    assert f"open_clip 2.0.0 -> {open_clip_version()}" in info.stderr and "--reindex" in info.stderr
    as_json = json.loads(CliRunner().invoke(main, ["info", "--db", str(library_dir), "--json"]).stdout)
    assert as_json["warning"] == info.stderr.strip()
    search = CliRunner().invoke(main, ["search", "a red star", "--db", str(library_dir)])
    results = [line for line in search.stdout.splitlines() if not line.startswith("-- ")]  # less the good-match line
    assert search.exit_code == 0 and search.stderr == info.stderr and len(results) == 4


@pytest.mark.parametrize("changes,shown", [
    ({"interpolation": "bilinear"}, "interpolation bilinear -> bicubic"),
    ({"resize_mode": "squash"}, "resize_mode squash -> shortest"),
    ({"image_size": [224, 224]}, "image_size [224, 224] -> [64, 64]"),
    ({"mean": [0.5, 0.5, 0.5]}, "mean [0.5, 0.5, 0.5] -> [0.48145466"),
    ({"std": [0.5, 0.5, 0.5]}, "std [0.5, 0.5, 0.5] -> [0.26862954"),
])
def test_indexing_with_other_preprocessing_warns_with_what_differs(shape_tree, library_dir, changes, shown):
    assert index_tiny(shape_tree / "a", library_dir).exit_code == 0
    record(library_dir, **changes)
    result = index_tiny(shape_tree, library_dir)  # new images: the model is loaded and compared in full
    assert result.exit_code == 0 and len(result.stderr.splitlines()) == 1 and shown in result.stderr
    assert index_tiny(shape_tree, library_dir, "--reindex").stderr == ""  # re-embedding records the new one


def test_libraries_from_before_the_record_open_without_warning(shape_tree, library_dir):
    assert index_tiny(shape_tree / "a", library_dir).exit_code == 0
    with Library.open(library_dir) as lib:
        lib.catalog.set_meta("preprocessing", None)
        assert lib.preprocessing is None and lib.info().warning is None
