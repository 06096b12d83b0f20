"""Inline images: a picture as the escape sequences a terminal draws it from, in one of three protocols.

- kitty: the kitty graphics protocol (kitty, Ghostty): a PNG, base64-encoded in chunks of 4096 bytes.
- iterm2: iTerm2's inline images protocol, OSC 1337 File (iTerm2, WezTerm, mintty): a base64 PNG.
- sixel: DEC sixel graphics (foot, mlterm, contour, Konsole, xterm built with it): the picture quantised
  to a palette of at most 256 colours, six pixel rows per band, runs of one sixel run-length encoded.

Which protocol a terminal speaks is read from the environment variables it sets; the terminal is never
queried (a query needs raw mode and a reply that a pipe or a multiplexer may never give).
"""
from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # Pillow and numpy are imported where a picture is drawn: the CLI imports this module for its names
    from PIL import Image

InlineProtocol = Literal["kitty", "iterm2", "sixel"]
PROTOCOLS: tuple[InlineProtocol, ...] = get_args(InlineProtocol)

KITTY_CHUNK = 4096
"""Base64 bytes per kitty graphics command: the protocol's limit for a chunk."""
SIXEL_COLOURS = 256
"""Palette size of a sixel image: what xterm, foot and most sixel terminals hold."""
MAX_ASPECT = 3
"""A preview is at most this many times as wide as it is high (a panorama is scaled down to fit)."""

ESC = b"\x1b"
ST = ESC + b"\\"  # string terminator, ends an APC (kitty) or a DCS (sixel, tmux passthrough)

_ITERM2_PROGRAMS = {"iTerm.app", "WezTerm", "mintty"}
_SIXEL_TERMS = ("foot", "mlterm", "contour", "yaft")
_KONSOLE_SIXEL = 220400  # Konsole draws sixel from 22.04 (KONSOLE_VERSION 220400)


def detect(environ: Mapping[str, str]) -> InlineProtocol | None:
    """The protocol of the terminal that set `environ` (e.g. os.environ), or None when it is not known to
    draw images: kitty for TERM=xterm-kitty, KITTY_WINDOW_ID or Ghostty; iterm2 for TERM_PROGRAM iTerm.app,
    WezTerm or mintty, or LC_TERMINAL=iTerm2 (which iTerm2 passes through ssh); sixel for TERM foot*,
    mlterm*, contour*, yaft*, the MLTERM variable, or Konsole 22.04 and later."""
    term = environ.get("TERM", "")
    program = environ.get("TERM_PROGRAM", "")
    if term == "xterm-kitty" or "KITTY_WINDOW_ID" in environ or program == "ghostty" or term == "xterm-ghostty":
        return "kitty"
    if program in _ITERM2_PROGRAMS or environ.get("LC_TERMINAL") == "iTerm2":
        return "iterm2"
    if term.startswith(_SIXEL_TERMS) or "MLTERM" in environ or _konsole_version(environ) >= _KONSOLE_SIXEL:
        return "sixel"
    return None


def _konsole_version(environ: Mapping[str, str]) -> int:
    version = environ.get("KONSOLE_VERSION", "")
    return int(version) if version.isdigit() else 0


def encode(picture: Image.Image, protocol: InlineProtocol, tmux: bool = False) -> bytes:
    """The escape sequences that draw `picture` at its size in pixels, at the cursor, in `protocol` (a new
    line after them puts the cursor below the picture). With `tmux`, each sequence is wrapped in tmux's
    passthrough (which tmux forwards only with `set -g allow-passthrough on`)."""
    sequences = {"kitty": _kitty, "iterm2": _iterm2, "sixel": _sixel}[protocol](picture.convert("RGB"))
    return b"".join(_tmux_passthrough(s) if tmux else s for s in sequences)


def preview(source: str, height: int, protocol: InlineProtocol, at_s: float | None = None,
            tmux: bool = False) -> bytes:
    """The file `source` (a video: its frame at `at_s` seconds) scaled to at most `height` px high and
    MAX_ASPECT x `height` px wide (never enlarged), as `encode` draws it. Raises OSError when the file
    is gone or cannot be reached, BadImage when it cannot be decoded."""
    from PIL import Image

    from .thumbnails import thumbnail  # decoding's plugins load only when a preview is drawn

    os.stat(source)
    picture = thumbnail(source, MAX_ASPECT * height, at_s)
    picture.thumbnail((MAX_ASPECT * height, height), Image.Resampling.LANCZOS)
    return encode(picture, protocol, tmux)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _kitty(picture: Image.Image) -> list[bytes]:
    """Transmit and display (a=T) a PNG (f=100) with no reply from the terminal (q=2); m=1 on every chunk
    but the last."""
    payload = base64.b64encode(_png(picture))
    chunks = [payload[i:i + KITTY_CHUNK] for i in range(0, len(payload), KITTY_CHUNK)]
    sequences = []
    for n, chunk in enumerate(chunks):
        keys = (b"a=T,f=100,q=2," if n == 0 else b"") + b"m=%d" % (n < len(chunks) - 1)
        sequences.append(ESC + b"_G" + keys + b";" + chunk + ST)
    return sequences


def _iterm2(picture: Image.Image) -> list[bytes]:
    data = _png(picture)
    width, height = picture.size
    header = b"1337;File=inline=1;size=%d;width=%dpx;height=%dpx;preserveAspectRatio=1" % (len(data), width, height)
    return [ESC + b"]" + header + b":" + base64.b64encode(data) + b"\x07"]


_RUN = re.compile(rb"(.)\1{3,}")


def _sixel(picture: Image.Image) -> list[bytes]:
    """A DCS sixel string: 1:1 pixels, unpainted pixels left as they are (P2=1), raster attributes giving
    the size, the palette in RGB percent, then a band per six rows with a line per colour in it."""
    import numpy as np
    from PIL import Image

    indexed = picture.quantize(colors=SIXEL_COLOURS, method=Image.Quantize.FASTOCTREE)
    pixels = np.asarray(indexed)
    height, width = pixels.shape
    palette = indexed.getpalette() or []
    out = [ESC + b'P0;1q"1;1;%d;%d' % (width, height)]
    for i in np.unique(pixels).tolist():
        out.append(b"#%d;2;%d;%d;%d" % (i, *(round(v * 100 / 255) for v in palette[3 * i:3 * i + 3])))
    columns = np.arange(width)
    bits = np.zeros((SIXEL_COLOURS, width), np.uint8)
    bands = []
    for top in range(0, height, 6):
        rows = pixels[top:top + 6]
        colours = np.unique(rows).tolist()
        bits[colours] = 0
        for k, row in enumerate(rows):
            bits[row, columns] |= 1 << k
        lines = [b"#%d" % i + _RUN.sub(_repeat, (bits[i] + 63).tobytes().rstrip(b"?")) for i in colours]
        bands.append(b"$".join(lines))
    return [b"".join(out) + b"-".join(bands) + ST]


def _repeat(run: re.Match[bytes]) -> bytes:
    return b"!%d" % len(run[0]) + run[1]


def _tmux_passthrough(sequence: bytes) -> bytes:
    return ESC + b"Ptmux;" + sequence.replace(ESC, ESC + ESC) + ST
