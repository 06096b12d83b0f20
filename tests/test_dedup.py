"""Duplicate reports: the grouping math, the tiers, the keeper rule, the report files, and that a
run leaves every file as it was."""
import csv
import hashlib
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from clipsearch import Library, model_spec
from clipsearch import duplicates
from clipsearch.catalog import Catalog, NewImage
from clipsearch.cli import main
from clipsearch.duplicates import MEASURED_THRESHOLDS, components, find_duplicates, group, keeper_key, neighbour_pairs
from clipsearch.errors import BadQuery
from clipsearch.filters import Filters
from clipsearch.reports import CSV_COLUMNS, summary, write_csv, write_html, write_json
from clipsearch.results import to_dict

from conftest import draw_shape


# --- pure grouping ---------------------------------------------------------------------------------
def brute_components(n, edges):
    labels = list(range(n))
    changed = True
    while changed:
        changed = False
        for a, b in edges:
            low = min(labels[a], labels[b])
            for x in (a, b):
                if labels[x] != low:
                    labels[x], changed = low, True
    return labels


@pytest.mark.parametrize("seed", range(20))
def test_components_match_a_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    i, j = rng.integers(0, n, (2, int(rng.integers(0, 50))))
    assert components(n, i, j).tolist() == brute_components(n, list(zip(i.tolist(), j.tolist())))


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def e(k, dim=8):
    return np.eye(dim, dtype=np.float32)[k]


A = e(0)
A_NEAR = unit(e(0) + 0.2 * e(1))  # cosine 0.981 to A
A_SERIES = unit(e(0) + 0.6 * e(2))  # cosine 0.857 to A, 0.84 to A_NEAR
B = e(3)


def test_group_links_exact_near_and_series_tiers():
    hashes = np.array(["a", "a", "n", "s", "b"])
    vectors = np.stack([A, A, A_NEAR, A_SERIES, B])
    plain = group(hashes, vectors, threshold=0.92)
    assert plain.duplicate.tolist() == [0, 0, 0, 3, 4]
    assert plain.series.tolist() == plain.duplicate.tolist()
    both = group(hashes, vectors, threshold=0.92, series_threshold=0.85)
    assert both.duplicate.tolist() == [0, 0, 0, 3, 4]
    assert both.series.tolist() == [0, 0, 0, 0, 4]


def test_the_approximate_index_finds_planted_copies(monkeypatch):
    """Above EXACT_SEARCH_MAX the search is IVF; copies at cosine >= 0.9 must still be found."""
    monkeypatch.setattr(duplicates, "EXACT_SEARCH_MAX", 100)
    rng = np.random.default_rng(0)
    originals = unit(rng.standard_normal((3000, 64)))
    copies = unit(originals[:500] + 0.3 * unit(rng.standard_normal((500, 64))))  # cosine ~0.96
    i, j, scores = neighbour_pairs(np.vstack([originals, copies]), min_score=0.9)
    found = set(zip(i.tolist(), j.tolist()))
    assert all((k, 3000 + k) in found for k in range(500))
    assert len(found) == 500 and (scores >= 0.9).all()


def test_keeper_rule_resolution_then_size_then_oldest():
    def row(path, w, h, size, date):
        return {"path": path, "width": w, "height": h, "size": size, "date": date}

    rows = [
        row("small.jpg", 100, 100, 9000, "2001-01-01T00:00:00"),
        row("big-newer.jpg", 200, 100, 500, "2020-01-01T00:00:00"),
        row("big-older.jpg", 200, 100, 500, "2010-01-01T00:00:00"),
        row("big-heavier.jpg", 200, 100, 800, "2022-01-01T00:00:00"),
    ]
    assert [r["path"] for r in sorted(rows, key=keeper_key)] == [
        "big-heavier.jpg", "big-older.jpg", "big-newer.jpg", "small.jpg"]


# --- grouping a catalog (synthetic rows, no model) ---------------------------------------------------
class Rows:
    """A catalog filled with hand-made rows: exact vectors, hashes and metadata."""

    def __init__(self, directory: Path):
        directory.mkdir()
        self.catalog = Catalog.open(directory, create=True)
        self.catalog.set_meta("dim", 8)
        self.ids: dict[str, int] = {}

    def add(self, name, vector, *, content=None, width=100, height=100, size=1000, taken_at=None):
        image = NewImage(f"/photos/{name}", size, 1_600_000_000_000_000_000, content or name, width, height,
                         "JPEG", taken_at, None, vector)
        self.ids[name] = self.catalog.write_batch([image], [], [])[0]


@pytest.fixture
def rows(tmp_path):
    rows = Rows(tmp_path / "catalog")
    yield rows
    rows.catalog.close()


def names(group):
    return [(m.path.rsplit("/", 1)[1], m.tier) for m in group.members]


def test_tiers_keeper_and_reclaimable_bytes(rows):
    rows.add("a.jpg", A, width=400, height=300, size=5000)
    rows.add("a-copy.jpg", A, content="a.jpg", width=400, height=300, size=5000)
    rows.add("a-small.jpg", A_NEAR, width=200, height=150, size=1200)
    rows.add("a-retake.jpg", A_SERIES, size=3000)
    rows.add("b.jpg", B)
    rows.add("b-copy.jpg", B, content="b.jpg")
    report = find_duplicates(rows.catalog, threshold=0.92)
    assert [g.tier for g in report.groups] == ["exact", "near"]
    exact, near = report.groups
    # Equal copies are ordered by path, so the keeper is the same on every run.
    assert names(exact) == [("b-copy.jpg", "keeper"), ("b.jpg", "exact")]
    assert names(near) == [("a-copy.jpg", "keeper"), ("a.jpg", "exact"), ("a-small.jpg", "near")]
    assert near.members[2].similarity == pytest.approx(float(A @ A_NEAR), abs=1e-4)
    assert near.reclaimable_bytes == 5000 + 1200 and exact.reclaimable_bytes == 1000
    assert report.reclaimable_bytes == 7200 and report.images == 6


def test_a_byte_copy_of_a_near_duplicate_is_exact_too(rows):
    rows.add("a.jpg", A, width=400, height=300, size=5000)
    rows.add("export.jpg", A_NEAR, content="export", width=200, height=150, size=1200)
    rows.add("export-again.jpg", A_NEAR, content="export", width=200, height=150, size=1200)
    (group,) = find_duplicates(rows.catalog, threshold=0.92).groups
    assert group.tier == "near"
    assert names(group) == [("a.jpg", "keeper"), ("export-again.jpg", "near"), ("export.jpg", "exact")]
    assert group.members[1].similarity == group.members[2].similarity == pytest.approx(float(A @ A_NEAR), abs=1e-4)


def test_series_are_reported_separately_and_not_counted(rows):
    rows.add("a.jpg", A, width=400, height=300)
    rows.add("a-small.jpg", A_NEAR, width=200, height=150)
    rows.add("a-retake.jpg", A_SERIES, width=400, height=300, size=3000)
    rows.add("b.jpg", B)
    report = find_duplicates(rows.catalog, threshold=0.92, series_threshold=0.85)
    assert [g.tier for g in report.groups] == ["near", "series"]
    near, series = report.groups
    assert names(near) == [("a.jpg", "keeper"), ("a-small.jpg", "near")]
    # A series lists distinct pictures: the duplicate group stands in by its keeper.
    assert names(series) == [("a-retake.jpg", "keeper"), ("a.jpg", "series")]
    assert report.reclaimable_bytes == near.reclaimable_bytes == 1000
    assert find_duplicates(rows.catalog, threshold=0.92).groups == (near,)


def test_the_oldest_of_equal_copies_is_kept(rows):
    rows.add("new.jpg", A, content="x", taken_at="2022-05-01T10:00:00")
    rows.add("old.jpg", A, content="x", taken_at="2019-05-01T10:00:00")
    rows.add("undated.jpg", A, content="x")  # falls back to its mtime, 2020-09-13
    report = find_duplicates(rows.catalog)
    assert names(report.groups[0]) == [("old.jpg", "keeper"), ("new.jpg", "exact"), ("undated.jpg", "exact")]
    assert report.groups[0].members[2].date.startswith("2020-09-1")


def test_allowed_ids_restrict_the_comparison(rows):
    rows.add("a.jpg", A)
    rows.add("a-copy.jpg", A, content="a.jpg")
    rows.add("b.jpg", B)
    rows.add("b-copy.jpg", B, content="b.jpg")
    allowed = np.array([rows.ids["a.jpg"], rows.ids["a-copy.jpg"], rows.ids["b.jpg"]])
    report = find_duplicates(rows.catalog, allowed=allowed)
    assert [names(g) for g in report.groups] == [[("a-copy.jpg", "keeper"), ("a.jpg", "exact")]]
    assert report.images == 3


def test_an_empty_catalog_has_no_groups(rows):
    report = find_duplicates(rows.catalog)
    assert report.groups == () and report.reclaimable_bytes == 0 and "0 duplicate groups" in summary(report)


@pytest.mark.parametrize("threshold,series", [(0.0, None), (1.5, None), (0.9, 0.95), (0.9, 0.0)])
def test_bad_thresholds_are_refused(rows, threshold, series):
    with pytest.raises(BadQuery):
        find_duplicates(rows.catalog, threshold=threshold, series_threshold=series)


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
    assert "Similar series:" in result.output and "Nothing was deleted or moved" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "r.html", "r.json"]


def test_json_schema(library, tmp_path):
    lib, _, _ = library
    report = lib.duplicates()
    write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data == json.loads(json.dumps(to_dict(report)))
    assert set(data) == {"threshold", "series_threshold", "images", "groups", "reclaimable_bytes", "elapsed_s"}
    assert data["threshold"] == MEASURED_THRESHOLDS["clipsearch-tiny"] and data["series_threshold"] is None
    assert set(data["groups"][0]) == {"tier", "members", "reclaimable_bytes"}
    assert set(data["groups"][0]["members"][0]) == {"path", "path_bytes_b64", "size", "width", "height", "date", "tier",
                                                    "similarity"}
    assert all(g["members"][0]["tier"] == "keeper" for g in data["groups"])


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
    assert "http" not in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_cli_refuses_a_series_threshold_above_the_duplicate_threshold(library):
    lib, _, _ = library
    result = CliRunner().invoke(main, ["dedup", "--db", str(lib.path), "--threshold", "0.9",
                                       "--series-threshold", "0.95"])
    assert result.exit_code == 1 and "series threshold" in result.output and "Traceback" not in result.output


def test_cli_reports_an_unwritable_report_file_in_one_line(library, tmp_path):
    lib, _, _ = library
    result = CliRunner().invoke(main, ["dedup", "--db", str(lib.path), "--html", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 1 and "Cannot write" in result.output and "Traceback" not in result.output
