"""`clipsearch embed` on a real local Ray cluster, then `ingest`: the same library as single-machine indexing."""
import os
import shutil
import sqlite3
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'clipsearch[ray]'")

from clipsearch import Library, model_spec  # noqa: E402
from clipsearch.cli import main  # noqa: E402
from clipsearch.distributed import embed  # noqa: E402
from clipsearch.errors import ClusterError, ExtraNotInstalled, ModelMismatch  # noqa: E402
from clipsearch.models import ModelSpec  # noqa: E402
from clipsearch.shards import write_shard  # noqa: E402
from clipsearch.shapes import generate  # noqa: E402

from conftest import touch_later  # noqa: E402

SHARD_SIZE = 6
QUERIES = ("a red star", "a blue circle", "a green shape")
COLUMNS = "path, size, mtime_ns, hash, width, height, format, taken_at, camera, phash"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """25 shapes in nested folders (PNG and JPEG, one with EXIF), a broken file, and a hidden one."""
    root = tmp_path_factory.mktemp("ray-tree")
    for i, (spec, image) in enumerate(generate(24, seed=10)):
        folder = root / ("a" if i % 3 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:02d}_{spec.colour}_{spec.shape}.{'jpg' if i % 2 else 'png'}")
    exif = Image.Exif()
    exif[272], exif[306] = "TestCam 1", "2021:05:01 12:30:00"
    generate(1, seed=11)[0][1].save(root / "a" / "exif.jpg", exif=exif)
    (root / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    generate(1, seed=12)[0][1].save(root / ".hidden.png")
    return root


@pytest.fixture(scope="module")
def single(tree, tiny, tmp_path_factory):
    """The library single-machine indexing builds from the tree."""
    path = tmp_path_factory.mktemp("single") / "lib"
    with Library.open(path, create=True, encoder=tiny) as lib:
        report = lib.index([tree], model=model_spec("clipsearch-tiny"))
    return path, report


@pytest.fixture(scope="module")
def embedded(cluster, tree, tmp_path_factory):
    """The tree embedded through Ray; the first attempt of one shard kills its worker process."""
    work = tmp_path_factory.mktemp("ray-run")
    marker = work / "crashed"

    def crash_once(key: str) -> None:  # a closure, so Ray pickles it by value for its workers
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, key.encode())
        os.close(fd)
        os._exit(1)

    report = embed([tree], work / "shards", model_spec("clipsearch-tiny"), shard_size=SHARD_SIZE,
                   before_shard=crash_once)
    return work / "shards", report, marker


@pytest.fixture(scope="module")
def ingested(embedded, tmp_path_factory):
    path = tmp_path_factory.mktemp("ingested") / "lib"
    with Library.open(path, create=True) as lib:
        report = lib.ingest(embedded[0])
    return path, report


def rows(library) -> dict[str, tuple]:
    with sqlite3.connect(library / "catalog.db") as db:
        return {r[0]: r for r in db.execute(f"SELECT {COLUMNS} FROM images")}


def vectors(library) -> dict[str, np.ndarray]:
    with sqlite3.connect(library / "catalog.db") as db:
        return {p: np.frombuffer(v, np.float32) for p, v in db.execute("SELECT path, vector FROM images")}


def test_embed_writes_every_shard_despite_a_crashed_worker(embedded):
    shards, report, marker = embedded
    assert marker.exists(), "the injected crash did not happen"
    assert (shards / f"shard-{marker.read_text()}.parquet").exists()
    assert report.shards >= 2 and report.written == report.shards and report.already_written == 0
    assert sorted(p.name for p in shards.iterdir()) == sorted(p.name for p in shards.glob("shard-*.parquet"))
    assert report.embedded == 25


def test_ingested_library_equals_single_machine_index(single, ingested):
    (single_lib, _), (ray_lib, report) = single, ingested
    assert (report.added, report.updated, report.unchanged) == (25, 0, 0)
    assert rows(ray_lib) == rows(single_lib)
    a, b = vectors(ray_lib), vectors(single_lib)
    assert max(float(np.abs(a[p] - b[p]).max()) for p in a) < 1e-5
    with Library.open(ray_lib) as lib, Library.open(single_lib) as other:
        assert lib.check() == []
        for query in QUERIES:
            got, want = lib.search(query, k=5), other.search(query, k=5)
            assert [r.path for r in got] == [r.path for r in want]
            assert np.allclose([r.score for r in got], [r.score for r in want], atol=1e-5)


def test_exif_fields_and_bad_files_come_through(tree, embedded, ingested, single):
    exif = rows(ingested[0])[str(tree / "a" / "exif.jpg")]
    assert exif[-3:-1] == ("2021-05-01T12:30:00", "TestCam 1")
    broken = str(tree / "b" / "broken.jpg")
    assert [(s.path, s.reason) for s in embedded[1].skipped] == [(broken, "not an image")]
    assert [(s.path, s.reason) for s in ingested[1].skipped] == [(broken, "not an image")]
    with sqlite3.connect(ingested[0] / "catalog.db") as db:
        assert db.execute("SELECT path, reason FROM failures").fetchall() == [(broken, "not an image")]
    assert [(s.path, s.reason) for s in single[1].skipped] == [(broken, "not an image")]


def test_ingest_again_adds_nothing(embedded, ingested):
    before = rows(ingested[0])
    with Library.open(ingested[0]) as lib:
        report = lib.ingest(embedded[0])
        assert lib.check() == []
    assert (report.added, report.updated, report.unchanged) == (0, 0, 25)
    assert rows(ingested[0]) == before


def test_rerun_skips_written_shards_and_redoes_only_a_changed_one(cluster, tree, embedded, tmp_path):
    first = embedded[1]
    shards = shutil.copytree(embedded[0], tmp_path / "shards")
    again = embed([tree], shards, model_spec("clipsearch-tiny"), shard_size=SHARD_SIZE)
    assert (again.written, again.already_written, again.embedded) == (0, first.shards, 0)

    changed = tree / "a" / "exif.jpg"
    mtime = changed.stat().st_mtime_ns
    touch_later(changed)
    try:
        rerun = embed([tree], shards, model_spec("clipsearch-tiny"), shard_size=SHARD_SIZE)
        new_mtime = changed.stat().st_mtime_ns
    finally:
        os.utime(changed, ns=(mtime, mtime))
    assert (rerun.written, rerun.already_written) == (1, first.shards - 1)  # the changed file's shard alone
    # The folder still holds the stale shard too: whatever the order, ingest keeps the newer version.
    with Library.open(tmp_path / "lib", create=True) as lib:
        report = lib.ingest(shards)
        assert (report.shards, report.added) == (first.shards + 1, 25)
        assert lib.catalog.count() == 25
        assert lib.catalog.row_by_path(str(changed))["mtime_ns"] == new_mtime


def test_cli_embed_and_ingest(cluster, tree, embedded, tmp_path):
    shards = embedded[0]
    out = CliRunner().invoke(main, ["embed", str(tree), "--model", "clipsearch-tiny", "--output", str(shards),
                                    "--shard-size", str(SHARD_SIZE), "-q"])
    assert out.exit_code == 0, out.output
    assert "written 0" in out.output
    errors = tmp_path / "errors.json"
    out = CliRunner().invoke(main, ["ingest", str(shards), "--db", str(tmp_path / "lib"), "--errors", str(errors)])
    assert out.exit_code == 0, out.output
    assert "added 25" in out.output and "skipped 1: not an image" in out.output
    assert "broken.jpg" in errors.read_text()
    out = CliRunner().invoke(main, ["search", "a red star", "--db", str(tmp_path / "lib"), "-n", "1"])
    assert out.exit_code == 0 and "red" in out.output
    out = CliRunner().invoke(main, ["ingest", str(tmp_path), "--db", str(tmp_path / "lib2")])
    assert out.exit_code == 1 and "No embedding shards" in out.output


def other_model_shard(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    columns = {"path": ["/x.png"], "size": [1], "mtime_ns": [1], "hash": ["h"], "width": [1], "height": [1],
               "format": ["PNG"], "taken_at": [None], "camera": [None], "vector": np.ones((1, 64)),
               "error": [None], "transient": [False]}
    write_shard(folder / "shard-0.parquet", columns, ModelSpec("ViT-B-32", "other"), 64)


def test_one_model_per_shard_folder_and_library(tree, ingested, tmp_path):
    other_model_shard(tmp_path / "shards")
    with pytest.raises(ModelMismatch, match="holds shards embedded with ViT-B-32"):
        embed([tree], tmp_path / "shards", model_spec("clipsearch-tiny"))
    with Library.open(ingested[0]) as lib, pytest.raises(ModelMismatch):
        lib.ingest(tmp_path / "shards")


def test_missing_ray_is_one_clear_error(tree, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExtraNotInstalled, match=r"pip install 'clipsearch\[ray\]'"):
        embed([tree], tmp_path / "shards", model_spec("clipsearch-tiny"))


def test_cpu_actors_must_leave_a_cpu_to_decode(cluster, tree, tmp_path):
    with pytest.raises(ClusterError, match="at most 1 embedding actors"):
        embed([tree], tmp_path / "shards", model_spec("clipsearch-tiny"), actors=2)
