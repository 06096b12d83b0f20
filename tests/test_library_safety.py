"""What runs do to the library: odd names, offline and moved folders, replaced files, read-only libraries,
clocks and label files. Every input here lost or damaged indexed images before."""
import base64
import csv
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from filelock import FileLock
from PIL import Image

import clipsearch.catalog
import clipsearch.library
from clipsearch import Library, model_spec
from clipsearch.catalog import MIGRATIONS, SCHEMA_VERSION
from clipsearch.cli import main
from clipsearch.indexer import OFFLINE_MIN_LOST
from clipsearch.paths import catalog_text, from_catalog, readable
from clipsearch.tagging import check_labels

from conftest import SHAPE_TREE, draw_shape

TINY = ["--model", "clipsearch-tiny"]


def cli(*args):
    result = CliRunner().invoke(main, [os.fspath(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def ok(*args):
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def name(raw: bytes) -> str:
    """A file name from its bytes, as Python (and so clipsearch) sees it on Linux."""
    return os.fsdecode(raw)


def catalog_paths(library_dir: Path) -> list[str]:
    with Library.open(library_dir) as lib:
        return sorted(from_catalog(p) for (p,) in lib.catalog.db.execute("SELECT path FROM images"))


# --- 1. file names that are not UTF-8 -----------------------------------------------------------------------
ODD_NAMES = [b"caf\xe9.png", b"\xff\xfe.png", b"\x80 latin1 \xe0 la plage.png", b"tab\there \\x41.png",
             "nonchar \uffff.png".encode()]


@pytest.fixture
def odd_tree(tmp_path) -> Path:
    """Images named with bytes that are not UTF-8 (and their siblings), in a folder that is not UTF-8 either."""
    root = tmp_path / "photos"
    for i, raw in enumerate(ODD_NAMES):
        draw_shape(root / name(raw), *SHAPE_TREE[i], seed=i)
    draw_shape(root / name(b"dossier \xe9t\xe9") / "plain.png", "green", "square", seed=9)
    draw_shape(root / "ok.png", "blue", "circle", seed=10)
    (root / name(b"broken \xe9.png")).write_bytes(b"not a picture")
    return root


def test_paths_round_trip_through_the_catalog_text():
    for raw in ODD_NAMES + [b"/a/b", "/\u00e9/\u4e2d".encode(), b"\xed\xa0\x80", "x\uffffdce9".encode()]:
        path = name(raw)
        text = catalog_text(path)
        text.encode("utf-8")  # storable by SQLite
        assert from_catalog(text) == path and os.fsencode(from_catalog(text)) == raw
    folder, inside = name(b"/p/d\xe9"), name(b"/p/d\xe9/x\xff.png")
    assert catalog_text(inside).startswith(catalog_text(folder) + os.sep)  # prefix scans stay correct


def test_names_that_are_not_utf8_are_indexed_searched_and_shown(odd_tree, library_dir, tmp_path):
    errors = tmp_path / "errors.json"
    out = ok("index", odd_tree, "--db", library_dir, *TINY, "--errors", errors)
    assert "added 7," in out and "skipped 1" in out
    assert [os.fsencode(Path(p).name) for p in catalog_paths(library_dir)].count(b"caf\xe9.png") == 1
    skipped = json.loads(errors.read_text(encoding="utf-8"))
    assert skipped[0]["path"].endswith("broken \\xe9.png")
    assert base64.b64decode(skipped[0]["path_bytes_b64"]).endswith(b"broken \xe9.png")
    # The failure is remembered (not retried) and the rerun changes nothing.
    assert "unchanged 7, skipped 1" in ok("index", odd_tree, "--db", library_dir)

    shown = ok("search", "a red star", "--db", library_dir, "-n", "10")
    assert "caf\\xe9.png" in shown and len([line for line in shown.splitlines() if not line.startswith("-- ")]) == 7
    results = json.loads(ok("search", "a red star", "--db", library_dir, "-n", "10", "--json"))
    exact = {base64.b64decode(r["path_bytes_b64"]) if r["path_bytes_b64"] else r["path"].encode() for r in results}
    assert exact == {os.fsencode(p) for p in catalog_paths(library_dir)}
    assert all(r["path_bytes_b64"] is None for r in results if r["path"].endswith("ok.png"))

    under = ok("search", "a shape", "--db", library_dir, "--under", odd_tree / name(b"dossier \xe9t\xe9"))
    assert len(under.splitlines()) == 1 and "dossier \\xe9t\\xe9" in under
    similar = ok("similar", odd_tree / name(b"caf\xe9.png"), "--db", library_dir, "--json")
    assert len(json.loads(similar)) == 6  # every other image, not itself

    ok("dedup", "--db", library_dir, "--csv", tmp_path / "d.csv", "--json", tmp_path / "d.json")
    with open(tmp_path / "d.csv", newline="", encoding="utf-8") as f:
        assert "path_bytes_b64" in next(csv.reader(f))


def test_odd_names_are_moved_and_removed(odd_tree, library_dir):
    ok("index", odd_tree, "--db", library_dir, *TINY)
    os.rename(odd_tree / name(b"caf\xe9.png"), odd_tree / name(b"caf\xe8.png"))
    shutil.move(odd_tree / name(b"dossier \xe9t\xe9"), odd_tree / name(b"dossier \xfc"))
    assert "moved 2, removed 0" in ok("index", odd_tree, "--db", library_dir)
    os.remove(odd_tree / name(b"\xff\xfe.png"))
    assert "removed 1" in ok("index", odd_tree, "--db", library_dir)
    names = {os.fsencode(Path(p).name) for p in catalog_paths(library_dir)}
    assert b"caf\xe8.png" in names and b"caf\xe9.png" not in names and b"\xff\xfe.png" not in names


# --- 4. runs must not destroy what a user indexed --------------------------------------------------------------
def tag_shapes(library_dir):
    ok("tag", "--db", library_dir, "--labels", "circle,square,star,triangle")


def tag_total(library_dir) -> int:
    return sum(int(line.split()[0]) for line in ok("tags", "--db", library_dir).splitlines())


def test_an_emptied_or_unmounted_folder_removes_nothing_without_prune(shape_tree, library_dir, tmp_path):
    ok("index", shape_tree, "--db", library_dir, *TINY)
    tag_shapes(library_dir)
    tags = tag_total(library_dir)
    parked = shutil.move(shape_tree, tmp_path / "parked")  # the drive is unmounted: an empty mount point
    shape_tree.mkdir()
    out = ok("index", shape_tree, "--db", library_dir)
    assert "removed 0" in out
    assert f"{shape_tree} looks offline: 0 of 8 files found; nothing removed; use --prune" in out
    assert len(catalog_paths(library_dir)) == 8 and tag_total(library_dir) == tags
    shape_tree.rmdir()  # the mount point itself is gone: `index` on it is no error, and still removes nothing
    out = ok("index", shape_tree, "--db", library_dir)
    assert f"{shape_tree} does not exist: 0 of 8 files found" in out and len(catalog_paths(library_dir)) == 8
    shutil.move(parked, shape_tree)  # back again: nothing to re-embed
    assert "unchanged 8" in ok("index", shape_tree, "--db", library_dir)
    shutil.rmtree(shape_tree)
    assert "removed 8" in ok("index", shape_tree, "--db", library_dir, "--prune")
    assert catalog_paths(library_dir) == []
    result = cli("index", shape_tree, "--db", library_dir)
    assert result.exit_code == 1 and "No such file or directory" in result.output


def test_a_folder_that_lost_most_of_its_files_at_once_looks_offline(tmp_path, library_dir):
    root = tmp_path / "photos"
    total = 2 * OFFLINE_MIN_LOST + 2
    for i in range(total):
        draw_shape(root / f"{i:02d}.png", *SHAPE_TREE[i % 8], seed=i, size=48)
    ok("index", root, "--db", library_dir, *TINY)
    for i in range(total // 2 + 1):  # more than half, and at least OFFLINE_MIN_LOST
        (root / f"{i:02d}.png").unlink()
    out = ok("index", root, "--db", library_dir)
    assert f"looks offline: {total // 2 - 1} of {total} files found" in out and "removed 0" in out
    assert f"removed {total // 2 + 1}" in ok("index", root, "--db", library_dir, "--prune")
    for i in range(total // 2 + 1, total // 2 + 4):  # a few deletions are deletions
        (root / f"{i:02d}.png").unlink()
    assert "removed 3" in ok("index", root, "--db", library_dir)


def test_reindex_keeps_the_folders_it_is_not_given(shape_tree, library_dir):
    ok("index", shape_tree / "a", shape_tree / "b", "--db", library_dir, *TINY)
    tag_shapes(library_dir)
    out = ok("index", "--reindex", shape_tree / "a", "--db", library_dir)
    assert "updated 4, moved 0, removed 0" in out
    paths = catalog_paths(library_dir)
    assert len(paths) == 8 and sum(str(shape_tree / "b") in p for p in paths) == 4
    with Library.open(library_dir) as lib:
        tagged = {p for (p,) in lib.catalog.db.execute(
            "SELECT path FROM images WHERE id IN (SELECT image_id FROM image_tags)")}
    assert {p for p in paths if "/b/" in p} <= tagged  # the images kept keep their tags


def test_reindex_with_another_model_names_the_folders_it_would_drop(shape_tree, library_dir, tmp_path):
    ok("index", shape_tree / "a", "--db", library_dir, *TINY)
    ok("index", shape_tree / "b", "--db", library_dir)
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    result = cli("index", "--reindex", shape_tree / "a", "--db", library_dir, *TINY, "--checkpoint", other)
    assert result.exit_code == 1 and str(shape_tree / "b") in result.output and "4 indexed images" in result.output
    assert len(catalog_paths(library_dir)) == 8


@pytest.mark.parametrize("library_name", [".clipsearch", "library"])
def test_the_library_never_indexes_its_own_folder(shape_tree, library_name):
    library_dir = shape_tree / library_name
    ok("index", shape_tree, "--db", library_dir, *TINY)
    draw_shape(library_dir / "thumbs" / "cached.png", "red", "star")  # e.g. the web UI's thumbnail cache
    ok("index", shape_tree, "--db", library_dir, "--include-hidden")
    paths = catalog_paths(library_dir)
    assert paths and not any(p.startswith(str(library_dir)) for p in paths)


def bmp(path: Path, colour) -> Path:
    """An uncompressed picture: any colour gives a file of the same size."""
    Image.new("RGB", (40, 30), colour).save(path, "BMP")
    return path


def red_score(library_dir, path: Path) -> float:
    results = json.loads(ok("search", "red", "--db", library_dir, "--json", "-n", "50"))
    return next(r["score"] for r in results if r["path"] == str(path))


def test_a_file_replaced_with_its_old_size_and_mtime_is_re_embedded(tmp_path, library_dir):
    root = tmp_path / "photos"
    root.mkdir()
    replaced, rewritten, chmodded = (bmp(root / f"{n}.bmp", (250, 0, 0)) for n in ("cp", "inplace", "chmod"))
    ok("index", root, "--db", library_dir, *TINY)
    with Library.open(library_dir) as lib:
        before = lib.catalog.row_by_path(str(replaced))["vector"]
    for path in (replaced, rewritten):
        st = path.stat()
        if path == replaced:  # cp -p: a new file (new inode) with the old times
            bmp(root / "new.bmp", (0, 0, 250)).replace(path)
        else:  # an in-place rewrite (same inode, new ctime), mtime restored with touch -r
            path.write_bytes(bmp(root / "new.bmp", (0, 250, 0)).read_bytes())
            (root / "new.bmp").unlink()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_size == st.st_size
    os.chmod(chmodded, 0o600)  # ctime changes, content does not: hashed again, not re-embedded
    out = ok("index", root, "--db", library_dir)
    assert "added 0, updated 2, moved 0, removed 0, unchanged 1" in out
    with Library.open(library_dir) as lib:
        assert lib.catalog.row_by_path(str(replaced))["vector"] != before
    assert "unchanged 3" in ok("index", root, "--db", library_dir)


def test_rehash_compares_every_file(shape_tree, library_dir):
    ok("index", shape_tree, "--db", library_dir, *TINY)
    with sqlite3.connect(library_dir / "catalog.db") as db:  # a change no size, time or inode shows
        db.execute("UPDATE images SET hash = 'stale' WHERE path LIKE '%red_star.png'")
    assert "updated 0" in ok("index", shape_tree, "--db", library_dir)
    assert "updated 1, moved 0, removed 0, unchanged 7" in ok("index", shape_tree, "--db", library_dir, "--rehash")


# --- 6. metadata that lies, folders that move ---------------------------------------------------------------------
@pytest.mark.parametrize("mtime_ns", [10_000_000_000 * 10**9, 2**63, -(10**18), -(2**63) - 10**9, 0])
def test_file_times_outside_the_catalog_range_are_clamped(shape_tree, library_dir, mtime_ns):
    odd = shape_tree / "a" / "red_star.png"
    os.utime(odd, ns=(mtime_ns, mtime_ns))
    assert "added 8," in ok("index", shape_tree, "--db", library_dir, *TINY)
    assert "unchanged 8" in ok("index", shape_tree, "--db", library_dir)
    st = odd.stat()
    draw_shape(odd, "blue", "square", seed=3, size=150)  # edited, its far time put back: still noticed
    os.utime(odd, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "updated 1" in ok("index", shape_tree, "--db", library_dir)
    assert ok("search", "a blue square", "--db", library_dir, "--sort", "date")


def test_a_renamed_root_keeps_vectors_and_tags(shape_tree, library_dir, tmp_path, monkeypatch):
    ok("index", shape_tree / "a", shape_tree / "b", "--db", library_dir, *TINY)
    tag_shapes(library_dir)
    tags = tag_total(library_dir)
    renamed = shape_tree.rename(tmp_path / "pictures")
    monkeypatch.setattr(clipsearch.library, "load_encoder", lambda *a: pytest.fail("re-embedded moved files"))
    out = ok("index", renamed / "a", "--db", library_dir)
    assert "added 0, updated 0, moved 4, removed 0" in out
    out = ok("index", renamed, "--db", library_dir)
    assert "added 0, updated 0, moved 4, removed 0, unchanged 4" in out
    paths = catalog_paths(library_dir)
    assert len(paths) == 8 and all(p.startswith(str(renamed)) for p in paths)  # no ghosts left
    assert tag_total(library_dir) == tags
    result = cli("index", shape_tree, "--db", library_dir)  # nothing is left under the old name to prune
    assert result.exit_code == 1 and "No such file or directory" in result.output


def test_ingest_treats_any_content_difference_as_a_change(tmp_path, library_dir, tiny):
    from clipsearch.shards import write_shard

    photo = draw_shape(tmp_path / "photos" / "p.png", "red", "star")
    wrong_clock = 1_900_000_000 * 10**9  # 2030
    os.utime(photo, ns=(wrong_clock, wrong_clock))
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([photo.parent], model=model_spec("clipsearch-tiny"))
        old = lib.catalog.row_by_path(str(photo))
    draw_shape(photo, "blue", "circle", size=100)  # edited once the clock is right: an older mtime
    edited = photo.stat()
    vector = tiny.encode_pil([Image.open(photo).convert("RGB")])

    def shard(folder, mtime_ns, digest, size):
        columns = {"path": [catalog_text(str(photo))], "size": [size], "mtime_ns": [mtime_ns], "hash": [digest],
                   "width": [100], "height": [100], "format": ["PNG"], "taken_at": [None], "camera": [None],
                   "vector": vector, "error": [None], "transient": [False]}
        folder.mkdir()
        write_shard(folder / "shard-0.parquet", columns, tiny.spec, tiny.dim)
        return folder

    with Library.open(library_dir) as lib:
        report = lib.ingest(shard(tmp_path / "s1", edited.st_mtime_ns, "new", edited.st_size))
        assert (report.updated, report.unchanged) == (1, 0)
        assert lib.catalog.row_by_path(str(photo))["hash"] == "new"
        # a stale shard of the old version (the file here is the new one) loses, whatever its newer mtime
        report = lib.ingest(shard(tmp_path / "s2", old["mtime_ns"], old["hash"], old["size"]))
        assert (report.updated, report.unchanged) == (0, 1)
        assert lib.catalog.row_by_path(str(photo))["hash"] == "new"
        # the same content with a later time only records the time
        report = lib.ingest(shard(tmp_path / "s3", edited.st_mtime_ns + 10, "new", edited.st_size))
        assert (report.updated, report.unchanged) == (0, 1)
        assert lib.catalog.row_by_path(str(photo))["mtime_ns"] == edited.st_mtime_ns + 10


# --- labels ---------------------------------------------------------------------------------------------
def test_a_label_file_with_a_byte_order_mark_keeps_its_first_label(indexed_shapes, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("circle\r\nsquare\r\nstar\r\ntriangle\r\n".encode("utf-8-sig"))  # as Notepad saves it
    ok("tag", "--db", indexed_shapes, "--labels-file", labels)
    assert "circle" in ok("tags", "--db", indexed_shapes).split()
    assert ok("search", "a shape", "--db", indexed_shapes, "--tag", "circle")


def test_labels_differing_only_in_case_or_invisible_characters_are_one(indexed_shapes):
    variants = ["Circle", "circle", "cir\u200bcle", "\ufeffcircle", "circle\u00a0", "square", "SQUARE",
                "caf\u00e9", "cafe\u0301", "red\u00a0star", "red star"]
    ok("tag", "--db", indexed_shapes, "--labels", ",".join(variants))
    assert check_labels(variants) == ("Circle", "square", "caf\u00e9", "red star")
    labels = {t["label"] for t in json.loads(ok("tags", "--db", indexed_shapes, "--json"))}
    assert labels <= {"Circle", "square", "caf\u00e9", "red star"}
    assert ok("search", "a shape", "--db", indexed_shapes, "--tag", "red\u00a0star\u200b") is not None


@pytest.fixture
def indexed_shapes(shape_tree, library_dir):
    ok("index", shape_tree, "--db", library_dir, *TINY)
    return library_dir


# --- 5. read-only libraries -----------------------------------------------------------------------------------
def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


READING = [["search", "a red star"], ["search", "a never seen text"], ["info"], ["dedup"], ["check"],
           ["tags"], ["similar", "{tree}/a/red_star.png"]]
WRITING = [["index", "{tree}"], ["tag", "--labels", "a,b"], ["repair"], ["ingest", "{tree}"]]


@pytest.fixture
def read_only(indexed_shapes, monkeypatch):
    """The library as on read-only media: os.access says so (as access(2) does there, even to root; a test
    running as root cannot make a folder unwritable with chmod, so chmod alone would prove nothing here)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode & os.W_OK and str(indexed_shapes) in
                        os.fspath(p) else real(p, mode, **kw))
    return indexed_shapes


@pytest.mark.parametrize("modes", [("mode=ro", "immutable=1"), ("immutable=1",)])
def test_reading_commands_work_on_a_read_only_library_and_write_nothing(read_only, shape_tree, monkeypatch, modes):
    monkeypatch.setattr(clipsearch.catalog, "READ_ONLY_MODES", modes)
    os.chmod(read_only, 0o555)
    try:
        before = files_of(read_only)
        for args in READING:
            ok(*[a.format(tree=shape_tree) for a in args], "--db", read_only)
        after = files_of(read_only)
        assert {k: after[k] for k in before} == before
        # SQLite's mode=ro makes its shared-memory files where it can (here: root may write anywhere); on
        # read-only media it cannot, and immutable=1 never does.
        assert set(after) - set(before) <= ({"catalog.db-shm", "catalog.db-wal"} if "mode=ro" in modes else set())
        for args in WRITING:
            result = cli(*[a.format(tree=shape_tree) for a in args], "--db", read_only)
            assert result.exit_code == 1 and "is read-only" in result.output
            assert len(result.output.strip().splitlines()) == 1
        assert files_of(read_only) == after
    finally:
        os.chmod(read_only, 0o755)


def test_a_read_only_library_needing_an_upgrade_says_so(read_only):
    with sqlite3.connect(read_only / "catalog.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    result = cli("search", "a red star", "--db", read_only)
    assert result.exit_code == 1 and "upgrade it once with a run that can write" in result.output


# --- 8. the lock ---------------------------------------------------------------------------------------
def test_the_writer_lock_is_a_filelock(indexed_shapes, shape_tree):
    with FileLock(indexed_shapes / "lock", timeout=0):
        result = cli("index", shape_tree, "--db", indexed_shapes)
    assert result.exit_code == 1 and "Another clipsearch process is writing" in result.output
    assert "unchanged 8" in ok("index", shape_tree, "--db", indexed_shapes)


def test_readable_names_show_bytes_that_are_not_utf8():
    assert readable(name(b"/p/caf\xe9.png")) == "/p/caf\\xe9.png"
    assert readable("/p/caf\u00e9.png") == "/p/caf\u00e9.png"


def test_the_web_api_names_odd_files_readably_and_exactly(odd_tree, library_dir, tiny):
    from fastapi.testclient import TestClient

    from clipsearch.webapp import create_app

    ok("index", odd_tree, "--db", library_dir, *TINY)
    with Library.open(library_dir, encoder=tiny) as lib, \
            TestClient(create_app(lib), base_url="http://127.0.0.1:8000") as client:
        hits = client.get("/api/search", params={"q": "a red star", "k": 10}).json()["results"]
        assert len(hits) == 7
        cafe = next(h for h in hits if h["path"].endswith("caf\\xe9.png"))
        assert base64.b64decode(cafe["path_bytes_b64"]).endswith(b"/caf\xe9.png")
        detail = client.get(f"/api/images/{cafe['id']}").json()
        assert detail["path_bytes_b64"] == cafe["path_bytes_b64"]
        assert client.get(f"/api/images/{cafe['id']}/similar").status_code == 200
        assert client.get(f"/api/images/{cafe['id']}/thumb").status_code == 200


def test_a_catalog_from_before_file_identities_is_upgraded(indexed_shapes, shape_tree):
    with sqlite3.connect(indexed_shapes / "catalog.db") as db:  # back to the schema before them
        before = next(i for i, m in enumerate(MIGRATIONS) if "file_identity" in str(m))
        db.executescript(f"DROP TABLE file_identity; DROP INDEX images_size; PRAGMA user_version = {before};")
    assert "unchanged 8" in ok("index", shape_tree, "--db", indexed_shapes)
    with Library.open(indexed_shapes) as lib:
        assert lib.catalog.db.execute("SELECT count(*) FROM file_identity").fetchone()[0] == 8
    assert ok("search", "a red star", "--db", indexed_shapes)


# --- found by a fresh user on a clean clone -----------------------------------------------------------------
def test_a_missing_module_is_not_remembered_against_the_files(shape_tree, library_dir, monkeypatch):
    """An environment fault (a dependency missing while preprocessing) is retried by the next run, not
    recorded as the files' own failure."""
    import clipsearch.headstart

    def missing(image):
        raise ModuleNotFoundError("No module named 'imagehash'")

    monkeypatch.setattr(clipsearch.headstart, "fingerprint", missing)  # the decode stage's code for a photo
    first = ok("index", shape_tree, "--db", library_dir, *TINY, "--workers", "0")
    assert "added 0" in first and "imagehash" in first
    monkeypatch.undo()
    assert "added 8" in ok("index", shape_tree, "--db", library_dir, "--workers", "0")


def test_quarantine_and_undo_of_names_that_are_not_utf8(tmp_path, library_dir):
    photos = tmp_path / "photos"
    original = draw_shape(photos / "keep.png", "red", "star", seed=1)
    for raw in (b"x\xe9.png", b"caf\xe9 copy.png"):
        shutil.copy(original, photos / name(raw))
    ok("index", photos, "--db", library_dir, *TINY)
    quarantine = tmp_path / "q"
    out = ok("dedup", "--db", library_dir, "--exact-only", "--move-to", quarantine)
    assert "moved 2" in out
    assert sorted(p.name for p in photos.iterdir()) == ["keep.png"]
    manifest = next(quarantine.glob("*.json"))
    ok("undo-move", manifest)
    assert sorted(os.fsencode(p.name) for p in photos.iterdir()) == sorted([b"keep.png", b"x\xe9.png",
                                                                            b"caf\xe9 copy.png"])


@pytest.mark.parametrize("data", ["circle\nsquare\nstar\n".encode("utf-16"),
                                  "circle\r\nsquare\r\n".encode("utf-16-be").join([b"\xfe\xff", b""])])
def test_a_utf16_label_file_is_read(indexed_shapes, tmp_path, data):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(data)
    ok("tag", "--db", indexed_shapes, "--labels-file", labels)
    assert "circle" in ok("tags", "--db", indexed_shapes).split()


def test_a_label_file_that_is_not_text_is_one_line(indexed_shapes, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"caf\xe9\nth\xe9\n")  # Latin-1
    result = cli("tag", "--db", indexed_shapes, "--labels-file", labels)
    assert result.exit_code == 1 and "is not UTF-8 or UTF-16 text" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_tag_filter_ignores_case_as_labels_do(indexed_shapes):
    ok("tag", "--db", indexed_shapes, "--labels", "Red,blue,green,yellow")
    assert ok("search", "a shape", "--db", indexed_shapes, "--tag", "RED") == \
        ok("search", "a shape", "--db", indexed_shapes, "--tag", "Red")
    assert ok("search", "a shape", "--db", indexed_shapes, "--tag", "red").strip()


def test_another_library_inside_the_tree_is_not_indexed(shape_tree, library_dir, tmp_path):
    other = shape_tree / "backup-library"
    ok("index", shape_tree / "a", "--db", other, *TINY)
    (other / "thumbs").mkdir(exist_ok=True)
    draw_shape(other / "thumbs" / "1-320-1.jpg", "red", "star")
    ok("index", shape_tree, "--db", library_dir, *TINY)
    assert not [p for p in catalog_paths(library_dir) if "backup-library" in p]


def test_info_prints_no_empty_exact_path_line(indexed_shapes):
    assert "path_bytes_b64" not in ok("info", "--db", indexed_shapes)
