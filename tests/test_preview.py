"""`search`/`similar --preview`: thumbnails drawn inline in kitty, iTerm2 or sixel terminals (each protocol's bytes
decoded back to the picture), the protocol read from the environment, and the paths alone elsewhere."""
import base64
import io
import json
import math
import random
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import clipsearch.cli
from clipsearch.cli import main
from clipsearch.inlineimages import KITTY_CHUNK, MAX_ASPECT, PROTOCOLS, detect, encode, preview
from clipsearch.shapes import ShapeSpec, render

from conftest import draw_shape
from generated import write_clip, write_dng

TERMINAL_VARIABLES = ("TERM", "TERM_PROGRAM", "KITTY_WINDOW_ID", "LC_TERMINAL", "MLTERM", "KONSOLE_VERSION", "TMUX",
                      "CLIPSEARCH_PREVIEW_PROTOCOL")


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch):
    """No terminal hints from the machine running the tests."""
    for name in TERMINAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def on_terminal(monkeypatch):
    monkeypatch.setattr(clipsearch.cli, "_stdout_on_terminal", lambda: True)


def shapes_picture(size=(120, 80)) -> Image.Image:
    """A few flat colours and anti-aliased edges: what a sixel palette must hold."""
    picture = Image.new("RGB", size, "white")
    picture.paste(render(ShapeSpec("red", "star", "white"), random.Random(1), size=size[1]), (0, 0))
    picture.paste((30, 60, 200), (size[0] - 30, 10, size[0] - 5, size[1] - 10))
    return picture


# -- decoding what a terminal receives -------------------------------------------------------------------------------

def kitty_images(data: bytes) -> list[Image.Image]:
    """The PNGs in kitty graphics commands: a=T,f=100,q=2 on the first chunk, m=1 on all but the last,
    at most 4096 base64 bytes each."""
    images, payload = [], b""
    for command in re.findall(rb"\x1b_G(.*?)\x1b\\", data, re.S):
        keys, chunk = command.split(b";", 1)
        assert 0 < len(chunk) <= KITTY_CHUNK
        if not payload:
            assert keys.startswith(b"a=T,f=100,q=2,")
        payload += chunk
        if keys.endswith(b"m=0"):
            images.append(png(base64.b64decode(payload)))
            payload = b""
        else:
            assert keys.endswith(b"m=1") and len(chunk) == KITTY_CHUNK
    assert payload == b""
    return images


def iterm2_images(data: bytes) -> list[Image.Image]:
    images = []
    for size, width, height, payload in re.findall(
            rb"\x1b\]1337;File=inline=1;size=(\d+);width=(\d+)px;height=(\d+)px;preserveAspectRatio=1:([^\x07]*)\x07",
            data):
        raw = base64.b64decode(payload)
        assert len(raw) == int(size)
        images.append(png(raw))
        assert images[-1].size == (int(width), int(height))
    return images


def png(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG"
    picture.load()
    return picture


SIXEL_TOKEN = re.compile(rb"#(\d+);2;(\d+);(\d+);(\d+)|#(\d+)|!(\d+)([?-~])|([?-~])|(\$)|(-)")


def sixel_images(data: bytes) -> list[Image.Image]:
    """Every DCS sixel string drawn, as a terminal would: 1:1 raster attributes, a palette of at most 256 RGB
    percentages, a band per six rows, every byte of the body a sixel command."""
    images = []
    for body in re.findall(rb"\x1bP0;1q(.*?)\x1b\\", data, re.S):
        raster = re.match(rb'"1;1;(\d+);(\d+)', body)
        width, height = int(raster[1]), int(raster[2])
        pixels = np.zeros((math.ceil(height / 6) * 6, width, 3), np.uint8)
        painted = np.zeros(pixels.shape[:2], bool)
        palette, colour, x, top, at = {}, None, 0, 0, raster.end()
        for token in SIXEL_TOKEN.finditer(body, at):
            assert token.start() == at, body[at:at + 20]
            at = token.end()
            define, select, count, repeated, single, carriage, newline = token.groups()[:1] + token.groups()[4:]
            if define:
                palette[int(define)] = [round(int(v) * 255 / 100) for v in token.groups()[1:4]]
            elif select:
                colour = palette[int(select)]
            elif repeated or single:
                n, char = (int(count), repeated) if repeated else (1, single)
                for k in range(6):
                    if (char[0] - 63) >> k & 1:
                        pixels[top + k, x:x + n] = colour
                        painted[top + k, x:x + n] = True
                x += n
            elif carriage:
                x = 0
            elif newline:
                x, top = 0, top + 6
        assert at == len(body) and len(palette) <= 256 and top // 6 + 1 == math.ceil(height / 6)
        assert painted[:height].all() and not painted[height:].any()
        images.append(Image.fromarray(pixels[:height]))
    return images


DECODERS = {"kitty": kitty_images, "iterm2": iterm2_images, "sixel": sixel_images}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("size", [(120, 80), (7, 13), (300, 301)])  # a band cut short, a PNG of many kitty chunks
def test_each_protocol_draws_the_picture_at_its_size(protocol, size):
    picture = shapes_picture(size)
    drawn = DECODERS[protocol](encode(picture, protocol))
    assert len(drawn) == 1 and drawn[0].size == size
    error = np.abs(np.asarray(drawn[0].convert("RGB"), float) - np.asarray(picture, float)).mean()
    assert error < (6 if protocol == "sixel" else 0.01)  # sixel: a palette of 256 colours in whole percents


def test_kitty_sends_a_large_picture_in_chunks():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8))
    data = encode(noise, "kitty")
    assert data.count(b"\x1b_G") > 10 and kitty_images(data)[0].tobytes() == noise.tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inside_tmux_every_sequence_passes_through(protocol):
    picture = shapes_picture()
    plain, wrapped = encode(picture, protocol), encode(picture, protocol, tmux=True)
    sequences = re.findall(rb"\x1bPtmux;((?:[^\x1b]|\x1b\x1b)*)\x1b\\", wrapped)
    assert len(sequences) == plain.count(b"\x1b_G") or len(sequences) == 1
    assert b"".join(s.replace(b"\x1b\x1b", b"\x1b") for s in sequences) == plain


@pytest.mark.parametrize("size, drawn", [((640, 480), (267, 200)), ((480, 640), (150, 200)), ((2000, 200), (600, 60)),
                                         ((64, 48), (64, 48))])
def test_a_preview_fits_the_height_and_three_times_it_across_never_enlarged(tmp_path, size, drawn):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", size, (40, 160, 40)).save(path)
    assert kitty_images(preview(str(path), 200, "kitty"))[0].size == drawn
    assert drawn[0] <= MAX_ASPECT * 200


def upright_red(tmp_path, ext, fmt):
    """A red 128 x 96 picture stored sideways with EXIF orientation 6: shown 96 wide, 128 high."""
    tags = Image.Exif()
    tags[274] = 6
    path = tmp_path / f"photo.{ext}"
    Image.new("RGB", (128, 96), (210, 20, 20)).save(path, fmt, exif=tags.tobytes())
    return path, (96, 128)


def raw_blue(tmp_path, with_preview):
    """A blue DNG: its 800 x 600 preview drawn at 200 px high, or without one its half-size demosaic."""
    mosaic, shown = np.full((48, 64, 3), (0, 0, 220), np.uint8), np.full((600, 800, 3), (0, 0, 220), np.uint8)
    path = write_dng(tmp_path / "shot.dng", mosaic, preview=shown if with_preview else None)
    return path, (267, 200) if with_preview else (32, 24)


@pytest.mark.parametrize("make", [lambda t: upright_red(t, "jpg", "JPEG"), lambda t: upright_red(t, "heic", "HEIF"),
                                  lambda t: upright_red(t, "avif", "AVIF"), lambda t: raw_blue(t, True),
                                  lambda t: raw_blue(t, False)],
                         ids=["jpeg", "heic", "avif", "raw with preview", "raw without preview"])
def test_every_kind_of_photo_is_drawn_upright_in_its_colours(tmp_path, make):
    path, size = make(tmp_path)
    drawn = kitty_images(preview(str(path), 200, "kitty"))[0].convert("RGB")
    assert drawn.size == size
    colour = np.asarray(drawn, float).mean((0, 1))  # a demosaic is developed: blue, not exactly (0, 0, 220)
    assert np.argmax(colour) == (2 if path.suffix == ".dng" else 0) and np.ptp(colour) > 150


# -- which protocol a terminal speaks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("environ, protocol", [
    ({"TERM": "xterm-kitty"}, "kitty"),
    ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
    ({"TERM": "xterm-ghostty", "TERM_PROGRAM": "ghostty"}, "kitty"),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, "iterm2"),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, "iterm2"),
    ({"TERM": "xterm", "TERM_PROGRAM": "mintty"}, "iterm2"),
    ({"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, "iterm2"),  # over ssh, or inside tmux
    ({"TERM": "foot"}, "sixel"),
    ({"TERM": "foot-extra"}, "sixel"),
    ({"TERM": "mlterm"}, "sixel"),
    ({"TERM": "xterm", "MLTERM": "3.9.3"}, "sixel"),
    ({"TERM": "contour"}, "sixel"),
    ({"TERM": "xterm-256color", "KONSOLE_VERSION": "230805"}, "sixel"),
    ({"TERM": "xterm-256color", "KONSOLE_VERSION": "211200"}, None),
    ({"TERM": "xterm-256color"}, None),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "Apple_Terminal"}, None),
    ({"TERM": "tmux-256color", "TERM_PROGRAM": "tmux", "TMUX": "/tmp/tmux-0/default,1,0"}, None),
    ({"TERM": "linux"}, None),
    ({"TERM": "dumb"}, None),
    ({}, None),
])
def test_the_protocol_is_read_from_the_environment(environ, protocol):
    assert detect(environ) == protocol


# -- what a user sees ----------------------------------------------------------------------------------------------------

def run(*args, env=None, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


SHAPES = [("red", "star"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle")]


def shapes_library(root):
    """Four 240 px shapes under root/photos, indexed into root/lib."""
    for i, (colour, shape) in enumerate(SHAPES):
        draw_shape(root / "photos" / f"{colour}_{shape}.png", colour, shape, seed=i, size=240)
    run("index", root / "photos", "--db", root / "lib", "--model", "clipsearch-tiny", "-q")
    return root


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The shapes library of the tests that only read it, indexed once."""
    return shapes_library(tmp_path_factory.mktemp("preview"))


def result_lines(stdout: bytes) -> list[str]:
    """The lines a person reads: the escape sequences taken out."""
    text = re.sub(rb"\x1b_G.*?\x1b\\|\x1b\]1337;.*?\x07|\x1bP.*?\x1b\\", b"", stdout, flags=re.S).decode()
    return [line for line in text.splitlines() if line]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_search_draws_a_thumbnail_under_each_result(library, on_terminal, protocol):
    plain = run("search", "a red star", "--db", library / "lib", "-n", "3")
    result = run("search", "a red star", "--db", library / "lib", "-n", "3", "--preview-protocol", protocol)
    assert result.stderr == "" and result_lines(result.stdout_bytes) == plain.stdout.splitlines()
    drawn = DECODERS[protocol](result.stdout_bytes)
    assert [p.size for p in drawn] == [(200, 200)] * 3  # the 240 px shapes at the default height
    first = np.asarray(drawn[0].convert("RGB"), float)
    assert first[..., 0].mean() > first[..., 2].mean() + 20  # the red star first, as the first line says
    assert "red_star" in plain.stdout.splitlines()[0]


@pytest.mark.parametrize("environ, decoder", [({"TERM": "xterm-kitty"}, kitty_images),
                                              ({"TERM_PROGRAM": "WezTerm"}, iterm2_images),
                                              ({"TERM": "foot"}, sixel_images),
                                              ({"CLIPSEARCH_PREVIEW_PROTOCOL": "sixel"}, sixel_images),
                                              ({"CLIPSEARCH_PREVIEW_PROTOCOL": "SIXEL"}, sixel_images),
                                              ({"CLIPSEARCH_PREVIEW_PROTOCOL": "Kitty"}, kitty_images)])
def test_preview_draws_in_the_protocol_of_the_terminal(library, on_terminal, environ, decoder):
    result = run("similar", library / "photos" / "red_star.png", "--db", library / "lib", "-n", "2", "-p",
                 "--preview-height", "48", env=environ)
    assert result.stderr == "" and [p.size for p in decoder(result.stdout_bytes)] == [(48, 48)] * 2
    assert len(result_lines(result.stdout_bytes)) == 2


def test_the_protocol_variable_alone_draws_nothing(library, on_terminal):
    result = run("search", "a red star", "--db", library / "lib", "-n", "2",
                 env={"CLIPSEARCH_PREVIEW_PROTOCOL": "kitty"})
    assert b"\x1b" not in result.stdout_bytes and result.stderr == ""


def test_the_protocol_option_ignores_case_and_its_help_says_the_variable_alone_does_not_preview(library,
                                                                                                 on_terminal):
    result = run("search", "a red star", "--db", library / "lib", "-n", "1", "--preview-protocol", "ITerm2")
    assert len(iterm2_images(result.stdout_bytes)) == 1
    help_text = " ".join(run("search", "--help").output.split())
    assert "it implies --preview. The environment variable CLIPSEARCH_PREVIEW_PROTOCOL picks one for --preview " \
           "without implying it." in help_text


@pytest.mark.parametrize("value", ["bogus", "kity", "1"])
def test_a_misspelt_protocol_variable_never_stops_a_search(library, on_terminal, value):
    plain = run("search", "a red star", "--db", library / "lib", "-n", "2", env={"CLIPSEARCH_PREVIEW_PROTOCOL": value})
    assert plain.exit_code == 0 and plain.stderr == "" and len(result_lines(plain.stdout_bytes)) == 2
    drawn = run("search", "a red star", "--db", library / "lib", "-n", "2", "-p",
                env={"CLIPSEARCH_PREVIEW_PROTOCOL": value, "TERM": "xterm-kitty"})
    assert drawn.exit_code == 0 and f"CLIPSEARCH_PREVIEW_PROTOCOL={value!r} is not one of" in drawn.stderr
    assert len(kitty_images(drawn.stdout_bytes)) == 2  # the terminal detected instead


@pytest.mark.parametrize("command", ["search", "similar"])
@pytest.mark.parametrize("case, args, env, why", [
    ("a pipe", ["--preview"], {"TERM": "xterm-kitty"}, "no thumbnails: stdout is not a terminal"),
    ("a pipe, forced", ["--preview-protocol", "kitty"], {}, "no thumbnails: stdout is not a terminal"),
    ("--json", ["--preview", "--json"], {"TERM": "xterm-kitty"}, "no thumbnails with --json"),
    ("an unknown terminal", ["--preview"], {"TERM": "xterm-256color", "TERM_PROGRAM": "Apple_Terminal"},
     "no thumbnails: no inline-image terminal detected; use --preview-protocol=kitty|iterm2|sixel to force one"),
])
def test_without_a_terminal_that_draws_the_results_come_alone_with_a_line_saying_why(library, monkeypatch, command,
                                                                                     case, args, env, why):
    if case == "an unknown terminal":
        monkeypatch.setattr(clipsearch.cli, "_stdout_on_terminal", lambda: True)
    query = "a red star" if command == "search" else library / "photos" / "red_star.png"
    base = [command, query, "--db", library / "lib", "-n", "3"]
    plain = run(*base, *[a for a in args if a == "--json"])
    result = run(*base, *args, env=env)
    assert result.stdout_bytes == plain.stdout_bytes and b"\x1b" not in result.stdout_bytes
    assert result.stderr == why + "\n"
    if "--json" in args:
        assert len(json.loads(result.stdout)) == 3


SPOIL = {"gone": lambda path: path.unlink(),
         "garbage": lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)),
         "empty": lambda path: path.write_bytes(b""),
         "a folder": lambda path: (path.unlink(), path.mkdir())}
"""Each way a file indexed can fail to be drawn later."""


@pytest.mark.parametrize("how, note", [("gone", "(no preview: No such file or directory)"),
                                       ("garbage", "(no preview: not an image clipsearch can read)"),
                                       ("empty", "(no preview: not an image clipsearch can read)"),
                                       ("a folder", "(no preview: a folder, not a file)")])
def test_a_result_that_cannot_be_drawn_keeps_its_line_with_a_note_and_the_rest_go_on(tmp_path, on_terminal, how,
                                                                                    note):
    root = shapes_library(tmp_path)
    SPOIL[how](root / "photos" / "red_star.png")
    result = run("search", "a red star", "--db", root / "lib", "-n", "4", "--preview-protocol", "kitty")
    lines = result_lines(result.stdout_bytes)
    broken = next(i for i, line in enumerate(lines) if line.endswith("red_star.png"))
    assert lines[broken + 1].startswith("  " + note) and len(lines) == 5
    assert len(kitty_images(result.stdout_bytes)) == 3 and result.stderr == ""


def test_an_unreadable_file_gets_a_note_in_words(tmp_path, on_terminal, monkeypatch):
    from PIL import Image

    root = shapes_library(tmp_path)
    real_open = Image.open

    def denied(fp, *args, **kwargs):  # chmod 000 does not stop root, who may run the tests
        if str(fp).endswith("red_star.png"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", denied)
    result = run("search", "a red star", "--db", root / "lib", "-n", "4", "--preview-protocol", "kitty")
    lines = result_lines(result.stdout_bytes)
    broken = next(i for i, line in enumerate(lines) if line.endswith("red_star.png"))
    assert lines[broken + 1] == "  (no preview: permission denied)" and "Error" not in result.stdout


def test_a_video_is_drawn_at_its_best_moment(tmp_path, library_dir, on_terminal):
    def scene(colour, kind):
        return np.asarray(render(ShapeSpec(colour, kind, "white"), random.Random(0), size=64))

    write_clip(tmp_path / "media" / "clip.mp4", [scene("red", "star"), scene("blue", "circle")])
    run("index", tmp_path / "media", "--db", library_dir, "--model", "clipsearch-tiny", "-q")
    result = run("search", "a blue circle", "--db", library_dir, "--preview-protocol", "iterm2")
    assert result_lines(result.stdout_bytes)[0].endswith("clip.mp4  00:00:01")  # 1.5 s: the blue circle's scene
    frame = np.asarray(iterm2_images(result.stdout_bytes)[0].convert("RGB"), float)
    assert frame.shape == (64, 64, 3) and frame[..., 2].mean() > frame[..., 0].mean() + 20  # not the red first frame
