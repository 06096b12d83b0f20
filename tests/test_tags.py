"""Zero-shot tagging: the ensembling math, tags stored and queryable, incremental re-tagging."""
import numpy as np
import pytest
from click.testing import CliRunner

from clipsearch import Library, model_spec
from clipsearch.catalog import SCHEMA_VERSION
from clipsearch.cli import main
from clipsearch.errors import BadQuery
from clipsearch.filters import Filters
from clipsearch.tagging import (
    SINGLE_TEMPLATE, TEMPLATES, check_labels, ensemble, label_vectors, logit_scale, probabilities, prompts,
    tag_catalog, top_labels,
)

from conftest import SHAPE_TREE, draw_shape, touch_later

COLOURS = ["red", "blue", "green", "yellow"]


def unit_rows(a):
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


# --- the math -------------------------------------------------------------------
def test_prompts_are_label_major():
    assert prompts(["cat", "dog"], ["a {}.", "the {}!"]) == ["a cat.", "the cat!", "a dog.", "the dog!"]


def test_ensemble_is_the_renormalised_mean_of_unit_template_vectors():
    rng = np.random.default_rng(0)
    templates = unit_rows(rng.normal(size=(3, 5, 16)))  # 3 labels x 5 templates
    labels = ensemble(templates.reshape(15, 16), 3)
    assert np.allclose(np.linalg.norm(labels, axis=1), 1, atol=1e-6)
    assert np.allclose(labels, unit_rows(templates.mean(axis=1)), atol=1e-6)
    single = ensemble(templates[:, 0], 3)
    assert np.allclose(single, templates[:, 0], atol=1e-6)


def test_an_ensembled_score_is_the_mean_template_score_over_the_mean_length():
    """cos(image, ensemble) = mean over templates of cos(image, template) / |mean of templates|:
    ensembling averages the templates' scores and boosts labels whose templates agree."""
    rng = np.random.default_rng(1)
    templates = unit_rows(rng.normal(size=(4, 6, 32)))
    image = unit_rows(rng.normal(size=(1, 32)))
    scores = image @ ensemble(templates.reshape(24, 32), 4).T
    expected = (templates @ image[0]).mean(axis=1) / np.linalg.norm(templates.mean(axis=1), axis=1)
    assert np.allclose(scores[0], expected, atol=1e-5)


def test_probabilities_are_a_softmax_sharpened_by_the_logit_scale():
    rng = np.random.default_rng(2)
    images, labels = unit_rows(rng.normal(size=(5, 8))), unit_rows(rng.normal(size=(3, 8)))
    soft, sharp = probabilities(images, labels, 10.0), probabilities(images, labels, 100.0)
    assert np.allclose(soft.sum(axis=1), 1) and np.allclose(sharp.sum(axis=1), 1)
    assert (soft.argmax(axis=1) == (images @ labels.T).argmax(axis=1)).all()
    assert (sharp.max(axis=1) > soft.max(axis=1)).all()
    e = np.exp(10.0 * images[0] @ labels.T)
    assert np.allclose(soft[0], e / e.sum())


def test_an_image_carries_its_best_label_and_other_probable_ones():
    probs = np.array([[0.6, 0.3, 0.1, 0.0], [0.05, 0.15, 0.1, 0.7], [0.3, 0.25, 0.25, 0.2]])
    rows, columns, p, ranks = top_labels(probs, top=3, min_probability=0.2)
    kept = {(int(r), int(c), int(k)) for r, c, k in zip(rows, columns, ranks)}
    assert kept == {(0, 0, 1), (0, 1, 2), (1, 3, 1), (2, 0, 1), (2, 1, 2), (2, 2, 3)}
    assert np.allclose(p, [probs[r, c] for r, c in zip(rows, columns)])
    rows, columns, _, _ = top_labels(probs, top=1, min_probability=0.0)
    assert list(rows) == [0, 1, 2] and list(columns) == [0, 3, 0]
    rows, _, _, _ = top_labels(probs, top=4, min_probability=1.0)
    assert list(rows) == [0, 1, 2]  # the best label is kept whatever its probability


def test_labels_are_cleaned_and_need_two():
    assert check_labels([" cat", "dog ", "", "cat"]) == ("cat", "dog")
    for bad in (["cat"], ["cat", " cat "], [], [" ", ""]):
        with pytest.raises(BadQuery):
            check_labels(bad)


def test_ensembling_changes_the_label_vectors_of_a_real_model(tiny):
    single = label_vectors(tiny, COLOURS, SINGLE_TEMPLATE)
    ensembled = label_vectors(tiny, COLOURS, TEMPLATES)
    assert np.allclose(single, tiny.encode_texts([f"a photo of a {c}." for c in COLOURS]), atol=1e-5)
    assert np.allclose(ensembled, ensemble(tiny.encode_texts(prompts(COLOURS, TEMPLATES)), 4), atol=1e-5)
    assert not np.allclose(single, ensembled, atol=1e-3)
    assert logit_scale(tiny) > 1


# --- in a library -----------------------------------------------------------------
@pytest.fixture
def lib(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=model_spec("clipsearch-tiny"), workers=0)
        yield lib


def stored(lib):
    """{file name: [(label, probability, rank)]} for every tag row."""
    rows = lib.catalog.db.execute(
        "SELECT i.path, t.label, t.probability, t.rank FROM image_tags t JOIN images i ON i.id = t.image_id"
        " ORDER BY i.path, t.rank"
    ).fetchall()
    tags = {}
    for path, label, p, rank in rows:
        tags.setdefault(path.rsplit("/", 1)[-1], []).append((label, p, rank))
    return tags


def test_tags_are_stored_and_queryable(lib):
    report = lib.tag(COLOURS)
    assert (report.tagged, report.already_tagged, report.labels) == (8, 0, tuple(COLOURS))
    tags = stored(lib)
    assert set(tags) == {f"{c}_{s}.png" for c, s in SHAPE_TREE}
    for name, carried in tags.items():
        assert carried[0][0] == name.split("_")[0]  # the best label is the shape's colour
        assert [rank for _, _, rank in carried] == list(range(1, len(carried) + 1)) and len(carried) <= 3
        assert all(0 < p <= 1 for _, p, _ in carried) and sum(p for _, p, _ in carried) <= 1 + 1e-6
        assert [p for _, p, _ in carried] == sorted((p for _, p, _ in carried), reverse=True)
    counts = {c.label: c.images for c in lib.tags()}
    assert set(counts) <= set(COLOURS) and all(counts[c] >= 2 for c in COLOURS)
    assert [c.images for c in lib.tags()] == sorted(counts.values(), reverse=True)
    red = lib.search("a shape", k=20, filters=Filters(tag="red"))
    assert {"red_star.png", "red_circle.png"} <= {r.path.rsplit("/", 1)[-1] for r in red}
    assert len(red) == counts["red"]
    assert lib.search("a shape", k=20, filters=Filters(tag="purple")) == []


def test_tag_filter_combines_with_text_search_and_other_filters(lib, shape_tree):
    lib.tag(COLOURS, top=1)
    ranking = lib.search("a star", k=20)
    blue = lib.search("a star", k=20, filters=Filters(tag="blue"))
    assert {r.path.rsplit("/", 1)[-1] for r in blue} == {"blue_star.png", "blue_circle.png"}
    assert blue == [r for r in ranking if r in blue]  # the text ranking, restricted to the tag
    in_a = lib.search("a star", k=20, filters=Filters(tag="red", under=(str(shape_tree / "a"),)))
    assert {r.path.rsplit("/", 1)[-1] for r in in_a} == {"red_star.png", "red_circle.png"}
    assert lib.search("a star", k=20, filters=Filters(tag="red", under=(str(shape_tree / "b"),))) == []


def test_retagging_tags_only_new_and_changed_images(lib, shape_tree, tiny):
    lib.tag(COLOURS)
    before = stored(lib)

    def no_model():
        raise AssertionError("nothing to tag, so the model must not be loaded")

    again = tag_catalog(lib.catalog, no_model, list(reversed(COLOURS)))  # the same set, in another order
    assert (again.tagged, again.already_tagged) == (0, 8) and stored(lib) == before

    draw_shape(shape_tree / "a" / "new_red_star.png", "red", "star", seed=50)
    changed = shape_tree / "b" / "blue_star.png"
    draw_shape(changed, "yellow", "star", seed=51)
    touch_later(changed)
    (shape_tree / "a" / "green_square.png").unlink()
    lib.index([shape_tree])
    assert "green_square.png" not in stored(lib) and "blue_star.png" not in stored(lib)
    report = lib.tag(COLOURS)
    assert (report.tagged, report.already_tagged) == (2, 6)
    tags = stored(lib)
    assert tags["new_red_star.png"][0][0] == "red" and tags["blue_star.png"][0][0] == "yellow"
    orphans = lib.catalog.db.execute(
        "SELECT count(*) FROM image_tags WHERE image_id NOT IN (SELECT id FROM images)").fetchone()[0]
    assert orphans == 0


def test_other_settings_retag_everything_and_replace_the_old_tags(lib):
    lib.tag(COLOURS, templates=SINGLE_TEMPLATE)
    single = stored(lib)
    report = lib.tag(COLOURS)
    assert report.tagged == 8
    ensembled = stored(lib)
    assert set(single) == set(ensembled)
    assert single != ensembled  # ensembling changed the probabilities
    assert lib.catalog.db.execute("SELECT count(*) FROM label_sets").fetchone()[0] == 1
    assert lib.tag(COLOURS, top=1).tagged == 8
    assert all(len(tags) == 1 for tags in stored(lib).values())


def test_label_sets_add_up(lib):
    shapes = ["star", "circle", "square", "triangle"]
    lib.tag(COLOURS, top=1)
    lib.tag(shapes, top=1)
    counts = {c.label: c.images for c in lib.tags()}
    assert sum(counts.get(c, 0) for c in COLOURS) == 8 and sum(counts.get(s, 0) for s in shapes) == 8
    assert all(len(tags) == 2 for tags in stored(lib).values())  # one colour and one shape each
    for label, n in counts.items():
        assert len(lib.search("a shape", k=20, filters=Filters(tag=label))) == n


def test_reindexing_forgets_the_tags_of_the_images_it_re_embeds(lib, shape_tree):
    lib.tag(COLOURS)
    lib.index([shape_tree], reindex=True)
    assert lib.tags() == []
    assert lib.tag(COLOURS).tagged == 8


def test_a_library_from_before_tags_gains_the_tag_tables(lib, shape_tree):
    """Schema 1 (no tag tables) is migrated on open; its images stay, and tagging works."""
    db = lib.catalog.db
    with db.conn:
        db.conn.executescript("DROP TABLE image_tags; DROP TABLE label_sets; DROP INDEX images_filters;"
                              " PRAGMA user_version = 1;")
    lib.close()
    with Library.open(lib.path) as reopened:
        assert reopened.catalog.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert reopened.catalog.count() == 8 and reopened.tag(COLOURS).tagged == 8


# --- the command line ------------------------------------------------------------
def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_tag_tags_and_search_by_tag(lib, tmp_path):
    db = lib.path
    assert run("tag", "--db", db, "--labels", "red, blue,green,yellow").output.startswith("tagged 8 images (0 already")
    assert "tagged 0 images (8 already tagged)" in run("tag", "--db", db, "--labels", "yellow,green,blue,red").output
    lines = run("tags", "--db", db).output.splitlines()
    assert {line.split()[-1] for line in lines} == set(COLOURS)
    assert {line.split()[-1]: int(line.split()[0]) for line in lines} == {c.label: c.images for c in lib.tags()}
    out = run("search", "a shape", "--db", db, "--tag", "green").stdout
    found = {line.rsplit("/", 1)[-1] for line in out.splitlines()}
    assert {"green_square.png", "green_triangle.png"} <= found and len(found) == dict(
        (c.label, c.images) for c in lib.tags())["green"]
    labels = tmp_path / "labels.txt"
    labels.write_text("a star\na circle\n\na square\na triangle\n")
    assert "tagged 8 images" in run("tag", "--db", db, "--labels-file", labels, "--top", "1").output


@pytest.mark.parametrize("args,message", [([], "--labels"), (["--labels", "cat"], "at least two labels"),
                                          (["--labels", "a,b", "--min-prob", "2"], "--min-prob")])
def test_cli_tag_mistakes_are_one_line(lib, args, message):
    result = run("tag", "--db", lib.path, *args, ok=False)
    assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output
