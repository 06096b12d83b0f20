"""Every shell example in the README runs as written (with /tmp redirected to a test folder)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SKIP_MARKERS = ("make ", "pip install", "python3 -m venv", "scripts/", "benchmarks/", "serve", "torchvision.datasets",
                "--model ViT-B-32", "--engine ray", "ingest")


def runnable_blocks() -> list[str]:
    """The ```bash blocks that use clipsearch and need nothing the test machine lacks (network, GPU, a server)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    return [b for b in blocks if "clipsearch " in b and not any(m in b for m in SKIP_MARKERS)]


def python_blocks() -> list[str]:
    return [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "Library.open(" in b]


@pytest.fixture
def sandbox(tmp_path):
    """A copy of the sample data and a bin folder putting this interpreter's clipsearch first on PATH."""
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "clipsearch").write_text(f"#!/bin/sh\nexec {sys.executable} -m clipsearch \"$@\"\n")
    (bin_dir / "clipsearch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    return tmp_path, env


def localise(script: str, tmp_path: Path) -> str:
    return script.replace("/tmp/", f"{tmp_path}/scratch-")


def test_readme_has_examples():
    assert runnable_blocks() and python_blocks()


def test_shell_examples_run(sandbox):
    tmp_path, env = sandbox
    script = "set -e\n" + "\n".join(localise(b, tmp_path) for b in runnable_blocks())
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_python_examples_run(sandbox):
    tmp_path, env = sandbox
    for block in python_blocks():
        result = subprocess.run([sys.executable, "-c", localise(block, tmp_path)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
