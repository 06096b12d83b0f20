"""Indexing a tree: what lands in the catalog and index, and incremental re-runs."""
import os
import shutil

import numpy as np
import pytest

from clipsearch import Library, model_spec
from clipsearch.errors import ModelMismatch

from conftest import draw_shape, touch_later


def index(library_dir, tiny, *paths, **kwargs):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        return lib.index(paths, model=model_spec("clipsearch-tiny"), **kwargs)


def catalog_paths(library_dir):
    with Library.open(library_dir) as lib:
        return sorted(r[0] for r in lib.catalog.db.execute("SELECT path FROM images"))


def test_index_records_every_image_once(shape_tree, library_dir, tiny):
    report = index(library_dir, tiny, shape_tree)
    assert (report.added, report.updated, report.removed, len(report.skipped)) == (8, 0, 0, 0)
    paths = catalog_paths(library_dir)
    assert len(paths) == 8 and all(os.path.isabs(p) for p in paths)
    assert not any("hidden" in p or "._" in p for p in paths)
    with Library.open(library_dir) as lib:
        row = lib.catalog.row_by_path(str(shape_tree / "a" / "red_star.png"))
        assert (row["width"], row["height"], row["format"]) == (128, 128, "PNG")
        assert len(row["hash"]) == 32 and row["indexed_at"]
        vector = np.frombuffer(row["vector"], dtype=np.float32)
        assert vector.shape == (tiny.dim,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert sorted(lib.vectors.ids()) == sorted(lib.catalog.all_ids())


def test_reindex_unchanged_tree_decodes_nothing(shape_tree, library_dir, tiny, monkeypatch):
    index(library_dir, tiny, shape_tree)
    import clipsearch.pipeline

    monkeypatch.setattr(clipsearch.pipeline, "decode", lambda *a: pytest.fail("decoded an unchanged file"))
    report = index(library_dir, tiny, shape_tree)
    assert (report.added, report.updated, report.unchanged) == (0, 0, 8)


def test_reindex_unchanged_tree_loads_no_model(shape_tree, library_dir, tiny, monkeypatch):
    """So that `clipsearch index` on an unchanged tree costs a walk, not torch's start-up."""
    index(library_dir, tiny, shape_tree)
    import clipsearch.library

    monkeypatch.setattr(clipsearch.library, "load_encoder", lambda *a: pytest.fail("loaded a model"))
    with Library.open(library_dir) as lib:
        report = lib.index([shape_tree])
    assert report.unchanged == 8


def test_changed_moved_and_deleted_files(shape_tree, library_dir, tiny):
    index(library_dir, tiny, shape_tree)
    draw_shape(shape_tree / "a" / "red_star.png", "green", "circle", seed=5)
    touch_later(shape_tree / "a" / "red_star.png")
    os.makedirs(shape_tree / "c")
    shutil.move(shape_tree / "b" / "blue_circle.png", shape_tree / "c" / "renamed.png")
    os.remove(shape_tree / "b" / "blue_star.png")
    report = index(library_dir, tiny, shape_tree)
    assert (report.added, report.updated, report.moved, report.removed) == (0, 1, 1, 1)
    paths = catalog_paths(library_dir)
    assert str(shape_tree / "c" / "renamed.png") in paths
    assert str(shape_tree / "b" / "blue_star.png") not in paths
    with Library.open(library_dir, encoder=tiny) as lib:
        assert len(lib.vectors) == lib.catalog.count() == 7
        top = lib.search("a green circle", k=1)[0]
        assert top.path == str(shape_tree / "a" / "red_star.png")


def test_parallel_workers_give_the_same_vectors(shape_tree, library_dir, tiny, tmp_path):
    for i in range(12):
        draw_shape(shape_tree / "many" / f"s{i}.png", "blue", "square", seed=100 + i)
    index(library_dir, tiny, shape_tree, workers=0)
    index(tmp_path / "lib2", tiny, shape_tree, workers=2, batch_size=4)
    with Library.open(library_dir) as one, Library.open(tmp_path / "lib2") as two:
        for path in catalog_paths(library_dir):
            a, b = one.catalog.row_by_path(path), two.catalog.row_by_path(path)
            assert np.allclose(np.frombuffer(a["vector"], np.float32), np.frombuffer(b["vector"], np.float32),
                               atol=1e-5)


def test_a_worker_held_up_does_not_hold_up_the_other(tmp_path, library_dir, tiny, monkeypatch):
    """Each batch goes to whichever worker is free: while one worker is stuck on the first file, the other takes
    every batch left (the first file's worker is let go only once the last file is loaded). Rows are still written
    in the files' order."""
    import multiprocessing

    import clipsearch.pipeline

    paths = [draw_shape(tmp_path / "photos" / f"{i:02d}.png", "blue", "square", seed=i) for i in range(24)]
    last_loaded = multiprocessing.get_context("fork").Event()
    real_load = clipsearch.pipeline.load_entry

    def load(entry, *args):
        if entry.path == str(paths[0]) and not last_loaded.wait(timeout=60):
            raise RuntimeError("the other worker did not take the batches left")
        if entry.path == str(paths[-1]):
            last_loaded.set()
        return real_load(entry, *args)

    monkeypatch.setattr(clipsearch.pipeline, "load_entry", load)
    report = index(library_dir, tiny, tmp_path / "photos", workers=2, batch_size=4)
    assert (report.added, report.skipped) == (24, ())
    with Library.open(library_dir) as lib:
        rows = list(lib.catalog.db.execute("SELECT path FROM images ORDER BY id"))
    assert [r[0] for r in rows] == [str(p) for p in paths]


def test_indexing_with_another_model_is_refused(shape_tree, library_dir, tiny, tmp_path):
    index(library_dir, tiny, shape_tree)
    other = tmp_path / "other.pt"
    other.write_bytes(b"not the same weights")
    with Library.open(library_dir, encoder=tiny) as lib:
        with pytest.raises(ModelMismatch, match="--reindex"):
            lib.index([shape_tree], model=model_spec("clipsearch-tiny", checkpoint=str(other)))


def test_symlink_loops_do_not_hang(shape_tree, library_dir, tiny):
    os.symlink(shape_tree, shape_tree / "a" / "loop")
    os.symlink(shape_tree / "missing.png", shape_tree / "broken.png")
    report = index(library_dir, tiny, shape_tree)
    assert report.added == 8
    assert [s.reason for s in report.skipped] == ["broken symlink"]


def test_exclude_glob(shape_tree, library_dir, tiny):
    report = index(library_dir, tiny, shape_tree, exclude=["b"])
    assert report.added == 4
    assert all("/b/" not in p for p in catalog_paths(library_dir))
