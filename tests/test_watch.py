"""`clipsearch watch`: one burst of changes at a time, through the library's incremental index; watchfiles'
generator is replaced by one that yields prepared bursts, so nothing waits."""
import shutil

import pytest
import watchfiles
from click.testing import CliRunner

from clipsearch import Library
from clipsearch.cli import main
from clipsearch.watching import change_batches
from conftest import draw_shape


@pytest.fixture
def library(shape_tree, library_dir, tiny):
    with Library.open(library_dir, create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=tiny.spec)
        yield lib


def test_a_burst_of_changes_indexes_the_root_that_holds_them(library, shape_tree, tmp_path):
    added = draw_shape(shape_tree / "c" / "new.png", "purple", "cross")
    (shape_tree / "a" / "red_star.png").unlink()
    report = library.index_changes([str(added), str(shape_tree / "a" / "red_star.png")], [str(shape_tree)])
    assert (report.added, report.removed, report.unchanged) == (1, 1, 7)
    assert library.index_changes([str(tmp_path / "elsewhere.png")], [str(shape_tree)]) is None


def test_changes_inside_the_library_folder_are_ignored(shape_tree, tiny):
    with Library.open(shape_tree / "lib", create=True, encoder=tiny) as lib:
        lib.index([shape_tree], model=tiny.spec)
        assert lib.index_changes([str(shape_tree / "lib" / "catalog.db")], [str(shape_tree)]) is None


@pytest.mark.parametrize("how", ["removed", "emptied"])
def test_a_folder_that_disappears_keeps_its_images(library, shape_tree, how):
    shutil.rmtree(shape_tree)
    if how == "emptied":  # an unmounted drive's empty mount point
        shape_tree.mkdir()
    report = library.index_changes([str(shape_tree / "a" / "red_star.png")], [str(shape_tree)])
    assert report.removed == 0 and len(report.offline) == 1 and library.count() == 8


def fake_watch(*bursts):
    """A stand-in for watchfiles.watch yielding each burst (a function run first, then the changes it made)."""
    calls = []

    def watch(*paths, stop_event, **kwargs):
        calls.append(paths)
        for make, changes in bursts[len(calls) - 1:len(calls)]:
            make()
            if stop_event is not None and changes is None:
                stop_event.set()
                yield set()
                return
            yield changes
        raise KeyboardInterrupt

    return watch, calls


def test_change_batches_restarts_the_watcher_when_a_root_disappears_and_comes_back(shape_tree, monkeypatch):
    import threading

    root = str(shape_tree)
    stop = threading.Event()

    def remount():
        shutil.rmtree(shape_tree)
        draw_shape(shape_tree / "back.png", "red", "star")

    watch, calls = fake_watch((remount, {(watchfiles.Change.deleted, root)}), (lambda: None, None))
    monkeypatch.setattr(watchfiles, "watch", watch)
    assert list(change_batches([root], stop)) == [[root], [root]]  # the deletion, then the root that came back
    assert calls == [(root,), (root,)]


def test_watch_command_indexes_a_burst_and_stops_cleanly_on_ctrl_c(shape_tree, library_dir, monkeypatch):
    new = shape_tree / "b" / "new.png"
    watch, _ = fake_watch((lambda: draw_shape(new, "purple", "cross"), {(watchfiles.Change.added, str(new))}))
    monkeypatch.setattr(watchfiles, "watch", watch)
    CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model", "clipsearch-tiny"])
    result = CliRunner().invoke(main, ["watch", str(shape_tree), "--db", str(library_dir)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "added 0" in lines[0] and "unchanged 8" in lines[0] and "added 1" in lines[1]
    assert lines[-1] == "stopped watching after 2 index runs: added 1, updated 0, moved 0, removed 0"
