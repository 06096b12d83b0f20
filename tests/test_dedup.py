"""Duplicate reports: keeper-centred grouping (no chaining), the tiers, the keeper rule, aliases, the report
files, the delete list, quarantine moves and their undo, and that a plain run leaves every file as it was."""
import csv
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from clipsearch import Library, model_spec
from clipsearch import duplicates
from clipsearch.catalog import Catalog, NewImage
from clipsearch.decode import content_hash
from clipsearch.cli import main
from clipsearch.duplicates import (MEASURED_THRESHOLDS, centred_groups, find_duplicates, keeper_key, looks_derived,
                                   neighbour_pairs)
from clipsearch.errors import BadQuery
from clipsearch.filters import Filters
from clipsearch.perceptual import HASH_BYTES
from clipsearch.reports import CSV_COLUMNS, delete_list, summary, write_csv, write_html, write_json
from clipsearch.results import to_dict

from conftest import draw_shape

SAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "sample_data" / "photos"


# --- keeper-centred grouping on planted links --------------------------------------------------------
def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def arc(n, step_deg, dim=8):
    """n unit vectors along a circle, `step_deg` apart: a slowly panning burst."""
    angles = np.deg2rad(step_deg * np.arange(n))
    v = np.zeros((n, dim), dtype=np.float32)
    v[:, 0], v[:, 1] = np.cos(angles), np.sin(angles)
    return v


def check_centred(vectors, keeper, threshold):
    """Every member is within the threshold of its keeper, keepers keep themselves, each node in one group."""
    for v, k in enumerate(keeper.tolist()):
        assert keeper[k] == k
        assert float(vectors[v] @ vectors[k]) >= threshold - 1e-6


@pytest.mark.parametrize("n,step", [(6, 15), (40, 3), (200, 1)])
def test_a_chain_or_panning_burst_never_chains(n, step):
    vectors = arc(n, step)
    threshold = float(np.cos(np.deg2rad(step * 1.5)))  # each frame links only to its neighbours
    i, j, scores = neighbour_pairs(vectors, threshold)
    keeper = centred_groups(np.arange(n), i, j)
    check_centred(vectors, keeper, threshold)
    assert max(np.bincount(keeper)) <= 3  # a keeper and its two neighbours at most, never the whole burst


def test_a_star_groups_around_its_centre_and_outliers_reachable_only_through_others_stay_apart():
    centre = unit(np.eye(8)[0])
    spokes = unit(centre + 0.25 * np.eye(8)[1:5])  # cos ~0.97 to the centre, ~0.94 to each other
    outer = unit(spokes + 0.25 * np.eye(8)[1:5])  # cos ~0.97 to its spoke, ~0.89 to the centre
    vectors = np.vstack([centre, spokes, outer])
    i, j, scores = neighbour_pairs(vectors, 0.95)
    keeper = centred_groups(np.arange(len(vectors)), i, j)
    check_centred(vectors, keeper, 0.95)
    assert keeper[:5].tolist() == [0] * 5
    assert all(keeper[5:] == np.arange(5, 9))  # their spokes are taken: each outer point is alone


def test_a_clique_is_one_group():
    vectors = unit(np.eye(8)[0] + 0.05 * np.random.default_rng(0).standard_normal((6, 8)))
    i, j, _ = neighbour_pairs(vectors, 0.9)
    assert set(centred_groups(np.arange(6), i, j).tolist()) == {0}


def test_the_best_ranked_node_leads():
    vectors = arc(3, 10)
    i, j, _ = neighbour_pairs(vectors, 0.97)
    assert centred_groups(np.array([2, 0, 1]), i, j).tolist() == [1, 1, 1]


def test_the_approximate_index_finds_planted_copies(monkeypatch):
    """Above EXACT_SEARCH_MAX the search is IVF; copies at cosine >= 0.9 must still be found, nothing else."""
    monkeypatch.setattr(duplicates, "EXACT_SEARCH_MAX", 100)
    rng = np.random.default_rng(0)
    originals = unit(rng.standard_normal((3000, 64)))
    copies = unit(originals[:500] + 0.3 * unit(rng.standard_normal((500, 64))))  # cosine ~0.96
    i, j, scores = neighbour_pairs(np.vstack([originals, copies]), min_score=0.9)
    found = set(zip(i.tolist(), j.tolist()))
    assert sum((k, 3000 + k) in found for k in range(500)) >= 495  # approximate: isotropic noise is its worst case
    assert found <= {(k, 3000 + k) for k in range(500)} and (scores >= 0.9).all()


# --- the keeper rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["IMG_1 copy.jpg", "IMG_1 (1).jpg", "IMG_1_edited.jpg", "IMG_1_resized.jpg",
                                  "IMG_1-1.jpg", "IMG_1_brightened.jpg", "Kopie von IMG_1.jpg", "export/IMG_1.jpg",
                                  "Exports/IMG_1.jpg", "edited/IMG_1.jpg"])
def test_derived_names_and_export_folders(name):
    assert looks_derived(os.path.join("/photos", name))


@pytest.mark.parametrize("name", ["IMG_1.jpg", "DSC_0001.JPG", "beach.png", "2019/IMG_1234.jpg", "copyright/x.jpg"])
def test_original_names(name):
    assert not looks_derived(os.path.join("/photos", name))


def row(path, *, camera=None, date="2020-01-01T00:00:00", w=100, h=100, size=1000):
    return {"path": path, "camera": camera, "date": date, "width": w, "height": h, "size": size}


def test_keeper_rule_prefers_what_looks_original_then_resolution():
    rows = [row("/p/a_resized.jpg", w=4000, h=3000, camera="X"), row("/p/a.jpg", w=100),
            row("/p/b.jpg", camera="X", date="2021-01-01T00:00:00"), row("/p/c.jpg", camera="X"),
            row("/p/d.jpg", camera="X", w=200), row("/fav/z.jpg", w=10)]
    ranked = [r["path"] for r in sorted(rows, key=lambda r: keeper_key(r, ("/fav",)))]
    assert ranked == ["/fav/z.jpg", "/p/d.jpg", "/p/c.jpg", "/p/b.jpg", "/p/a.jpg", "/p/a_resized.jpg"]


# --- grouping a catalog (planted rows and fingerprints, no model) -----------------------------------------
def fingerprint(seed, flips=0):
    """A planted fingerprint: a random pHash with `flips` bits changed, then its 'mirror'."""
    bits = np.random.default_rng(seed).integers(0, 2, 8 * 2 * HASH_BYTES).astype(np.uint8)
    bits[:flips] ^= 1
    return np.packbits(bits).tobytes()


class Rows:
    """A catalog filled with hand-made rows pointing at real files under `files`."""

    def __init__(self, directory: Path):
        directory.mkdir()
        self.files = directory / "files"
        self.files.mkdir()
        self.catalog = Catalog.open(directory, create=True)
        self.catalog.set_meta("dim", 8)
        self.ids: dict[str, int] = {}

    def add(self, name, vector, *, content=None, width=100, height=100, taken_at=None, camera=None, prints=None,
            write=True, path=None):
        path = path or self.files / name
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes((content or name).encode())
        data = path.read_bytes() if path.exists() else (content or name).encode()
        image = NewImage(str(path), len(data), 1_600_000_000_000_000_000, content_hash(data), width,
                         height, "JPEG", taken_at, camera, np.asarray(vector, dtype=np.float32), phash=prints)
        self.ids[name] = self.catalog.write_batch([image], [], [])[0]
        return path


@pytest.fixture
def rows(tmp_path):
    rows = Rows(tmp_path / "catalog")
    yield rows
    rows.catalog.close()


def names(group):
    return [(os.path.basename(m.path), m.tier) for m in group.members]


A = np.eye(8, dtype=np.float32)[0]
A_NEAR = unit(A + 0.2 * np.eye(8)[1])  # cosine 0.981 to A
A_SERIES = unit(A + 0.6 * np.eye(8)[2])  # cosine 0.857 to A
B = np.eye(8, dtype=np.float32)[3]


def test_tiers_from_bytes_cosine_and_pixels(rows):
    rows.add("a.jpg", A, width=400, height=300, prints=fingerprint(1))
    rows.add("a copy.jpg", A, content="a.jpg", width=400, height=300, prints=fingerprint(1))
    rows.add("a_small.jpg", A_NEAR, width=200, height=150, prints=fingerprint(1, flips=10))
    rows.add("a_cropped.jpg", A_NEAR, width=300, height=300, prints=fingerprint(1, flips=50))
    rows.add("a_lookalike.jpg", A_NEAR, prints=fingerprint(9))  # same cosine, other pixels: not linked
    rows.add("a_retake.jpg", A_SERIES, prints=fingerprint(1, flips=80))
    rows.add("b.jpg", B, prints=fingerprint(2))
    report = find_duplicates(rows.catalog, threshold=0.95, series_threshold=0.85)
    (group,) = report.groups
    assert names(group) == [("a.jpg", "keeper"), ("a copy.jpg", "exact"), ("a_small.jpg", "near"),
                            ("a_cropped.jpg", "edited"), ("a_retake.jpg", "series")]
    assert group.tier == "edited" and group.keeper_reason == (  # the retake; the others lost on their names
        "it has the highest resolution among the files whose names look original")
    assert [m.phash_distance for m in group.members] == [0, 0, 10, 50, 80]
    assert report.reclaimable_bytes == group.reclaimable_bytes == len("a.jpg") + len("a_small.jpg")
    assert report.exact_copies == 1 and delete_list(report) == [str(rows.files / "a copy.jpg"),
                                                                 str(rows.files / "a_small.jpg")]


def test_exact_copies_are_counted_whatever_groups_them(rows):
    for k in range(3):
        rows.add(f"a{k}.jpg", A, content="a", prints=fingerprint(1))
    rows.add("a_small.jpg", A_NEAR, prints=fingerprint(1, flips=4))
    report = find_duplicates(rows.catalog, threshold=0.95)
    assert [g.tier for g in report.groups] == ["near"]
    assert report.exact_copies == 2 and "2 exact copies" in summary(report)


def test_a_flipped_copy_is_edited(rows):
    plain = fingerprint(1)
    rows.add("a.jpg", A, prints=plain)
    rows.add("a_flipped.jpg", A_NEAR, prints=plain[HASH_BYTES:] + plain[:HASH_BYTES])
    group = find_duplicates(rows.catalog, threshold=0.95).groups[0]
    assert names(group) == [("a.jpg", "keeper"), ("a_flipped.jpg", "edited")]
    flipped = group.members[1]
    assert flipped.mirrored and flipped.phash_distance == 0  # counted to the keeper's mirror image, and said so
    assert not group.members[0].mirrored and "(mirror image)" in summary(find_duplicates(rows.catalog, threshold=0.95))


def test_a_flipped_copy_that_was_also_edited_counts_its_bits_to_the_mirror(rows):
    plain = fingerprint(1)
    flipped = bytearray(plain[HASH_BYTES:] + plain[:HASH_BYTES])
    flipped[0] ^= 0b111111  # 6 bits from the keeper's mirror image
    rows.add("a.jpg", A, prints=plain)
    rows.add("a_flipped.jpg", A_NEAR, prints=bytes(flipped))
    member = find_duplicates(rows.catalog, threshold=0.95).groups[0].members[1]
    assert member.mirrored and member.tier == "edited" and member.phash_distance == 6


def test_rows_without_a_fingerprint_stand_on_their_cosine_and_are_never_reclaimable(rows):
    rows.add("a.jpg", A)
    rows.add("b.jpg", A_NEAR)
    (group,) = find_duplicates(rows.catalog, threshold=0.95).groups
    assert names(group) == [("a.jpg", "keeper"), ("b.jpg", "edited")] and group.reclaimable_bytes == 0


def test_a_file_is_in_one_group_only_and_members_are_within_the_threshold_of_their_keeper(rows):
    vectors = arc(30, 4)
    for k, v in enumerate(vectors):
        rows.add(f"burst_{k:02}.jpg", v, prints=fingerprint(1, flips=k))
    report = find_duplicates(rows.catalog, threshold=0.99, series_threshold=0.97)
    seen = [m.path for g in report.groups for m in g.members]
    assert len(seen) == len(set(seen))
    for g in report.groups:
        for m in g.members[1:]:
            assert m.similarity >= (0.99 if m.tier in ("near", "edited") else 0.97) - 1e-4


def test_dismissed_pairs_are_not_reported_again(rows, tmp_path):
    rows.add("a.jpg", A, prints=fingerprint(1))
    rows.add("b.jpg", A_NEAR, prints=fingerprint(1, flips=2))
    rows.catalog.close()
    with Library.open(tmp_path / "catalog") as lib:
        assert len(lib.duplicates(threshold=0.95).groups) == 1
        lib.dismiss(rows.ids["a.jpg"], rows.ids["b.jpg"])
        assert lib.duplicates(threshold=0.95).groups == ()
        with pytest.raises(BadQuery):
            lib.dismiss(rows.ids["a.jpg"], 999)
    rows.catalog = Catalog.open(tmp_path / "catalog")


def test_hard_links_and_symlinks_are_aliases_never_copies_never_keepers(rows):
    photo = rows.add("photo.jpg", A, prints=fingerprint(1))
    link = rows.files / "aaa_hardlink.jpg"
    os.link(photo, link)
    rows.add("aaa_hardlink.jpg", A, write=False, prints=fingerprint(1))
    symlink = rows.files / "a_symlink.jpg"
    symlink.symlink_to(photo)
    rows.add("a_symlink.jpg", A, write=False, prints=fingerprint(1))
    rows.add("photo_copy.jpg", A, content="photo.jpg", prints=fingerprint(1))
    report = find_duplicates(rows.catalog, threshold=0.95)
    (group,) = report.groups
    assert group.keeper.path in (str(photo), str(link))
    tiers = dict(names(group))
    assert tiers["a_symlink.jpg"] == "alias" and tiers["photo_copy.jpg"] == "exact"
    assert sorted(tiers.values()) == ["alias", "alias", "exact", "keeper"]
    assert report.reclaimable_bytes == len("photo.jpg") and report.aliases == 2
    assert delete_list(report) == [str(rows.files / "photo_copy.jpg")]


def test_a_symlink_alone_with_its_target_is_no_duplicate(rows):
    photo = rows.add("z.jpg", A, prints=fingerprint(1))
    (rows.files / "a.jpg").symlink_to(photo)
    rows.add("a.jpg", A, write=False, prints=fingerprint(1))
    assert find_duplicates(rows.catalog, threshold=0.95).groups == ()


def test_raw_and_jpeg_of_one_shot_are_a_pair(rows):
    rows.add("IMG_1.CR2", A, camera="Canon", prints=fingerprint(1))
    rows.add("IMG_1.JPG", A_NEAR, camera="Canon", prints=fingerprint(1, flips=3))
    (group,) = find_duplicates(rows.catalog, threshold=0.95).groups
    assert group.tier == "pair" and [t for _, t in names(group)] == ["keeper", "pair"] and group.reclaimable_bytes == 0


def test_prefer_and_camera_data_choose_the_keeper(rows):
    rows.add("a.jpg", A, width=400, height=300, prints=fingerprint(1))
    rows.add("phone/b.jpg", A_NEAR, camera="Pixel", prints=fingerprint(1, flips=2))
    rows.add("best/c.jpg", A_NEAR, prints=fingerprint(1, flips=3))
    assert find_duplicates(rows.catalog, threshold=0.95).groups[0].keeper.path.endswith("phone/b.jpg")
    group = find_duplicates(rows.catalog, threshold=0.95, prefer=[str(rows.files / "best")]).groups[0]
    assert group.keeper.path.endswith("best/c.jpg") and group.keeper_reason == "it is under a --prefer folder"


def test_exact_only_groups_bytes_without_vectors(rows):
    rows.add("a.jpg", A, content="x")
    rows.add("b.jpg", A, content="x")
    rows.add("c.jpg", A_NEAR, prints=fingerprint(1))
    report = find_duplicates(rows.catalog, threshold=None)
    assert [names(g) for g in report.groups] == [[("a.jpg", "keeper"), ("b.jpg", "exact")]] and report.exact_only


def test_allowed_ids_restrict_the_comparison(rows):
    rows.add("a.jpg", A)
    rows.add("a-copy.jpg", A, content="a.jpg")
    rows.add("b.jpg", B)
    rows.add("b-copy.jpg", B, content="b.jpg")
    allowed = np.array([rows.ids["a.jpg"], rows.ids["a-copy.jpg"], rows.ids["b.jpg"]])
    report = find_duplicates(rows.catalog, allowed=allowed)
    assert [names(g) for g in report.groups] == [[("a.jpg", "keeper"), ("a-copy.jpg", "exact")]]
    assert report.images == 3


def test_an_empty_catalog_has_no_groups(rows):
    report = find_duplicates(rows.catalog)
    assert report.groups == () and report.reclaimable_bytes == 0 and "0 duplicate groups" in summary(report)


@pytest.mark.parametrize("threshold,series", [(0.0, None), (1.5, None), (0.9, 0.95), (0.9, 0.9), (0.9, 0.0)])
def test_bad_thresholds_are_refused(rows, threshold, series):
    with pytest.raises(BadQuery, match="threshold"):
        find_duplicates(rows.catalog, threshold=threshold, series_threshold=series)


# --- acting on a report: delete list, quarantine, undo ----------------------------------------------------
@pytest.fixture
def dup_library(rows, tmp_path):
    rows.add("a.jpg", A, prints=fingerprint(1))
    rows.add("a copy.jpg", A, content="a.jpg", prints=fingerprint(1))
    rows.add("a_small.jpg", A_NEAR, prints=fingerprint(1, flips=3))
    rows.add("b.jpg", B, prints=fingerprint(2))
    rows.add("b copy.jpg", B, content="b.jpg", prints=fingerprint(2))
    rows.catalog.close()
    yield tmp_path / "catalog", rows.files
    rows.catalog = Catalog.open(tmp_path / "catalog")


def dedup(*args):
    return CliRunner().invoke(main, ["dedup", *map(str, args)])


def test_delete_list_newline_and_nul(dup_library, tmp_path):
    db, files = dup_library
    assert dedup("--db", db, "--threshold", 0.95, "--delete-list", tmp_path / "l.txt").exit_code == 0
    assert sorted((tmp_path / "l.txt").read_text().splitlines()) == sorted(
        str(files / n) for n in ("a copy.jpg", "a_small.jpg", "b copy.jpg"))
    assert dedup("--db", db, "--threshold", 0.95, "--delete-list", tmp_path / "n", "--null").exit_code == 0
    assert sorted((tmp_path / "n").read_text().split("\0")[:-1]) == sorted((tmp_path / "l.txt").read_text().splitlines())


def test_move_to_quarantine_and_undo(dup_library, tmp_path):
    db, files = dup_library
    (files / "b copy.jpg").write_bytes(b"changed since indexing")
    result = dedup("--db", db, "--threshold", 0.95, "--move-to", tmp_path / "q")
    assert result.exit_code == 0, result.output
    assert "moved 2 files" in result.output and f"left {files / 'b copy.jpg'}: changed since indexing" in result.output
    assert result.output.rstrip().splitlines()[-2].endswith("; 1 left alone:")
    assert "Nothing was deleted." in result.output and "Nothing was deleted or moved" not in result.output
    assert sorted(p.name for p in files.iterdir()) == ["a.jpg", "b copy.jpg", "b.jpg"]
    moved = tmp_path / "q" / str(files / "a_small.jpg").lstrip("/")
    assert moved.read_bytes() == b"a_small.jpg"
    manifest = next((tmp_path / "q").glob("clipsearch-moves-*.json"))
    (files / "a copy.jpg").write_bytes(b"a new file at the origin")
    undo = CliRunner().invoke(main, ["undo-move", str(manifest)])
    assert undo.exit_code == 1 and "restored 1 file; 1 could not be restored" in undo.output
    assert f"left {files / 'a copy.jpg'}: a file is at the origin again: not overwritten (the moved one is" in undo.output
    assert (files / "a_small.jpg").read_bytes() == b"a_small.jpg"
    assert (files / "a copy.jpg").read_bytes() == b"a new file at the origin"
    again = CliRunner().invoke(main, ["undo-move", str(manifest)])
    assert "restored 0 files; 1 already back at its origin; 1 could not be restored" in again.output


def test_a_second_undo_restores_nothing_and_says_so(dup_library, tmp_path):
    db, files = dup_library
    assert "moved 3 files" in dedup("--db", db, "--threshold", 0.95, "--move-to", tmp_path / "q").output
    manifest = next((tmp_path / "q").glob("clipsearch-moves-*.json"))
    first = CliRunner().invoke(main, ["undo-move", str(manifest)])
    assert first.exit_code == 0 and "restored 3 files; 0 could not be restored" in first.output
    second = CliRunner().invoke(main, ["undo-move", str(manifest)])
    assert second.exit_code == 0, second.output
    assert "restored 0 files; 3 already back at their origin; 0 could not be restored" in second.output


def test_a_second_move_into_the_same_folder_names_the_earlier_move(dup_library, tmp_path):
    db, files = dup_library
    dedup("--db", db, "--threshold", 0.95, "--move-to", tmp_path / "q")
    again = dedup("--db", db, "--threshold", 0.95, "--move-to", tmp_path / "q")
    target = tmp_path / "q" / str(files / "a_small.jpg").lstrip("/")
    assert f"moved 0 files to {tmp_path / 'q'}; 3 left alone:\n" in again.output
    assert f"left {files / 'a_small.jpg'}: already moved to {target}" in again.output
    assert "where they were" not in again.output and "undo with" not in again.output


def test_a_move_that_leaves_nothing_alone_lists_nothing(dup_library, tmp_path):
    db, _ = dup_library
    out = dedup("--db", db, "--threshold", 0.95, "--move-to", tmp_path / "q").output
    assert "moved 3 files to" in out and "left alone" not in out and "undo with: clipsearch undo-move" in out


def test_exact_copies_inside_other_groups_are_counted_in_the_exact_line(dup_library):
    db, _ = dup_library
    out = dedup("--db", db, "--threshold", 0.95).output
    assert "Exact duplicates: 1 group, 2 files" in out and "(and 1 exact copy inside the groups below)" in out
    assert "2 exact copies" in out.splitlines()[-1]


def test_the_last_copy_never_moves(dup_library, tmp_path):
    db, files = dup_library
    os.remove(files / "a.jpg")  # the keeper is gone: its copies are the last ones
    result = dedup("--db", db, "--threshold", 0.95, "--move-to", tmp_path / "q")
    assert (files / "a copy.jpg").exists() and (files / "a_small.jpg").exists()
    assert "it may be the last copy" in result.output


@pytest.mark.parametrize("text", ["{", "", "{}", "[]", '{"moves": {}}', '{"moves": [{"from": "/a"}]}', b"\xff\xfe",
                                  '{"version": 2, "moves": []}', '{"version": 1, "moves": [{"from": "a", "to": "/b"}]}',
                                  '{"moves": [{"to": "/b"}]}', '{"moves": [{"from": 1, "to": "/b"}]}',
                                  '{"moves": [{"from": "/a", "to": null}]}', '{"moves": ["/a"]}', '"moves"'])
def test_undo_move_with_a_file_that_is_not_a_manifest_says_so(tmp_path, text):
    (tmp_path / "m.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    result = CliRunner().invoke(main, ["undo-move", str(tmp_path / "m.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == (f"Error: {tmp_path / 'm.json'} is not a clipsearch move manifest "
                             "(written by dedup --move-to)\n")


def test_undo_move_with_a_folder_or_a_missing_file_is_one_line(tmp_path):
    folder = CliRunner().invoke(main, ["undo-move", str(tmp_path)])
    assert folder.exit_code != 0 and "is a directory" in folder.output and "Traceback" not in folder.output
    missing = CliRunner().invoke(main, ["undo-move", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "Cannot read the manifest" in missing.output
    assert "No such file or directory" in missing.output and "Traceback" not in missing.output


def test_cli_names_the_option_to_change(dup_library):
    db, _ = dup_library
    result = dedup("--db", db, "--threshold", 0.9, "--series-threshold", 0.95)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--series-threshold 0.95 must be below --threshold 0.9: lower --series-threshold or raise --threshold" \
        in result.output
    assert dedup("--db", db, "--threshold", 0.9, "--series").exit_code == 0  # the series threshold follows


def test_exact_only_loads_no_model_and_no_faiss(dup_library):
    db, files = dup_library
    code = ("import sys; from clipsearch.cli import main; sys.argv = ['clipsearch', 'dedup', '--exact-only', '--db', "
            f"{str(db)!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'faiss', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}).stdout
    assert out.strip().endswith("[]") and "Exact duplicates: 2 groups" in out


# --- real images with the tiny model -------------------------------------------------------------
def transformed(original: Path, folder: Path) -> dict[str, Path]:
    """Copies of one picture as a photo library collects them."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(original).convert("RGB")
    copies = {"renamed": folder / f"renamed_{original.name}"}
    shutil.copyfile(original, copies["renamed"])
    copies["resized"] = folder / f"resized_{original.stem}.jpg"
    image.resize((96, 96), Image.LANCZOS).save(copies["resized"], quality=90)
    copies["jpeg"] = folder / f"low_quality_{original.stem}.jpg"
    image.save(copies["jpeg"], quality=30)
    copies["brighter"] = folder / f"brighter_{original.stem}.png"
    ImageEnhance.Brightness(image).enhance(1.2).save(copies["brighter"])
    return copies


DISTINCT = [("red", "star", "white"), ("blue", "circle", "black"), ("green", "square", "grey"),
            ("yellow", "triangle", "black"), ("purple", "circle", "white"), ("orange", "cross", "white")]
"""Pictures that differ in colour and in shape or background: unrelated for the tiny model too."""


@pytest.fixture
def library(tmp_path, tiny):
    """Six distinct shapes in photos/a and photos/b, and copies of two of them in photos/copies."""
    root = tmp_path / "photos"
    for i, (colour, shape, background) in enumerate(DISTINCT):
        draw_shape(root / "ab"[i % 2] / f"{colour}_{shape}.png", colour, shape, background, seed=i, size=128)
    copies = transformed(root / "a" / "red_star.png", root / "copies" / "star")
    copies["other"] = root / "copies" / "circle.png"
    shutil.copyfile(root / "b" / "blue_circle.png", copies["other"])
    with Library.open(tmp_path / "lib", create=True, encoder=tiny) as lib:
        lib.index([root], model=model_spec("clipsearch-tiny"))
        yield lib, root, copies


def test_exact_and_transformed_copies_are_grouped_and_distinct_images_are_not(library):
    lib, root, copies = library
    report = lib.duplicates()
    groups = {g.keeper.path: g for g in report.groups}
    star = groups[str(root / "a" / "red_star.png")]
    tiers = {m.path: m.tier for m in star.members}
    assert tiers == {str(root / "a" / "red_star.png"): "keeper", str(copies["renamed"]): "exact",
                     str(copies["resized"]): "near", str(copies["jpeg"]): "near", str(copies["brighter"]): "near"}
    circle = groups[str(root / "b" / "blue_circle.png")]
    assert [(m.path, m.tier) for m in circle.members] == [(circle.keeper.path, "keeper"), (str(copies["other"]), "exact")]
    assert len(report.groups) == 2  # the four other shapes are not duplicates of anything
    assert report.reclaimable_bytes == sum(os.path.getsize(m.path) for g in report.groups for m in g.members[1:])


def test_keeper_is_the_highest_resolution(library):
    lib, root, copies = library
    star = next(g for g in lib.duplicates().groups if str(copies["resized"]) in [m.path for m in g.members])
    assert (star.keeper.width, star.keeper.height) == (128, 128)
    assert star.keeper.path != str(copies["resized"])


def test_under_restricts_to_a_folder(library):
    lib, root, copies = library
    report = lib.duplicates(filters=Filters(under=(str(root / "copies" / "star"),)))
    assert len(report.groups) == 1 and report.images == 4
    assert all("/copies/star/" in m.path for m in report.groups[0].members)
    assert lib.duplicates(filters=Filters(under=(str(root / "a"),))).groups == ()


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_every_report_and_changes_no_file(library, tmp_path):
    lib, root, copies = library
    before = snapshot(root)
    out = tmp_path / "reports"
    out.mkdir()
    result = CliRunner().invoke(main, ["dedup", "--db", str(lib.path), "--series", "--json", str(out / "r.json"),
                                       "--csv", str(out / "r.csv"), "--html", str(out / "r.html")])
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before
    assert "Exact duplicates: 1 group" in result.output and "Near-duplicates: 1 group" in result.output
    assert "Nothing was deleted or moved" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "r.html", "r.json"]


def test_json_schema(library, tmp_path):
    lib, _, _ = library
    report = lib.duplicates()
    write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == json.loads(json.dumps(to_dict(report)))
    assert set(data) == {"threshold", "series_threshold", "images", "groups", "reclaimable_bytes", "exact_copies",
                         "exact_bytes", "aliases", "exact_only", "elapsed_s"}
    assert data["threshold"] == MEASURED_THRESHOLDS["clipsearch-tiny"] and data["series_threshold"] is None
    assert set(data["groups"][0]) == {"tier", "members", "keeper_reason", "reclaimable_bytes"}
    assert set(data["groups"][0]["members"][0]) == {"id", "path", "path_bytes_b64", "size", "width", "height", "date", "tier",
                                                    "similarity", "phash_distance", "kind", "duration_s", "mirrored"}
    assert all(g["members"][0]["tier"] == "keeper" for g in data["groups"])
    assert {(m["kind"], m["duration_s"]) for g in data["groups"] for m in g["members"]} == {("photo", None)}


def test_csv_has_one_row_per_member(library, tmp_path):
    lib, _, _ = library
    report = lib.duplicates()
    write_csv(report, tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert len(table) == sum(len(g.members) for g in report.groups)
    assert {r["group"] for r in table} == {str(n) for n in range(1, len(report.groups) + 1)}
    assert [r["path"] for r in table] == [m.path for g in report.groups for m in g.members]


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.groups, self.images, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.groups.append(attrs["id"])
        if tag == "img":
            assert attrs["src"].startswith("data:image/jpeg;base64,")
            self.images += 1

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_shows_every_group(library, tmp_path):
    lib, _, copies = library
    report = lib.duplicates(series_threshold=0.3)
    os.remove(copies["jpeg"])  # a file that vanished since indexing still shows, as text
    write_html(report, tmp_path / "r.html")
    page = Page()
    page.feed((tmp_path / "r.html").read_text(encoding="utf-8"))
    text = "".join(page.text)
    assert page.groups == [f"group-{n}" for n in range(1, len(report.groups) + 1)]
    members = [m for g in report.groups for m in g.members]
    assert page.images == len(members) - 1 and text.count("file missing or unreadable") == 1
    assert all(m.path in text for m in members)
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "http" not in html
    assert html.count('class="remove"') == len(members) and html.count('class="keep"') == len(members)
    assert html.count(" checked>") >= len(report.groups) and "Download the delete list" in html


# --- the sample photos with the tiny model --------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_library(tmp_path_factory, tiny):
    with Library.open(tmp_path_factory.mktemp("sample") / "lib", create=True, encoder=tiny) as lib:
        lib.index([SAMPLE_PHOTOS], model=model_spec("clipsearch-tiny"))
        yield lib


def source_of(path):
    """The sample photo a file shows: its stem up to the variant suffix (motorcycle_left and _right differ)."""
    stem = Path(path).stem
    return stem if stem.startswith(("motorcycle", "hubble")) else stem.split("_")[0]


@pytest.mark.parametrize("series", [None, 0.8, 0.5])
def test_no_group_mixes_two_sample_photos(sample_library, series):
    report = sample_library.duplicates(series_threshold=series)
    assert report.groups
    for group in report.groups:
        # The stereo pair is two shots of one moment: a series, never a copy.
        sources = {"motorcycle_left" if m.tier == "series" and source_of(m.path) == "motorcycle_right"
                   else source_of(m.path) for m in group.members}
        assert len(sources) == 1, [m.path for m in group.members]
    seen = [m.path for g in report.groups for m in g.members]
    assert len(seen) == len(set(seen))


def test_sample_variants_get_their_tiers_and_the_original_keeps(sample_library):
    groups = {Path(g.keeper.path).stem: g for g in sample_library.duplicates().groups}
    for photo in ("astronaut", "coffee", "rocket", "chelsea"):
        tiers = {Path(m.path).stem.removeprefix(photo + "_"): m.tier for m in groups[photo].members}
        assert tiers[photo] == "keeper" and tiers["copy_renamed"] == "exact"
        assert tiers["resized"] == tiers["recompressed"] == tiers["brightened"] == "near"
        assert tiers.get("flipped", "edited") == "edited"
        assert "derived" in groups[photo].keeper_reason


def test_cli_reports_an_unwritable_report_file_in_one_line(library, tmp_path):
    lib, _, _ = library
    result = CliRunner().invoke(main, ["dedup", "--db", str(lib.path), "--html", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 1 and "Cannot write" in result.output and "Traceback" not in result.output


@pytest.fixture
def indexed_copies(shape_tree, library_dir):
    """The shape tree with an exact copy of one picture, indexed: one file for --move-to to move."""
    shutil.copy(shape_tree / "a" / "red_star.png", shape_tree / "b" / "red_star copy.png")
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model",
                                       "clipsearch-tiny", "-q"])
    assert result.exit_code == 0, result.output
    return shape_tree, library_dir


@pytest.mark.parametrize("inside", ["q", "a/q", ".", "a", "linked/q"])
def test_move_to_a_folder_inside_an_indexed_one_is_refused_before_anything_moves(indexed_copies, tmp_path, inside):
    tree, db = indexed_copies
    (tmp_path / "linked").symlink_to(tree)  # the same folder under another name
    folder = (tmp_path if inside.startswith("linked") else tree) / inside
    before = sorted(p for p in tree.rglob("*"))
    result = dedup("--db", db, "--exact-only", "--move-to", folder)
    assert result.exit_code == 1 and "Traceback" not in result.output
    where = "is" if inside == "." else "is inside"
    assert result.output == (f"Error: {folder} {where} {tree}, a folder this library indexes: its copies would be "
                             f"indexed again; move them to a folder outside it, e.g. {tree}-duplicates\n")
    assert sorted(p for p in tree.rglob("*")) == before and not (tmp_path / "linked" / "q").exists()


@pytest.mark.parametrize("inside", [".", "quarantine"])
def test_move_to_the_librarys_own_folder_is_refused(indexed_copies, inside):
    tree, db = indexed_copies
    result = dedup("--db", db, "--exact-only", "--move-to", db / inside)
    assert result.exit_code == 1 and "the library's own folder" in result.output and "Traceback" not in result.output
    assert (tree / "b" / "red_star copy.png").exists()


def test_the_undo_hint_can_be_pasted_into_a_shell(indexed_copies, tmp_path):
    tree, db = indexed_copies
    folder = tmp_path / "q 1 it's"
    out = dedup("--db", db, "--exact-only", "--move-to", folder).output
    hint = out.split("undo with: ", 1)[1].splitlines()[0].removesuffix(";").strip()
    assert shlex.split(hint)[0:2] == ["clipsearch", "undo-move"] and Path(shlex.split(hint)[2]).is_file()


def test_a_quarantine_moved_into_an_indexed_folder_is_never_indexed(indexed_copies, tmp_path):
    tree, db = indexed_copies
    assert "moved 1 file to" in dedup("--db", db, "--exact-only", "--move-to", tmp_path / "q").output
    shutil.move(tmp_path / "q", tree / "b" / "old duplicates")
    result = CliRunner().invoke(main, ["index", str(tree), "--db", str(db), "-q"])
    assert result.exit_code == 0 and "added 0," in result.output and "removed 1" in result.output, result.output
    assert "Exact duplicates: 0 groups" in dedup("--db", db, "--exact-only").output
