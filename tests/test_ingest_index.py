"""`ingest` builds the index the collection calls for straight from the catalog, never a full exact index first."""
import numpy as np
import pytest

from clipsearch import Library
from clipsearch.models import ModelSpec
from clipsearch.vectorindex import IndexPolicy, VectorIndex

pytest.importorskip("pyarrow")
from clipsearch.shards import write_shard  # noqa: E402

SPEC = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")


def shard(folder, first, n, dim=32):
    rng = np.random.default_rng(first)
    x = 1.0 + rng.standard_normal((n, dim)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(folder / f"shard-{first:06d}.parquet", {
        "path": [f"/p/{first + i}.jpg" for i in range(n)], "size": [1] * n, "mtime_ns": [1] * n,
        "hash": [f"h{first + i}" for i in range(n)], "width": [1] * n, "height": [1] * n, "format": ["JPEG"] * n,
        "taken_at": [None] * n, "camera": [None] * n, "vector": x / np.linalg.norm(x, axis=1, keepdims=True),
        "error": [None] * n, "transient": [False] * n}, SPEC, dim)


def test_ingest_builds_an_approximate_index_without_an_exact_one_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the model is not here: modelled text queries calibrate
    for first in (0, 300, 600):
        shard(tmp_path / "shards", first, 300)
    added = []
    real_add = VectorIndex.add
    monkeypatch.setattr(VectorIndex, "add", lambda self, ids, v: (added.append((self.kind, len(ids))),
                                                                   real_add(self, ids, v))[1])
    policy = IndexPolicy(approximate_from=500)
    with Library.open(tmp_path / "lib", create=True, index_policy=policy) as lib:
        report = lib.ingest(tmp_path / "shards")
        info = lib.info().index
        assert report.added == 900 and info["type"] == "ivf" and info["vectors"] == 900 and lib.check() == []
        assert info["text_queries"] == "modelled gap (200)"
    assert {kind for kind, _ in added} == {"ivf"}  # no exact (flat) index was filled on the way
    shard(tmp_path / "shards", 900, 300)  # a second ingest adds to the IVF file, chunk by chunk
    added.clear()
    with Library.open(tmp_path / "lib", index_policy=policy) as lib:
        lib.ingest(tmp_path / "shards")
        assert lib.info().index["vectors"] == 1200 and lib.info().index["built_for"] == 900 and lib.check() == []
    assert added == [("ivf", 300)]
