"""The FAISS index against numpy brute force, and its reconciliation with the catalog."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from clipsearch import Library
from clipsearch.catalog import Catalog, NewImage
from clipsearch.cli import main
from clipsearch.ranking import combine, split_weight, top_k
from clipsearch.vectorindex import (KINDS, ArraySource, IndexPolicy, VectorIndex, build, rebuild, rebuild_reason,
                                    wanted_kind)


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


# --- index types ---------------------------------------------------------------------------------------------
def clustered(rng, n, d=32, clusters=200):
    """Unit vectors in clusters around a common direction, like CLIP embeddings (uniform ones flatter no index)."""
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = 1.0 + centres[rng.integers(0, clusters, n)] + 1.2 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def array_source(rng, n, d=32):
    return ArraySource(np.arange(1, n + 1), clustered(rng, n, d))


def overlap(found, want):
    return len(np.intersect1d(found[found >= 0], want)) / len(want)


@pytest.mark.parametrize("kind", KINDS)
def test_every_index_type_matches_brute_force_when_searching_widely(kind):
    rng = np.random.default_rng(10)
    source = array_source(rng, 3000)
    index = rebuild(source, 32, kind)
    assert index.kind == kind and len(index) == 3000
    index.set_search_param(index.index.nlist if kind.startswith("ivf") else 512)  # IVF: every list
    shares = []
    for query in clustered(rng, 30):
        scores, found = index.search(query[None], 10, exact=source.vectors_for)
        want, _ = brute_force(source.vectors, source.ids, query, 10)
        shares.append(overlap(found[0], want))
        assert np.allclose(scores[0], source.vectors_for(found[0]) @ query, atol=1e-5)  # exact scores
    # Product quantisation (here 6-bit codes: 3,000 vectors train 64 centroids) stays approximate even
    # when every list is searched.
    assert np.mean(shares) >= {"flat": 1.0, "ivfpq": 0.95}.get(kind, 0.99)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_tiny_collections_build_and_search_with_every_index_type(kind, n, tmp_path):
    rng = np.random.default_rng(n)
    catalog = catalog_with(tmp_path, rng, n)
    index = rebuild(catalog, 16, kind)
    query = unit_rows(rng, 1)[0]
    _, found = index.search(query[None], 10, exact=catalog.vectors_for)
    assert len(set(found[0])) == min(n, 10) and set(found[0]) <= set(catalog.all_ids())


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_approximate_recall_at_calibrated_parameters(kind):
    rng = np.random.default_rng(11)
    vectors = clustered(rng, 20_200, d=64)
    source, queries = ArraySource(np.arange(1, 20_001), vectors[:20_000]), vectors[20_000:]  # queries: new vectors
    index, record = build(source, 64, kind)
    assert record.recall_at_10 >= 0.95 and record.built_for == 20_000
    truth = np.argsort(-(queries @ source.vectors.T), axis=1)[:, :10] + 1
    _, found = index.search(queries, 10, exact=source.vectors_for)
    assert np.mean([overlap(f, t) for f, t in zip(found, truth)]) >= 0.95


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_filtered_search_with_an_approximate_index_returns_min_k_matches(kind):
    rng = np.random.default_rng(12)
    source = array_source(rng, 5000)
    index = rebuild(source, 32, kind)
    query = clustered(rng, 1)[0]
    ranked = source.ids[np.argsort(-(source.vectors @ query))]
    far = ranked[-7:]  # the 7 worst matches: never in the lists or graph region a plain search visits
    scores, found = index.search(query[None], 10, allowed=far, exact=source.vectors_for)
    assert sorted(found[0]) == sorted(far)
    assert list(found[0]) == list(brute_force(source.vectors_for(far), far, query, 10)[0])
    some = rng.choice(source.ids, 300, replace=False)
    _, found = index.search(query[None], 10, allowed=some, exact=source.vectors_for)
    assert len(found[0]) == 10 and set(found[0]) <= set(some)
    assert overlap(found[0], brute_force(source.vectors_for(some), some, query, 10)[0]) >= 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_deletions_are_honoured_by_every_index_type(kind, tmp_path):
    rng = np.random.default_rng(13)
    source = array_source(rng, 2000)
    index = rebuild(source, 32, kind)
    query = clustered(rng, 1)[0]
    _, first = index.search(query[None], 10, exact=source.vectors_for)
    index.remove(first[0][:5])
    assert len(index) == 1995 and not set(first[0][:5]) & set(index.ids())
    index.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss")  # memory-mapped
    for candidate in (index, loaded):
        _, found = candidate.search(query[None], 10, exact=source.vectors_for)
        assert not set(first[0][:5]) & set(found[0]) and set(first[0][5:]) <= set(found[0])
    loaded.add(first[0][:1], source.vectors_for(first[0][:1]))  # the first change makes a private copy
    assert loaded.search(query[None], 10, exact=source.vectors_for)[1][0][0] == first[0][0]
    assert len(VectorIndex.load(tmp_path / "v.faiss")) == 1995  # the file is untouched until saved


@pytest.mark.parametrize("kind", KINDS)
def test_sync_and_rebuild_from_the_catalog_for_every_index_type(kind, tmp_path):
    rng = np.random.default_rng(14)
    catalog = catalog_with(tmp_path, rng, 600)
    stale = rebuild(catalog, 16, kind)
    catalog.delete([3, 7, 20])
    more = [NewImage(f"/q/{i}.png", 1, 1, f"g{i}", 1, 1, "PNG", None, None, v) for i, v in enumerate(unit_rows(rng, 5))]
    catalog.write_batch(more, [], [])
    assert stale.sync(catalog) and not stale.sync(catalog)
    assert sorted(stale.ids()) == sorted(catalog.all_ids())
    fresh = rebuild(catalog, 16, kind)
    shares = []
    for query in unit_rows(rng, 10):
        _, a = stale.search(query[None], 10, exact=catalog.vectors_for)
        _, b = fresh.search(query[None], 10, exact=catalog.vectors_for)
        assert not {3, 7, 20} & set(a[0])
        shares.append(overlap(a[0], b[0]))
    # Two IVF-PQ indexes over 600 isotropic 16-d vectors (3-bit codes) disagree more than the others.
    assert np.mean(shares) >= (0.8 if kind == "ivfpq" else 0.9)


def test_auto_picks_the_type_by_size_with_a_margin():
    policy = IndexPolicy(approximate_from=1000)
    assert wanted_kind("auto", 999, "flat", policy) == "flat"
    assert wanted_kind("auto", 1000, "flat", policy) == "ivf"
    assert wanted_kind("auto", 500, "ivf", policy) == "ivf"  # no rebuilding back and forth around 1000
    assert wanted_kind("auto", 499, "ivf", policy) == "flat"
    assert wanted_kind("auto", 5000, "hnsw", policy) == "ivf"
    assert wanted_kind("hnsw", 10, "flat", policy) == "hnsw"
    assert wanted_kind("ivf", 0, "ivf", policy) == "flat"  # nothing to train on


def test_auto_compresses_large_collections_and_ivfpq_needs_enough_vectors_to_train():
    policy = IndexPolicy(approximate_from=1000, compressed_from=10_000)
    assert wanted_kind("auto", 9_999, "ivf", policy) == "ivf"
    assert wanted_kind("auto", 10_000, "ivf", policy) == "ivfpq"
    assert wanted_kind("auto", 5_000, "ivfpq", policy) == "ivfpq"  # kept down to half the threshold
    assert wanted_kind("auto", 4_999, "ivfpq", policy) == "ivf"
    assert wanted_kind("ivfpq", 79, "flat", policy) == "ivf"  # too few vectors to train a codebook
    assert wanted_kind("ivfpq", 80, "flat", policy) == "ivfpq"
    index, record = build(ArraySource(np.arange(1, 80), unit_rows(np.random.default_rng(1), 79)), 16, "ivfpq")
    assert index.kind == "ivf" and record.params["storage"] == "sq8"


def add_rows(catalog, rng, n, d=32):
    start = catalog.max_id()
    rows = [NewImage(f"/p/{start + i}.png", 1, 1, f"h{start + i}", 1, 1, "PNG", None, None, v)
            for i, v in enumerate(clustered(rng, n, d))]
    catalog.write_batch(rows, [], [])


def test_library_switches_type_at_the_threshold_and_rebuilds_as_it_grows(tmp_path):
    rng = np.random.default_rng(15)
    policy = IndexPolicy(approximate_from=1000)
    lib = Library.open(tmp_path / "lib", create=True, index_policy=policy)
    lib.catalog.set_meta("dim", 32)
    add_rows(lib.catalog, rng, 900)
    lib.vectors
    lib.save_index()
    assert lib.vectors.kind == "flat" and lib.info().index["type"] == "flat"
    add_rows(lib.catalog, rng, 150)
    assert lib.vectors.kind == "flat"  # readers never rebuild; writers do when they save
    lib.save_index()
    info = lib.info().index
    assert info["type"] == "ivf" and info["choice"] == "auto" and info["built_for"] == 1050
    assert info["nlist"] == 26 and info["recall_at_10"] >= 0.9 and info["vectors"] == 1050
    lib.close()
    lib = Library.open(tmp_path / "lib", index_policy=policy)
    assert lib.vectors.kind == "ivf" and lib.check() == []
    add_rows(lib.catalog, rng, 3150)  # 4200 = 4 × 1050: time for more lists
    lib.vectors
    assert rebuild_reason(lib.vectors, lib._build_record(), "auto", policy)
    lib.save_index()
    assert lib.info().index["built_for"] == 4200 and lib.info().index["nlist"] == 105
    lib.catalog.delete(list(range(1, 3801)))
    lib.vectors
    lib.save_index()
    assert lib.vectors.kind == "flat" and len(lib.vectors) == 400 and lib.check() == []


def test_library_compresses_its_index_past_the_second_threshold(tmp_path):
    rng = np.random.default_rng(17)
    policy = IndexPolicy(approximate_from=500, compressed_from=2000)
    lib = Library.open(tmp_path / "lib", create=True, index_policy=policy)
    lib.catalog.set_meta("dim", 32)
    add_rows(lib.catalog, rng, 1000)
    lib.vectors
    lib.save_index()
    assert lib.info().index["type"] == "ivf"
    add_rows(lib.catalog, rng, 1500)
    lib.vectors
    lib.save_index()
    info = lib.info().index
    assert info["type"] == "ivfpq" and info["storage"] == "pq8x5" and info["built_for"] == 2500
    query = clustered(rng, 1)[0]
    want, _ = brute_force(lib.catalog.vectors_for(lib.catalog.all_ids()), lib.catalog.all_ids(), query, 10)
    assert overlap(np.array([int(r.path.split("/")[-1][:-4]) + 1 for r in lib.nearest(query, k=10)]), want) >= 0.8
    assert lib.check() == []


def test_the_catalog_keeps_a_running_count_that_check_verifies_and_repair_restores(tmp_path):
    rng = np.random.default_rng(18)
    lib = Library.open(tmp_path / "lib", create=True)
    lib.catalog.set_meta("dim", 32)
    add_rows(lib.catalog, rng, 50)
    lib.catalog.delete([1, 2, 3])
    rows = "SELECT count(*) FROM images"
    assert lib.catalog.count() == 47 == lib.catalog.db.execute(rows).fetchone()[0]
    lib.vectors
    lib.save_index()
    assert lib.check() == []
    with lib.catalog.db.conn:
        lib.catalog.db.conn.execute("UPDATE image_count SET n = 5")
    assert "the catalog counts 5 images but holds 47" in lib.check()
    lib.repair()
    assert lib.check() == [] and lib.catalog.count() == 47
    with lib.catalog.db.conn:  # a catalog from before the count (schema 3) gains it on open (the later
        # migrations run again: the one that adds a column needs it gone)
        lib.catalog.db.conn.executescript("DROP TRIGGER images_counted; DROP TRIGGER images_uncounted;"
                                          " DROP TABLE image_count; ALTER TABLE images DROP COLUMN phash;"
                                          " PRAGMA user_version = 3;")
    lib.close()
    lib = Library.open(tmp_path / "lib")
    assert lib.catalog.count() == 47 and lib.check() == []
    lib.catalog.reset({"dim": 32})
    assert lib.catalog.count() == 0 == lib.catalog.db.execute(rows).fetchone()[0]
    lib.close()


def test_chosen_index_type_is_kept_and_filtered_library_search_is_complete(tmp_path):
    rng = np.random.default_rng(16)
    lib = Library.open(tmp_path / "lib", create=True, index_policy=IndexPolicy(approximate_from=10**9))
    lib.catalog.set_meta("dim", 32)
    add_rows(lib.catalog, rng, 2000)
    record = lib.repair("hnsw")
    assert record.params["type"] == "hnsw" and lib.index_type == "hnsw"
    lib.catalog.delete(list(range(1, 1001)))
    lib.vectors
    lib.save_index()  # half deleted: compacted by a rebuild, still HNSW
    assert lib.vectors.kind == "hnsw" and lib.vectors.deleted_share() == 0 and lib.check() == []
    from clipsearch import Filters

    lib.catalog.db.execute("UPDATE images SET width = 500 WHERE id % 97 = 0")
    lib.catalog.db.conn.commit()
    wide = Filters(min_width=500)
    results = lib.nearest(clustered(rng, 1)[0], k=50, filters=wide)
    assert len(results) == len(wide.allowed_ids(lib.catalog)) == 10


TINY = ["--model", "clipsearch-tiny"]


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_index_type_repair_check_and_info(shape_tree, library_dir):
    cli("index", shape_tree / "a", "--db", library_dir, *TINY, "--index-type", "ivf")
    info = json.loads(cli("info", "--db", library_dir, "--json"))
    assert info["index_type"] == "ivf" and info["index"]["choice"] == "ivf" and info["index"]["vectors"] == 4
    cli("index", shape_tree, "--db", library_dir)  # adds to the memory-mapped IVF index
    assert cli("check", "--db", library_dir).strip() == "ok"
    assert "ivf" in cli("info", "--db", library_dir)
    found = cli("search", "a red star", "--db", library_dir, "-n", "8").splitlines()
    assert len([line for line in found if not line.startswith("-- ")]) == 8  # and a "good matches" line
    out = cli("repair", "--db", library_dir, "--index-type", "flat")
    assert "rebuilt the index with 8 vectors (type=flat" in out
    assert json.loads(cli("info", "--db", library_dir, "--json"))["index"]["choice"] == "flat"


def test_help_imports_neither_torch_nor_faiss():
    code = "import sys, clipsearch.cli; print(sorted({'torch', 'faiss', 'open_clip', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
