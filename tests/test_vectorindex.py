"""The FAISS index against numpy brute force, and its reconciliation with the catalog."""
import numpy as np
import pytest

from clipsearch.catalog import Catalog, NewImage
from clipsearch.ranking import combine, split_weight, top_k
from clipsearch.vectorindex import VectorIndex, rebuild


def unit_rows(rng, n, d=16):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute_force(vectors, ids, query, k):
    scores = vectors @ query
    order = np.argsort(-scores)[:k]
    return ids[order], scores[order]


def test_search_matches_numpy_brute_force():
    rng = np.random.default_rng(0)
    vectors, ids = unit_rows(rng, 500), np.arange(1000, 1500)
    index = VectorIndex.create(16)
    index.add(ids, vectors)
    for query in unit_rows(rng, 5):
        scores, found = index.search(query[None], 10)
        want_ids, want_scores = brute_force(vectors, ids, query, 10)
        assert list(found[0]) == list(want_ids)
        assert np.allclose(scores[0], want_scores, atol=1e-5)


def test_allowed_ids_search_only_among_them():
    rng = np.random.default_rng(1)
    vectors, ids = unit_rows(rng, 200), np.arange(200)
    index = VectorIndex.create(16)
    index.add(ids, vectors)
    allowed = ids[::7]
    query = unit_rows(rng, 1)[0]
    _, found = index.search(query[None], 5, allowed)
    want, _ = brute_force(vectors[::7], allowed, query, 5)
    assert list(found[0]) == list(want)


def catalog_with(tmp_path, rng, n):
    catalog = Catalog.open(tmp_path, create=True)
    vectors = unit_rows(rng, n)
    images = [NewImage(f"/p/{i}.png", 1, 1, f"h{i}", 1, 1, "PNG", None, None, v) for i, v in enumerate(vectors)]
    catalog.write_batch(images, [], [])
    return catalog


def test_sync_adds_and_removes_to_match_the_catalog(tmp_path):
    rng = np.random.default_rng(2)
    catalog = catalog_with(tmp_path, rng, 50)
    index = rebuild(catalog, 16)
    stale = rebuild(catalog, 16)
    catalog.delete([3, 7, 20])
    more = [NewImage(f"/q/{i}.png", 1, 1, f"g{i}", 1, 1, "PNG", None, None, v) for i, v in enumerate(unit_rows(rng, 5))]
    catalog.write_batch(more, [], [])
    assert stale.sync(catalog)
    assert sorted(stale.ids()) == sorted(catalog.all_ids())
    assert not stale.sync(catalog)
    fresh = rebuild(catalog, 16)
    query = unit_rows(rng, 1)
    assert np.array_equal(stale.search(query, 10)[1], fresh.search(query, 10)[1])
    assert len(index) == 50


def test_save_is_atomic_and_loads_back(tmp_path):
    rng = np.random.default_rng(3)
    index = VectorIndex.create(16)
    index.add(np.arange(10), unit_rows(rng, 10))
    index.save(tmp_path / "v.faiss")
    assert not (tmp_path / "v.faiss.tmp").exists()
    assert sorted(VectorIndex.load(tmp_path / "v.faiss").ids()) == list(range(10))


@pytest.mark.parametrize("term,expected", [("sunset", ("sunset", 1.0)), ("sunset:0.5", ("sunset", 0.5)),
                                           ("a: b", ("a: b", 1.0)), ("x:-2", ("x", -2.0))])
def test_split_weight(term, expected):
    assert split_weight(term) == expected


def test_combine_normalises_and_top_k_filters():
    a, b = np.array([1, 0], np.float32), np.array([0, 1], np.float32)
    assert np.allclose(combine([(1, a), (1, b)]), np.array([1, 1]) / np.sqrt(2))
    chosen = top_k(np.array([0.9, 0.8, 0.7, 0.1]), np.array([5, 6, 7, 8]), 2, keep=lambda i: i != 6, min_score=0.5)
    assert chosen == [(5, 0.9), (7, 0.7)]
