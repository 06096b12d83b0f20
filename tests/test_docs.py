"""The performance figures in the README and docs/ are generated from the benchmarks' saved JSON."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "performance_doc.py"

FAKE_BENCHMARK = '''
import argparse
from record import add_save_option, emit

parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, default=3)
add_save_option(parser)
args = parser.parse_args()
emit({"n": args.n, "search": {"median_ms": 1.25, "min_ms": 1.0, "max_ms": 2.5},
      "100000": {"ivf": {"p50_ms": 0.9, "recall_at_10": 0.9834}, "hnsw": {"p50_ms": 0.5, "recall_at_10": 0.995}}},
     args)
'''


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)


def project(tmp_path: Path) -> Path:
    """A project with the benchmarks' helper, one fake benchmark, a README and a docs page with its block."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "record.py", tmp_path / "benchmarks")
    (tmp_path / "benchmarks" / "bench_fake.py").write_text(FAKE_BENCHMARK)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "performance.md").write_text(
        "# Performance\n\nRun `python benchmarks/bench_fake.py --save small`:\n\n"
        "<!-- results: bench_fake-small -->\n<!-- /results -->\n")
    (tmp_path / "README.md").write_text("# x\n\n<!-- performance:begin -->\n<!-- performance:end -->\n")
    return tmp_path


def test_the_generated_figures_are_current():
    """README.md and docs/*.md match benchmarks/results/; regenerate with `python scripts/performance_doc.py`."""
    done = run(str(SCRIPT), "--check")
    assert done.returncode == 0, done.stderr


def test_every_benchmark_offers_save():
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        text = script.read_text()
        assert "add_save_option(parser)" in text and "emit(" in text, script.name


def test_save_keeps_the_json_with_command_and_machine(tmp_path):
    root = project(tmp_path)
    done = run("benchmarks/bench_fake.py", "--n", "5", "--save", "small", cwd=root)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.splitlines()[-1])
    saved = json.loads((root / "benchmarks" / "results" / "bench_fake-small.json").read_text())
    assert saved["figures"] == printed
    assert saved["command"] == "python benchmarks/bench_fake.py --n 5 --save small"
    assert saved["date"].startswith("20") and saved["machine"]["cores"] >= 1
    assert len(saved["machine"]["load_average_start"]) == 3 and "cpu" in saved["machine"]


def test_without_save_nothing_is_written(tmp_path):
    root = project(tmp_path)
    assert run("benchmarks/bench_fake.py", cwd=root).returncode == 0
    assert not (root / "benchmarks" / "results").exists()


def test_a_bad_variant_is_refused_before_the_benchmark_runs(tmp_path):
    root = project(tmp_path)
    for variant in ("../x", "a b", "x/y"):
        done = run("benchmarks/bench_fake.py", "--save", variant, cwd=root)
        assert done.returncode == 2 and "--save" in done.stderr and not done.stdout
    assert not (root / "benchmarks" / "results").exists()


def test_check_fails_until_regenerated_then_shows_command_machine_and_spread(tmp_path):
    root = project(tmp_path)
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 1  # blocks not generated yet
    assert run(str(SCRIPT), "--root", str(root)).returncode == 0
    assert "No saved results yet" in (root / "docs" / "performance.md").read_text()
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 0
    assert run("benchmarks/bench_fake.py", "--save", "small", cwd=root).returncode == 0
    stale = run(str(SCRIPT), "--check", "--root", str(root))
    assert stale.returncode == 1 and "docs/performance.md is out of date" in stale.stderr
    assert run(str(SCRIPT), "--root", str(root)).returncode == 0
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 0
    page = (root / "docs" / "performance.md").read_text()
    assert "- Command: `python benchmarks/bench_fake.py --save small`" in page
    assert "- Machine: " in page and "load average" in page and "- Date: 20" in page
    assert "| search | 1.25 ms (1.0–2.5) |" in page
    assert "| figure | `ivf` | `hnsw` |" in page and "| recall_at_10 | 0.983 | 0.995 |" in page


def test_a_changed_result_makes_the_page_stale(tmp_path):
    root = project(tmp_path)
    assert run("benchmarks/bench_fake.py", "--save", "small", cwd=root).returncode == 0
    assert run(str(SCRIPT), "--root", str(root)).returncode == 0
    saved = root / "benchmarks" / "results" / "bench_fake-small.json"
    saved.write_text(saved.read_text().replace("1.25", "1.5"))
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 1
    (root / "docs" / "performance.md").write_text("# Performance\n\n<!-- results: bench_fake-small -->\nedited\n"
                                                  "<!-- /results -->\n")
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 1


def test_a_result_no_page_shows_gets_its_own_section(tmp_path):
    root = project(tmp_path)
    assert run("benchmarks/bench_fake.py", "--save", cwd=root).returncode == 0  # bench_fake.json: no block
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 1
    assert run(str(SCRIPT), "--root", str(root)).returncode == 0
    page = (root / "docs" / "performance.md").read_text()
    assert "### bench_fake\n\n<!-- results: bench_fake -->\n- Command: `python benchmarks/bench_fake.py --save`" in page
    assert "No saved results yet (`benchmarks/results/bench_fake-small.json`)" in page
    assert run(str(SCRIPT), "--check", "--root", str(root)).returncode == 0


def test_readme_headlines_come_from_the_results():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- performance:begin -->")[1].split("<!-- performance:end -->")[0]
    results = {p.stem: json.loads(p.read_text()) for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert 1 <= len(rows) <= 10  # a short table: the details are in docs/performance.md
    for row in rows:
        command = row.split("`python ")[-1].split("`")[0]
        assert any(r["command"] == "python " + command for r in results.values()), row
