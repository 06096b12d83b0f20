"""Multilingual models: their tokenizers cached and used offline like the weights, and `clipsearch models` marking
the models that understand other languages than English.

The tokenizer here is a real one, small: a Unigram model trained by `tokenizers` on a few English and Chinese
captions, laid out in a temporary Hugging Face cache under the repository open_clip's xlm-roberta-base-ViT-B-32
loads its tokenizer from, beside a config.json that makes its XLM-RoBERTa text tower small (so that random weights
for the whole model are built in seconds; the vision tower is the real ViT-B-32).
"""
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner

from clipsearch.cli import main
from clipsearch.models import ModelSpec, hub_offline, load_encoder, model_spec, pretrained_table
from clipsearch.textexport import export_text_model
from clipsearch.textmodel import CLEANING, TextModel
from test_models import fresh_cli

ARCH, TAG = "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"
WEIGHTS_REPO = "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"
TOKENIZER_REPO = "xlm-roberta-base"
CAPTIONS = ["a red star", "a blue circle", "a green square", "a photo of a dog", "红色的星星", "蓝色的圆",
            "绿色的正方形", "一只狗的照片"]
SMALL_XLM_ROBERTA = {"model_type": "xlm-roberta", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 80, "type_vocab_size": 1,
                     "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}


def small_tokenizer() -> str:
    """tokenizer.json of an XLM-R-like Unigram tokenizer (<s> text </s>, <pad> = 1) over English and Chinese."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(CAPTIONS * 10, trainers.UnigramTrainer(
        vocab_size=100, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0),
                                                                                                  ("</s>", 2)])
    return tokenizer.to_str()


def hub_files(cache: Path, repo: str, files: dict[str, str | bytes], absent: tuple[str, ...] = ()) -> Path:
    """Lay out files the way huggingface_hub caches downloads, and record `absent` ones as missing from the repository
    (as a download that found none leaves them)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text("0123abcd")
    for name, content in files.items():
        (snapshot / name).write_bytes(content.encode() if isinstance(content, str) else content)
    for name in absent:
        (folder / ".no_exist" / "0123abcd").mkdir(parents=True, exist_ok=True)
        (folder / ".no_exist" / "0123abcd" / name).touch()
    return snapshot


def lay_tokenizer(cache: Path) -> int:
    """The small tokenizer and text tower config under TOKENIZER_REPO; returns the vocabulary size."""
    tokenizer = small_tokenizer()
    vocabulary = len(json.loads(tokenizer)["model"]["vocab"])
    hub_files(cache, TOKENIZER_REPO, {"tokenizer.json": tokenizer,
                                      "config.json": json.dumps({**SMALL_XLM_ROBERTA, "vocab_size": vocabulary})})
    return vocabulary


@pytest.fixture
def hub(isolated):
    return isolated / "hf" / "hub"


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable hub"])
@pytest.mark.parametrize("present", [(), ("tokenizer.json",), ("config.json",)])
def test_a_missing_tokenizer_fails_before_torch_is_imported(shape_tree, library_dir, hub, offline, present):
    hub_files(hub, WEIGHTS_REPO, {"open_clip_model.safetensors": b"weights"})
    if present:
        hub_files(hub, TOKENIZER_REPO, {name: "{}" for name in present})
    env = {"HF_HUB_OFFLINE": "1"} if offline == "HF_HUB_OFFLINE" else {"HF_ENDPOINT": "http://127.0.0.1:9"}
    out, err = fresh_cli("index", shape_tree, "--db", library_dir, "--model", ARCH, "--pretrained", TAG, env=env)
    assert out == "" and err.endswith("exit 1 imported []\n") and len(err.splitlines()) == 2
    missing = ", ".join(name for name in ("config.json", "tokenizer.json") if name not in present)
    assert err.startswith(f"Error: The tokenizer of {ARCH} ({TAG}) is not in the cache at {hub}")
    assert f"it needs {missing} from https://huggingface.co/{TOKENIZER_REPO}. " in err
    assert "`clipsearch models --cached`" in err
    assert not library_dir.exists()


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable hub"])
@pytest.mark.parametrize("arch, tag, tokenizer, files", [
    (ARCH, TAG, TOKENIZER_REPO, "config.json, tokenizer.json"),
    ("nllb-clip-base-siglip", "v1", "facebook/nllb-200-distilled-600M", "config.json, tokenizer.json"),
    ("nllb-clip-base-siglip", "mrl", "facebook/nllb-200-distilled-600M", "config.json, tokenizer.json"),
    ("ViT-B-16-SigLIP2", "webli", "timm/ViT-B-16-SigLIP2", "tokenizer.json, config.json"),
])
def test_missing_weights_and_tokenizer_are_named_in_one_line(shape_tree, library_dir, hub, monkeypatch, offline,
                                                             arch, tag, tokenizer, files):
    monkeypatch.setenv(*("HF_HUB_OFFLINE", "1") if offline == "HF_HUB_OFFLINE" else ("HF_ENDPOINT", "http://127.0.0.1:9"))
    weights = pretrained_table()[arch, tag]
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model", arch,
                                       "--pretrained", tag])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: Model weights and tokenizer for {arch} ({tag}) are not in the cache")
    assert f"from {weights.source} and pass it as --checkpoint FILE, with the tokenizer's {files} from " \
           f"https://huggingface.co/{tokenizer} in that cache; " in result.output
    assert not library_dir.exists()


def test_a_checkpoint_of_a_multilingual_architecture_needs_its_tokenizer_too(shape_tree, library_dir, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "weights.bin"
    checkpoint.write_bytes(b"weights")
    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model", ARCH,
                                       "--checkpoint", str(checkpoint)])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: The tokenizer of {ARCH} ({checkpoint})")
    assert f"it needs config.json, tokenizer.json from https://huggingface.co/{TOKENIZER_REPO}. " in result.output
    assert not library_dir.exists()


def models_lines(*args: str) -> dict[tuple[str, str], list[str]]:
    out = CliRunner().invoke(main, ["models", *args]).output.splitlines()
    assert out[-1].startswith("(* = weights and tokenizer cached") and "multilingual = " in out[-1]
    return {(line[2:].split()[0], line[2:].split()[1]): line.split() for line in out[:-1]}


def test_models_marks_the_multilingual_ones():
    lines = models_lines()
    for model in [(ARCH, TAG), ("clipsearch-tiny", "bundled"), ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k"),
                  ("nllb-clip-base-siglip", "v1"), ("nllb-clip-large", "v1"), ("ViT-B-16-SigLIP2", "webli"),
                  ("ViT-SO400M-16-SigLIP-i18n-256", "webli"), ("ViT-H-14-worldwide", "metaclip2_worldwide")]:
        assert "multilingual" in lines[model], model
    for model in [("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-16-SigLIP", "webli"), ("roberta-ViT-B-32",
                  "laion2b_s12b_b32k"), ("ViT-L-14-CLIPA", "datacomp1b")]:
        assert "multilingual" not in lines[model], model
    assert lines[("ViT-B-32", "laion2b_s34b_b79k")][-1] == "(default)"


def test_models_cached_needs_the_tokenizer_too(hub):
    hub_files(hub, WEIGHTS_REPO, {"open_clip_model.safetensors": b"weights"})
    assert (ARCH, TAG) not in models_lines("--cached")
    hub_files(hub, TOKENIZER_REPO, {"tokenizer.json": "{}"})
    assert (ARCH, TAG) not in models_lines("--cached")  # config.json: AutoTokenizer reads it for the class
    hub_files(hub, TOKENIZER_REPO, {"config.json": "{}"})
    assert models_lines("--cached")[(ARCH, TAG)][0] == "*"


def test_a_tokenizer_repository_without_config_json_is_cached_once_the_hub_said_so(hub):
    """timm's SigLIP 2 repositories hold open_clip_config.json, not config.json: a download records its absence."""
    arch = "ViT-B-16-SigLIP2"
    weights = pretrained_table()[(arch, "webli")]
    hub_files(hub, weights.hf_repo, {"open_clip_model.safetensors": b"weights", "tokenizer.json": "{}"})
    assert weights.tokenizer == weights.hf_repo and weights.text_files_missing() == (f"{weights.hf_repo}/config.json",)
    hub_files(hub, weights.hf_repo, {}, absent=("config.json",))
    assert weights.text_files_missing() == ()
    assert models_lines("--cached")[(arch, "webli")][0] == "*"


@pytest.fixture
def multilingual_model(hub, monkeypatch, tmp_path):
    """xlm-roberta-base-ViT-B-32 / laion5b_s13b_b90k in the hub cache, random weights and the small tokenizer, offline."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))  # read once, at its import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lay_tokenizer(hub)
    torch.manual_seed(0)
    with hub_offline():
        weights = open_clip.create_model(ARCH, pretrained_hf=False).state_dict()  # no XLM-R weights to start from
    hub_files(hub, WEIGHTS_REPO, {})
    torch.save(weights, hub / f"models--{WEIGHTS_REPO.replace('/', '--')}" / "snapshots" / "0123abcd"
               / "open_clip_pytorch_model.bin")
    return hub


TEXTS = ["a red star", "红色的星星", "一只狗的照片 a photo of a dog"]


def test_a_multilingual_model_loads_offline_as_open_clip_loads_it(multilingual_model):
    import huggingface_hub.constants

    ours = load_encoder(model_spec(ARCH, TAG), device="cpu")
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # offline while loading only
    with hub_offline():
        model, _, _ = open_clip.create_model_and_transforms(ARCH, pretrained=TAG, cache_dir=str(multilingual_model))
        tokenizer = open_clip.get_tokenizer(ARCH, cache_dir=str(multilingual_model))
    model.eval()
    assert ours.spec == ModelSpec(ARCH, TAG)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model.encode_text(tokenizer(TEXTS)), dim=-1).numpy()
    assert np.abs(ours.encode_texts(TEXTS) - reference).max() < 1e-6
    assert (tokenizer(TEXTS[1])[0, :3] != 3).all()  # Chinese is in the vocabulary, not unknown tokens


def test_multilingual_search_and_the_truncation_note(multilingual_model, shape_tree, library_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model", ARCH,
                                  "--pretrained", TAG])
    assert result.exit_code == 0, result.output
    for query in ["红色的星星", "a red star"]:
        result = runner.invoke(main, ["search", query, "--db", str(library_dir), "-n", "3", "--json"])
        assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3, result.output
    long_query = "红色的星星 " * 40
    result = runner.invoke(main, ["search", long_query, "--db", str(library_dir), "-n", "1"])
    assert result.exit_code == 0 and "longer than the model's context of 77 tokens" in result.stderr
    short = runner.invoke(main, ["search", "红色的星星", "--db", str(library_dir), "-n", "1"])
    assert "longer than" not in short.stderr



def test_the_text_tower_tokenizes_and_encodes_as_open_clip(multilingual_model, tmp_path):
    from test_textmodel import TEXTS as HARD_TEXTS, fuzz

    encoder = load_encoder(model_spec(ARCH, TAG), device="cpu")
    assert export_text_model(tmp_path, encoder) is not None
    tower = TextModel.load(tmp_path, encoder.spec)
    assert tower.cleaning == "whitespace" and tower.context_length == 77
    texts = TEXTS + HARD_TEXTS + ["红色的星星 " * 40] + fuzz(1, 50)
    for text in texts:
        assert (tower.tokenize([text]) == encoder.tokenizer([text]).numpy()).all(), repr(text)
        assert tower.truncated(text) == encoder.truncated(text), repr(text)
    assert np.abs(tower.encode(texts) - encoder.encode_texts(texts)).max() < 1e-5


@pytest.mark.parametrize("name", sorted(CLEANING))
def test_the_cleaning_steps_are_open_clips(name):
    from test_textmodel import TEXTS as HARD_TEXTS, fuzz

    for text in HARD_TEXTS + fuzz(2, 200) + ["snake_case a_b", "«guillemets» ¿qué? 红色的「星星」。"]:
        assert CLEANING[name](text) == open_clip.tokenizer.get_clean_fn(name)(text), repr(text)


def test_a_new_multilingual_query_runs_the_text_tower_alone(multilingual_model, shape_tree, library_dir):
    from test_cold_query import TEXT_TOWER, imported_by

    result = CliRunner().invoke(main, ["index", str(shape_tree), "--db", str(library_dir), "--model", ARCH,
                                       "--pretrained", TAG])
    assert result.exit_code == 0, result.output
    out, imported = imported_by("search", "一只蓝色的圆", "--db", str(library_dir), "-n", "2", "--json")
    assert len(json.loads(out)) == 2 and imported == TEXT_TOWER
