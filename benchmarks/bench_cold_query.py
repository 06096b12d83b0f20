"""Cold queries from the command line, clipsearch beside rclip, on the same random weights.

A collection of generated photos (640x480 JPEGs of coloured shapes) is indexed by
`clipsearch index` with a randomly initialised ViT-B-32-256 (saved as a checkpoint: no weights
are reachable offline, and the compute is that of rclip's trained ViT-B-32-256), then each
command is timed from process start to exit, in fresh processes (clipsearch's modules byte-compiled first, as
an installed package's are):

- new text: `clipsearch search TEXT -n 20`, a text never searched before (a different one each run);
- repeated text: the same command again (answered from the library's text cache);
- similar: `clipsearch similar PHOTO -n 20` of an indexed photo (its stored vector);
- the phases of a new-text query, timed in a separate instrumented process (so they do not add
  up exactly to the command).

rclip (https://github.com/yurijmikhalevich/rclip) is installed from PyPI into a virtual
environment of its own (or give one with --rclip-venv); this script exports the same random
weights into the ONNX files rclip expects (batch 1: it is run with --indexing-batch-size 1), lets
rclip index the same photos, and times `rclip --no-indexing -t 20 TEXT` and the same with a photo
as the query (rclip encodes the photo again). When rclip cannot be installed or run, the script
says why and reports clipsearch alone.

    python benchmarks/bench_cold_query.py                      # 300 photos, 5 runs of each command
    python benchmarks/bench_cold_query.py --images 50 --runs 3 --no-rclip

Medians of the runs with min and max; the last line printed is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from record import add_save_option, emit  # noqa: E402  (benchmarks/record.py)

ARCH = "ViT-B-32-256"
RCLIP_MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"  # where rclip looks for its ONNX files
COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["star", "circle", "square", "triangle"]
NOUNS = ["harbour", "mountain", "kitchen", "garden", "bicycle", "lantern", "violin", "glacier", "market",
         "lighthouse", "meadow", "cathedral", "volcano", "orchard", "canyon", "library", "bridge", "desert"]


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stats(seconds: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return elapsed


def make_photos(folder: Path, n: int) -> list[Path]:
    from clipsearch.shapes import ShapeSpec, render

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        spec = ShapeSpec(COLOURS[i % 4], SHAPES[(i // 4) % 4], "white")
        render(spec, random.Random(i), size=480).resize((640, 480)).save(path, quality=90)
    return paths


def byte_compile_clipsearch() -> None:
    """Write clipsearch's bytecode, as installing it does: a checkout run with PYTHONDONTWRITEBYTECODE=1 would
    otherwise compile every clipsearch module in every timed process (rclip, installed by pip, has its bytecode)."""
    import compileall

    import clipsearch

    compileall.compile_dir(Path(clipsearch.__file__).parent, quiet=1)


def random_model(work: Path):
    """A randomly initialised ViT-B-32-256 (seeded), and its weights saved as an open_clip checkpoint."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(ARCH).eval()
    checkpoint = work / f"{ARCH}-random.pt"
    torch.save(model.state_dict(), checkpoint)
    return model, checkpoint


# --- clipsearch -------------------------------------------------------------------------------------
PHASES_CHILD = r"""
import json, sys, time
t = {"start": time.time()}
import clipsearch.cli, click
t["import_cli"] = time.time()
from clipsearch import Library
lib = Library.open(sys.argv[1])
t["open_library"] = time.time()
import onnxruntime, tokenizers
t["import_onnxruntime_tokenizers"] = time.time()
from clipsearch.textmodel import TextModel
tower = TextModel.load(lib.path, lib.model)
t["load_text_tower"] = time.time()
vector = tower.encode([sys.argv[2]])[0]
t["encode_text"] = time.time()
import faiss
t["import_faiss"] = time.time()
lib.vectors
t["map_index"] = time.time()
results = lib.nearest(vector, k=20)
for r in results:
    click.echo(f"{r.score:.3f}  {r.path}", file=sys.stderr)
t["search_and_print"] = time.time()
print(json.dumps(t))
"""


def clipsearch_run(library: Path, photo: Path, text: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "clipsearch"]
    figures = {"new_text": timed([*command, "search", text, "--db", str(library), "-n", "20"]),
               "repeated_text": timed([*command, "search", text, "--db", str(library), "-n", "20"]),
               "similar": timed([*command, "similar", str(photo), "--db", str(library), "-n", "20"])}
    spawned = time.time()
    out = subprocess.run([sys.executable, "-c", PHASES_CHILD, str(library), f"phases {text}"],
                         capture_output=True, text=True, check=True).stdout
    stamps = json.loads(out)
    names, times = ["python_start", *list(stamps)[1:]], [spawned, *stamps.values()]
    figures["phases_s"] = {name: b - a for name, a, b in zip(names, times, times[1:])}
    return figures


# --- rclip ------------------------------------------------------------------------------------------
def rclip_venv(given: Path | None, work: Path) -> Path:
    """The rclip executable: in the given virtual environment, else installed into a new one."""
    if given is not None:
        return given / "bin" / "rclip"
    venv = work / "rclip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "rclip"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip install rclip failed: {done.stderr.strip()[-300:]}")
    return venv / "bin" / "rclip"


def export_for_rclip(model, datadir: Path) -> None:
    """The random weights as rclip's textual.onnx and visual.onnx (input "input", batch 1), and its vocabulary."""
    import open_clip
    import torch

    class Text(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, tokens):
            return self.clip.encode_text(tokens)

    class Visual(torch.nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, pixels):
            return self.clip.encode_image(pixels)

    folder = datadir / RCLIP_MODEL_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.mha.set_fastpath_enabled(False)  # its fused attention has no ONNX export
        torch.onnx.export(Text(model), (torch.zeros(1, 77, dtype=torch.long),), str(folder / "textual.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=17, dynamo=False)
        torch.onnx.export(Visual(model), (torch.zeros(1, 3, size, size),), str(folder / "visual.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=17, dynamo=False)
    vocab = datadir / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    vocab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", vocab)
    gzip.open(vocab).read(16)  # a readable copy


def rclip_index(rclip: Path, datadir: Path, photos: Path) -> tuple[float, dict[str, str]]:
    env = {**os.environ, "RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1"}
    return timed([str(rclip), "--indexing-batch-size", "1", "-t", "1", "-f", "warm-up"], env, photos), env


def rclip_run(rclip: Path, env: dict[str, str], photos: Path, photo: Path, text: str) -> dict[str, float]:
    return {"new_text": timed([str(rclip), "--no-indexing", "-t", "20", "-f", text], env, photos),
            "similar_photo_encoded_again": timed([str(rclip), "--no-indexing", "-t", "20", "-f", str(photo)],
                                                 env, photos)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {name: stats([r[name] for r in runs]) for name in runs[0] if name != "phases_s"}
    if "phases_s" in runs[0]:
        out["phases_s"] = {name: statistics.median(r["phases_s"][name] for r in runs) for name in runs[0]["phases_s"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-rclip", dest="rclip", action="store_false", help="time clipsearch only")
    parser.add_argument("--rclip-venv", type=Path, help="a virtual environment with rclip installed")
    parser.add_argument("--work", type=Path, help="keep the photos, libraries and models here (a second run "
                        "reuses them: the weights are seeded, so an index run there finds nothing to do)")
    add_save_option(parser)
    args = parser.parse_args()

    byte_compile_clipsearch()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-cold-"))
    work.mkdir(parents=True, exist_ok=True)
    photos = work / "photos"
    paths = make_photos(photos, args.images)
    model, checkpoint = random_model(work)
    library = work / "library"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clipsearch", "index", str(photos), "--db", str(library),
                           "--model", ARCH, "--checkpoint", str(checkpoint), "--device", "cpu"],
                          check=True, capture_output=True, text=True)
    print(f"clipsearch index ({done.stdout.strip().splitlines()[-1]}) took {time.perf_counter() - started:.1f} s "
          f"(a first run includes the text tower export)")
    figures: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "images": args.images, "runs": args.runs,
                               "model": f"{ARCH} (random weights)"}
    rclip = None
    if args.rclip:
        try:
            rclip = rclip_venv(args.rclip_venv, work)
            datadir = work / "rclip-data"
            export_for_rclip(model, datadir)
            figures["rclip_index_s"], env = rclip_index(rclip, datadir, photos)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            rclip = None
            figures["rclip_error"] = str(e)
            print(f"rclip could not be run, clipsearch reported alone: {e}")
    ours, theirs = [], []
    for run in range(args.runs):  # the two tools alternate, so that both see the same machine load
        text = f"a photo of a {NOUNS[run % len(NOUNS)]} number {run}"
        ours.append(clipsearch_run(library, paths[0], text))
        if rclip is not None:
            theirs.append(rclip_run(rclip, env, photos, paths[0], text))
    figures["clipsearch"] = summary(ours)
    if theirs:
        figures["rclip"] = summary(theirs)
    c = figures["clipsearch"]
    print(f"\n{figures['cpu']}, {figures['cores']} cores; {args.images} photos, {ARCH} random weights; "
          f"median (min-max) of {args.runs} fresh processes")
    rows = [("new text", c["new_text"], figures.get("rclip", {}).get("new_text")),
            ("repeated text", c["repeated_text"], None),  # rclip keeps no text cache: as new text
            ("similar (indexed photo)", c["similar"], figures.get("rclip", {}).get("similar_photo_encoded_again"))]
    for name, ours, theirs in rows:
        line = f"  {name:24s} clipsearch {ours['median_s']:.2f} s ({ours['min_s']:.2f}-{ours['max_s']:.2f})"
        if theirs:
            line += f"   rclip {theirs['median_s']:.2f} s ({theirs['min_s']:.2f}-{theirs['max_s']:.2f})"
        print(line)
    print("  phases of a new-text query (clipsearch):")
    for name, seconds in c["phases_s"].items():
        print(f"    {name:32s} {seconds * 1000:7.0f} ms")
    emit(figures, args)


if __name__ == "__main__":
    main()
