"""Acting on a duplicates report without deleting anything: moving copies into a quarantine folder, and back.

`move_to` moves the exact and near members of each group into a folder that mirrors their absolute
paths (/photos/a/x.jpg -> QUARANTINE/photos/a/x.jpg), after checking that each file still holds the
bytes it was indexed with and that its keeper is still there unchanged, so the last copy of a picture
never moves. A JSON manifest lists every move; `undo` reads it and moves everything back, never
overwriting a file that has reappeared at its origin.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from .errors import BadPath
from .paths import readable
from .results import MoveReport, Skip
from .video import file_hash

MANIFEST_VERSION = 1
MANIFEST_PREFIX = "clipsearch-moves-"
"""A manifest is MANIFEST_PREFIX + its time + .json; the indexer never lists a folder holding one."""


def is_manifest(name: str) -> bool:
    """Whether a file name is that of a move manifest."""
    return name.startswith(MANIFEST_PREFIX) and name.endswith(".json")


@dataclass(frozen=True)
class PlannedMove:
    path: str
    hash: str
    """The content hash the catalog holds for it: the file must still have these bytes."""
    keeper: str
    keeper_hash: str


def quarantine_path(folder: str | os.PathLike[str], path: str) -> Path:
    """Where `path` goes inside the quarantine `folder`: its absolute path below it (a drive as a folder)."""
    drive, rest = os.path.splitdrive(os.path.abspath(path))
    return Path(folder, drive.replace(":", ""), rest.lstrip("\\/"))


def _hash_of(path: str) -> str | None:
    try:
        return None if os.path.islink(path) else file_hash(path)  # in chunks: a video may be gigabytes
    except OSError:
        return None


def move_to(moves: Sequence[PlannedMove], folder: str | os.PathLike[str]) -> MoveReport:
    """Move each planned file into `folder` (created if missing) and write the undo manifest there.

    A file is left where it is, and listed with the reason, when it changed since indexing, is gone, is
    the same file as its keeper, is already in the quarantine, or when its keeper is missing or changed.
    """
    folder = Path(folder).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadPath(f"Cannot create {folder}: {e.strerror or e}") from None
    keepers: dict[str, bool] = {}
    moved: list[tuple[str, str]] = []
    skipped: list[Skip] = []
    manifest = folder / f"{MANIFEST_PREFIX}{datetime.now():%Y%m%d-%H%M%S-%f}.json"
    for move in moves:
        if move.keeper not in keepers:
            keepers[move.keeper] = _hash_of(move.keeper) == move.keeper_hash
        target = quarantine_path(folder, move.path)
        reason = _refusal(move, target, keepers[move.keeper])
        if reason:
            skipped.append(Skip(move.path, reason))
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(move.path, target)
        except OSError as e:
            skipped.append(Skip(move.path, f"cannot move: {e.strerror or e}"))
            continue
        moved.append((move.path, str(target)))
        _write_manifest(manifest, moved)
    return MoveReport(tuple(moved), tuple(skipped), str(manifest) if moved else None)


def _refusal(move: PlannedMove, target: Path, keeper_ok: bool) -> str | None:
    if not keeper_ok:
        return f"its keeper {move.keeper} is missing or changed since indexing: it may be the last copy"
    if not os.path.lexists(move.path):
        return f"already moved to {target}" if os.path.lexists(target) else "no longer on disk"
    if os.path.lexists(target):
        return f"{target} already exists"
    try:
        if os.path.samefile(move.path, move.keeper):
            return "the same file as its keeper (a link)"
    except OSError:
        pass
    if _hash_of(move.path) != move.hash:
        return "changed since indexing (re-index, then run dedup again)"
    return None


def _write_manifest(manifest: Path, moved: list[tuple[str, str]]) -> None:
    data = {"version": MANIFEST_VERSION, "tool": "clipsearch dedup --move-to",
            "moves": [{"from": a, "to": b} for a, b in moved]}
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="ascii")  # \uXXXX escapes keep non-UTF-8 names exact
    os.replace(tmp, manifest)


def undo(manifest: str | os.PathLike[str]) -> MoveReport:
    """Move every file listed in a `move_to` manifest back to where it was.

    A file whose origin is taken again (a file reappeared there) or that is no longer in the quarantine is
    left alone and listed; one that is back at its origin and gone from the quarantine (an earlier undo) is
    counted as already restored. Raises BadPath when the manifest cannot be read.
    """
    moves = _read_manifest(manifest)
    restored: list[tuple[str, str]] = []
    skipped: list[Skip] = []
    already: list[str] = []
    for origin, moved in moves:
        if os.path.lexists(origin) and not os.path.lexists(moved):
            already.append(origin)
        elif os.path.lexists(origin):
            skipped.append(Skip(origin, f"a file is at the origin again: not overwritten (the moved one is {moved})"))
        elif not os.path.lexists(moved):
            skipped.append(Skip(origin, f"no longer in the quarantine ({moved})"))
        else:
            try:
                os.makedirs(os.path.dirname(origin), exist_ok=True)
                shutil.move(moved, origin)
                restored.append((moved, origin))
            except OSError as e:
                skipped.append(Skip(origin, f"cannot move back: {e.strerror or e}"))
    return MoveReport(tuple(restored), tuple(skipped), os.fspath(manifest), tuple(already))


def _read_manifest(manifest: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The (origin, quarantined path) pairs of a manifest; BadPath when it cannot be read or is not one."""
    name = readable(os.fspath(manifest))
    try:
        data = json.loads(Path(manifest).read_bytes())
    except IsADirectoryError:
        raise BadPath(f"{name} is a folder: give the clipsearch-moves-*.json file inside it") from None
    except OSError as e:
        raise BadPath(f"Cannot read the manifest {name}: {e.strerror or e}") from None
    except ValueError:  # not JSON, or not UTF-8 text at all
        data = None
    moves = data.get("moves") if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION else None
    if not isinstance(moves, list) or not all(
            isinstance(m, dict) and isinstance(m.get("from"), str) and isinstance(m.get("to"), str)
            and os.path.isabs(m["from"]) and os.path.isabs(m["to"]) for m in moves):
        raise BadPath(f"{name} is not a clipsearch move manifest (written by dedup --move-to)")
    return [(m["from"], m["to"]) for m in moves]
