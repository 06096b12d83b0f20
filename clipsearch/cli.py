"""The `clipsearch` command: a thin click layer over the library API."""
from __future__ import annotations

import codecs
import functools
import gc
import json
import os
import shlex
import sys
from datetime import datetime
from typing import Any, BinaryIO, Callable, Iterable, Sequence, cast

import click

from .duplicates import DEFAULT_THRESHOLD, MEASURED_THRESHOLDS, SERIES_GAP
from .errors import ClipsearchError
from .filters import Filters, parse_when
from .inlineimages import PROTOCOLS, InlineProtocol
from .ocr import GATES
from .paths import is_exact_text, readable
from .ranking import split_weight
from .results import IndexReport, OcrReport, OfflineRoot, SearchResult, Skip, to_dict
from .shards import DEFAULT_SHARD_SIZE
from .tagging import DEFAULT_MIN_PROBABILITY, DEFAULT_TOP
from .vectorindex import INDEX_TYPES


class _Group(click.Group):
    """Turns the library's typed exceptions into one clean line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClipsearchError as e:
            raise click.ClickException(str(e)) from None


QUICK_EXIT = ("search", "similar")
"""Commands that, once their output is flushed, leave without tearing the interpreter down: they write
nothing, and unloading torch and open_clip takes about a second, a fifth of a cold `clipsearch search`. Every other
command tears down without the cyclic garbage collection (gc.freeze): its exit handlers still run, and collecting
what torch, open_clip and a model leave behind took a second of a fresh `clipsearch index` (1.33 s → 0.31 s)."""


def run() -> None:
    """The `clipsearch` console script and `python -m clipsearch`."""
    try:
        main(prog_name="clipsearch")
    except SystemExit as done:
        if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(done.code if isinstance(done.code, int) else int(done.code is not None))
        gc.freeze()
        raise


def db_option(f: Callable) -> Callable:
    return click.option(
        "--db",
        "db",
        type=click.Path(file_okay=False),
        envvar="CLIPSEARCH_DB",
        help="Library directory [env CLIPSEARCH_DB; default $CLIPSEARCH_HOME or the user data dir].",
    )(f)


PROTOCOL_VARIABLE = "CLIPSEARCH_PREVIEW_PROTOCOL"
"""Environment variable: the inline-image protocol --preview uses where the terminal is not detected."""


def result_options(f: Callable) -> Callable:
    f = click.option("--preview-height", type=click.IntRange(16, 2000), default=200, show_default=True,
                     metavar="PX", help="Thumbnail height in pixels (width at most three times that).")(f)
    f = click.option("--preview-protocol", type=click.Choice(["auto", *PROTOCOLS], case_sensitive=False), default="auto",
                     show_default=True, metavar="NAME",
                     help="How --preview draws: auto (known from the terminal's environment variables), kitty, "
                          "iterm2 or sixel (e.g. for an xterm started with -ti vt340); it implies --preview. The "
                          f"environment variable {PROTOCOL_VARIABLE} picks one for --preview without implying it.")(f)
    f = click.option("-p", "--preview", is_flag=True,
                     help="Show each result's thumbnail under its line, in a terminal that draws images (kitty, "
                          "Ghostty, iTerm2, WezTerm, mintty; sixel: foot, mlterm, contour, Konsole); elsewhere, or "
                          "with --json or a pipe, the results alone.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print results as a JSON list.")(f)
    f = click.option("--sort", type=click.Choice(["score", "date"]), default="score", show_default=True,
                     help="Best first, or the same results oldest first (date taken, else file time).")(f)
    f = click.option("--min-score", type=float, help="Drop results scoring below this cosine similarity.")(f)
    f = click.option("--group-pairs", is_flag=True,
                     help="One result per RAW+JPEG pair (same name, same folder): the JPEG is shown.")(f)
    f = click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1),
                     help="Number of results.")(f)
    return f


class _When(click.ParamType):
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            return value if isinstance(value, datetime) else parse_when(value)
        except ClipsearchError as e:
            self.fail(str(e), param, ctx)


def filter_options(f: Callable) -> Callable:
    """The metadata filters, handed to the command as one `filters` argument (a `Filters`)."""

    @functools.wraps(f)
    def command(*args: Any, under: Sequence[str], after: datetime | None, before: datetime | None,
                camera: Sequence[str], min_width: int | None, min_height: int | None, ext: Sequence[str],
                tag: str | None, **kwargs: Any) -> Any:
        filters = Filters(tuple(under), after, before, tuple(camera), min_width, min_height, tuple(ext), tag)
        return f(*args, filters=filters, **kwargs)

    options = [
        click.option("--under", multiple=True, type=click.Path(), help="Only images inside this folder (repeatable)."),
        click.option("--after", type=_When(), help="Only images taken on or after DATE (2021-05-01, or an ISO "
                     "datetime such as 2021-05-01T14:30): the EXIF date taken, else the file time."),
        click.option("--before", type=_When(), help="Only images taken before DATE."),
        click.option("--camera", multiple=True, help="Only images from a camera whose model name contains this "
                     "(any case; repeatable: any of them)."),
        click.option("--min-width", type=click.IntRange(min=1), help="Only images at least this many pixels wide."),
        click.option("--min-height", type=click.IntRange(min=1), help="Only images at least this many pixels high."),
        click.option("--ext", multiple=True, help="Only files with this extension, e.g. jpg (repeatable: any)."),
        click.option("--tag", help="Only images tagged with this label (see `clipsearch tag`)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def examples(*lines: str) -> str:
    """A command's --help epilog: its examples, one a line, as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=examples(
    "clipsearch index ~/Pictures               first: index a folder (downloads the model once)",
    'clipsearch search "a dog on the beach"    then search it',
    "clipsearch COMMAND --help                 each command's options and examples",
))
@click.version_option(package_name="clipsearch")
def main() -> None:
    """Semantic image search: find photos by describing them or by example."""


@main.command(short_help="Index the images and videos under folders.", epilog=examples(
    'clipsearch index ~/Pictures',
    "clipsearch index ~/Pictures /mnt/photos --exclude '*/cache'",
    'clipsearch index ~/Pictures --ocr          also read the text in images',
    "clipsearch index ~/Pictures --prune        drop a folder's images once it is gone",
))
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--model", help="open_clip architecture, or clipsearch-tiny  [default for a new library: ViT-B-32]")
@click.option("--pretrained", help="Pretrained weights tag  [default: laion2b_s34b_b79k]")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Local open_clip-compatible weights file.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files or folders matching GLOB (repeatable).")
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--reindex", is_flag=True, help="Re-embed every image under PATHS (keeping the rest of the library); "
              "with another --model, every indexed folder must be given.")
@click.option("--rehash", is_flag=True, help="Compare every file's content with the library, not only files whose "
              "size, time, inode or ctime changed (finds files replaced with their old timestamp).")
@click.option("--prune", is_flag=True, help="Also remove the images of a PATH that looks offline (missing, empty, "
              "or lost most of its files in this run); without it they are kept.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Images per batch  [default: 32 on CPU; on CUDA from the GPU's free memory, up to 1024]")
@click.option("--workers", type=click.IntRange(min=0),
              help="Decoding processes  [default: one per usable core; at most 16 on CPU; on a GPU as many as "
                   "half of /dev/shm holds]")
@click.option("--gpu-decode", is_flag=True,
              help="Decode JPEGs on the CUDA GPU (nvJPEG); progressive, CMYK, colour-managed and other files, and "
                   "any JPEG it rejects, are decoded on the CPU as usual.")
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True),
              help="Write every skipped file and its reason to this JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--index-type", type=click.Choice(INDEX_TYPES),
              help="Vector index: auto (exact below 100,000 images, IVF from there, IVF-PQ from 5,000,000), flat "
                   "(exact), ivf, ivfpq or hnsw (approximate). Kept for later runs  [default: the recorded one, "
                   "else auto]")
@click.option("--video-interval", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="SECONDS",
              help="Videos: at most one frame every SECONDS, plus one at each scene change.")
@click.option("--video-max-frames", type=click.IntRange(min=1), default=50, show_default=True,
              help="Videos: at most this many frames decoded and embedded per video, however long.")
@click.option("--ocr", type=click.Choice(GATES), is_flag=False, flag_value="auto",
              help="Also read the text in images (needs pip install 'clipsearch[ocr]'): --ocr reads those the gate "
                   "picks (CLIP says text-like, or the detector finds text), --ocr all reads every image. Kept for "
                   "later runs; put it after PATHS.")
@click.option("--no-ocr", is_flag=True, help="Stop reading the text in images (text already read is kept).")
def index(paths: Sequence[str], db: str | None, model: str | None, pretrained: str | None, checkpoint: str | None,
          device: str, exclude: Sequence[str], include_hidden: bool, reindex: bool, rehash: bool, prune: bool,
          batch_size: int | None, workers: int | None, gpu_decode: bool, errors_file: str | None, quiet: bool,
          index_type: str | None, ocr: str | None, no_ocr: bool, video_interval: float,
          video_max_frames: int) -> None:
    """Index the images and videos under PATHS (recursively; unchanged files are not decoded again).

    A PATH that no longer exists but was indexed is accepted: with --prune its images are removed.
    """
    from .library import Library
    from .models import model_spec
    from .video import Sampling

    if ocr and no_ocr:
        raise click.UsageError("Give either --ocr or --no-ocr")
    spec = model_spec(model or "ViT-B-32", pretrained, checkpoint) if (model or pretrained or checkpoint) else None
    before = 0
    try:
        with Library.open(db, create=True) as lib:
            before = lib.count()
            with _progress(quiet) as progress, _progress(quiet, "Reading text") as ocr_progress:
                report = lib.index(paths, model=spec, device=device, exclude=exclude, include_hidden=include_hidden,
                                   reindex=reindex, rehash=rehash, prune=prune, batch_size=batch_size,
                                   workers=workers, progress=progress, index_type=index_type,
                                   ocr="off" if no_ocr else ocr, ocr_progress=ocr_progress,
                                   video=Sampling(video_interval, video_max_frames), stage=_stages(quiet),
                                   decode_device="cuda" if gpu_decode else None)
            _note(lib.demo_model_note())
            _warn(lib.preprocessing_warning())
    except KeyboardInterrupt:
        _interrupted(db, before)
    skipped = report.skipped + (report.ocr.skipped if report.ocr else ())
    _write_skipped(errors_file, skipped)
    click.echo(_summary(report, errors_file))
    if report.ocr:
        click.echo(_ocr_summary(report.ocr, errors_file))


def _interrupted(db: str | None, before: int) -> None:
    """After Ctrl-C: what the batches committed so far saved, on stderr, and exit code 130."""
    from .library import Library

    with Library.open(db, create=True) as lib:  # a new connection: reads only what was committed
        now = lib.count()
    click.echo(f"Interrupted: {max(now - before, 0)} new images saved ({now} in the library); run the same "
               "command again to continue where it stopped", err=True)
    click.get_current_context().exit(130)


def _write_skipped(errors_file: str | None, skipped: Iterable[Skip]) -> None:
    if errors_file:
        with open(errors_file, "w", encoding="utf-8") as f:
            json.dump([to_dict(s) for s in skipped], f, indent=2, ensure_ascii=False)


class _progress:
    """Counts what a run reports done; on a terminal, unless quiet, shows it as a click progress bar
    (count/total, ETA, images/s)."""

    def __init__(self, quiet: bool, label: str = "Indexing", unit: str = "images"):
        self.enabled = not quiet and _on_terminal()
        self.label = label
        self.unit = unit
        self.bar: Any = None
        self.started = 0.0
        self.done = 0

    def __enter__(self) -> "_progress":
        return self

    def __call__(self, done: int, total: int) -> None:
        from time import monotonic

        self.done += done
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True,
                                         show_eta=True, item_show_func=lambda rate: rate)
            self.bar.__enter__()
            self.started = monotonic()
        elapsed = monotonic() - self.started
        self.bar.update(done, f"{(self.bar.pos + done) / elapsed:.1f} {self.unit}/s" if elapsed > 0 and self.done else None)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _stages(quiet: bool) -> Callable[[str], None] | None:
    """What a long command is doing before its progress bar starts, a line each on a terminal."""
    if quiet or not _on_terminal():
        return None
    return lambda what: click.echo(f"{what}…", err=True)


def _summary(report: IndexReport, errors_file: str | None = None) -> str:
    summary = _with_reasons(
        f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
        f"unchanged {report.unchanged}, skipped {len(report.skipped)} in {report.elapsed_s:.1f}s"
        + (f" ({report.images_per_s:.1f} images/s)" if report.embedded else ""), report.skipped, errors_file)
    lines = [summary] + [_offline_line(o) for o in report.offline]
    if report.passed_over:
        total = sum(p.files for p in report.passed_over)
        kinds = ", ".join(f"{p.extension or '(no extension)'} {p.files}" for p in report.passed_over[:10])
        what = "file that is not an image" if total == 1 else "files that are not images"
        lines.append(f"passed over {total} {what}: {kinds}" + (", ..." if len(report.passed_over) > 10 else ""))
    return "\n".join(lines)


def _offline_line(root: OfflineRoot) -> str:
    state = "looks offline" if root.exists else "does not exist"
    return (f"{readable(root.root)} {state}: {root.found} of {root.indexed} files found; nothing removed; "
            f"use --prune to remove the {root.kept} missing")


def _ocr_summary(report: OcrReport, errors_file: str | None = None) -> str:
    scan = "" if report.full_text_index else " (this SQLite has no FTS5 trigram tokenizer: text searches scan)"
    return _with_reasons(
        f"text: read {report.read}, gated out {report.gated_out}, text found in {report.with_text}, "
        f"skipped {len(report.skipped)} in {report.elapsed_s:.1f}s"
        + (f" ({report.images_per_s:.1f} images/s)" if report.read + report.gated_out else "") + scan,
        report.skipped, errors_file)


NAMES_PER_REASON = 3


def _with_reasons(line: str, skipped: Sequence[Skip], errors_file: str | None = None) -> str:
    """A summary line, then the ten commonest reasons files were skipped with a few of their names each,
    then where the whole list is: `errors_file` (--errors), or how to get it."""
    by_reason: dict[str, list[str]] = {}
    for skip in skipped:
        by_reason.setdefault(skip.reason, []).append(skip.path)
    lines = [line]
    for reason, paths in sorted(by_reason.items(), key=lambda r: -len(r[1]))[:10]:
        more = ", ..." if len(paths) > NAMES_PER_REASON else ""
        names = ", ".join(readable(p) for p in paths[:NAMES_PER_REASON]) + more
        lines.append(f"  skipped {len(paths)}: {reason} ({names})")
    if skipped:
        lines.append(f"  every skipped file and its reason: {readable(errors_file)}" if errors_file
                     else "  every skipped file and its reason: run again with --errors FILE")
    return "\n".join(lines)


def _listed(line: str, skipped: Sequence[Skip]) -> str:
    """A summary line, then every file left alone with its reason."""
    return "\n".join([line] + [f"  left {skip.path}: {skip.reason}" for skip in skipped])


@main.command(short_help="Find images by a description or an example image.", epilog=examples(
    'clipsearch search "a dog on the beach"',
    'clipsearch search ~/Pictures/IMG_0001.jpg -n 5',
    'clipsearch search "sunset" --after 2023-06-01 --camera iphone --sort date',
    'clipsearch search "mountains" --add "snow:0.5" --sub "people"',
    'clipsearch search --text "invoice"          words read by `clipsearch ocr`',
    'clipsearch search "a dog" --preview         thumbnails in kitty, iTerm2, WezTerm, sixel terminals',
))
@click.argument("query", nargs=-1)
@db_option
@click.option("--add", multiple=True, metavar="TERM[:W]", help="Add a text or image term (optional weight).")
@click.option("--sub", multiple=True, metavar="TERM[:W]", help="Subtract a text or image term (optional weight).")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False), help="Add an image file as a term.")
@click.option("--text", "words", metavar="WORDS",
              help="Only images whose recognised text (see `clipsearch ocr`) holds every one of WORDS, any case; "
                   "scored by BM25. Instead of QUERY.")
@click.option("--good-only", is_flag=True,
              help="Only the good matches (see docs/relevance.md): none when nothing matches the query well.")
@result_options
@filter_options
def search(query: Sequence[str], db: str | None, add: Sequence[str], sub: Sequence[str], images: Sequence[str],
           words: str | None, good_only: bool, limit: int, group_pairs: bool, filters: Filters,
           min_score: float | None, sort: str, as_json: bool, preview: bool, preview_protocol: str,
           preview_height: int) -> None:
    """Find images matching QUERY (text, or the path of an image file).

    Where text was read in the images (`clipsearch ocr`), a text QUERY also finds the images whose text holds
    its words, ranked together with CLIP by reciprocal rank fusion; the matching words are shown.

    A text query's good matches (those it describes better than generic captions do) come first, then a line
    such as "-- 3 good matches, then weaker ones --".

    Example: clipsearch search "a red star" -n 5 --good-only
    """
    from .library import Library

    text = " ".join(query) if query else None
    if words is not None and (text or add or sub or images or min_score is not None):
        raise click.UsageError("--text searches only the words in images: give it without QUERY, --add, --sub, "
                               "--image or --min-score")
    if good_only and (words is not None or images):
        raise click.UsageError("--good-only judges text queries: give it without --text or --image")
    for term in ([text] if text else []) + [split_weight(t)[0] for t in (*add, *sub)]:
        _warn_path_like(term)
    with Library.open(db) as lib:
        if words is not None:
            results = lib.search_text(words, k=limit, filters=filters, sort=sort)
        else:
            results = lib.search(text, k=limit, add=add, sub=sub, images=images, filters=filters,
                                 min_score=min_score, sort=sort, group_pairs=group_pairs, good_only=good_only)
            for note in lib.query_notes:
                _warn(note)
        _note(lib.demo_model_note())
        _warn(lib.preprocessing_warning())
    _print_results(results, as_json, sort, _previewer(preview, preview_protocol, preview_height, as_json),
                   empty=_empty_note(bool(filters) or min_score is not None, good_only))


def _warn_path_like(term: str) -> None:
    """One line on stderr when a term searched as text looks like a path that names no image file (not for one that
    is not UTF-8: the search refuses it, saying that no file has that name)."""
    from .discover import looks_like_path

    if looks_like_path(term) and is_exact_text(term):
        what = "is a folder, not an image file" if os.path.isdir(term) else "is not a file"
        click.echo(f"warning: {readable(term)!r} {what}; searching for it as text", err=True)


def _note(note: str | None) -> None:
    """A note for a person at a terminal (on stderr when it is one): scripts and pipes do not get it."""
    if note and _on_terminal():
        click.echo(note, err=True)


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def _warn(warning: str | None) -> None:
    if warning:
        click.echo(warning, err=True)


@main.command(short_help="Find images similar to an image or a video frame.", epilog=examples(
    'clipsearch similar ~/Pictures/IMG_0001.jpg',
    'clipsearch similar ~/Videos/trip.mp4@12.5 -n 5',
))
@click.argument("image", type=click.Path(dir_okay=False))
@db_option
@result_options
@filter_options
def similar(image: str, db: str | None, limit: int, group_pairs: bool, filters: Filters, min_score: float | None,
            sort: str, as_json: bool, preview: bool, preview_protocol: str, preview_height: int) -> None:
    """Find images similar to IMAGE (indexed or not), or to a video's frame given as VIDEO@SECONDS
    (or VIDEO@HH:MM:SS, as search prints moments)."""
    from .library import Library

    with Library.open(db) as lib:
        results = lib.similar(image, k=limit, filters=filters, min_score=min_score, sort=sort,
                              group_pairs=group_pairs)
    _print_results(results, as_json, sort, _previewer(preview, preview_protocol, preview_height, as_json),
                   empty=_empty_note(bool(filters) or min_score is not None, False))


def _print_results(results: Iterable[SearchResult], as_json: bool, sort: str = "score",
                   show: Callable[[SearchResult], None] | None = None, empty: str = "no results") -> None:
    """A line per result on stdout, each followed by `show(result)` when given (a thumbnail); for a judged text
    query (see `Library.judge`) in score order, the good matches first, then the weaker ones. On a terminal, a
    line on stderr between them says how many are good (in date order, before them), and one says when there
    are no results (`empty`); a script or a pipe reads the results alone."""
    results = list(results)
    line = functools.partial(_result_line, dated=sort == "date")

    def emit(result: SearchResult) -> None:
        click.echo(line(result))
        if show:
            show(result)

    if as_json:
        _print_list(results, as_json, line)
        return
    if not results and _on_terminal():
        click.echo(empty, err=True)
    if not results or any(r.good is None for r in results) or not _on_terminal():
        for r in results:
            emit(r)
        return
    good = [r for r in results if r.good]
    weaker = [r for r in results if not r.good]
    if sort == "date":
        click.echo(f"-- {len(good)} of {len(results)} are good matches (--good-only lists only them) --" if good
                   else "-- no good match --", err=True)
        for r in results:
            emit(r)
        return
    if not good:
        click.echo("-- no good match; closest: --", err=True)
    for r in good:
        emit(r)
    if good and weaker:
        click.echo(f"-- {len(good)} good match{'' if len(good) == 1 else 'es'}, then weaker ones --", err=True)
    for r in weaker:
        emit(r)


def _empty_note(filtered: bool, good_only: bool) -> str:
    """What a terminal is told when nothing is listed: filters left nothing, or --good-only found no good match."""
    if filtered:
        return "no results with these filters" + (" and --good-only" if good_only else "")
    return "no good match (--good-only lists only good matches)" if good_only else "no results"


def _previewer(preview: bool, protocol: str, height: int, as_json: bool) -> Callable[[SearchResult], None] | None:
    """What draws a result's thumbnail after its line, in the protocol given or detected; None, with a line on
    stderr saying why, when there is nowhere to draw it (--json, stdout not a terminal, no known protocol)."""
    from click.core import ParameterSource

    from .inlineimages import detect

    named = click.get_current_context().get_parameter_source("preview_protocol") == ParameterSource.COMMANDLINE
    if not (preview or named):
        return None
    if not named:
        protocol = _protocol_from_environment()
    chosen = detect(os.environ) if protocol == "auto" else cast(InlineProtocol, protocol)
    if as_json:
        why = "no thumbnails with --json"
    elif not _stdout_on_terminal():
        why = "no thumbnails: stdout is not a terminal"
    elif chosen is None:
        why = "no thumbnails: no inline-image terminal detected; use --preview-protocol=kitty|iterm2|sixel to force one"
    else:
        return functools.partial(_show_preview, protocol=chosen, height=height, tmux="TMUX" in os.environ)
    click.echo(why, err=True)
    return None


def _protocol_from_environment() -> str:
    """The protocol CLIPSEARCH_PREVIEW_PROTOCOL names (any case), else "auto" (with a line on stderr when it names
    none: a typo there must not stop a search)."""
    value = os.environ.get(PROTOCOL_VARIABLE, "").strip().lower()
    if value in ("", "auto", *PROTOCOLS):
        return value or "auto"
    click.echo(f"{PROTOCOL_VARIABLE}={value!r} is not one of auto, {', '.join(PROTOCOLS)}: detecting the terminal",
               err=True)
    return "auto"


def _show_preview(result: SearchResult, protocol: InlineProtocol, height: int, tmux: bool) -> None:
    """The result's thumbnail on stdout, then a new line; a file that cannot be drawn gets a short note instead."""
    from .errors import BadImage, BadQuery
    from .inlineimages import preview

    try:
        drawn = preview(result.path, height, protocol, result.time_s, tmux)
    except OSError as e:
        click.echo(f"  (no preview: {e.strerror or e})")
        return
    except (BadImage, BadQuery) as e:  # BadQuery: a video shortened since indexing
        click.echo(f"  (no preview: {e})")
        return
    click.echo(drawn, nl=False)
    click.echo()


def _stdout_on_terminal() -> bool:
    return sys.stdout.isatty()


def _result_line(result: SearchResult, dated: bool = False) -> str:
    """Score, the date results are sorted by when `dated`, path, for a video its best-matching moment
    (HH:MM:SS), then the recognised text holding the query's words, matches in [brackets]."""
    from .textsearch import Snippet, marked
    from .video import clock

    line = f"{result.score:.3f}  " + (f"{result.date}  " if dated else "") + readable(result.path)
    if result.time_s is not None:
        line += f"  {clock(round(result.time_s * 1000))}"
    return line + f"  \"{marked(Snippet(result.snippet, result.highlights))}\"" if result.snippet else line


def _print_list(items: Iterable[Any], as_json: bool, line: Callable[[Any], str]) -> None:
    """The result objects as one JSON list, or a line each."""
    items = list(items)
    if as_json:
        click.echo(json.dumps([to_dict(i) for i in items], indent=2, ensure_ascii=False))
        return
    for item in items:
        click.echo(line(item))


@main.command(short_help="Keep the library in step with folders as they change.", epilog=examples(
    'clipsearch watch ~/Pictures /mnt/photos',
))
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
@db_option
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True),
              help="Write the files skipped by the latest run and their reasons to this JSON file.")
def watch(paths: Sequence[str], db: str | None, errors_file: str | None) -> None:
    """Keep the library in step with the folders PATHS: index them, then again after each burst of changes.

    Each run is the normal incremental `index` (only changed files are decoded); a folder that disappears
    (an unmounted drive) keeps its images and is watched again when it comes back. Ctrl-C stops.
    """
    from .library import Library
    from .watching import change_batches

    roots = [os.path.abspath(p) for p in paths]
    reports: list[IndexReport] = []
    try:
        with Library.open(db, create=True) as lib:
            reports.append(lib.index(roots))
            _watched(reports[-1], errors_file)
            _note(lib.demo_model_note())
            for changed in change_batches(roots):
                report = lib.index_changes(changed, roots)
                if report is not None:
                    reports.append(report)
                    _watched(report, errors_file)
    except KeyboardInterrupt:
        pass
    click.echo(f"stopped watching after {len(reports)} index runs: added {sum(r.added for r in reports)}, "
               f"updated {sum(r.updated for r in reports)}, moved {sum(r.moved for r in reports)}, "
               f"removed {sum(r.removed for r in reports)}")


def _watched(report: IndexReport, errors_file: str | None) -> None:
    _write_skipped(errors_file, report.skipped)
    click.echo(f"[{datetime.now():%H:%M:%S}] " + _summary(report, errors_file))


@main.command(short_help="Read the text in the indexed images, for text search.", epilog=examples(
    'clipsearch ocr',
    'clipsearch search --text "invoice"',
))
@db_option
@click.option("--gate", type=click.Choice(GATES),
              help="auto: read the images CLIP finds text-like or in which the detector finds text; all: every "
                   "image (also those gated out before)  [default: the library's setting, else auto]")
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True),
              help="Write every skipped file and its reason to this JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def ocr(db: str | None, gate: str | None, errors_file: str | None, quiet: bool) -> None:
    """Read the text in the indexed images not read yet (needs pip install 'clipsearch[ocr]').

    Searches then find images by the words in them. `clipsearch index --ocr` does this on every run.
    """
    from .library import Library

    progress = _progress(quiet, "Reading text")
    try:
        with Library.open(db) as lib, progress:
            report = lib.read_text(gate, progress=progress)
    except KeyboardInterrupt:
        images = "1 image" if progress.done == 1 else f"{progress.done} images"
        click.echo(f"Interrupted: {images} read and saved; run the same command again to continue where it stopped",
                   err=True)
        click.get_current_context().exit(130)
    _write_skipped(errors_file, report.skipped)
    click.echo(_ocr_summary(report, errors_file))


@main.command(short_help="Show the library's location, model, size and contents.", epilog=examples(
    'clipsearch info',
    'clipsearch info --json          raw bytes and UTC times',
))
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(db: str | None, as_json: bool) -> None:
    """Show where the library is, its model, size and contents."""
    from .library import Library
    from .models import human_size

    with Library.open(db) as lib:
        data = to_dict(lib.info())
        note = lib.demo_model_note()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _note(note)
    _warn(data.pop("warning"))
    sections = {name: data.pop(name) or {} for name in ("model", "index", "preprocessing")}
    if data.get("path_bytes_b64") is None:
        data.pop("path_bytes_b64", None)  # the path printed is exact
    for key, value in data.items():
        if key == "size_bytes":
            key, value = "size", human_size(value)
        elif key == "last_indexed":
            value = _local_time(value)
        click.echo(f"{key:13} {value}")
    for name, section in sections.items():
        click.echo(f"{name:13} " + ", ".join(f"{k}={v}" for k, v in section.items() if v is not None))


def _local_time(iso: str | None) -> str | None:
    """An ISO 8601 time as this computer's local time with its UTC offset: "2026-05-01 16:30:00+02:00 (CEST)"."""
    if iso is None:
        return None
    local = datetime.fromisoformat(iso).astimezone()
    return f"{local.isoformat(sep=' ', timespec='seconds')} ({local.tzname()})"


@main.command(short_help="Check that the catalog and the vector index agree.", epilog=examples(
    'clipsearch check || clipsearch repair',
))
@db_option
def check(db: str | None) -> None:
    """Verify that the catalog and the vector index agree; exit 1 on damage."""
    from .library import Library

    with Library.open(db) as lib:
        problems = lib.check()
    if problems:
        raise click.ClickException("; ".join(problems) + " (run `clipsearch repair`)")
    click.echo("ok")


@main.command(short_help="Rebuild the vector index from the catalog's vectors.", epilog=examples(
    'clipsearch repair',
    'clipsearch repair --index-type hnsw',
))
@db_option
@click.option("--index-type", type=click.Choice(INDEX_TYPES),
              help="Rebuild as this type (kept for later runs)  [default: the recorded one, else auto]")
def repair(db: str | None, index_type: str | None) -> None:
    """Rebuild the vector index from the vectors kept in the catalog."""
    from .library import Library

    with Library.open(db) as lib:
        record = lib.repair(index_type)
    recall = "" if record.recall_at_10 is None else (
        f", recall@10 {record.recall_at_10:.3f} for image queries, {record.text_recall_at_10:.3f} for text queries")
    click.echo(f"rebuilt the index with {record.built_for} vectors ("
               + ", ".join(f"{k}={v}" for k, v in record.params.items()) + f"{recall}) in {record.build_s:.1f}s")


@main.command(short_help="List the models; mark the cached, the multilingual and the default ones.", epilog=examples(
    "clipsearch models --cached              what works offline",
    "clipsearch models | grep multilingual   the models for queries in other languages than English",
    "clipsearch models | grep ViT-B-32       the tags of one architecture",
))
@click.option("--cached", is_flag=True,
              help="Only models whose weights and tokenizer are in the local cache (usable offline).")
def models(cached: bool) -> None:
    """List the models: * marks those cached locally (weights and tokenizer), multilingual those that understand
    queries in other languages than English, (default) the default for a new library.

    Each line: the mark, the architecture (--model), the pretrained tag (--pretrained), the weights' size
    (approximate until they are cached) and the notes; a last line explains the marks.
    """
    from .models import DEFAULT_MODEL, DEFAULT_PRETRAINED, human_size, list_available

    for m in list_available():
        if m.cached or not cached:
            notes = ["multilingual"] * m.multilingual + ["(default)"] * ((m.arch, m.pretrained) == (DEFAULT_MODEL,
                                                                                                   DEFAULT_PRETRAINED))
            size = human_size(m.size_bytes) if m.size_bytes else "?"
            click.echo(f"{'*' if m.cached else ' '} {m.arch:30} {m.pretrained:34} {size:>7}  {' '.join(notes)}".rstrip())
    click.echo(f"({MODELS_LEGEND})")


MODELS_LEGEND = ("* = weights and tokenizer cached, works offline; multilingual = understands queries in other "
                 "languages than English; see docs/models.md")


@main.command(short_help="Search and browse the library in a web browser.", epilog=examples(
    'clipsearch serve                then open http://127.0.0.1:8000/',
    'clipsearch serve --port 8080',
))
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback shows your photos to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
def serve(db: str | None, host: str, port: int) -> None:
    """Search and browse the library in a web browser (JSON API under /api, docs at /docs)."""
    from .library import Library

    host = host.strip("[]")  # an IPv6 address as in a URL
    with Library.open(db) as lib:
        port = _free_port(host, port)
        import uvicorn

        from .webapp import allowed_hosts, create_app

        app = create_app(lib, allowed_hosts=allowed_hosts(host))
        url_host = f"[{host}]" if ":" in host else host
        click.echo(f"Serving {lib.path} at http://{url_host}:{port}/ (Ctrl+C to stop)")
        uvicorn.run(app, host=host, port=port, log_level="warning")


def _free_port(host: str, port: int) -> int:
    """`port`, once a socket bound there as uvicorn binds it (0: the port the system picked); one clear error
    when it is taken or `host` is not an address of this computer."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise click.ClickException(f"port {port} on {host} is already in use (another server?): stop it, "
                                           "or choose another port with --port") from None
            raise click.ClickException(f"cannot listen on {host} port {port}: {e.strerror or e}; check --host and "
                                       "--port") from None
        return sock.getsockname()[1]


def _label_lines(file: BinaryIO) -> list[str]:
    """The lines of a labels file: UTF-16 by its byte-order mark, else UTF-8 (a BOM dropped)."""
    data = file.read()
    encoding = "utf-16" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
    try:
        return data.decode(encoding).splitlines()
    except UnicodeDecodeError as e:
        raise click.ClickException(f"{readable(file.name)} is not UTF-8 or UTF-16 text ({e.reason} at byte "
                                   f"{e.start}); save it as UTF-8") from None

@main.command(short_help="Tag the images with the likeliest of your labels.", epilog=examples(
    'clipsearch tag --labels "cat,dog,beach,screenshot"',
    'clipsearch tag --labels-file labels.txt',
    'clipsearch search "sleeping" --tag cat',
))
@db_option
@click.option("--labels", metavar="A,B,...", help='Comma-separated labels, e.g. "cat,dog,beach,screenshot".')
@click.option("--labels-file", type=click.File("rb"),
              help="A text file with one label per line: UTF-8 (with or without a byte-order mark), or UTF-16 "
                   "with its byte-order mark (Notepad's \"Unicode\").")
@click.option("--top", default=DEFAULT_TOP, show_default=True, type=click.IntRange(min=1),
              help="Keep at most this many labels per image.")
@click.option("--min-prob", default=DEFAULT_MIN_PROBABILITY, show_default=True, type=click.FloatRange(0, 1),
              help="Keep labels after the first only with at least this probability.")
def tag(db: str | None, labels: str | None, labels_file: BinaryIO | None, top: int, min_prob: float) -> None:
    """Zero-shot tag every indexed image with its most probable labels (only images not yet tagged)."""
    from .library import Library

    if bool(labels) == bool(labels_file):
        raise click.UsageError("Give either --labels or --labels-file")
    names = labels.split(",") if labels else _label_lines(labels_file)
    with Library.open(db) as lib:
        report = lib.tag(names, top=top, min_probability=min_prob)
    click.echo(f"tagged {report.tagged} images ({report.already_tagged} already tagged) "
               f"with {len(report.labels)} labels in {report.elapsed_s:.1f}s")


@main.command(short_help="List the labels and how many images carry each.", epilog=examples(
    'clipsearch tags',
    'clipsearch tags --json',
))
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def tags(db: str | None, as_json: bool) -> None:
    """List the labels images are tagged with and how many images carry each."""
    from .library import Library

    with Library.open(db) as lib:
        counts = lib.tags()
    _print_list(counts, as_json, lambda c: f"{c.images:7}  {c.label}")


@main.command(short_help="Find duplicate, near-duplicate and edited images.", epilog=examples(
    'clipsearch dedup',
    'clipsearch dedup --series --html report.html',
    'clipsearch dedup --prefer ~/Pictures/originals --move-to ~/duplicates',
))
@db_option
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True),
              help="Cosine similarity at or above which two files are duplicates (near or edited)  [default: per "
                   "model: " + ", ".join(f"{v} for {k}" for k, v in MEASURED_THRESHOLDS.items())
                   + f", else {DEFAULT_THRESHOLD}]")
@click.option("--series", is_flag=True, help="Also report similar series (bursts, retakes): a lower band of similarity.")
@click.option("--series-threshold", type=click.FloatRange(0, 1, min_open=True),
              help=f"Lower bound of the series band; implies --series  [default: --threshold minus {SERIES_GAP}]")
@click.option("--exact-only", is_flag=True, help="Only byte-identical files (content hashes): loads no model.")
@click.option("--prefer", multiple=True, type=click.Path(file_okay=False),
              help="Files under this folder win as keepers (repeatable).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), help="Also write the report as JSON to FILE.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False), help="Also write one CSV row per file to FILE.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML report with thumbnails to FILE (tick, untick, change keepers, "
                   "download the delete list).")
@click.option("--delete-list", "delete_file", type=click.Path(dir_okay=False),
              help="Write the paths of the exact and near copies (never keepers, edits, series, aliases or "
                   "RAW+JPEG pairs) to FILE, one per line.")
@click.option("--null", is_flag=True, help="Terminate --delete-list paths with NUL instead of newline (xargs -0).")
@click.option("--move-to", "move_dir", type=click.Path(file_okay=False),
              help="Move the exact and near copies into this quarantine folder, mirroring their paths, and write an "
                   "undo manifest there (see undo-move). Files changed since indexing are left alone.")
@filter_options
def dedup(db: str | None, threshold: float | None, series: bool, series_threshold: float | None, exact_only: bool,
          prefer: Sequence[str], json_file: str | None, csv_file: str | None, html_file: str | None,
          delete_file: str | None, null: bool, move_dir: str | None, filters: Filters) -> None:
    """Report exact duplicates, near-duplicates, edited copies and (with --series) similar series.

    Deletes nothing. Only --move-to moves files (the exact and near copies), and `clipsearch undo-move`
    puts them back.
    """
    from .duplicates import default_threshold
    from .library import Library
    from .reports import plural, summary, write_csv, write_delete_list, write_html, write_json

    if exact_only and (threshold is not None or series or series_threshold is not None):
        raise click.ClickException("--exact-only compares bytes only: drop --threshold, --series and --series-threshold")
    if null and not delete_file:
        raise click.ClickException("--null only applies to --delete-list FILE")
    with Library.open(db) as lib:
        if move_dir:
            lib.check_quarantine_folder(move_dir)  # before the report's work
        if not exact_only:
            threshold = threshold or default_threshold(lib.model.arch if lib.model else None)
            series_threshold = _series_threshold(threshold, series, series_threshold)
        report = lib.duplicates(threshold=threshold, series_threshold=series_threshold, filters=filters,
                                prefer=prefer, exact_only=exact_only)
        _note(lib.demo_model_note())
        for file, write in ((json_file, write_json), (csv_file, write_csv), (html_file, write_html)):
            if file:
                write(report, file)
        if delete_file:
            write_delete_list(report, delete_file, null)
        click.echo(summary(report, moving=bool(move_dir)))
        if move_dir:
            moved = lib.quarantine(report, move_dir)
            parts = [f"moved {plural(len(moved.moved), 'file')} to {readable(move_dir)}"]
            if moved.manifest:
                parts.append(f"undo with: clipsearch undo-move {shlex.quote(moved.manifest)}")
            if moved.skipped:
                parts.append(f"{len(moved.skipped)} left alone:")
            click.echo(_listed("; ".join(parts), moved.skipped))


def _series_threshold(threshold: float, series: bool, series_threshold: float | None) -> float | None:
    """The series threshold to use, checked against the duplicate threshold with the options named."""
    from .duplicates import default_series_threshold

    if series_threshold is None:
        return default_series_threshold(threshold) if series else None
    if series_threshold >= threshold:
        raise click.ClickException(f"--series-threshold {series_threshold} must be below --threshold {threshold}: "
                               "lower --series-threshold or raise --threshold")
    return series_threshold


@main.command("undo-move", short_help="Put back the files `dedup --move-to` moved.", epilog=examples(
    'clipsearch undo-move ~/duplicates/clipsearch-moves-20250101-120000-000000.json',
))
@click.argument("manifest", type=click.Path(dir_okay=False))
def undo_move(manifest: str) -> None:
    """Move the files listed in a `dedup --move-to` MANIFEST back to where they were.

    A file is never overwritten: one that reappeared at its origin stays, and its quarantined copy is listed.
    """
    from .quarantine import undo
    from .reports import plural

    report = undo(manifest)
    parts = [f"restored {plural(len(report.moved), 'file')}"]
    if report.already:
        parts.append(f"{len(report.already)} already back at {'its' if len(report.already) == 1 else 'their'} origin")
    parts.append(f"{len(report.skipped)} could not be restored")
    click.echo(_listed("; ".join(parts), report.skipped))
    if report.skipped:
        sys.exit(1)


@main.command(short_help="Embed images on a Ray cluster into Parquet shards.", epilog=examples(
    'clipsearch embed /data/photos -o /data/shards --ray-address auto',
    'clipsearch ingest /data/shards',
))
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder for the Parquet embedding shards (created if missing; shards already there are kept).")
@click.option("--model", default="ViT-B-32", show_default=True, help="open_clip architecture, or clipsearch-tiny.")
@click.option("--pretrained", help="Pretrained weights tag  [default: laion2b_s34b_b79k]")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Local open_clip-compatible weights file.")
@click.option("--ray-address", metavar="auto|ray://HOST:PORT",
              help="The Ray cluster to run on  [default: $RAY_ADDRESS, else a local one started for this run]")
@click.option("--shard-size", default=DEFAULT_SHARD_SIZE, show_default=True, type=click.IntRange(min=1),
              help="Files per shard, on average: the unit of retry and resume.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per batch  [default: 32 on CPU, 256 on GPU]")
@click.option("--actors", type=click.IntRange(min=1),
              help="Embedding actors  [default: one per GPU; without GPUs, half the CPUs]")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files or folders matching GLOB (repeatable).")
@click.option("--include-hidden", is_flag=True, help="Also embed hidden files and folders.")
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True),
              help="Write every skipped file and its reason to this JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def embed(paths: Sequence[str], output: str, model: str, pretrained: str | None, checkpoint: str | None,
          ray_address: str | None, shard_size: int, batch_size: int | None, actors: int | None,
          exclude: Sequence[str], include_hidden: bool, errors_file: str | None, quiet: bool) -> None:
    """Embed the images under PATHS on a Ray cluster into Parquet shards; merge them with `clipsearch ingest`.

    Needs the ray extra (pip install 'clipsearch[ray]'). Re-running skips the shards already written.
    """
    from .distributed import embed as embed_on_ray
    from .models import model_spec

    report = embed_on_ray(paths, output, model_spec(model, pretrained, checkpoint), address=ray_address,
                          shard_size=shard_size, batch_size=batch_size, actors=actors, exclude=exclude,
                          include_hidden=include_hidden, progress=not quiet and sys.stderr.isatty())
    _write_skipped(errors_file, report.skipped)
    click.echo(_with_reasons(
        f"shards {report.shards}: written {report.written}, already written {report.already_written}; "
        f"embedded {report.embedded}, skipped {len(report.skipped)} "
        f"in {report.elapsed_s:.1f}s ({report.images_per_s:.1f} images/s)", report.skipped, errors_file))


@main.command(short_help="Merge the Parquet shards of `embed` into a library.", epilog=examples(
    'clipsearch ingest /data/shards',
))
@click.argument("shards_dir", type=click.Path(file_okay=False))
@db_option
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True),
              help="Write every skipped file and its reason to this JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def ingest(shards_dir: str, db: str | None, errors_file: str | None, quiet: bool) -> None:
    """Merge the embedding shards in SHARDS_DIR (from `clipsearch embed`) into a library."""
    from .library import Library

    with Library.open(db, create=True) as lib, _progress(quiet, "Merging", "shards") as progress:
        report = lib.ingest(shards_dir, progress=progress)
    _write_skipped(errors_file, report.skipped)
    click.echo(_with_reasons(
        f"shards {report.shards}: added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
        f"skipped {len(report.skipped)} in {report.elapsed_s:.1f}s", report.skipped, errors_file))
