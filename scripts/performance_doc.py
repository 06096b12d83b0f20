"""Render the performance figures of the docs and the README from benchmarks/results/*.json.

    python scripts/performance_doc.py           # rewrite the generated blocks
    python scripts/performance_doc.py --check   # exit 1 if one is out of date (a test runs this)

A benchmark run with `--save [VARIANT]` (benchmarks/record.py) writes benchmarks/results/NAME.json: its
figures, the exact command, the machine and the date. In README.md and docs/*.md, a block between
`<!-- results: NAME -->` and `<!-- /results -->` is generated from NAME.json: the command, the machine,
the date and the figures as tables, each median with its (min–max) spread. A result that no block
shows gets a section of its own at the end of docs/performance.md. The README's headline figures sit
between `<!-- performance:begin -->` and `<!-- performance:end -->`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- results: (?P<name>[\w.-]+) -->\n.*?<!-- /results -->", re.S)
HEADLINE_BLOCK = re.compile(r"<!-- performance:begin -->\n.*?<!-- performance:end -->", re.S)
STAT = re.compile(r"(?P<stat>median|mean|min|max|p\d+)(?P<unit>_[a-z]+)?")
UNITS = {"_s": " s", "_ms": " ms", "_mb": " MB", "_gb": " GB"}
UNSHOWN = "Other saved results"  # heading of the sections added for results no block shows


@dataclass(frozen=True)
class Headline:
    """One README figure: `path` into the figures of results/`result`.json, optionally with a comparison."""
    what: str
    result: str
    path: tuple[str, ...]
    beside: tuple[str, tuple[str, ...]] | None = None


HEADLINES = (
    Headline("Indexing 12 MP photos, end to end, cold (`clipsearch index`, ViT-B-32 on the CPU), images/s",
             "bench_index", ("end_to_end_cold_ips",), ("of the ideal 1/(1/E + 1/D)", ("ratio",))),
    Headline("Search among 1,000,000 images (the index `auto` picks), p50, ms", "bench_search-1m", ("1000000", "p50_ms"),
             ("recall@10 of text-like queries", ("1000000", "text_recall_at_10"))),
    Headline("`clipsearch ingest` of 5,000,000 embeddings into a new library, peak RSS, MB", "bench_ingest",
             ("5000000", "peak_rss_mb"), ("at 1,000,000", ("1000000", "peak_rss_mb"))),
    Headline("A text never searched before, as a fresh `clipsearch search` process", "bench_cold_query",
             ("clipsearch", "new_text"), ("rclip 3.3.0", ("rclip", "new_text"))),
    Headline("The same text again (answered from the library's text cache), fresh process", "bench_cold_query",
             ("clipsearch", "repeated_text")),
    Headline("`clipsearch similar` to an indexed photo, fresh process", "bench_cold_query",
             ("clipsearch", "similar"), ("rclip 3.3.0, which encodes the photo again",
                                         ("rclip", "similar_photo_encoded_again"))),
    Headline("Decoding 3 MP HEIC photos as `index` does, images/s", "bench_formats-3mp",
             ("heic_images_per_s",), ("JPEG", ("jpeg_images_per_s",))),
    Headline("Decoding 3 MP camera RAW (DNG) as `index` does, images/s: its JPEG preview", "bench_formats-3mp",
             ("raw_preview_images_per_s",), ("without a preview (half-size demosaic)",
                                             ("raw_demosaic_images_per_s",))),
    Headline("Sampling 30 s 720p H.264 videos as `index` does, videos/s", "bench_formats-3mp",
             ("video_videos_per_s",), ("frames/s", ("video_frames_per_s",))),
    Headline("Duplicate groups among 1,000,000 images (512-d), seconds", "bench_dedup-1m",
             ("speed", "seconds"), ("peak RSS, GB", ("speed", "peak_rss_gb"))),
)


# --- numbers ---------------------------------------------------------------------------------------------------
def number(value: Any) -> str:
    """A figure as printed: ints with thousands separators, floats to about 3 significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return repr(round(value, 1))
        return repr(float(f"{value:.3g}") if abs(value) >= 1 or not round(value, 3) else round(value, 3))
    if isinstance(value, list):
        return ", ".join(number(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def spread(value: Any) -> tuple[dict[str, Any], str] | None:
    """{"median": .., "min": .., "max": ..} (keys may carry one unit suffix: median_s): (stats, unit), else None."""
    if not isinstance(value, dict) or not value:
        return None
    stats, units = {}, set()
    for key, v in value.items():
        found = STAT.fullmatch(key)
        if found is None or isinstance(v, (dict, list)):
            return None
        stats[found["stat"]] = v
        units.add(found["unit"] or "")
    if "median" not in stats or len(units) != 1:
        return None
    return stats, UNITS.get(units.pop(), "")


def cell(value: Any) -> str:
    """A value for a table: a spread as "median unit (min–max, p95 ..)"."""
    found = spread(value)
    if found is None:
        return number(value)
    stats, unit = found
    extra = [f"{number(stats['min'])}–{number(stats['max'])}"] if "min" in stats and "max" in stats else []
    extra += [f"{k} {number(v)}" for k, v in stats.items() if k not in ("median", "min", "max")]
    return f"{number(stats['median'])}{unit}" + (f" ({', '.join(extra)})" if extra else "")


# --- tables ----------------------------------------------------------------------------------------------------
def is_branch(value: Any) -> bool:
    return isinstance(value, dict) and spread(value) is None


def label(key: str) -> str:
    return f"{int(key):,}" if key.isdigit() else key


def kv_table(rows: dict[str, Any]) -> list[str]:
    return ["| figure | value |", "|---|---|", *(f"| {k} | {cell(v)} |" for k, v in rows.items())]


def wide_table(columns: dict[str, dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for figures in columns.values() for k in figures))
    return ["| figure | " + " | ".join(f"`{label(c)}`" for c in columns) + " |",
            "|---|" + "---|" * len(columns),
            *(f"| {k} | " + " | ".join(cell(f[k]) if k in f else "" for f in columns.values()) + " |" for k in keys)]


def similar(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two flat branches that share at least half the figures of the smaller go in one table, a column each."""
    flat = not any(map(is_branch, a.values())) and not any(map(is_branch, b.values()))
    return flat and len(a.keys() & b.keys()) * 2 >= min(len(a), len(b))


def heading(path: tuple[str, ...]) -> list[str]:
    return [f"**{' › '.join(map(label, path))}**", ""] if path else []


def tables(figures: dict[str, Any], title: tuple[str, ...] = ()) -> list[str]:
    """Markdown tables of a benchmark's figures: leaves in a figure/value table, similar branches side by side."""
    leaves = {k: v for k, v in figures.items() if not is_branch(v)}
    out = [*heading(title), *kv_table(leaves), ""] if leaves else []
    groups: list[dict[str, dict[str, Any]]] = []
    for key, value in figures.items():
        if is_branch(value):
            group = next((g for g in groups if similar(next(iter(g.values())), value)), None)
            if group is None:
                groups.append({key: value})
            else:
                group[key] = value
    for group in groups:
        if len(group) == 1:
            key, value = next(iter(group.items()))
            out += tables(value, (*title, key))
        else:
            alone = not leaves and len(groups) == 1  # the title alone says what the table is
            out += [*heading(title if alone else (*title, ", ".join(map(label, group)))), *wide_table(group), ""]
    return out


# --- blocks ----------------------------------------------------------------------------------------------------
def machine_line(record: dict[str, Any]) -> str:
    m = record.get("machine") or {}
    parts = [m.get("cpu") or "CPU not recorded"]
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("memory_gib"):
        parts.append(f"{number(m['memory_gib'])} GiB")
    parts.append(", ".join(m["gpu"]) if m.get("gpu") else "no GPU")
    load = m.get("load_average_start")
    parts.append(f"load average {number(load)} at the start (1, 5, 15 min)" if load else
                 f"load average {m['load']}" if m.get("load") else "load average not recorded")
    if m.get("load_average_end"):
        parts.append(f"{number(m['load_average_end'])} at the end")
    if m.get("steal_share") is not None:
        parts.append(f"CPU time stolen by the hypervisor {m['steal_share']:.1%}")
    return ", ".join(parts)


def result_block(name: str, record: dict[str, Any] | None) -> str:
    """The generated text between a block's markers."""
    if record is None:
        return (f"_No saved results yet (`benchmarks/results/{name}.json`): run the command above, then "
                f"`python scripts/performance_doc.py`._\n")
    when = record.get("date", "date not recorded").replace("T", " ").replace("Z", " UTC")
    if record.get("seconds"):
        when += f", ran {number(record['seconds'])} s"
    lines = [f"- Command: `{record['command']}`" + (f" at commit `{record['commit']}`" if record.get("commit") else ""),
             f"- Machine: {machine_line(record)}",
             f"- Date: {when}"]
    if record.get("source"):
        lines.append(f"- Source: {record['source']}")
    if record.get("note"):
        lines.append(f"- Note: {record['note']}")
    return "\n".join([*lines, "", *tables(record["figures"])]).rstrip() + "\n"


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def render_blocks(text: str, results: dict[str, dict[str, Any]]) -> str:
    return BLOCK.sub(lambda m: f"<!-- results: {m['name']} -->\n{result_block(m['name'], results.get(m['name']))}"
                               f"<!-- /results -->", text)


def append_unshown(text: str, names: list[str]) -> str:
    """Sections at the end of docs/performance.md for results that no block shows yet."""
    if not names:
        return text
    if f"\n## {UNSHOWN}" not in text:
        text = text.rstrip("\n") + (f"\n\n## {UNSHOWN}\n\n"
                                     "Results saved under benchmarks/results/ that no section above shows yet.\n")
    for name in names:
        text = text.rstrip("\n") + f"\n\n### {name}\n\n<!-- results: {name} -->\n<!-- /results -->\n"
    return text


def headline_row(headline: Headline, record: dict[str, Any]) -> str | None:
    value: Any = record["figures"]
    for key in headline.path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    shown = f"**{cell(value)}**"
    if headline.beside:
        other: Any = record["figures"]
        for key in headline.beside[1]:
            other = other.get(key) if isinstance(other, dict) else None
        if other is not None:
            shown += f"; {headline.beside[0]}: {cell(other)}"
    m = record.get("machine") or {}
    load = f"load {number(m['load_average_start'][0])}" if m.get("load_average_start") else \
        f"load {m['load']}" if m.get("load") else None
    machine = ", ".join(p for p in (m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None, load) if p)
    return f"| {headline.what} | {shown} | `{record['command']}` | {machine}; {record.get('date', '')[:10]} |"


def headlines(results: dict[str, dict[str, Any]]) -> str:
    rows = [row for h in HEADLINES if h.result in results and (row := headline_row(h, results[h.result]))]
    table = ["| figure | result | command | machine; date |", "|---|---|---|---|", *rows] if rows else \
        ["_No benchmark results saved yet._"]
    return "\n".join(["<!-- performance:begin -->", *table, "<!-- performance:end -->"])


def render(root: Path) -> dict[Path, str]:
    """Every file the results change, with its new text (README.md, docs/*.md)."""
    results = load_results(root / "benchmarks" / "results")
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    texts = {path: path.read_text(encoding="utf-8") for path in files}
    shown = {m["name"] for text in texts.values() for m in BLOCK.finditer(text)}
    doc = root / "docs" / "performance.md"
    texts[doc] = append_unshown(texts.get(doc, "# Performance\n"), [n for n in results if n not in shown])
    out = {}
    for path, text in texts.items():
        new = HEADLINE_BLOCK.sub(lambda _: headlines(results), render_blocks(text, results))
        if not path.exists() or new != path.read_text(encoding="utf-8"):
            out[path] = new
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated block is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    changed = render(args.root)
    if args.check:
        for path in changed:
            print(f"{path.relative_to(args.root)} is out of date; run python scripts/performance_doc.py",
                  file=sys.stderr)
        return 1 if changed else 0
    for path, text in changed.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
