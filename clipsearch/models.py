"""Choosing and loading CLIP models: open_clip architectures, hub weights, local checkpoints,
and the small `clipsearch-tiny` model that ships inside the package.

Loading never reaches the network when the weights are cached; when they are not and the hub
cannot be reached, it fails fast with `ModelUnavailable` saying how to fix it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import socket
import urllib.parse
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .errors import ModelMismatch, ModelUnavailable

if TYPE_CHECKING:
    from .encoder import Encoder

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
TINY_MODEL = "clipsearch-tiny"
DEFAULT_BATCH = {"cpu": 32, "mps": 64, "cuda": 256}
"""Images per batch by device type, when not given."""
TINY_CONFIG = Path(__file__).parent / "model_configs" / f"{TINY_MODEL}.json"
TINY_WEIGHTS = Path(__file__).parent / "weights" / f"{TINY_MODEL}.pt"
BUNDLED = "bundled"
TINY_MULTILINGUAL = True
"""The tiny model is trained on English and Chinese captions of its shapes (scripts/train_tiny.py)."""
OPEN_CLIP_VERSION = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.MULTILINE)
"""The assignment in open_clip's `version.py`, e.g. `__version__ = '3.3.0'`."""


@dataclass(frozen=True)
class ModelSpec:
    """What a library records about the model that built it."""

    arch: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None

    @property
    def label(self) -> str:
        source = self.checkpoint or self.pretrained or "random init"
        return f"{self.arch} ({source})"

    @property
    def identity(self) -> str:
        """What makes two specs embed alike (see `same_weights`), as a key for caches and shard names."""
        return f"{self.arch}:{self.checkpoint_sha256 or self.pretrained}"

    def same_weights(self, other: "ModelSpec") -> bool:
        if self.checkpoint_sha256 or other.checkpoint_sha256:
            return self.arch == other.arch and self.checkpoint_sha256 == other.checkpoint_sha256
        return self.arch == other.arch and self.pretrained == other.pretrained

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(**{k: d.get(k) for k in ("arch", "pretrained", "checkpoint", "checkpoint_sha256")})


def model_spec(arch: str = DEFAULT_MODEL, pretrained: str | None = None, checkpoint: str | None = None) -> ModelSpec:
    """Resolve user options into a spec: the tiny model's bundled weights, a checkpoint, or a hub tag."""
    if arch == TINY_MODEL and not checkpoint:
        if not TINY_WEIGHTS.is_file():
            raise ModelUnavailable(f"The bundled {TINY_MODEL} weights are missing from {TINY_WEIGHTS}: "
                                   "reinstall clipsearch or run scripts/train_tiny.py")
        return ModelSpec(TINY_MODEL, BUNDLED, None, file_sha256(str(TINY_WEIGHTS)))
    if checkpoint:
        path = os.path.abspath(checkpoint)
        if not os.path.exists(path):
            raise ModelUnavailable(f"Checkpoint file not found: {checkpoint}")
        if not os.path.isfile(path):
            raise ModelUnavailable(f"The checkpoint {checkpoint} is not a regular file (a pipe or a device?): "
                                   "save it to a file first")
        return ModelSpec(arch, None, path, file_sha256(path))
    return ModelSpec(arch, pretrained or DEFAULT_PRETRAINED, None, None)


@lru_cache(maxsize=8)
def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def register_tiny() -> None:
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG)


def hub_cache_dir() -> str:
    """The Hugging Face hub cache open_clip downloads into, read from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelUnavailable("--device cuda was asked for but no CUDA GPU is available")
        if device == "mps" and not torch.backends.mps.is_available():
            raise ModelUnavailable("--device mps was asked for but MPS is not available")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


PRETRAINED_TABLE = Path(__file__).parent / "pretrained.json"
"""open_clip's pretrained table with each file's source and parameter count, for the open_clip version it names:
written by scripts/pretrained_table.py, read without importing torch or open_clip."""
BYTES_PER_PARAMETER = 4
"""float32, as open_clip's hub weights are stored: the basis of `PretrainedWeights.size_bytes`."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One open_clip pretrained tag: its config (hf_hub or url, mean, std, quick_gelu...) and where its file is."""

    arch: str
    tag: str
    cfg: dict[str, Any]
    hf_repo: str | None
    """The Hugging Face repository, or None for a tag downloaded from `cfg["url"]`."""
    files: tuple[str, ...]
    """The file names open_clip tries, a safetensors alternative first; the last is the one its table names."""
    params: int | None
    """Parameters of the whole model, when scripts/pretrained_table.py could count them."""
    tokenizer: str | None = None
    """The Hugging Face repository of the text tower's tokenizer (loaded by transformers' AutoTokenizer), None for
    open_clip's own CLIP tokenizer, which ships with open_clip."""
    text_model: str | None = None
    """The Hugging Face repository whose config.json open_clip reads to build a transformers text tower, else None."""
    multilingual: bool = False
    """Whether the text tower understands queries in other languages than English (see `is_multilingual`)."""

    @property
    def source(self) -> str:
        """The address of the weights file the table names."""
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.files[-1]}"
        return self.cfg["url"]

    @property
    def size_bytes(self) -> int | None:
        """The file's approximate size in bytes (its parameters as float32), None if not counted."""
        return self.params * BYTES_PER_PARAMETER if self.params else None

    def cached(self) -> str | None:
        """The weights file in the local cache, without touching the network; None when there is none."""
        if self.hf_repo is None:
            name = self.files[-1]
            paths = (os.path.join(hub_cache_dir(), name), os.path.join(os.path.expanduser("~/.cache/clip"), name))
            return next((p for p in paths if os.path.isfile(p)), None)
        from huggingface_hub import try_to_load_from_cache

        for filename in self.files:
            found = try_to_load_from_cache(self.hf_repo, filename, cache_dir=hub_cache_dir())
            if isinstance(found, str):
                return found
        return None

    def text_files(self) -> tuple[str, ...]:
        """The Hugging Face files the text side reads besides the weights, as "repo/file" (none for open_clip's own
        tokenizer): what transformers needs to load `tokenizer` and build `text_model` offline."""
        files = [f"{self.text_model}/{HF_CONFIG}"] if self.text_model else []
        if self.tokenizer:
            files += [f"{self.tokenizer}/{HF_TOKENIZER}", f"{self.tokenizer}/{HF_CONFIG}"]
        return tuple(dict.fromkeys(files))

    def text_files_missing(self) -> tuple[str, ...]:
        """Those of `text_files` not in the local cache, looked up without touching the network.

        A tokenizer repository's config.json (read by AutoTokenizer for the tokenizer's class) also counts as
        cached when the cache records that the repository has none, as a download leaves it; a text model's
        config.json must be there."""
        from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

        missing = []
        for file in self.text_files():
            repo, filename = file.rsplit("/", 1)
            found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
            absent_ok = repo == self.tokenizer and repo != self.text_model
            if not (isinstance(found, str) or (absent_ok and found is _CACHED_NO_EXIST)):
                missing.append(file)
        return tuple(missing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PretrainedWeights":
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in d["cfg"].items()}  # JSON made tuples lists
        return cls(d["arch"], d["tag"], cfg, d["hf_repo"], tuple(d["files"]), d["params"], d.get("tokenizer"),
                   d.get("text_model"), bool(d.get("multilingual")))


HF_TOKENIZER = "tokenizer.json"
HF_CONFIG = "config.json"
MULTILINGUAL_VOCABULARY = 250_000
"""Tokens in a text tower's vocabulary from which it counts as multilingual: the vocabularies built for a hundred
languages or more (mT5's and SigLIP i18n's 250k, XLM-R's, NLLB's, Gemma's 256k, XLM-V's 900k) are this large, the
English ones (CLIP's 49k, BERT's, RoBERTa's, SigLIP's 32-50k) far smaller."""
MULTILINGUAL_TEXT_MODELS = ("xlm-roberta-", "facebook/nllb-", "google/mt5-")
"""Hugging Face text towers trained on many languages (their vocabulary size is not in open_clip's config)."""


def is_multilingual(text_cfg: dict[str, Any]) -> bool:
    """Whether an open_clip `text_cfg` describes a text tower trained for queries in many languages."""
    hf_model = text_cfg.get("hf_model_name") or ""
    return text_cfg.get("vocab_size", 0) >= MULTILINGUAL_VOCABULARY or hf_model.startswith(MULTILINGUAL_TEXT_MODELS)


def open_clip_pretrained(params: dict[str, int] | None = None) -> list[PretrainedWeights]:
    """open_clip's pretrained table as installed (this imports open_clip, and so torch), with the parameter
    counts by architecture in `params`."""
    from open_clip import get_model_config
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives, get_pretrained_cfg, list_pretrained

    table = []
    for arch, tag in list_pretrained():
        cfg = get_pretrained_cfg(arch, tag)
        repo, filename = os.path.split(cfg.get("hf_hub", ""))
        if repo:
            filename = filename or HF_WEIGHTS_NAME
            files = (*_get_safe_alternatives(filename), filename)
        else:
            files = (os.path.basename(cfg["url"]),)
        text_cfg = (get_model_config(arch) or {}).get("text_cfg", {})
        table.append(PretrainedWeights(arch, tag, cfg, repo or None, files, (params or {}).get(arch),
                                       text_cfg.get("hf_tokenizer_name") or None, text_cfg.get("hf_model_name") or None,
                                       is_multilingual(text_cfg)))
    return table


@lru_cache(maxsize=1)
def pretrained_table() -> dict[tuple[str, str], PretrainedWeights]:
    """Every (architecture, tag) open_clip has weights for: from PRETRAINED_TABLE, or from open_clip itself
    (seconds, and without sizes) when another open_clip version is installed than the one it was written for."""
    data = json.loads(PRETRAINED_TABLE.read_text(encoding="utf-8"))
    if data["open_clip"] == open_clip_version():
        weights = [PretrainedWeights.from_dict(d) for d in data["weights"]]
    else:
        weights = open_clip_pretrained()
    return {(w.arch, w.tag): w for w in weights}


def weights_file(spec: ModelSpec) -> tuple[str | None, dict[str, Any]]:
    """The local weights file for a spec (downloading it if the hub is reachable) and its tag config.

    Imports neither torch nor open_clip unless it downloads, so a missing model fails at once.
    Raises ModelUnavailable for an unknown tag, for weights neither cached nor downloadable, and for a
    tokenizer (see `PretrainedWeights.text_files`) neither cached nor downloadable.
    """
    if spec.arch == TINY_MODEL and spec.pretrained == BUNDLED:
        return str(TINY_WEIGHTS), {}
    if spec.checkpoint:
        if not os.path.isfile(spec.checkpoint):
            raise ModelUnavailable(f"The checkpoint {spec.checkpoint} this library was built with is missing")
        _check_text_files(spec)
        return spec.checkpoint, {}
    if not spec.pretrained:
        _check_text_files(spec)
        return None, {}
    table = pretrained_table()
    weights = table.get((spec.arch, spec.pretrained))
    if weights is None:
        tags = ", ".join(tag for arch, tag in table if arch == spec.arch)
        if not tags:
            raise ModelUnavailable(f"open_clip has no pretrained weights for {spec.arch!r}: see `clipsearch models` "
                                   "for the models it has, or pass --checkpoint FILE")
        raise ModelUnavailable(
            f"Unknown pretrained tag {spec.pretrained!r} for {spec.arch} (known tags: {tags}); see `clipsearch models`"
        )
    path = weights.cached() or _download(spec, weights, text_files_missing(spec))
    _check_text_files(spec)
    return path, weights.cfg


def text_side(arch: str) -> PretrainedWeights | None:
    """A pretrained tag of `arch`, for what its text side needs (the same for every tag of an architecture); None
    when open_clip has no weights for it."""
    return next((w for (a, _), w in pretrained_table().items() if a == arch), None)


def text_files_missing(spec: ModelSpec) -> tuple[str, ...]:
    """The Hugging Face files, as "repo/file", that the text side of `spec` needs and the local cache lacks."""
    weights = text_side(spec.arch)
    return weights.text_files_missing() if weights else ()


def _check_text_files(spec: ModelSpec) -> None:
    missing = text_files_missing(spec)
    reason = hub_unreachable() if missing else None
    if reason:
        raise ModelUnavailable(
            f"The tokenizer of {spec.label} is not in the cache at {hub_cache_dir()} and could not be downloaded "
            f"({reason}): it needs {_hub_sources(missing)}. Fix: run once with network access to "
            "cache it; `clipsearch models --cached` lists the models available offline."
        )


def _hub_sources(files: Sequence[str]) -> str:
    """"repo/file" names for a person, by repository: "config.json, tokenizer.json from https://huggingface.co/repo"."""
    by_repo: dict[str, list[str]] = {}
    for file in files:
        repo, name = file.rsplit("/", 1)
        by_repo.setdefault(repo, []).append(name)
    return " and ".join(f"{', '.join(names)} from https://huggingface.co/{repo}" for repo, names in by_repo.items())


@contextmanager
def hub_offline(offline: bool = True) -> Iterator[None]:
    """Within it, huggingface_hub and transformers read their cache only, never the network (HF_HUB_OFFLINE, which
    they read once, at import: so its constant too); restored afterwards."""
    if not offline:
        yield
        return
    import huggingface_hub.constants

    before, before_env = huggingface_hub.constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    huggingface_hub.constants.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = before
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


HUB_PROBE_TIMEOUT_S = 3.0


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the model hub cannot be reached, or None when a connection to it opens.

    huggingface_hub retries a failing download five times with backoff (about a minute offline),
    so one quick connection attempt decides first. Behind a proxy only the download can tell.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as e:
        return f"{url.hostname} is unreachable: {e.strerror or e}"
    return None


def _download(spec: ModelSpec, weights: PretrainedWeights, text_missing: Sequence[str] = ()) -> str:
    """The weights file, downloaded; ModelUnavailable naming it and `text_missing` (the text side's files the cache
    lacks, see `text_files_missing`) when it cannot be."""
    reason = hub_unreachable()
    if reason:
        raise ModelUnavailable(_offline_message(spec, weights, reason, text_missing))
    from open_clip.pretrained import download_pretrained

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry chatter on stderr
    try:
        path = download_pretrained(weights.cfg, cache_dir=hub_cache_dir())
    except Exception as e:  # any download failure means the same thing to the user
        raise ModelUnavailable(_offline_message(spec, weights, e, text_missing)) from None
    if not path:
        raise ModelUnavailable(_offline_message(spec, weights, "no download location", text_missing))
    return path


def _offline_message(spec: ModelSpec, weights: PretrainedWeights, cause: object, text_missing: Sequence[str] = ()
                     ) -> str:
    """One line naming all that is missing (the weights, and the tokenizer's `text_missing` files) and one fix."""
    first_line = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else type(cause).__name__
    size = f" (about {human_size(weights.size_bytes)})" if weights.size_bytes else ""
    what = "Model weights" + (" and tokenizer" if text_missing else "")
    tokenizer = f", with the tokenizer's {_hub_sources(text_missing)} in that cache" if text_missing else ""
    return (
        f"{what} for {spec.arch} ({spec.pretrained}) are not in the cache at {hub_cache_dir()} "
        f"and could not be downloaded ({first_line}). Fix: run once with network access to cache them, "
        f"or download {weights.files[-1]}{size} from {weights.source} and pass it as --checkpoint FILE{tokenizer}; "
        f"`clipsearch models --cached` lists the models available offline."
    )


def human_size(n: int) -> str:
    """Bytes for a person, in decimal units: 605 MB, 1.5 GB, 900 B."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def load_encoder(spec: ModelSpec, device: str = "auto", precision: str | None = None) -> "Encoder":
    """The one entry point that turns a spec into a ready encoder. The weights and tokenizer are looked for before
    torch is imported: a missing model fails in a fraction of a second, not after seconds of imports. When the
    tokenizer's files are all cached, it loads offline (transformers would otherwise ask the hub for updates)."""
    path, cfg = weights_file(spec)
    with hub_offline(not text_files_missing(spec)):
        return _load_encoder(spec, path, cfg, device, precision)


def _load_encoder(spec: ModelSpec, path: str | None, cfg: dict[str, Any], device: str, precision: str | None
                  ) -> "Encoder":
    import open_clip
    import torch

    from .encoder import CenterFirst, Encoder

    register_tiny()
    if spec.arch not in open_clip.list_models():
        raise ModelUnavailable(f"Unknown model architecture {spec.arch!r}; see `clipsearch models`")
    dev = resolve_device(device)
    precision = precision or ("fp16" if dev == "cuda" else "fp32")
    try:
        with _receiving_weights(path):
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch,
                pretrained=path,
                cache_dir=hub_cache_dir(),
                precision=precision,
                device=dev,
                force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                image_mean=cfg.get("mean"),
                image_std=cfg.get("std"),
                image_interpolation=cfg.get("interpolation"),
                image_resize_mode=cfg.get("resize_mode"),
            )
    except ModelUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged or foreign weights file makes torch or open_clip raise
        raise ModelUnavailable(f"Cannot load {spec.label}: {_reason(e)}") from None
    model.eval()
    try:
        tokenizer = open_clip.get_tokenizer(spec.arch, cache_dir=hub_cache_dir())
    except (OSError, ValueError, ImportError) as e:  # transformers' own errors for a tokenizer it cannot load
        raise ModelUnavailable(f"Cannot load the tokenizer of {spec.label}: {_reason(e)}") from None
    dtype = torch.float16 if precision == "fp16" else torch.float32
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    if preprocess_cfg.get("resize_mode", "shortest") == "shortest":
        size = preprocess_cfg["size"]
        preprocess = CenterFirst(preprocess, int(min(size) if isinstance(size, (tuple, list)) else size))
    return Encoder(spec, model, preprocess, tokenizer, torch.device(dev), dtype)


def _reason(error: Exception) -> str:
    """An exception from loading weights (or a tokenizer) as one line of at most 300 characters: its first line,
    the next too where the first only announces a list ("Error(s) in loading state_dict for CLIP:"); its class
    where it says nothing."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return f"{type(error).__name__} (the file is empty or not a weights file)"
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text if len(text) <= 300 else text[:299] + "…"


INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                  "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")
"""The `torch.nn.init` functions layers fill their weights with when made."""


@contextmanager
def _receiving_weights(path: str | None) -> Iterator[None]:
    """While open_clip makes a model that will receive the weights in the file at `path`: its layers are not first
    filled with random numbers (open_clip then loads a whole model's checkpoint strictly, so every parameter is
    overwritten or the load fails), and a checkpoint in torch.save's zip format is memory-mapped, not read into
    memory before being copied into the model. Together about 3 s less for ViT-B-32 on 2 cores (of 3.3 s).
    Without a file, or for big_vision's numpy weights (loaded by their own, lenient code), nothing changes."""
    if path is None or Path(path).suffix in (".npz", ".npy"):
        yield
        return
    import zipfile

    import torch
    from torch.utils.serialization import config

    kept = {name: getattr(torch.nn.init, name) for name in INIT_FUNCTIONS}
    mapped = config.load.mmap
    try:
        for name in INIT_FUNCTIONS:
            setattr(torch.nn.init, name, _left_as_is)
        config.load.mmap = zipfile.is_zipfile(path)  # torch.load refuses to map its older format
        yield
    finally:
        for name, function in kept.items():
            setattr(torch.nn.init, name, function)
        config.load.mmap = mapped


def _left_as_is(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    return tensor


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input, and the open_clip version that did it: what a library records beside its
    model, since a change here (an open_clip upgrade, say) changes every vector the model makes."""

    open_clip: str
    image_size: tuple[int, int]
    """(height, width) in pixels."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        return cls(d["open_clip"], tuple(d["image_size"]), tuple(d["mean"]), tuple(d["std"]), d["interpolation"],
                   d["resize_mode"])

    def differences(self, other: "Preprocessing") -> list[str]:
        """What changed from self to other, e.g. ["open_clip 2.24.0 -> 3.3.0", "interpolation bicubic -> bilinear"]."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k} {_shown(mine[k])} -> {_shown(theirs[k])}" for k in mine if mine[k] != theirs[k]]


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def open_clip_version() -> str:
    """The installed open_clip_torch version, read without importing open_clip (or torch): from the package's
    `version.py`, found on the import path (importlib.metadata, whose import and search of every installed
    package cost a tenth of a repeated text query, answers only where that file cannot be read)."""
    try:
        source = (_open_clip_folder() / "version.py").read_text(encoding="utf-8")
        return OPEN_CLIP_VERSION.search(source).group(1)
    except (AttributeError, TypeError, IndexError, OSError, UnicodeDecodeError):
        from importlib.metadata import version

        return version("open_clip_torch")


def _open_clip_folder() -> Path:
    """The installed open_clip package's folder, found without importing it. Raises TypeError, AttributeError or
    IndexError where the import system does not say."""
    return Path(importlib.util.find_spec("open_clip").submodule_search_locations[0])


def input_side(spec: ModelSpec) -> int | None:
    """The side, in pixels, of the images `spec`'s model takes (the shorter where not square), read from its
    architecture's config without importing open_clip or torch; None where that cannot be read (a model whose
    config comes from the Hugging Face hub, say). The loaded model's `Encoder.image_size` is the authority."""
    try:
        config = TINY_CONFIG if spec.arch == TINY_MODEL else _open_clip_folder() / "model_configs" / f"{spec.arch}.json"
        size = json.loads(config.read_text(encoding="utf-8"))["vision_cfg"]["image_size"]
        return int(min(size) if isinstance(size, list) else size)
    except (AttributeError, TypeError, IndexError, KeyError, ValueError, OSError):
        return None


def preprocessing_of(encoder: "Encoder") -> Preprocessing:
    """The preprocessing `encoder`'s model was created with (open_clip's `visual.preprocess_cfg`)."""
    cfg = encoder.model.visual.preprocess_cfg
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return Preprocessing(open_clip_version(), (int(size[0]), int(size[1])), tuple(map(float, cfg["mean"])),
                         tuple(map(float, cfg["std"])), str(cfg["interpolation"]), str(cfg["resize_mode"]))


def check_same_model(recorded: ModelSpec, requested: ModelSpec) -> None:
    if not recorded.same_weights(requested):
        raise ModelMismatch(
            f"This library was indexed with {recorded.label}; indexing with {requested.label} would mix "
            f"incompatible vectors. Use the same model, or pass --reindex to re-embed everything."
        )


@dataclass(frozen=True)
class ModelListing:
    arch: str
    pretrained: str
    cached: bool
    """Whether the weights and every file the text side needs (`PretrainedWeights.text_files`) are cached, so that
    the model works offline."""
    size_bytes: int | None
    """The weights file's size, approximate (see `PretrainedWeights.size_bytes`) unless cached."""
    multilingual: bool
    """Whether it understands queries in other languages than English (see `PretrainedWeights.multilingual`)."""


def list_available() -> list[ModelListing]:
    """Every (architecture, pretrained tag) open_clip has weights for, plus the bundled tiny model; read without
    importing torch or open_clip."""
    listings = [ModelListing(TINY_MODEL, BUNDLED, True, TINY_WEIGHTS.stat().st_size, TINY_MULTILINGUAL)]
    for (arch, tag), weights in pretrained_table().items():
        path = weights.cached()
        listings.append(ModelListing(arch, tag, path is not None and not weights.text_files_missing(),
                                     os.path.getsize(path) if path else weights.size_bytes, weights.multilingual))
    return listings
