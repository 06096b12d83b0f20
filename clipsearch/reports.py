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

from .errors import BadImage, BadPath
from .paths import exact_b64, readable
from .results import RECLAIMABLE_TIERS, DedupReport, DuplicateGroup, DuplicateMember, to_dict
from .thumbnails import thumbnail as fitted
from .video import clock

THUMBNAIL_SIZE = 160
CSV_COLUMNS = ("group", "group_tier", "tier", "similarity", "phash_distance", "path", "size", "width", "height",
               "date", "id", "keeper_reason", "path_bytes_b64", "kind", "duration_s", "mirrored")
"""`path` and `path_bytes_b64` as `paths.path_fields` gives them (the latter empty where `path` is exact)."""
SECTIONS = (("exact", "Exact duplicates"), ("near", "Near-duplicates"), ("edited", "Edited copies"),
            ("series", "Similar series"), ("pair", "RAW+JPEG pairs"))
LEGEND = ("keeper: the one to keep (see why under each group); exact: the same bytes as the keeper or as another "
          "member; near: the same pixels resized, re-encoded or with brightness/contrast changed; edited: cropped, "
          "flipped, rotated or filtered; series: another shot of the same moment; alias: a hard link or symlink to "
          "another member (the same file); pair: the RAW or JPEG of the keeper's shot. Videos are grouped with videos "
          "only: a near video is the same clip re-encoded (same length, every sampled frame with a near twin). Only "
          "exact and near members count as reclaimable and are ticked for the delete list. Similarity is the cosine "
          "to the keeper.")


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
    """(title, [(group number, group)]) per tier that has groups (exact and near always), numbering groups 1..
    in report order."""
    numbered = list(enumerate(report.groups, 1))
    for tier, title in SECTIONS:
        groups = [(number, g) for number, g in numbered if g.tier == tier]
        if groups or tier in ("exact", "near") and not report.exact_only or tier == "exact":
            yield title, groups


def summary(report: DedupReport, moving: bool = False) -> str:
    """The text report: each tier's groups and members, then the totals (`moving`: files are about to be moved)."""
    lines = []
    for title, groups in sections(report):
        files = sum(len(g.members) for _, g in groups)
        freed = sum(g.reclaimable_bytes for _, g in groups)
        elsewhere = ""
        if title == SECTIONS[0][1]:  # exact copies are counted wherever they are grouped
            inside = sum(m.tier == "exact" for _, g in groups for m in g.members)
            if report.exact_copies > inside:
                elsewhere = f" (and {copies(report.exact_copies - inside)} inside the groups below)"
        lines.append(f"{title}: {plural(len(groups), 'group')}, {plural(files, 'file')}, "
                     f"{human_bytes(freed)} reclaimable{elsewhere}")
        for number, group in groups:
            lines.append(f"  #{number} {group.tier}{_videos(group)}, {human_bytes(group.reclaimable_bytes)} "
                         f"reclaimable; keeper: {group.keeper_reason}")
            lines += [f"    {_member_line(m)}" for m in group.members]
    lines.append(totals(report, moving))
    return "\n".join(lines)


def copies(n: int) -> str:
    return f"{n} exact {'copy' if n == 1 else 'copies'}"


def totals(report: DedupReport, moving: bool = False) -> str:
    duplicates = sum(g.tier in ("exact", "near", "edited") for g in report.groups)
    if report.exact_only:
        compared = f"Compared the bytes of {plural(report.images, 'image')}"
    else:
        series = "" if report.series_threshold is None else f", series from {report.series_threshold}"
        compared = (f"Compared {plural(report.images, 'image')} (duplicates from cosine {report.threshold}"
                    f"{series})")
    aliases = f"; {plural(report.aliases, 'alias')} (hard links, symlinks) not counted" if report.aliases else ""
    return (f"{compared} in {report.elapsed_s:.1f}s: {plural(duplicates, 'duplicate group')}; "
            f"{copies(report.exact_copies)} ({human_bytes(report.exact_bytes)}){aliases}; "
            f"{human_bytes(report.reclaimable_bytes)} reclaimable by removing the exact and near copies. "
            + ("Nothing was deleted." if moving else "Nothing was deleted or moved."))


def _member_line(m: DuplicateMember) -> str:
    return (f"{m.tier:6} {m.similarity:.3f}  {m.width}x{m.height}{_length(m, '  ')}  {human_bytes(m.size):>8}  "
            f"{m.date}  {readable(m.path)}" + ("  (mirror image)" if m.mirrored else ""))


def _videos(group: DuplicateGroup) -> str:
    return " (videos)" if group.keeper.kind == "video" else ""


def _length(m: DuplicateMember, before: str) -> str:
    """'  video 00:01:23' for a video (its length where known), '' for a photo."""
    if m.kind != "video":
        return ""
    return f"{before}video" + (f" {clock(round(m.duration_s * 1000))}" if m.duration_s is not None else "")


def delete_list(report: DedupReport) -> list[str]:
    """The paths of the exact and near members: never a keeper, an edit, a series shot, an alias or a pair."""
    return [m.path for m in report.reclaimable()]


def write_delete_list(report: DedupReport, path: str | os.PathLike[str], null: bool = False) -> None:
    """One path per line, or NUL-terminated with `null` (for `xargs -0`), as the file system's own bytes, so
    that names that are not UTF-8 come out exact."""
    end = b"\0" if null else b"\n"
    try:
        with open(path, "wb") as f:
            f.writelines(os.fsencode(p) + end for p in delete_list(report))
    except OSError as e:
        raise BadPath(f"Cannot write {readable(os.fspath(path))}: {e.strerror or e}") from None


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
                writer.writerow([number, group.tier, m.tier, m.similarity, m.phash_distance, readable(m.path), m.size,
                                 m.width, m.height, m.date, m.id, group.keeper_reason if m.tier == "keeper" else "",
                                 exact_b64(m.path) or "", m.kind, "" if m.duration_s is None else m.duration_s,
                                 int(m.mirrored)])


def thumbnail(path: str, size: int = THUMBNAIL_SIZE) -> str | None:
    """A JPEG data URI of the image (a video: its first frame) fitted in size×size (EXIF orientation applied);
    None if unreadable."""
    try:
        picture = fitted(path, size)
    except BadImage:
        return None
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
section.group { border-top: 1px solid #ccc; padding: .5em 0 1em; }
.members { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; width: 180px; padding: 6px; border: 2px solid #ddd; border-radius: 6px; }
figure.keeper { border-color: #2a8a2a; }
figure.chosen { background: #fff3f0; }
figure img { display: block; max-width: 160px; max-height: 160px; margin: 0 auto 4px; }
.missing { height: 60px; display: flex; align-items: center; justify-content: center; background: #f4f4f4; }
figcaption { font-size: 12px; overflow-wrap: anywhere; }
.tier { font-weight: bold; }
.why { color: #555; font-size: 13px; margin: 0 0 .5em; }
.controls label { display: block; }
#actions { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #ccc; }
"""

_SCRIPT = """
function refresh() {
  const boxes = [...document.querySelectorAll("input.remove")];
  boxes.forEach((b) => b.closest("figure").classList.toggle("chosen", b.checked));
  const chosen = boxes.filter((b) => b.checked);
  const bytes = chosen.reduce((sum, b) => sum + Number(b.dataset.size), 0);
  document.getElementById("count").textContent = chosen.length + " files, " + (bytes / 1e6).toFixed(1) + " MB";
}
document.addEventListener("change", (event) => {
  const input = event.target;
  if (input.classList.contains("keep")) {
    input.closest("section").querySelectorAll("figure").forEach((figure) => {
      const mine = figure.contains(input), box = figure.querySelector("input.remove");
      figure.classList.toggle("keeper", mine);
      if (box.dataset.fixed) return;
      box.disabled = mine;
      if (mine) box.checked = false;
    });
  }
  refresh();
});
document.getElementById("download").addEventListener("click", () => {
  const paths = [...document.querySelectorAll("input.remove:checked")].map((b) => b.dataset.path);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([paths.join("\\n") + (paths.length ? "\\n" : "")], {type: "text/plain"}));
  link.download = "delete-list.txt";
  link.click();
});
refresh();
"""


def write_html(report: DedupReport, path: str | os.PathLike[str]) -> None:
    """A page that opens from disk with no server: thumbnails are inlined as base64 JPEGs. Each member can be
    ticked for the delete list (exact and near ones are) and made the keeper; "Download the delete list"
    saves the ticked paths, one per line. Nothing on the page touches a file."""
    with _create(path) as f:
        f.write(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>clipsearch duplicates</title><style>{_STYLE}</style></head><body>\n"
                f"<h1>Duplicates</h1>\n<p>{html.escape(totals(report))}</p>\n<p>{html.escape(LEGEND)}</p>\n"
                '<div id="actions">Ticked for deletion: <span id="count"></span> '
                '<button id="download" type="button">Download the delete list</button></div>\n')
        for title, groups in sections(report):
            f.write(f"<h2>{html.escape(title)} ({len(groups)})</h2>\n")
            for number, group in groups:
                f.write(_group_html(number, group))
        f.write(f"<script>{_SCRIPT}</script></body></html>\n")


def _group_html(number: int, group: DuplicateGroup) -> str:
    figures = "".join(_member_html(number, m) for m in group.members)
    return (f'<section class="group" id="group-{number}"><h3>#{number} {group.tier}{_videos(group)}: '
            f"{len(group.members)} files, "
            f"{human_bytes(group.reclaimable_bytes)} reclaimable</h3>"
            f'<p class="why">Keeper: {html.escape(group.keeper_reason)}</p>'
            f'<div class="members">{figures}</div></section>\n')


def _member_html(number: int, m: DuplicateMember) -> str:
    uri = thumbnail(m.path)
    picture = (f'<img src="{uri}" alt="{html.escape(readable(os.path.basename(m.path)))}">' if uri
               else '<div class="missing">file missing or unreadable</div>')
    fixed = m.tier in ("alias", "pair")
    box = (f'<input type="checkbox" class="remove" data-path="{html.escape(readable(m.path))}" data-size="{m.size}"'
           + (" checked" if m.tier in RECLAIMABLE_TIERS else "")
           + (' disabled data-fixed="1"' if fixed else " disabled" if m.tier == "keeper" else "") + ">")
    keep = (f'<input type="radio" class="keep" name="keep-{number}"'
            + (" checked" if m.tier == "keeper" else "") + (" disabled" if fixed else "") + ">")
    return (f'<figure class="{m.tier}">{picture}<figcaption><span class="tier">{m.tier}</span> '
            f"similarity {m.similarity:.3f}{' · mirror image' if m.mirrored else ''}<br>"
            f"{m.width}×{m.height}{_length(m, ' · ')} · {human_bytes(m.size)}<br>"
            f'{html.escape(m.date)}<br><span class="path">{html.escape(readable(m.path))}</span></figcaption>'
            f'<div class="controls"><label>{box} delete</label><label>{keep} keep this one</label></div></figure>')
