import os
import random
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.models import load_encoder, model_spec


def _refuse_network(self, address, *args, **kwargs):
    host = address[0] if isinstance(address, tuple) else str(address)
    if isinstance(address, tuple) and not (host.startswith("127.") or host in ("localhost", "::1")):
        raise OSError(f"network access blocked in tests: {address}")
    return _real_connect(self, address, *args, **kwargs)


_real_connect = socket.socket.connect


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Point the library, model caches and home at temporary folders; block the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CLIPSEARCH_HOME", str(home / "library"))
    monkeypatch.delenv("CLIPSEARCH_DB", raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    return home


@pytest.fixture(scope="session")
def tiny():
    """The bundled tiny model, loaded once for the whole session."""
    return load_encoder(model_spec("clipsearch-tiny"), device="cpu")


def draw_shape(path: Path, colour: str, shape: str, background: str = "white", seed: int = 0, size: int = 128) -> Path:
    from clipsearch.shapes import ShapeSpec, render

    image = render(ShapeSpec(colour, shape, background), random.Random(seed), size=size)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


SHAPE_TREE = [
    ("red", "star"), ("blue", "circle"), ("green", "square"), ("yellow", "triangle"),
    ("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square"),
]


@pytest.fixture
def shape_tree(tmp_path) -> Path:
    """A small photo tree: shapes in two folders, plus a hidden file that must be skipped."""
    root = tmp_path / "photos"
    for i, (colour, shape) in enumerate(SHAPE_TREE):
        folder = root / ("a" if i % 2 == 0 else "b")
        draw_shape(folder / f"{colour}_{shape}.png", colour, shape, seed=i)
    draw_shape(root / ".hidden" / "secret.png", "red", "star", seed=99)
    draw_shape(root / "._resource.png", "red", "star", seed=98)
    return root


@pytest.fixture
def library_dir(tmp_path) -> Path:
    return tmp_path / "lib"


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def save_image(path: Path, colour=(200, 30, 30), size=(96, 64), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)
    return path
