"""A long-lived reader (`serve`) follows an index that another process has since rebuilt, and an index run
rebuilds its vector index only once its writes are committed."""
import pytest
from fastapi.testclient import TestClient

from clipsearch import Library, model_spec
from clipsearch import indexer, library as library_module
from clipsearch.vectorindex import IndexPolicy
from clipsearch.webapp import create_app

from conftest import draw_shape

TINY = model_spec("clipsearch-tiny")


@pytest.fixture
def served(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as writer:
        writer.index([shape_tree / "a"], model=TINY, workers=0)
    with Library.open(library_dir, encoder=tiny) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        yield lib, client


def names(client, query="a shape", k=50):
    response = client.get("/api/search", params={"q": query, "k": k})
    assert response.status_code == 200
    return sorted(hit["path"].rsplit("/", 1)[-1] for hit in response.json()["results"])


def test_serve_answers_with_images_another_library_indexed(served, shape_tree, library_dir, tiny):
    lib, client = served
    assert len(names(client)) == 4
    with Library.open(library_dir, encoder=tiny) as other:
        other.index([shape_tree], workers=0)
    assert len(names(client)) == 8
    hits = client.get("/api/search", params={"q": "a blue star", "k": 1}).json()["results"]
    assert hits[0]["path"].endswith("blue_star.png")


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "flat"])
def test_serve_reloads_an_index_file_rebuilt_by_another_process(served, library_dir, tiny, kind):
    lib, client = served
    before = names(client)
    with Library.open(library_dir, encoder=tiny) as other:
        other.repair("ivf" if kind == "flat" else kind)
        if kind == "flat":
            other.repair("flat")
    assert names(client) == before
    assert lib.vectors.kind == kind and lib.vectors._mapped_from is not None  # the new file, memory-mapped
    assert client.get("/api/info").json()["index"]["type"] == kind


def test_serve_reloads_after_another_run_rebuilds_the_index(shape_tree, library_dir, tiny, tmp_path):
    policy = IndexPolicy(approximate_from=6)
    with Library.open(library_dir, create=True, encoder=tiny, index_policy=policy) as writer:
        writer.index([shape_tree / "a"], model=TINY, workers=0)
    with Library.open(library_dir, encoder=tiny, index_policy=policy) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        assert lib.vectors.kind == "flat" and len(names(client)) == 4
        for i in range(4):
            draw_shape(tmp_path / "more" / f"green_star_{i}.png", "green", "star", seed=40 + i)
        with Library.open(library_dir, encoder=tiny, index_policy=policy) as other:
            other.index([shape_tree / "a", tmp_path / "more"], workers=0)
        found = names(client, "a green star", k=3)
        assert lib.vectors.kind == "ivf" and len(lib.vectors) == 8
        assert all(name.startswith("green_star") for name in found)


def test_an_index_run_rebuilds_once_after_its_writes(shape_tree, library_dir, tiny, monkeypatch):
    builds = []
    real_build = library_module.build

    def counting_build(catalog, dim, kind, policy, texts=None):
        builds.append((kind, catalog.count()))
        return real_build(catalog, dim, kind, policy, texts)

    monkeypatch.setattr(library_module, "build", counting_build)
    monkeypatch.setattr(indexer, "SAVE_EVERY_S", 0.0)  # save after every batch
    with Library.open(library_dir, create=True, encoder=tiny, index_policy=IndexPolicy(approximate_from=3)) as lib:
        lib.index([shape_tree], model=TINY, workers=0, batch_size=2)
        assert builds == [("ivf", 8)]  # not at 4 or 6 images, mid-run
        assert lib.info().index["built_for"] == 8 and lib.check() == []
        query = lib.catalog.vectors_for([1])[0]
        assert lib.nearest(query, k=1)[0].path == lib.catalog.rows([1])[1]["path"]
