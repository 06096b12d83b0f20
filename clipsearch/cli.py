"""The `clipsearch` command: a thin click layer over the library API."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable, Sequence

import click

from .errors import ClipsearchError
from .results import IndexReport, SearchResult, to_dict


class _Group(click.Group):
    """Turns the library's typed exceptions into one clean line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClipsearchError as e:
            raise click.ClickException(str(e)) from None


def db_option(f: Callable) -> Callable:
    return click.option(
        "--db",
        "db",
        type=click.Path(file_okay=False),
        envvar="CLIPSEARCH_DB",
        help="Library directory [env CLIPSEARCH_DB; default $CLIPSEARCH_HOME or the user data dir].",
    )(f)


def result_options(f: Callable) -> Callable:
    f = click.option("--json", "as_json", is_flag=True, help="Print results as a JSON list.")(f)
    f = click.option("--min-score", type=float, help="Drop results scoring below this cosine similarity.")(f)
    f = click.option("--under", multiple=True, type=click.Path(), help="Only results inside this folder (repeatable).")(f)
    f = click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1),
                     help="Number of results.")(f)
    return f


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipsearch")
def main() -> None:
    """Semantic image search: find photos by describing them or by example."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--model", help="open_clip architecture, or clipsearch-tiny  [default for a new library: ViT-B-32]")
@click.option("--pretrained", help="Pretrained weights tag  [default: laion2b_s34b_b79k]")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Local open_clip-compatible weights file.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files or folders matching GLOB (repeatable).")
@click.option("--include-hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--reindex", is_flag=True, help="Re-embed everything, e.g. with a different model.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per batch  [default: 32 on CPU, 256 on CUDA]")
@click.option("--workers", type=click.IntRange(min=0), help="Decoding processes  [default: CPU count]")
@click.option("--errors", "errors_file", type=click.Path(dir_okay=False, writable=True),
              help="Write every skipped file and its reason to this JSON file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def index(paths: Sequence[str], db: str | None, model: str | None, pretrained: str | None, checkpoint: str | None,
          device: str, exclude: Sequence[str], include_hidden: bool, reindex: bool, batch_size: int | None,
          workers: int | None, errors_file: str | None, quiet: bool) -> None:
    """Index the images under PATHS (recursively; unchanged files are not decoded again)."""
    from .library import Library
    from .models import model_spec

    spec = model_spec(model or "ViT-B-32", pretrained, checkpoint) if (model or pretrained or checkpoint) else None
    with Library.open(db, create=True) as lib, _progress(quiet) as progress:
        report = lib.index(paths, model=spec, device=device, exclude=exclude, include_hidden=include_hidden,
                           reindex=reindex, batch_size=batch_size, workers=workers, progress=progress)
    if errors_file:
        with open(errors_file, "w", encoding="utf-8") as f:
            json.dump([to_dict(s) for s in report.skipped], f, indent=2, ensure_ascii=False)
    click.echo(_summary(report))


class _progress:
    """A click progress bar on a terminal; nothing otherwise."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        return self.update if self.enabled else None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="Indexing", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _summary(report: IndexReport) -> str:
    lines = [
        f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
        f"unchanged {report.unchanged}, skipped {len(report.skipped)} "
        f"in {report.elapsed_s:.1f}s ({report.images_per_s:.1f} images/s)"
    ]
    reasons: dict[str, int] = {}
    for skip in report.skipped:
        reasons[skip.reason] = reasons.get(skip.reason, 0) + 1
    lines += [f"  skipped {n}: {reason}" for reason, n in sorted(reasons.items(), key=lambda r: -r[1])[:10]]
    return "\n".join(lines)


@main.command()
@click.argument("query", nargs=-1)
@db_option
@click.option("--add", multiple=True, metavar="TERM[:W]", help="Add a text or image term (optional weight).")
@click.option("--sub", multiple=True, metavar="TERM[:W]", help="Subtract a text or image term (optional weight).")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False), help="Add an image file as a term.")
@result_options
def search(query: Sequence[str], db: str | None, add: Sequence[str], sub: Sequence[str], images: Sequence[str],
           limit: int, under: Sequence[str], min_score: float | None, as_json: bool) -> None:
    """Find images matching QUERY (text, or the path of an image file)."""
    from .library import Library

    text = " ".join(query) if query else None
    with Library.open(db) as lib:
        results = lib.search(text, k=limit, add=add, sub=sub, images=images, under=under, min_score=min_score)
    _print_results(results, as_json)


@main.command()
@click.argument("image", type=click.Path(dir_okay=False))
@db_option
@result_options
def similar(image: str, db: str | None, limit: int, under: Sequence[str], min_score: float | None,
            as_json: bool) -> None:
    """Find images similar to IMAGE (indexed or not)."""
    from .library import Library

    with Library.open(db) as lib:
        _print_results(lib.similar(image, k=limit, under=under, min_score=min_score), as_json)


def _print_results(results: Iterable[SearchResult], as_json: bool) -> None:
    results = list(results)
    if as_json:
        click.echo(json.dumps([to_dict(r) for r in results], indent=2, ensure_ascii=False))
        return
    for r in results:
        click.echo(f"{r.score:.3f}  {r.path}")


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(db: str | None, as_json: bool) -> None:
    """Show where the library is, its model, size and contents."""
    from .library import Library

    with Library.open(db) as lib:
        data = to_dict(lib.info())
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    model = data.pop("model")
    for key, value in data.items():
        click.echo(f"{key:13} {value}")
    click.echo(f"{'model':13} " + ", ".join(f"{k}={v}" for k, v in model.items() if v is not None))


@main.command()
@db_option
def check(db: str | None) -> None:
    """Verify that the catalog and the vector index agree; exit 1 on damage."""
    from .library import Library

    with Library.open(db) as lib:
        problems = lib.check()
    if problems:
        raise click.ClickException("; ".join(problems) + " (run `clipsearch repair`)")
    click.echo("ok")


@main.command()
@db_option
def repair(db: str | None) -> None:
    """Rebuild the vector index from the vectors kept in the catalog."""
    from .library import Library

    with Library.open(db) as lib:
        click.echo(f"rebuilt the index with {lib.repair()} vectors")


@main.command()
@click.option("--cached", is_flag=True, help="Only models whose weights are available offline.")
def models(cached: bool) -> None:
    """List the architectures and pretrained tags open_clip knows; * marks weights cached locally."""
    from .models import list_available

    for m in list_available():
        if m.cached or not cached:
            click.echo(f"{'*' if m.cached else ' '} {m.arch:40} {m.pretrained}")
