"""What a user sees in the terminal around a mistaken query, a long query, an interrupted index, the demo model,
the progress of an index, `info`, and `serve` on a taken port (CliRunner; stderr is read apart from stdout)."""
import json
import re

import pytest
from click.testing import CliRunner

import clipsearch.library
from clipsearch.cli import main
from clipsearch.models import human_size


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


DEMO_NOTE = ("note: this library uses the demo model clipsearch-tiny, which knows only coloured shapes, not photos; "
             "for photos index with a real model (see `clipsearch models`)\n")


@pytest.fixture
def indexed(shape_tree, library_dir):
    run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny")
    return library_dir


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if anything loads a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(clipsearch.library, "load_encoder", refuse)


@pytest.mark.parametrize("query", ["photos/IMG_0001.jpg", "IMG_0001.JPG", "holiday/beach", "scan.png"])
def test_a_query_that_looks_like_a_missing_file_warns_and_searches_text(indexed, query):
    result = run("search", query, "--db", indexed, "-n", "2")
    assert result.stderr.count("\n") == 1 and "is not a file; searching for it as text" in result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_a_folder_as_query_warns_and_searches_text(indexed, shape_tree):
    result = run("search", shape_tree / "a", "--db", indexed, "-n", "2")
    assert "is a folder, not an image file" in result.stderr and len(result.stdout.splitlines()) == 2


def test_an_add_term_that_looks_like_a_path_warns(indexed):
    result = run("search", "a red star", "--add", "photos/IMG_0001.jpg:0.5", "--db", indexed, "-n", "2")
    assert "'photos/IMG_0001.jpg' is not a file" in result.stderr


@pytest.mark.parametrize("query", ["a red star", "a red / blue star", "3.5 stars"])
def test_plain_text_queries_do_not_warn(indexed, query):
    assert run("search", query, "--db", indexed, "-n", "2").stderr == ""


@pytest.mark.parametrize("name, content", [("README.md", b"# Notes\n"), ("empty.jpg", b""),
                                           ("doc.pdf", b"%PDF-1.4\n%\xe2\xe3\n"), ("data.bin", bytes(range(256)))])
def test_an_existing_file_that_is_not_an_image_fails_before_the_model_loads(indexed, tmp_path, no_model, name,
                                                                             content):
    (tmp_path / name).write_bytes(content)
    result = run("search", tmp_path / name, "--db", indexed, ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and "is not a usable image" in result.stderr
    assert result.stderr.count("\n") == 1


LONG = ("a red star on a white background next to a blue circle and a green square and a yellow triangle "
        "and an orange cross on a grey background and a purple star on a black background")


def test_a_query_longer_than_the_context_is_noted_on_stderr_every_time(indexed):
    for _ in range(2):  # the second run would read a cached vector: a truncated text is not cached
        result = run("search", LONG, "--db", indexed, "-n", "2")
        assert len(result.stdout.splitlines()) == 2
        assert result.stderr.count("\n") == 1
        assert "longer than the model's context of 32 tokens: only its beginning is searched" in result.stderr
    assert run("search", "a red star on a white background", "--db", indexed, "-n", "2").stderr == ""


@pytest.mark.parametrize("onnx", [True, False], ids=["onnx text tower", "open_clip"])
@pytest.mark.parametrize("words, cut", [(30, False), (31, True), (80, True)])
def test_query_notes_say_when_a_text_was_cut(indexed, tiny, onnx, words, cut):
    from clipsearch import Library
    from clipsearch.textmodel import text_model_written

    assert text_model_written(indexed, tiny.spec)
    with Library.open(indexed, encoder=None if onnx else tiny) as lib:
        lib.search(" ".join(["a"] * words), k=1)  # 32 tokens with the start and end tokens
        assert (lib._encoder is None) == onnx
        assert len(lib.query_notes) == int(cut)
        lib.search("a red star", k=1)
        assert lib.query_notes == []


def test_ctrl_c_during_index_says_what_was_saved_and_a_rerun_continues(shape_tree, library_dir, monkeypatch):
    from clipsearch.indexer import IndexRun

    vectors_of = IndexRun._vectors_of
    calls = []

    def interrupt_at_the_third_batch(self, batch):
        calls.append(batch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return vectors_of(self, batch)

    monkeypatch.setattr(IndexRun, "_vectors_of", interrupt_at_the_third_batch)
    result = run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny", "--batch-size", "2",
                 "--workers", "0", ok=False)
    assert result.exit_code == 130 and "Aborted" not in result.output + result.stderr
    assert result.stderr == ("Interrupted: 4 new images saved (4 in the library); run the same command again to "
                             "continue where it stopped\n")
    monkeypatch.undo()
    assert "images        4\n" in run("info", "--db", library_dir).stdout
    again = run("index", shape_tree, "--db", library_dir)
    assert "added 4" in again.stdout and "unchanged 4" in again.stdout


def test_ctrl_c_before_anything_is_saved_creates_no_library(shape_tree, library_dir, monkeypatch):
    import clipsearch.library

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clipsearch.library, "load_encoder", interrupt)
    result = run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny", ok=False)
    assert result.exit_code == 130 and result.stderr.startswith("Interrupted: 0 new images saved (0 in the library)")
    assert not library_dir.exists()


def test_skipped_files_are_named_a_few_per_reason_with_a_pointer_to_errors(shape_tree, library_dir, tmp_path):
    for i in range(5):
        (shape_tree / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    (shape_tree / "empty.png").write_bytes(b"")
    result = run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny")
    lines = result.stdout.splitlines()
    broken = next(line for line in lines if "skipped 5:" in line)
    assert broken.count("broken") == 3 and broken.endswith(", ...)")
    assert any("skipped 1:" in line and "empty.png)" in line for line in lines)
    assert lines[-1] == "  every skipped file and its reason: run again with --errors FILE"
    errors = tmp_path / "errors.json"
    for i in range(5):
        (shape_tree / f"broken{i}.jpg").write_bytes(b"still not a jpeg")
    listed = run("index", shape_tree, "--db", library_dir, "--errors", errors).stdout.splitlines()
    assert listed[-1] == f"  every skipped file and its reason: {errors}" and errors.is_file()


@pytest.mark.parametrize("command", [["index", "{tree}"], ["info"], ["search", "a red star"], ["dedup"]])
def test_a_library_of_the_demo_model_says_so_once_on_a_terminal(indexed, shape_tree, command, monkeypatch):
    import clipsearch.cli

    assert run(*[a.format(tree=shape_tree) for a in command], "--db", indexed).stderr == ""  # a script, a pipe
    monkeypatch.setattr(clipsearch.cli, "_on_terminal", lambda: True)
    result = run(*[a.format(tree=shape_tree) for a in command], "--db", indexed)
    shown = [line for line in result.stderr.splitlines(keepends=True) if not line.startswith("-- ")]  # good matches
    assert "".join(shown).replace("listing files…\n", "") == DEMO_NOTE


def test_a_library_of_another_model_has_no_demo_note(indexed, monkeypatch):
    import clipsearch.cli
    from clipsearch import Library
    from clipsearch.models import ModelSpec

    with Library.open(indexed) as lib:
        assert lib.demo_model_note() is not None
        lib.catalog.set_meta("model", ModelSpec("ViT-B-32", "laion2b_s34b_b79k").to_dict())
        assert lib.demo_model_note() is None
    monkeypatch.setattr(clipsearch.cli, "_on_terminal", lambda: True)
    assert "demo model" not in run("info", "--db", indexed).stderr


@pytest.mark.parametrize("command", [["search", "a red star"], ["similar", "{tree}/a/red_star.png"]])
def test_sort_by_date_prints_the_dates_it_sorts_by(indexed, shape_tree, command):
    from datetime import datetime

    args = [a.format(tree=shape_tree) for a in command]
    lines = run(*args, "--db", indexed, "-n", "4", "--sort", "date").stdout.splitlines()
    dates = [line.split("  ")[1] for line in lines]
    assert len(lines) == 4 and dates == sorted(dates) and all(datetime.fromisoformat(d) for d in dates)
    assert all(line.split("  ")[2].startswith(str(shape_tree)) for line in lines)
    by_score = run(*args, "--db", indexed, "-n", "4").stdout.splitlines()
    assert all(line.split("  ")[1].startswith(str(shape_tree)) for line in by_score)


def test_models_marks_the_default():
    lines = run("models").stdout.splitlines()
    defaults = [line for line in lines if line.endswith("(default)")]
    assert len(defaults) == 1 and defaults[0].split() == ["ViT-B-32", "laion2b_s34b_b79k", "605", "MB", "(default)"]


@pytest.fixture
def terminal(monkeypatch):
    """stderr as a terminal, to the CLI and to click's progress bar."""
    import click._termui_impl

    import clipsearch.cli

    monkeypatch.setattr(clipsearch.cli, "_on_terminal", lambda: True)
    monkeypatch.setattr(click._termui_impl, "isatty", lambda stream: True)


def test_index_on_a_terminal_says_what_it_does_then_counts_with_a_rate(shape_tree, library_dir, terminal):
    result = run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny", "--batch-size", "2",
                 "--workers", "0")
    lines = result.stderr.split("\n")
    assert lines[:2] == ["listing files…", "loading the model clipsearch-tiny (bundled)…"]
    frames = lines[2].split("\r")
    assert "0/8" in frames[1] and "images/s" not in frames[1]  # the bar, before the first batch
    assert all(f"{n}/8" in "".join(frames) for n in (2, 4, 6, 8))
    assert re.search(r"\[#+\]  8/8  [0-9.]+ images/s", frames[-1])
    assert "added 8," in result.stdout


@pytest.mark.parametrize("terminal_or_not", ["quiet on a terminal", "not a terminal"])
def test_index_quiet_or_in_a_script_shows_no_progress(shape_tree, library_dir, monkeypatch, terminal_or_not):
    quiet = []
    if terminal_or_not == "quiet on a terminal":
        monkeypatch.setattr("clipsearch.cli._on_terminal", lambda: True)
        quiet = ["-q"]
    result = run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny", *quiet)
    assert result.stderr == (DEMO_NOTE if quiet else "") and result.stdout.startswith("added 8,")


@pytest.fixture
def india(monkeypatch):
    """Local time is UTC+05:30."""
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_info_shows_sizes_and_local_times_for_people_and_raw_values_as_json(indexed, india):
    from datetime import datetime, timedelta

    raw = json.loads(run("info", "--db", indexed, "--json").stdout)
    assert isinstance(raw["size_bytes"], int) and raw["last_indexed"].endswith("+00:00")
    lines = dict(line.split(None, 1) for line in run("info", "--db", indexed).stdout.splitlines())
    assert "size_bytes" not in lines and lines["size"] == human_size(raw["size_bytes"])
    local = datetime.fromisoformat(raw["last_indexed"]) + timedelta(hours=5, minutes=30)
    assert lines["last_indexed"] == f"{local:%Y-%m-%d %H:%M:%S}+05:30 (IST)"


@pytest.mark.parametrize("n, shown", [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (17_174_991, "17 MB"),
                                      (605_109_252, "605 MB"), (1_500_000_000, "1.5 GB"), (3 * 10**12, "3.0 TB")])
def test_human_sizes(n, shown):
    assert human_size(n) == shown


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_serve_on_a_port_in_use_fails_in_one_line_before_serving(indexed, monkeypatch, host):
    import socket

    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("started serving"))
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--db", indexed, "--host", host, "--port", port, ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f"Error: port {port} on {host} is already in use (another server?): stop it, or choose "
                             "another port with --port\n")


def test_serve_on_port_0_shows_the_port_it_got(indexed, monkeypatch):
    served = []
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **options: served.append(port))
    result = run("serve", "--db", indexed, "--port", 0)
    assert served[0] > 0 and f"at http://127.0.0.1:{served[0]}/" in result.stdout


@pytest.mark.parametrize("command", [["search", "a red star"], ["similar", "{tree}/a/red_star.png"]])
@pytest.mark.parametrize("filters", [["--after", "2030-01-01"], ["--ext", "xyz"], ["--min-score", "1.5"],
                                     ["--under", "/nowhere"]])
def test_no_results_on_a_terminal_says_so_and_a_pipe_or_json_reads_nothing(indexed, shape_tree, command, filters,
                                                                          monkeypatch):
    import clipsearch.cli

    args = [a.format(tree=shape_tree) for a in command] + ["--db", indexed]
    piped = run(*args, *filters)
    assert piped.stdout == "" and piped.stderr == ""
    monkeypatch.setattr(clipsearch.cli, "_on_terminal", lambda: True)
    shown = run(*args, *filters)
    assert shown.stdout == "" and shown.stderr.replace(DEMO_NOTE, "") == "no results with these filters\n"
    as_json = run(*args, *filters, "--json")
    assert json.loads(as_json.stdout) == [] and "no results" not in as_json.stderr


def test_good_only_with_no_good_match_on_a_terminal_says_so(indexed, monkeypatch):
    import clipsearch.cli

    monkeypatch.setattr(clipsearch.cli, "_on_terminal", lambda: True)
    shown = run("search", "zqxv wkpf", "--db", indexed, "--good-only")
    assert shown.stdout == "" and shown.stderr.replace(DEMO_NOTE, "").startswith("no good match (--good-only")
    both = run("search", "zqxv wkpf", "--db", indexed, "--good-only", "--ext", "xyz")
    assert both.stderr.replace(DEMO_NOTE, "") == "no results with these filters and --good-only\n"


def test_no_results_without_filters_on_a_terminal_says_no_results(indexed, monkeypatch):
    import clipsearch.cli

    monkeypatch.setattr(clipsearch.library.Library, "search", lambda *args, **kwargs: [])  # as an empty index would
    monkeypatch.setattr(clipsearch.cli, "_on_terminal", lambda: True)
    shown = run("search", "a red star", "--db", indexed)
    assert shown.stdout == "" and shown.stderr.replace(DEMO_NOTE, "") == "no results\n"
