"""File paths as the catalog stores them and as people and JSON read them.

Python hands over a file name that is not valid UTF-8 (bytes `caf\\xe9.png` on Linux) as a str
holding lone surrogates (`'caf\\udce9.png'`, PEP 383), which SQLite cannot store as text. The
catalog keeps such a path losslessly as `catalog_text`: each surrogate becomes U+FFFF (a Unicode
noncharacter, reserved for internal use) followed by its four hex digits, and U+FFFF itself becomes
U+FFFF "ffff". Every other character, and the separator, stays as it is, so a valid UTF-8 path is
stored unchanged and a folder's paths still share its stored prefix (range scans stay correct).

For output, `readable` shows each byte that is not UTF-8 as `\\xNN` (lossy, for reading), and
`exact_b64` gives the name's bytes in base64 (exact); `--json`, CSV and the web API carry both
(`path` and `path_bytes_b64`, the latter null when `path` is exact). A text that is not a path (a query, a label)
must be valid UTF-8: `check_text` refuses one with such bytes in one line.
"""
from __future__ import annotations

import base64
import os
import re
from typing import Any

from .errors import BadQuery

ESCAPE = "\uffff"
_ESCAPED = re.compile(ESCAPE + "([0-9a-f]{4})")
_NEEDS_ESCAPE = re.compile("[\ud800-\udfff\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def catalog_text(path: str) -> str:
    """A path as the catalog stores it (valid UTF-8; see the module docstring)."""
    if path.isascii():
        return path
    return _NEEDS_ESCAPE.sub(lambda m: f"{ESCAPE}{ord(m[0]):04x}", path)


def from_catalog(text: str) -> str:
    """The path a `catalog_text` stands for."""
    if ESCAPE not in text:
        return text
    return _ESCAPED.sub(lambda m: chr(int(m[1], 16)), text)


def is_exact_text(path: str) -> bool:
    """Whether the path is valid Unicode text (no bytes that are not UTF-8)."""
    return path.isascii() or not _SURROGATE.search(path)


def readable(path: str) -> str:
    """The path to show: itself if it is text, else with each byte that is not UTF-8 as `\\xNN`."""
    if is_exact_text(path):
        return path
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_text(text: str, what: str, hint: str = "") -> str:
    """`text` itself when it is valid Unicode text; else BadQuery "`what` 'caf\\xe9' is not valid UTF-8 text`hint`"
    (a command-line argument with bytes that are not UTF-8 arrives holding lone surrogates, see the module docstring,
    which neither SQLite, a tokenizer nor a model can take)."""
    if not is_exact_text(text):
        raise BadQuery(f"{what} '{readable(text)}' is not valid UTF-8 text{hint}")
    return text


def exact_b64(path: str) -> str | None:
    """The path's bytes in base64, or None when `path` is exact as text."""
    return None if is_exact_text(path) else base64.b64encode(os.fsencode(path)).decode("ascii")


def path_fields(path: str) -> dict[str, Any]:
    """`path` (readable) and `path_bytes_b64` (exact bytes, or None): how output names a file."""
    return {"path": readable(path), "path_bytes_b64": exact_b64(path)}
