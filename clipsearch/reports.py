"""Rendering a duplicates report: a readable summary, JSON, CSV and a self-contained HTML page.

Only the report file named by the user is written; the images themselves are only read (for the
HTML thumbnails), never deleted or moved.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from typing import Iterator, TextIO

from .decode import load
from .errors import BadImage, BadPath
from .paths import exact_b64, readable
from .results import DedupReport, DuplicateGroup, DuplicateMember, to_dict

THUMBNAIL_SIZE = 160
CSV_COLUMNS = ("group", "group_tier", "tier", "similarity", "path", "size", "width", "height", "date", "path_bytes_b64")
"""`path` and `path_bytes_b64` as `paths.path_fields` gives them (the latter empty where `path` is exact)."""
SECTIONS = (("exact", "Exact duplicates"), ("near", "Near-duplicates"), ("series", "Similar series"))
LEGEND = ("keeper: the one to keep (highest resolution, then largest file, then oldest); exact: the same bytes "
          "as the keeper or as another member; near: the same picture resized, re-encoded, cropped or edited; "
          "series: another shot of the same scene (series are not counted as reclaimable). Similarity is the "
          "cosine to the keeper.")


def human_bytes(n: float) -> str:
    if abs(n) < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def sections(report: DedupReport) -> Iterator[tuple[str, list[tuple[int, DuplicateGroup]]]]:
    """(title, [(group number, group)]) per tier, numbering groups 1.. in report order."""
    numbered = list(enumerate(report.groups, 1))
    for tier, title in SECTIONS:
        if tier != "series" or report.series_threshold is not None:
            yield title, [(number, g) for number, g in numbered if g.tier == tier]


def summary(report: DedupReport) -> str:
    lines = []
    for title, groups in sections(report):
        files = sum(len(g.members) for _, g in groups)
        freed = sum(g.reclaimable_bytes for _, g in groups)
        note = " (not counted in the total)" if title == "Similar series" and groups else ""
        lines.append(f"{title}: {plural(len(groups), 'group')}, {plural(files, 'file')}, "
                     f"{human_bytes(freed)} reclaimable{note}")
        for number, group in groups:
            lines.append(f"  #{number} {group.tier}, {human_bytes(group.reclaimable_bytes)} reclaimable")
            lines += [f"    {_member_line(m)}" for m in group.members]
    lines.append(totals(report))
    return "\n".join(lines)


def totals(report: DedupReport) -> str:
    duplicates = len(report.of_tier("exact")) + len(report.of_tier("near"))
    series = "" if report.series_threshold is None else f", series from {report.series_threshold}"
    return (f"Compared {plural(report.images, 'image')} in {report.elapsed_s:.1f}s (near-duplicates from cosine "
            f"{report.threshold}{series}): {plural(duplicates, 'duplicate group')}, "
            f"{human_bytes(report.reclaimable_bytes)} reclaimable by keeping only each group's keeper. "
            f"Nothing was deleted or moved.")


def _member_line(m: DuplicateMember) -> str:
    return (f"{m.tier:6} {m.similarity:.3f}  {m.width}x{m.height}  {human_bytes(m.size):>8}  {m.date}  {readable(m.path)}")


def _create(path: str | os.PathLike[str]) -> TextIO:
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise BadPath(f"Cannot write {os.fspath(path)}: {e.strerror or e}") from None


def write_json(report: DedupReport, path: str | os.PathLike[str]) -> None:
    with _create(path) as f:
        json.dump(to_dict(report), f, indent=2, ensure_ascii=False)


def write_csv(report: DedupReport, path: str | os.PathLike[str]) -> None:
    """One row per member; `group` numbers match the summary and the HTML report."""
    with _create(path) as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for number, group in enumerate(report.groups, 1):
            for m in group.members:
                writer.writerow([number, group.tier, m.tier, m.similarity, readable(m.path), m.size, m.width, m.height,
                                 m.date, exact_b64(m.path) or ""])


def thumbnail(path: str, size: int = THUMBNAIL_SIZE) -> str | None:
    """A JPEG data URI of the image fitted in size×size (EXIF orientation applied); None if unreadable."""
    try:
        picture, _ = load(path, size)
    except BadImage:
        return None
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
section.group { border-top: 1px solid #ccc; padding: .5em 0 1em; }
.members { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; width: 180px; padding: 6px; border: 2px solid #ddd; border-radius: 6px; }
figure.keeper { border-color: #2a8a2a; }
figure img { display: block; max-width: 160px; max-height: 160px; margin: 0 auto 4px; }
.missing { height: 60px; display: flex; align-items: center; justify-content: center; background: #f4f4f4; }
figcaption { font-size: 12px; overflow-wrap: anywhere; }
.tier { font-weight: bold; }
"""


def write_html(report: DedupReport, path: str | os.PathLike[str]) -> None:
    """A page that opens from disk with no server: thumbnails are inlined as base64 JPEGs."""
    with _create(path) as f:
        f.write(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>clipsearch duplicates</title><style>{_STYLE}</style></head><body>\n"
                f"<h1>Duplicates</h1>\n<p>{html.escape(totals(report))}</p>\n<p>{html.escape(LEGEND)}</p>\n")
        for title, groups in sections(report):
            f.write(f"<h2>{html.escape(title)} ({len(groups)})</h2>\n")
            for number, group in groups:
                f.write(_group_html(number, group))
        f.write("</body></html>\n")


def _group_html(number: int, group: DuplicateGroup) -> str:
    figures = "".join(_member_html(m) for m in group.members)
    return (f'<section class="group" id="group-{number}"><h3>#{number} {group.tier}: {len(group.members)} files, '
            f"{human_bytes(group.reclaimable_bytes)} reclaimable</h3>"
            f'<div class="members">{figures}</div></section>\n')


def _member_html(m: DuplicateMember) -> str:
    uri = thumbnail(m.path)
    picture = (f'<img src="{uri}" alt="{html.escape(readable(os.path.basename(m.path)))}">' if uri
               else '<div class="missing">file missing or unreadable</div>')
    return (f'<figure class="{m.tier}">{picture}<figcaption><span class="tier">{m.tier}</span> '
            f"similarity {m.similarity:.3f}<br>{m.width}×{m.height} · {human_bytes(m.size)}<br>"
            f'{html.escape(m.date)}<br><span class="path">{html.escape(readable(m.path))}</span></figcaption></figure>')
