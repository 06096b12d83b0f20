"""Keep a benchmark's figures: every script in benchmarks/ prints one JSON line last; `--save` also writes it.

    python benchmarks/bench_web.py --images 300 --extra 100000 --save            # results/bench_web.json
    python benchmarks/bench_search.py --n 100000 --save 100k                     # results/bench_search-100k.json

The file holds the printed figures with what is needed to judge and repeat them: the exact command, the
commit, the date, and the machine (CPU model from `lscpu`, cores, memory, GPU, load average when the
script started and when it ended, and the share of CPU time stolen by the hypervisor meanwhile).
`python scripts/performance_doc.py` renders docs/performance.md and the README's headline figures from these files.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_STARTED = time.time()
_LOAD_AT_START = os.getloadavg()  # before the benchmark itself loads the machine


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of the whole machine since boot, in clock ticks, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


_JIFFIES_AT_START = _cpu_jiffies()


def add_save_option(parser: argparse.ArgumentParser) -> None:
    """`--save [VARIANT]`: also write the figures to benchmarks/results/<script>[-VARIANT].json."""
    parser.add_argument("--save", nargs="?", const="", default=None, metavar="VARIANT", type=_variant,
                        help="also write the JSON with the command and the machine to "
                             "benchmarks/results/<script>[-VARIANT].json")


def emit(figures: dict[str, Any], args: argparse.Namespace) -> None:
    """Print `figures` as the one JSON line every benchmark ends with; with --save, keep them too."""
    print(json.dumps(figures), flush=True)
    if args.save is not None:
        path = save(figures, args.save)
        print(f"saved to {path}", file=sys.stderr)


def save(figures: dict[str, Any], variant: str = "") -> Path:
    """Write figures and their context to results/<script>[-variant].json beside the running script."""
    script = Path(sys.argv[0]).resolve()
    root = script.parent.parent
    name = script.stem + (f"-{variant}" if variant else "")
    record = {
        "benchmark": script.stem,
        "variant": variant or None,
        "command": shlex.join(["python", str(script.relative_to(root)), *sys.argv[1:]]),
        "commit": _commit(root),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.time() - _STARTED, 1),
        "machine": machine(),
        "figures": figures,
    }
    folder = script.parent / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _variant(text: str) -> str:
    """Checked when the arguments are parsed, not after an hour of benchmark."""
    if not re.fullmatch(r"[A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"letters, digits, '.', '_' or '-' only, not {text!r}")
    return text


def machine() -> dict[str, Any]:
    """CPU model (`lscpu` Model name), cores usable and present, memory (GiB), GPU names, load averages, steal."""
    return {
        "cpu": _lscpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpus_present": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": _gpus(),
        "load_average_start": [round(v, 2) for v in _LOAD_AT_START],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "steal_share": _steal_share(),
    }


def _steal_share() -> float | None:
    """The share of the machine's CPU time the hypervisor gave to others (steal) since the script started: on a
    shared virtual machine, CPU time the benchmark waited for without being counted idle."""
    now = _cpu_jiffies()
    if now is None or _JIFFIES_AT_START is None or now[1] <= _JIFFIES_AT_START[1]:
        return None
    return round((now[0] - _JIFFIES_AT_START[0]) / (now[1] - _JIFFIES_AT_START[1]), 4)


def _lscpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    found = re.search(r"^Model name:\s*(.+)$", out, re.M)
    return found.group(1).strip() if found else None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None
    return round(kb / 2**20, 1)


def _gpus() -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return names if done.returncode == 0 and names else None


def _commit(root: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=10"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
