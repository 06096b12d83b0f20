"""Metadata filters and date ordering: alone, combined with text search, and never short of results."""
import json
import os
import random
from datetime import datetime

import pytest
from click.testing import CliRunner
from PIL import Image

from clipsearch import Library, model_spec
from clipsearch.cli import main
from clipsearch.errors import BadQuery
from clipsearch.filters import Filters, parse_when

# name: (colour, shape, EXIF date taken or None, camera or None, size, extension)
PHOTOS = {
    "red_star": ("red", "star", "2021:05:01 10:00:00", "Canon EOS 5D", 128, "jpg"),
    "red_circle": ("red", "circle", "2021:06:15 18:30:00", "iPhone 12", 128, "jpg"),
    "blue_star": ("blue", "star", "2022:01:10 09:00:00", "iPhone 13 Pro", 160, "jpeg"),
    "blue_circle": ("blue", "circle", None, None, 128, "png"),
    "green_square": ("green", "square", "2023:07:04 12:00:00", "Canon EOS R5", 256, "jpg"),
    "yellow_triangle": ("yellow", "triangle", None, None, 64, "png"),
    "green_triangle": ("green", "triangle", "2022:08:08 08:08:08", "Pixel 7", 200, "jpg"),
    "yellow_square": ("yellow", "square", "2020:12:31 23:59:59", "iPhone 12", 96, "jpg"),
}
MTIMES = {"blue_circle": datetime(2020, 3, 1, 12), "yellow_triangle": datetime(2024, 2, 2, 12)}
"""Files without an EXIF date are dated by their modification time (local time)."""


def write_photo(path, colour, shape, taken=None, camera=None, size=128, seed=0, background="white"):
    from clipsearch.shapes import ShapeSpec, render

    image = render(ShapeSpec(colour, shape, background), random.Random(seed), size=size)
    exif = Image.Exif()
    if camera:
        exif[272] = camera
    if taken:
        exif[306] = taken
        exif.get_ifd(0x8769)[36867] = taken
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("filters") / "photos"
    for i, (name, (colour, shape, taken, camera, size, ext)) in enumerate(PHOTOS.items()):
        path = write_photo(root / ("2021" if i < 4 else "later") / f"{name}.{ext}", colour, shape, taken, camera,
                           size, seed=i)
        if name in MTIMES:
            stamp = MTIMES[name].timestamp()
            os.utime(path, (stamp, stamp))
    with Library.open(root.parent / "lib", create=True, encoder=tiny) as lib:
        lib.index([root], model=model_spec("clipsearch-tiny"), workers=0)
        yield lib


def names(results):
    return [r.path.rsplit("/", 1)[-1].split(".")[0] for r in results]


@pytest.mark.parametrize(
    "filters,expected",
    [
        (Filters(after=datetime(2022, 1, 1)), {"blue_star", "green_square", "yellow_triangle", "green_triangle"}),
        (Filters(before=datetime(2021, 6, 1)), {"red_star", "blue_circle", "yellow_square"}),
        (Filters(after=datetime(2021, 5, 1, 12), before=datetime(2022, 1, 10, 9)), {"red_circle"}),
        (Filters(after=datetime(2022, 1, 10, 9), before=datetime(2022, 1, 10, 9, 0, 1)), {"blue_star"}),
        (Filters(cameras=("iphone",)), {"red_circle", "blue_star", "yellow_square"}),
        (Filters(cameras=("EOS", "pixel 7")), {"red_star", "green_square", "green_triangle"}),
        (Filters(cameras=("iPhone 12",)), {"red_circle", "yellow_square"}),
        (Filters(min_width=160), {"blue_star", "green_square", "green_triangle"}),
        (Filters(min_height=200), {"green_square", "green_triangle"}),
        (Filters(min_width=100, min_height=129), {"blue_star", "green_square", "green_triangle"}),
        (Filters(exts=("png",)), {"blue_circle", "yellow_triangle"}),
        (Filters(exts=(".JPEG", "png")), {"blue_star", "blue_circle", "yellow_triangle"}),
        (Filters(cameras=("iphone",), after=datetime(2021, 1, 1), min_width=150), {"blue_star"}),
        (Filters(cameras=("nikon",)), set()),
    ],
)
def test_each_filter_alone_and_together(library, filters, expected):
    assert set(names(library.search("a shape", k=20, filters=filters))) == expected


def test_under_is_a_filter_too(library):
    folder = os.path.dirname(library.catalog.db.execute("SELECT path FROM images WHERE path LIKE '%red_star%'")
                             .fetchone()[0])
    assert set(names(library.search("a shape", k=20, filters=Filters(under=(folder,))))) == {
        "red_star", "red_circle", "blue_star", "blue_circle"}
    both = Filters(under=(folder,), exts=("jpg",))
    assert set(names(library.search("a shape", k=20, filters=both))) == {"red_star", "red_circle"}


def test_filtered_search_is_the_unfiltered_ranking_restricted(library):
    """Combined with a text query, a filter keeps the ranking: the same order, just fewer images."""
    everything = library.search("a red star", k=20)
    for filters in [Filters(cameras=("iphone",)), Filters(exts=("png",)), Filters(after=datetime(2022, 1, 1))]:
        allowed = set(names(library.search("a red star", k=20, filters=filters)))
        expected = [r for r in everything if names([r])[0] in allowed]
        assert library.search("a red star", k=20, filters=filters) == expected
        assert library.search("a red star", k=2, filters=filters) == expected[:2]


def test_text_query_within_a_filter(library):
    assert names(library.search("a red shape", k=1, filters=Filters(cameras=("iphone",))))[0] == "red_circle"
    assert names(library.search("a blue star", k=1, filters=Filters(min_width=150)))[0] == "blue_star"


def test_similar_takes_filters(library):
    query = library.catalog.db.execute("SELECT path FROM images WHERE path LIKE '%red_star%'").fetchone()[0]
    results = library.similar(query, k=5, filters=Filters(exts=("jpg",), cameras=("iphone",)))
    assert set(names(results)) == {"red_circle", "yellow_square"}
    assert names(library.similar(query, k=8, filters=Filters(cameras=("canon",)))) == ["green_square"]


def test_sort_by_date_reorders_the_same_results_oldest_first(library):
    by_score = library.search("a red star", k=5)
    by_date = library.search("a red star", k=5, sort="date")
    assert sorted(by_date, key=lambda r: r.path) == sorted(by_score, key=lambda r: r.path)
    everything = library.search("a shape", k=20, sort="date")
    assert names(everything) == ["blue_circle", "yellow_square", "red_star", "red_circle", "blue_star",
                                 "green_triangle", "green_square", "yellow_triangle"]
    dates = [r.date for r in everything]  # each result says the date it was ordered by
    assert dates == sorted(dates) and all(r.date == r.taken_at for r in everything if r.taken_at)


def test_min_score_and_date_order(library):
    ranked = library.search("a red star", k=20)
    cut = ranked[3].score - 1e-6  # scores are shown rounded to 6 places
    kept = library.search("a red star", k=20, min_score=cut, sort="date")
    assert {r.path for r in kept} == {r.path for r in ranked[:4]}
    assert all(r.score >= cut for r in kept)


def test_unknown_sort_is_refused(library):
    with pytest.raises(BadQuery):
        library.search("a red star", sort="size")


@pytest.fixture(scope="module")
def crowded(tmp_path_factory, tiny):
    """40 red stars, and 3 blue circles taken with a rare camera that rank last for "a red star"."""
    root = tmp_path_factory.mktemp("crowded") / "photos"
    for i in range(40):
        write_photo(root / f"star_{i:02}.png", "red", "star", seed=i)
    for i in range(3):
        write_photo(root / f"rare_{i}.jpg", "blue", "circle", "2019:01:01 00:00:00", "Rare Cam", seed=100 + i)
    with Library.open(root.parent / "lib", create=True, encoder=tiny) as lib:
        lib.index([root], model=model_spec("clipsearch-tiny"), workers=0)
        yield lib


@pytest.mark.parametrize("k", [1, 2, 3, 5, 50])
def test_filtering_never_returns_fewer_than_match(crowded, k):
    ranking = names(crowded.search("a red star", k=43))
    assert all(n.startswith("rare") for n in ranking[-3:])  # the matches are far down the ranking
    for filters in [Filters(cameras=("rare cam",)), Filters(exts=("jpg",)), Filters(before=datetime(2020, 1, 1))]:
        results = crowded.search("a red star", k=k, filters=filters)
        assert len(results) == min(k, 3)
        assert all(n.startswith("rare") for n in names(results))
    assert len(crowded.search("a red star", k=k, filters=Filters(exts=("png",)))) == min(k, 40)


def test_similar_never_returns_fewer_than_match(crowded):
    query = crowded.catalog.db.execute("SELECT path FROM images WHERE path LIKE '%star_00%'").fetchone()[0]
    results = crowded.similar(query, k=10, filters=Filters(cameras=("rare",)))
    assert len(results) == 3
    # the query image itself is left out, and still k others come back
    assert len(crowded.similar(query, k=39, filters=Filters(exts=("png",)))) == 39


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2021-05-01", datetime(2021, 5, 1)),
        ("2021-05-01T14:30", datetime(2021, 5, 1, 14, 30)),
        ("2021-05-01 14:30:15", datetime(2021, 5, 1, 14, 30, 15)),
    ],
)
def test_dates_parse(text, expected):
    assert parse_when(text) == expected


def test_dates_with_an_offset_become_local_time():
    utc = parse_when("2021-05-01T12:00:00+00:00")
    assert utc.tzinfo is None and utc.timestamp() == datetime.fromisoformat("2021-05-01T12:00:00+00:00").timestamp()


@pytest.mark.parametrize("text", ["yesterday", "2021-13-01", "01/05/2021", ""])
def test_bad_dates_are_refused(text):
    with pytest.raises(BadQuery):
        parse_when(text)


def test_empty_filters_allow_everything():
    assert not Filters()
    assert Filters(tag="cat") and Filters(min_width=1)


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_filters_and_sort(library):
    db = library.path
    out = run("search", "a shape", "--db", db, "--camera", "iphone", "--camera", "pixel", "--after", "2021-06-01",
              "--before", "2022-12-31T23:59:59", "--sort", "date", "--json").output
    assert [r["path"].rsplit("/", 1)[-1] for r in json.loads(out)] == ["red_circle.jpg", "blue_star.jpeg",
                                                                       "green_triangle.jpg"]
    out = run("search", "a shape", "--db", db, "--ext", "png", "--min-width", "100", "--min-height", "100").output
    assert [line.rsplit("/", 1)[-1] for line in out.splitlines() if not line.startswith("-- ")] == ["blue_circle.png"]
    query = library.catalog.db.execute("SELECT path FROM images WHERE path LIKE '%red_star%'").fetchone()[0]
    out = run("similar", query, "--db", db, "--camera", "canon", "--ext", "jpg").output
    assert [line.rsplit("/", 1)[-1] for line in out.splitlines()] == ["green_square.jpg"]


def test_cli_bad_date_is_one_clear_line(library):
    result = run("search", "a shape", "--db", library.path, "--after", "last week", ok=False)
    assert result.exit_code == 2 and "Not a date" in result.output and "Traceback" not in result.output
