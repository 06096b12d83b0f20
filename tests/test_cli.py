"""The command line as a user runs it (CliRunner), mirroring the README's examples."""
import json
import shlex

import pytest
from click.testing import CliRunner

from clipsearch.cli import main

def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def indexed(shape_tree, library_dir):
    run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny")
    return library_dir


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_a_whole_summary_and_examples_that_parse(command):
    """The command list shows each summary whole on an 80-column terminal; every example names real options."""
    summary = main.commands[command].get_short_help_str(limit=80 - 6 - max(map(len, main.commands)))
    assert summary.endswith(".") and not summary.endswith("...")
    help_text = CliRunner().invoke(main, [command, "--help"], prog_name="clipsearch", terminal_width=80).output
    assert "Usage: clipsearch " in help_text and "Examples:" in help_text
    examples = help_text.split("Examples:\n")[1].splitlines()
    assert examples and all(line.startswith("    clipsearch ") for line in examples)
    for example in examples:
        words = shlex.split(example.strip().split("   ")[0].replace("||", ""))  # the command, not its comment
        used = main.commands[words[1]]
        known = {opt for param in used.params for opt in param.opts + param.secondary_opts}
        assert {w for w in words if w.startswith("-")} <= known, example


def test_index_prints_a_summary(shape_tree, library_dir):
    result = run("index", shape_tree, "--db", library_dir, "--model", "clipsearch-tiny")
    assert "added 8" in result.output and "images/s" in result.output
    again = run("index", shape_tree, "--db", library_dir)
    assert "added 0" in again.output and "unchanged 8" in again.output


def test_search_prints_score_and_path(indexed, shape_tree):
    lines = run("search", "a red star", "--db", indexed, "-n", "3").output.splitlines()
    assert len(lines) == 3  # the good-match line is for terminals only (see test_relevance.py)
    score, path = lines[0].split("  ", 1)
    assert float(score) > 0 and path == str(shape_tree / "a" / "red_star.png")


def test_search_json_schema(indexed):
    results = json.loads(run("search", "a blue circle", "--db", indexed, "--json", "-n", "2").output)
    assert len(results) == 2
    assert set(results[0]) == {"path", "path_bytes_b64", "score", "width", "height", "taken_at", "date", "snippet",
                               "highlights", "fused", "time_s", "good"}
    assert results[0]["path_bytes_b64"] is None  # the path is valid UTF-8, so `path` is exact
    assert results[0]["path"].endswith("blue_circle.png")


def test_similar_and_under(indexed, shape_tree):
    out = run("similar", shape_tree / "a" / "red_star.png", "--db", indexed, "--under", shape_tree / "b").output
    assert out and all("/b/" in line for line in out.splitlines())


def test_env_var_selects_the_library(indexed, monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_DB", str(indexed))
    assert run("search", "a green square", "-n", "1").output.strip().endswith("green_square.png")


def test_info(indexed):
    out = run("info", "--db", indexed).output
    assert "images        8" in out and "clipsearch-tiny" in out
    data = json.loads(run("info", "--db", indexed, "--json").output)
    assert data["images"] == 8 and data["model"]["dim"] > 0


def test_model_mismatch_is_one_clear_line(indexed, shape_tree, tmp_path):
    other = tmp_path / "weights.pt"
    other.write_bytes(b"x")
    result = run("index", shape_tree, "--db", indexed, "--model", "clipsearch-tiny", "--checkpoint", other, ok=False)
    assert result.exit_code == 1
    assert "--reindex" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "anything"], "No clipsearch library"),
        (["index", "/no/such/dir", "--model", "clipsearch-tiny"], "No such file or directory"),
    ],
)
def test_bad_arguments_fail_cleanly(library_dir, args, message):
    result = run(*args, "--db", library_dir, ok=False)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output
    assert not library_dir.exists()


def test_empty_query_is_an_error(indexed):
    result = run("search", "  ", "--db", indexed, ok=False)
    assert result.exit_code == 1 and "Empty query" in result.output


def test_models_lists_the_bundled_model_and_open_clip_tags():
    out = run("models").output
    assert "* clipsearch-tiny" in out
    assert "ViT-B-32" in out and "laion2b_s34b_b79k" in out


@pytest.mark.parametrize("args,code,stdout_lines", [
    (["search", "a red star", "-n", "2"], 0, 2),
    (["similar", "{tree}/a/red_star.png", "-n", "2"], 0, 2),
    (["search", " "], 1, 0),
    (["info"], 0, None),
    (["index", "{tree}", "--quiet"], 0, 1),
    (["index", "{tree}/missing"], 1, 0),
])
def test_the_real_entry_point_flushes_output_and_exit_status(indexed, shape_tree, args, code, stdout_lines):
    """search and similar leave through os._exit, the others without collecting garbage at exit (see cli.run):
    output and exit status must survive either."""
    import subprocess
    import sys

    args = [a.format(tree=shape_tree) for a in args]
    done = subprocess.run([sys.executable, "-m", "clipsearch", *args, "--db", str(indexed)], capture_output=True,
                          text=True)
    assert done.returncode == code, done.stderr
    assert len(done.stdout.splitlines()) == stdout_lines if stdout_lines is not None else done.stdout.strip()
    assert len(done.stderr.splitlines()) == (0 if code == 0 else 1)


def test_the_cli_reference_is_current():
    """docs/cli.md is generated from --help; regenerate it with `python scripts/cli_reference.py`."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "cli_reference.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
